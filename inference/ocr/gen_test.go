package ocr

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/onnx"
)

// Tests on generated graphs with the PP-OCR signatures (modelgen): the
// detector marks dark ink, so boxes can be predicted; the recogniser's
// weights are random, so its texts are not words, but they are fixed.

func writeModel(t testing.TB, dir string, m onnx.Model) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile(filepath.Join(dir, "model.onnx")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func genDetector(t *testing.T) *Detector {
	t.Helper()
	d, err := LoadDetector(writeModel(t, t.TempDir(), modelgen.PPOCRDetection{}.Model()), testenv.Runtime(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func genRecognizer(t *testing.T, g modelgen.PPOCRRecognition, opts RecognizerOptions) *Recognizer {
	t.Helper()
	r, err := LoadRecognizer(writeModel(t, t.TempDir(), g.Model()), testenv.Runtime(t), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// bars is a white image with black rectangles.
func bars(w, h int, rects ...image.Rectangle) *imaging.Image {
	im := &imaging.Image{W: w, H: h, Pix: make([]byte, w*h*3)}
	for i := range im.Pix {
		im.Pix[i] = 255
	}
	for _, r := range rects {
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				copy(im.Pix[(y*w+x)*3:], []byte{0, 0, 0})
			}
		}
	}
	return im
}

func TestDetectGenerated(t *testing.T) {
	d := genDetector(t)
	if d.Provider() != inference.CPU {
		t.Errorf("provider %q", d.Provider())
	}
	ctx := context.Background()
	// Two "words" on one line and one below, out of order on purpose.
	rects := []image.Rectangle{
		image.Rect(300, 200, 520, 230), // second line
		image.Rect(260, 60, 420, 92),   // first line, right
		image.Rect(40, 60, 200, 90),    // first line, left
	}
	for _, tc := range []struct {
		name  string
		scale int
		opts  DetectOptions
	}{
		{"defaults", 1, DefaultDetectOptions()},
		{"slow score", 1, DetectOptions{MinScore: 0.5, ScoreMode: "slow"}},
		{"downscaled 4x", 4, DefaultDetectOptions()},
		{"max resolution 200", 1, DetectOptions{MinScore: 0.5, MaxResolution: 200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rs []image.Rectangle
			for _, r := range rects {
				rs = append(rs, image.Rectangle{r.Min.Mul(tc.scale), r.Max.Mul(tc.scale)})
			}
			img := bars(600*tc.scale, 300*tc.scale, rs...)
			got, err := d.Detect(ctx, img, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Boxes) != 3 || len(got.Scores) != 3 {
				t.Fatalf("%d boxes %v", len(got.Boxes), got.Boxes)
			}
			// Reading order: line 1 left, line 1 right, line 2.
			for i, r := range []image.Rectangle{rs[2], rs[1], rs[0]} {
				b := got.Boxes[i]
				tol := float64(3 * tc.scale)
				if tc.opts.MaxResolution == 200 {
					tol = 8
				}
				if _, ok := containsInk(b, ink{pixels: []image.Point{r.Min, r.Max.Sub(image.Pt(1, 1))}}, tol); !ok {
					t.Errorf("box %d %v does not hold %v", i, b, r)
				}
				// Unclipping grows boxes by about half their height.
				if !rectOf(b).In(r.Inset(-r.Dy())) {
					t.Errorf("box %d %v too large for %v", i, b, r)
				}
				if got.Scores[i] < 0.8 {
					t.Errorf("score %d = %v", i, got.Scores[i])
				}
			}
		})
	}
	t.Run("threshold", func(t *testing.T) {
		got, err := d.Detect(ctx, bars(600, 300, rects...), DetectOptions{MinScore: 0.9999})
		if err != nil || len(got.Boxes) != 0 {
			t.Errorf("%v %v, want no boxes above 0.9999", got, err)
		}
	})
	t.Run("small and blank", func(t *testing.T) {
		for _, img := range []*imaging.Image{bars(31, 100), bars(100, 31), bars(200, 200), nil} {
			got, err := d.Detect(ctx, img, DefaultDetectOptions())
			if err != nil || got.Boxes == nil || got.Scores == nil || len(got.Boxes) != 0 {
				t.Errorf("%v %v, want empty", got, err)
			}
		}
	})
	t.Run("bad options", func(t *testing.T) {
		if _, err := d.Detect(ctx, bars(100, 100), DetectOptions{MaxResolution: -1}); !errors.Is(err, ErrOptions) {
			t.Errorf("err %v, want ErrOptions", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := d.Detect(cctx, bars(600, 300, rects...), DefaultDetectOptions()); !errors.Is(err, inference.ErrCanceled) {
			t.Errorf("err %v, want ErrCanceled", err)
		}
	})
}

func TestRecognizeGenerated(t *testing.T) {
	ctx := context.Background()
	img := bars(400, 240, image.Rect(20, 20, 200, 50), image.Rect(250, 100, 280, 230))
	boxes := &TextBoxes{
		Boxes: [][4][2]float32{
			{{10, 10}, {210, 10}, {210, 60}, {10, 60}},
			{{240, 90}, {290, 90}, {290, 235}, {240, 235}}, // tall: turned
			{{50, 150}, {200, 120}, {205, 150}, {55, 180}}, // tilted
			{{0, 0}, {399, 0}, {399, 239}, {0, 239}},       // whole image
		},
		Scores: []float32{0.9, 0.8, 0.7, 0.6},
	}
	g := modelgen.PPOCRRecognition{Seed: 3}
	one := genRecognizer(t, g, RecognizerOptions{MaxBatch: 1})
	if one.Provider() != inference.CPU {
		t.Errorf("provider %q", one.Provider())
	}

	// Expected texts, box by box, straight from the session.
	var texts []string
	var scores []float64
	for _, b := range boxes.Boxes {
		c := cropText(img, b)
		in, err := recTensor([]*imaging.Image{c}, max(float64(recWidth)/recHeight, float64(c.W)/float64(c.H)))
		if err != nil {
			t.Fatal(err)
		}
		out, err := one.sess.Run(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		text, score, err := ctcDecode(out[0].Float32, int(out[0].Shape[1]), int(out[0].Shape[2]), one.chars)
		if err != nil {
			t.Fatal(err)
		}
		texts, scores = append(texts, text), append(scores, score)
	}
	t.Logf("texts %q scores %v", texts, scores)
	res, err := one.Recognize(ctx, img, boxes, -1)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Text, "|") != strings.Join(texts, "|") {
		t.Fatalf("texts %q, want %q", res.Text, texts)
	}
	for i := range scores {
		if res.TextScore[i] != scores[i] || res.BoxScore[i] != boxes.Scores[i] {
			t.Errorf("%d: scores %v %v, want %v %v", i, res.TextScore[i], res.BoxScore[i], scores[i], boxes.Scores[i])
		}
		for k := range 4 {
			if res.Box[8*i+2*k] != boxes.Boxes[i][k][0]/400 || res.Box[8*i+2*k+1] != boxes.Boxes[i][k][1]/240 {
				t.Errorf("%d: box %v", i, res.Box[8*i:8*i+8])
			}
		}
	}

	// minScore keeps scores strictly above it. Scores have 5 decimals,
	// which survive the float32 option (0.12345 stays 0.12345).
	keep, err := one.Recognize(ctx, img, boxes, float32(scores[0]))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i, s := range scores {
		if s > scores[0] {
			want = append(want, texts[i])
		}
	}
	if strings.Join(keep.Text, "|") != strings.Join(want, "|") || len(keep.TextScore) != len(want) {
		t.Errorf("minScore %v kept %q %v, want %q", scores[0], keep.Text, keep.TextScore, want)
	}

	// Batches of up to 6 read every box too (texts may differ: crops
	// share the batch's padded width).
	six := genRecognizer(t, g, RecognizerOptions{})
	res6, err := six.Recognize(ctx, img, boxes, -1)
	if err != nil || len(res6.Text) != 4 {
		t.Fatalf("%v %v", res6, err)
	}
	if six.maxBatch != 6 {
		t.Errorf("default max batch %d", six.maxBatch)
	}

	for _, tc := range []struct {
		name  string
		img   *imaging.Image
		boxes *TextBoxes
	}{
		{"no boxes", img, &TextBoxes{}},
		{"nil boxes", img, nil},
		{"small image", bars(31, 300), boxes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := one.Recognize(ctx, tc.img, tc.boxes, 0.5)
			if err != nil || r.Box == nil || r.BoxScore == nil || r.Text == nil || r.TextScore == nil || len(r.Text) != 0 {
				t.Errorf("%+v %v, want empty", r, err)
			}
		})
	}
	if _, err := one.Recognize(ctx, img, &TextBoxes{Boxes: boxes.Boxes}, 0.5); !errors.Is(err, ErrOptions) {
		t.Errorf("boxes without scores: %v", err)
	}
	for _, b := range [][4][2]float32{
		{{0, 0}, {401, 0}, {401, 10}, {0, 10}},
		{{0, 0}, {10, 0}, {10, float32(math.NaN())}, {0, 10}},
		{{-1, 0}, {10, 0}, {10, 10}, {0, 10}},
	} {
		if _, err := one.Recognize(ctx, img, &TextBoxes{Boxes: [][4][2]float32{b}, Scores: []float32{1}}, 0.5); !errors.Is(err, ErrOptions) {
			t.Errorf("box %v: %v, want ErrOptions", b, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := one.Recognize(cctx, img, boxes, 0.5); !errors.Is(err, inference.ErrCanceled) {
		t.Errorf("canceled: %v", err)
	}
}

func TestLoadRecognizerDictionary(t *testing.T) {
	rt := testenv.Runtime(t)
	g := modelgen.PPOCRRecognition{Dictionary: []string{"x", "y", "\u00e9"}, OmitDictionary: true}

	dir := writeModel(t, t.TempDir(), g.Model())
	if _, err := LoadRecognizer(dir, rt, RecognizerOptions{}, nil); !errors.Is(err, ErrDictionary) {
		t.Fatalf("no dictionary: %v, want ErrDictionary", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ppocr_keys_v1.txt"), []byte("x\r\ny\n\u00e9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := LoadRecognizer(dir, rt, RecognizerOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(r.chars, "|") != "blank|x|y|\u00e9| " {
		t.Errorf("characters %q", r.chars)
	}
	r.Close()

	// Metadata wins over a file.
	g.OmitDictionary = false
	g.Dictionary = []string{"p", "q", "r"}
	dir = writeModel(t, dir, g.Model())
	r, err = LoadRecognizer(dir, rt, RecognizerOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(r.chars, "|") != "blank|p|q|r| " {
		t.Errorf("characters %q", r.chars)
	}
	r.Close()

	if _, err := LoadRecognizer(dir, rt, RecognizerOptions{MaxBatch: -1}, nil); !errors.Is(err, ErrOptions) {
		t.Errorf("negative batch: %v", err)
	}
}

func TestLoadWrongModel(t *testing.T) {
	rt := testenv.Runtime(t)
	det := writeModel(t, t.TempDir(), modelgen.PPOCRDetection{}.Model())
	if _, err := LoadRecognizer(det, rt, RecognizerOptions{}, nil); !errors.Is(err, ErrModel) {
		t.Errorf("detector as recogniser: %v, want ErrModel", err)
	}
	rec := writeModel(t, t.TempDir(), modelgen.PPOCRRecognition{}.Model())
	if _, err := LoadDetector(rec, rt, nil); !errors.Is(err, ErrModel) {
		t.Errorf("recogniser as detector: %v, want ErrModel", err)
	}
	clip := writeModel(t, t.TempDir(), modelgen.CLIPVisual{Size: 224, Dim: 8}.Model())
	if _, err := LoadDetector(clip, rt, nil); !errors.Is(err, ErrModel) {
		t.Errorf("CLIP as detector: %v, want ErrModel", err)
	}
	if _, err := LoadDetector(t.TempDir(), rt, nil); err == nil {
		t.Error("missing model loaded")
	}
}

// TestConcurrent runs detection and recognition from several goroutines
// on shared models (go test -race).
func TestConcurrent(t *testing.T) {
	d := genDetector(t)
	r := genRecognizer(t, modelgen.PPOCRRecognition{Seed: 4}, RecognizerOptions{MaxBatch: 2})
	img := bars(640, 480, image.Rect(40, 40, 300, 80), image.Rect(40, 200, 500, 240), image.Rect(400, 300, 430, 460))
	ctx := context.Background()
	want := ""
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 3 {
				boxes, err := d.Detect(ctx, img, DefaultDetectOptions())
				if err != nil {
					t.Error(err)
					return
				}
				res, err := r.Recognize(ctx, img, boxes, 0)
				if err != nil {
					t.Error(err)
					return
				}
				got := fmt.Sprint(boxes.Boxes, res.Text, res.TextScore)
				mu.Lock()
				if want == "" {
					want = got
				} else if got != want {
					t.Errorf("results differ between runs:\n%s\n%s", got, want)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
