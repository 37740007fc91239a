package ocr

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"math"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/onnx"
)

// Errors returned by this package.
var (
	// ErrModel: the model file does not have the signature of a PP-OCR
	// detection or recognition model.
	ErrModel = errors.New("not a PP-OCR model")
	// ErrOptions: a request option is out of range.
	ErrOptions = errors.New("invalid OCR option")
)

// Sessions loads ONNX models; *inference.Runtime is one.
type Sessions interface {
	NewSession(path string, o inference.SessionOptions) (*inference.Session, error)
}

// minSide is the smallest width and height Immich runs OCR on.
const minSide = 32

// DetectOptions are the per-request detection options (Immich's
// ocr/detection options).
type DetectOptions struct {
	// MinScore is DB's box threshold: boxes whose mean probability is
	// lower are dropped. It is used as given (0 keeps every box); Immich's
	// default is 0.5 (see DefaultDetectOptions).
	MinScore float32
	// MaxResolution caps the image's shorter side before detection; 0
	// means 736. Images are never upscaled, and the input is further
	// bounded by DetectMaxSide and DetectMaxPixels.
	MaxResolution int
	// ScoreMode is "fast" (mean over the box) or "slow" (mean over the
	// contour). Empty means "fast"; as in Immich, any other value means
	// "slow".
	ScoreMode string
}

// DefaultDetectOptions are Immich's defaults on the ML side.
func DefaultDetectOptions() DetectOptions {
	return DetectOptions{MinScore: 0.5, MaxResolution: 736, ScoreMode: "fast"}
}

// TextBoxes are detected text regions in image pixels, in reading order:
// corners top-left, top-right, bottom-right, bottom-left.
type TextBoxes struct {
	Boxes  [][4][2]float32
	Scores []float32
}

// Detector finds text with a PP-OCR DB detection model.
type Detector struct {
	sess   *inference.Session
	logger *slog.Logger
	// resizers keeps Lanczos coefficient tables and scratch images
	// between requests (*resizer): resizing a large photo needs a
	// scratch buffer of its full height.
	resizers sync.Pool
}

type resizer struct {
	r   imaging.Resampler
	dst *imaging.Image
}

// LoadDetector loads dir/model.onnx (Immich's <cache>/ocr/<name>/detection)
// and checks that it takes one float32 [N,3,H,W] image and returns a
// probability map.
func LoadDetector(dir string, sessions Sessions, logger *slog.Logger) (*Detector, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(dir, "model.onnx")
	sess, err := sessions.NewSession(path, inference.SessionOptions{CacheDir: dir})
	if err != nil {
		return nil, fmt.Errorf("load OCR detection model %s: %w", path, err)
	}
	if err := checkImageInput(sess, -1); err != nil {
		sess.Close()
		return nil, err
	}
	if out := sess.Outputs(); len(out) == 0 || out[0].Type != onnx.Float || len(out[0].Dims) != 4 ||
		(!out[0].Dims[1].Dynamic() && out[0].Dims[1].Value != 1) {
		sess.Close()
		return nil, fmt.Errorf("%w: %s: outputs %v, want a float32 [N,1,H,W] probability map", ErrModel, path, out)
	}
	d := &Detector{sess: sess, logger: logger.With("model", path)}
	d.resizers.New = func() any { return new(resizer) }
	return d, nil
}

// checkImageInput wants a single float32 input [N,3,H,W] with H = height
// when height > 0.
func checkImageInput(sess *inference.Session, height int64) error {
	in := sess.Inputs()
	if len(in) != 1 || in[0].Type != onnx.Float || len(in[0].Dims) != 4 {
		return fmt.Errorf("%w: %s: inputs %v, want one float32 [N,3,H,W]", ErrModel, sess.Path(), in)
	}
	d := in[0].Dims
	if (!d[1].Dynamic() && d[1].Value != 3) || (height > 0 && !d[2].Dynamic() && d[2].Value != height) {
		return fmt.Errorf("%w: %s: input %v, want [N,3,%d,W]", ErrModel, sess.Path(), in[0], height)
	}
	return nil
}

// Provider is the execution provider running the model.
func (d *Detector) Provider() string { return d.sess.Provider() }

// Close releases the model once runs in progress have finished.
func (d *Detector) Close() error { return d.sess.Close() }

// Bounds on the detector's input. Immich caps only the shorter side
// (maxResolution) and never upscales, so the input follows the long side:
// a 24000×400 strip went to the model as 24000×384 and cost 1 GB, since
// the model's activations take about 115 bytes per input pixel. The long
// side is capped as PaddleOCR 3 caps it (max_side_limit, 4000 pixels),
// and the area at what that cap gives at Immich's default maxResolution
// (4000×736, about 340 MB of activations). Immich's previews (at most
// 2160 pixels on the long side) are within both caps at the default
// maxResolution, so only panoramas wider than about 5.4:1, or a
// maxResolution raised so far that the input would exceed 2.9 megapixels,
// are detected at a lower resolution than Immich's (RapidOCR's own
// pipeline resizes such images too: its max_side_len is 2000).
const (
	DetectMaxSide   = 4000
	DetectMaxPixels = DetectMaxSide * 736
)

// detectSize is the detector's input size for a w×h image: the shorter
// side capped at maxRes (ratio ≤ 1), each side truncated, then, past
// DetectMaxSide on the long side or DetectMaxPixels in area, scaled down
// again (sides truncated), and finally rounded to a multiple of 32 half
// to even, as Python's round does.
func detectSize(w, h, maxRes int) (int, int) {
	var ratio float64
	if h < w {
		ratio = float64(maxRes) / float64(h)
	} else {
		ratio = float64(maxRes) / float64(w)
	}
	ratio = min(ratio, 1.0)
	rh := int(float64(h) * ratio)
	rw := int(float64(w) * ratio)
	if long := max(rw, rh); long > DetectMaxSide {
		r := float64(DetectMaxSide) / float64(long)
		rh, rw = int(float64(rh)*r), int(float64(rw)*r)
	}
	if area := int64(rw) * int64(rh); area > DetectMaxPixels {
		r := math.Sqrt(float64(DetectMaxPixels) / float64(area))
		rh, rw = int(float64(rh)*r), int(float64(rw)*r)
	}
	return int(math.RoundToEven(float64(rw)/32) * 32), int(math.RoundToEven(float64(rh)/32) * 32)
}

// decimal64 widens a float32 option to the float64 that its shortest
// decimal form denotes (0.7 rather than 0.699999988), which is the value
// Immich compares with, having parsed it from JSON as a float64.
func decimal64(f float32) float64 {
	v, err := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	if err != nil {
		return float64(f)
	}
	return v
}

// Detect finds text in img. Images under 32 pixels on a side give no boxes.
func (d *Detector) Detect(ctx context.Context, img *imaging.Image, opts DetectOptions) (*TextBoxes, error) {
	return d.DetectWith(ctx, inference.Run, img, opts)
}

// DetectWith is Detect with the model run made through run.
func (d *Detector) DetectWith(ctx context.Context, runModel inference.RunFunc, img *imaging.Image, opts DetectOptions) (*TextBoxes, error) {
	empty := &TextBoxes{Boxes: [][4][2]float32{}, Scores: []float32{}}
	if opts.MaxResolution == 0 {
		opts.MaxResolution = 736
	}
	if opts.MaxResolution < 0 {
		return nil, fmt.Errorf("%w: maxResolution %d", ErrOptions, opts.MaxResolution)
	}
	if img == nil || img.W < minSide || img.H < minSide {
		return empty, nil
	}
	start := time.Now()
	w, h := detectSize(img.W, img.H, opts.MaxResolution)
	if w <= 0 || h <= 0 {
		return empty, nil
	}
	var input inference.Tensor
	if w != img.W || h != img.H {
		rs := d.resizers.Get().(*resizer)
		rs.dst = rs.r.ResizeRegion(rs.dst, img, w, h, image.Rect(0, 0, w, h), imaging.Lanczos)
		input = detectTensor(rs.dst)
		d.resizers.Put(rs)
	} else {
		input = detectTensor(img)
	}
	prep := time.Since(start)

	out, err := runModel(ctx, d.sess, input)
	if err != nil {
		return nil, fmt.Errorf("OCR detection: %w", err)
	}
	run := time.Since(start) - prep
	m, err := mapFromOutput(out[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrModel, d.sess.Path(), err)
	}
	boxes, scores, err := dbBoxes(m, dbParams{
		boxThresh: decimal64(opts.MinScore),
		slowScore: opts.ScoreMode != "" && opts.ScoreMode != "fast",
	}, img.W, img.H)
	if err != nil {
		return nil, fmt.Errorf("OCR detection post-processing: %w", err)
	}
	res := empty
	for _, i := range readingOrder(boxes) {
		res.Boxes = append(res.Boxes, boxes[i])
		res.Scores = append(res.Scores, float32(scores[i]))
	}
	d.logger.Debug("OCR detection", "image", [2]int{img.W, img.H}, "input", [2]int{w, h},
		"boxes", len(res.Boxes), "preprocess", prep, "run", run, "total", time.Since(start))
	return res, nil
}

// detectTensor is Immich's normalisation: float32 BGR, minus 0.5, times
// 1/127.5 (not PaddleOCR's x/127.5 - 1), as [1,3,H,W].
func detectTensor(im *imaging.Image) inference.Tensor {
	const inv = float32(1) / float32(0.5*255.0)
	n := im.W * im.H
	data := make([]float32, 3*n)
	for i := range n {
		px := im.Pix[i*3 : i*3+3]
		data[i] = (float32(px[2]) - 0.5) * inv
		data[n+i] = (float32(px[1]) - 0.5) * inv
		data[2*n+i] = (float32(px[0]) - 0.5) * inv
	}
	return inference.F32(data, 1, 3, int64(im.H), int64(im.W))
}

// mapFromOutput takes the first map of a [N,1,H,W] output.
func mapFromOutput(t inference.Tensor) (probMap, error) {
	s := t.Shape
	if t.Float32 == nil || len(s) < 3 || s[len(s)-1] <= 0 || s[len(s)-2] <= 0 {
		return probMap{}, fmt.Errorf("output shape %v, want [N,1,H,W] float32", s)
	}
	w, h := int(s[len(s)-1]), int(s[len(s)-2])
	if len(t.Float32) < w*h {
		return probMap{}, fmt.Errorf("output shape %v holds %d values", s, len(t.Float32))
	}
	return probMap{W: w, H: h, P: t.Float32[:w*h]}, nil
}
