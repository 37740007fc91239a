package ocr

import (
	"context"
	"fmt"
	"image"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"gocv.io/x/gocv"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
)

// Recognition input geometry: RapidOCR's rec_img_shape (3, 48, 320).
const (
	recHeight = 48
	recWidth  = 320
)

// RecognizerOptions configure a recognizer.
type RecognizerOptions struct {
	// MaxBatch is the number of crops per model run
	// (MACHINE_LEARNING_MAX_BATCH_SIZE__OCR); 0 means 6.
	MaxBatch int
}

// Result is the OCR output in Immich's wire layout: per text, 8 box values
// (x1,y1,...,x4,y4 divided by the image width and height), the detection
// score, the text and its recognition score.
type Result struct {
	Box       []float32
	BoxScore  []float32
	Text      []string
	TextScore []float64
}

func emptyResult() *Result {
	return &Result{Box: []float32{}, BoxScore: []float32{}, Text: []string{}, TextScore: []float64{}}
}

// Recognizer reads text lines with a PP-OCR CTC recognition model.
type Recognizer struct {
	sess     *inference.Session
	chars    []string // "blank", dictionary, " "
	maxBatch int
	logger   *slog.Logger
}

// LoadRecognizer loads dir/model.onnx (Immich's
// <cache>/ocr/<name>/recognition) and its dictionary: the model's
// "character" metadata, or else dict.txt or ppocr_keys*.txt next to it.
func LoadRecognizer(dir string, sessions Sessions, opts RecognizerOptions, logger *slog.Logger) (*Recognizer, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBatch < 0 {
		return nil, fmt.Errorf("%w: max batch %d", ErrOptions, opts.MaxBatch)
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 6
	}
	path := filepath.Join(dir, "model.onnx")
	sess, err := sessions.NewSession(path, inference.SessionOptions{CacheDir: dir})
	if err != nil {
		return nil, fmt.Errorf("load OCR recognition model %s: %w", path, err)
	}
	r, err := newRecognizer(sess, dir, opts, logger.With("model", path))
	if err != nil {
		sess.Close()
		return nil, err
	}
	return r, nil
}

func newRecognizer(sess *inference.Session, dir string, opts RecognizerOptions, logger *slog.Logger) (*Recognizer, error) {
	if err := checkImageInput(sess, recHeight); err != nil {
		return nil, err
	}
	out := sess.Outputs()
	if len(out) == 0 || (out[0].Dims != nil && len(out[0].Dims) != 3) {
		return nil, fmt.Errorf("%w: %s: outputs %v, want [N,T,classes]", ErrModel, sess.Path(), out)
	}
	var dict []string
	source := "metadata"
	if s, ok := sess.Metadata(metadataKey); ok {
		dict = splitLines(s)
	} else {
		p, err := findDictFile(dir)
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrDictionary, err)
		}
		if dict, err = parseDictFile(b); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		source = p
	}
	if len(dict) == 0 {
		return nil, fmt.Errorf("%w: %s is empty", ErrDictionary, source)
	}
	chars := characters(dict)
	if d := out[0].Dims; d != nil && !d[2].Dynamic() && d[2].Value != int64(len(chars)) {
		// RapidOCR only fails when a class beyond the table comes out;
		// decoding does the same, but a mismatch is worth a warning.
		logger.Warn("OCR dictionary size does not match the model", "classes", d[2].Value, "dictionary", len(chars), "source", source)
	}
	logger.Debug("OCR recognizer loaded", "dictionary", source, "classes", len(chars), "maxBatch", opts.MaxBatch)
	return &Recognizer{sess: sess, chars: chars, maxBatch: opts.MaxBatch, logger: logger}, nil
}

// Provider is the execution provider running the model.
func (r *Recognizer) Provider() string { return r.sess.Provider() }

// Close releases the model once runs in progress have finished.
func (r *Recognizer) Close() error { return r.sess.Close() }

// Recognize reads the text in each box of img and keeps the texts whose
// score is strictly greater than minScore. Images under 32 pixels on a
// side, and empty boxes, give an empty result.
func (r *Recognizer) Recognize(ctx context.Context, img *imaging.Image, boxes *TextBoxes, minScore float32) (*Result, error) {
	start := time.Now()
	chunks, err := r.Plan(img, boxes)
	if err != nil || len(chunks) == 0 {
		return emptyResult(), err
	}
	texts := make([]string, len(boxes.Boxes))
	scores := make([]float64, len(boxes.Boxes))
	for _, chunk := range chunks {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: %w", inference.ErrCanceled, err)
		}
		lines, err := r.PrepareLines(img, boxes, chunk)
		if err != nil {
			return nil, err
		}
		out, err := r.RunLines(ctx, lines.Data, lines.Len(), lines.Width)
		if err != nil {
			return nil, err
		}
		if err := r.DecodeLines(lines, out, texts, scores); err != nil {
			return nil, err
		}
	}
	res := Assemble(img, boxes, texts, scores, minScore)
	r.logger.Debug("OCR recognition", "boxes", len(boxes.Boxes), "kept", len(res.Text), "took", time.Since(start))
	return res, nil
}

// Plan checks the boxes against img and returns the batches Immich
// recognizes them in: box indices sorted by the crops' aspect ratio, in
// chunks of MaxBatch. Nothing to read (no boxes, or an image under 32
// pixels on a side) gives no chunks. Plan, PrepareLines, RunLines,
// DecodeLines and Assemble are the steps of Recognize, for schedulers that
// run the model apart from the CPU work.
func (r *Recognizer) Plan(img *imaging.Image, boxes *TextBoxes) ([][]int, error) {
	if img == nil || img.W < minSide || img.H < minSide || boxes == nil || len(boxes.Boxes) == 0 {
		return nil, nil
	}
	if len(boxes.Scores) != len(boxes.Boxes) {
		return nil, fmt.Errorf("%w: %d boxes with %d scores", ErrOptions, len(boxes.Boxes), len(boxes.Scores))
	}
	// Detect's boxes lie within the image; anything else (NaN, corners
	// far outside) could ask for an arbitrarily large crop.
	for i, b := range boxes.Boxes {
		for _, c := range b {
			if !(c[0] >= 0 && c[0] <= float32(img.W) && c[1] >= 0 && c[1] <= float32(img.H)) {
				return nil, fmt.Errorf("%w: box %d %v lies outside the %d×%d image", ErrOptions, i, b, img.W, img.H)
			}
		}
	}
	n := len(boxes.Boxes)
	// The crop sizes are known from the boxes: sort by aspect ratio
	// first and crop one batch at a time, so that memory stays bounded
	// whatever the number of boxes. (RapidOCR sorts with numpy's
	// unstable default sort; a stable sort is used here.)
	ratios := make([]float64, n)
	for i, b := range boxes.Boxes {
		w, h := cropSize(b)
		if w > 0 && h > 0 && float64(h)*1.0/float64(w) >= 1.5 {
			w, h = h, w
		}
		if w > 0 && h > 0 {
			ratios[i] = float64(w) / float64(h)
		}
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case ratios[a] < ratios[b]:
			return -1
		case ratios[a] > ratios[b]:
			return 1
		}
		return 0
	})
	var chunks [][]int
	for beg := 0; beg < n; beg += r.maxBatch {
		chunks = append(chunks, order[beg:min(n, beg+r.maxBatch):min(n, beg+r.maxBatch)])
	}
	return chunks, nil
}

// Lines are the prepared model inputs of one chunk of text boxes.
type Lines struct {
	// Index is the box of each row.
	Index []int
	// Data holds len(Index) rows of 3×48×Width values (CHW, BGR).
	Data []float32
	// Width is the tensor width of the chunk, int(48·max ratio), at least
	// 320: rows of chunks with the same width may run together, and each
	// row's output depends only on the row.
	Width int
	// noArea marks rows whose box has no area: no text, score 0.
	noArea []bool
}

// Len is the number of rows.
func (l *Lines) Len() int { return len(l.Index) }

// PrepareLines crops the boxes of one chunk from Plan out of img (a
// perspective warp each) and builds their model input, as RapidOCR's
// resize_norm_img does for a batch.
func (r *Recognizer) PrepareLines(img *imaging.Image, boxes *TextBoxes, chunk []int) (*Lines, error) {
	crops := make([]*imaging.Image, 0, len(chunk))
	maxRatio := float64(recWidth) / float64(recHeight)
	l := &Lines{Index: chunk, noArea: make([]bool, len(chunk))}
	for k, i := range chunk {
		c := cropText(img, quad(boxes.Boxes[i]))
		crops = append(crops, c)
		if c != nil {
			maxRatio = max(maxRatio, float64(c.W)*1.0/float64(c.H))
		} else {
			l.noArea[k] = true
		}
	}
	input, err := recTensor(crops, maxRatio)
	if err != nil {
		return nil, err
	}
	l.Data, l.Width = input.Float32, int(input.Shape[3])
	return l, nil
}

// LineScores are the model's outputs for rows of lines: per row, T steps
// of C class probabilities.
type LineScores struct {
	Data []float32
	T, C int
}

// Row is the output of row k.
func (s *LineScores) Row(k int) []float32 { return s.Data[k*s.T*s.C : (k+1)*s.T*s.C] }

// RunLines runs n rows of prepared lines of one width (n×3×48×width
// values, from one or more chunks) through the model.
func (r *Recognizer) RunLines(ctx context.Context, data []float32, n, width int) (*LineScores, error) {
	if n <= 0 || width <= 0 || len(data) != n*3*recHeight*width {
		return nil, fmt.Errorf("%w: %d values for %d lines of width %d", ErrOptions, len(data), n, width)
	}
	out, err := r.sess.Run(ctx, inference.F32(data, int64(n), 3, recHeight, int64(width)))
	if err != nil {
		return nil, fmt.Errorf("OCR recognition: %w", err)
	}
	o := out[0]
	if o.Float32 == nil || len(o.Shape) != 3 || o.Shape[0] != int64(n) || len(o.Float32) != o.Len() {
		return nil, fmt.Errorf("%w: %s: output shape %v for a batch of %d", ErrModel, r.sess.Path(), o.Shape, n)
	}
	return &LineScores{Data: o.Float32, T: int(o.Shape[1]), C: int(o.Shape[2])}, nil
}

// DecodeLines decodes the outputs of lines (row k of out belongs to row k
// of lines) with CTC into texts and scores, indexed by box.
func (r *Recognizer) DecodeLines(lines *Lines, out *LineScores, texts []string, scores []float64) error {
	for k, i := range lines.Index {
		if lines.noArea[k] {
			continue // no area: no text, score 0
		}
		var err error
		texts[i], scores[i], err = ctcDecode(out.Row(k), out.T, out.C, r.chars)
		if err != nil {
			return fmt.Errorf("%s: %w", r.sess.Path(), err)
		}
	}
	return nil
}

// Assemble keeps the texts whose score is strictly greater than minScore,
// in box order, in Immich's wire layout.
func Assemble(img *imaging.Image, boxes *TextBoxes, texts []string, scores []float64, minScore float32) *Result {
	res := emptyResult()
	if img == nil || boxes == nil {
		return res
	}
	threshold := decimal64(minScore)
	fw, fh := float32(img.W), float32(img.H)
	for i, b := range boxes.Boxes {
		if i >= len(scores) || !(scores[i] > threshold) {
			continue
		}
		for _, c := range b {
			res.Box = append(res.Box, c[0]/fw, c[1]/fh)
		}
		res.BoxScore = append(res.BoxScore, boxes.Scores[i])
		res.Text = append(res.Text, texts[i])
		res.TextScore = append(res.TextScore, scores[i])
	}
	return res
}

// recTensor is RapidOCR's resize_norm_img for a batch: each crop resized
// to height 48 and width min(ceil(48·w/h), W) with OpenCV's bilinear
// resize, where W = int(48·maxRatio) is the batch width; BGR, x/255-0.5
// then /0.5, zero-padded on the right. A nil crop stays all zeros.
func recTensor(crops []*imaging.Image, maxRatio float64) (inference.Tensor, error) {
	width := int(recHeight * maxRatio)
	plane := recHeight * width
	data := make([]float32, len(crops)*3*plane)
	for k, c := range crops {
		if c == nil {
			continue
		}
		ratio := float64(c.W) / float64(c.H)
		rw := width
		if ce := math.Ceil(recHeight * ratio); ce <= float64(width) {
			rw = int(ce)
		}
		px, err := resizeBilinear(c, rw, recHeight)
		if err != nil {
			return inference.Tensor{}, err
		}
		base := k * 3 * plane
		for y := range recHeight {
			for x := range rw {
				p := px[(y*rw+x)*3:]
				for ch := range 3 {
					v := float32(p[2-ch]) / 255 // BGR
					v -= 0.5
					v /= 0.5
					data[base+ch*plane+y*width+x] = v
				}
			}
		}
	}
	return inference.F32(data, int64(len(crops)), 3, recHeight, int64(width)), nil
}

// resizeBilinear is cv2.resize with INTER_LINEAR (channel order does not
// matter to it).
func resizeBilinear(im *imaging.Image, w, h int) ([]byte, error) {
	src, err := im.Mat()
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dst := gocv.NewMat()
	defer dst.Close()
	gocv.Resize(src, &dst, image.Pt(w, h), 0, 0, gocv.InterpolationLinear)
	b, err := dst.DataPtrUint8()
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), b...), nil
}
