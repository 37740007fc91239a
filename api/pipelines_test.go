package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"

	"github.com/mlserve/mlserve/inference/face"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/pool"
)

// faceRepo lays out a face pack from the real models that ship in npm
// packages (UltraFace-type detector, 68-point landmarks, MobileFaceNet-like
// recognizer) and returns it as the files of a hub repository. These are a
// vendor's models, used here only because Immich's cannot be had.
func faceRepo(t *testing.T) map[string][]byte {
	t.Helper()
	dir := t.TempDir()
	if err := face.WriteTestPack(dir,
		testenv.TestData(t, "models/faceplugin/fr_detect.onnx"),
		testenv.TestData(t, "models/faceplugin/fr_landmark.onnx"),
		testenv.TestData(t, "models/faceplugin/fr_feature.onnx")); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

type wireFace struct {
	BoundingBox struct{ X1, Y1, X2, Y2 float64 }
	Embedding   string
	Score       float64
}

func cosine(a, b []float32) float64 {
	var d, na, nb float64
	for i := range a {
		d += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return d / math.Sqrt(na*nb)
}

// TestImmichServerFaces sends Immich's face request (detection with
// minScore + recognition) for a real photo and checks the wire format:
// integral, unclipped boxes, 512-float embedding strings, a score, and the
// image size; then detection alone, which returns the detector's arrays.
func TestImmichServerFaces(t *testing.T) {
	st := startStack(t, map[string]map[string][]byte{"immich-app/buffalo_l": faceRepo(t)}, pool.ServiceOptions{})
	img, err := os.ReadFile(testenv.TestData(t, "photos/sample1.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	entries := `{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":{"minScore":0.7}},"recognition":{"modelName":"buffalo_l"}}}`
	resp := immichRequest(t, st.url, entries, img, nil)
	if p := resp.Header.Get("X-Mlserve-Provider"); !strings.Contains(p, "facial-recognition/recognition=CPU") {
		t.Errorf("provider header %q", p)
	}
	body := decodeBody(t, resp)
	var faces []wireFace
	if err := json.Unmarshal(body["facial-recognition"], &faces); err != nil {
		t.Fatalf("%v: %s", err, body["facial-recognition"])
	}
	if len(faces) != 3 {
		t.Fatalf("%d faces in sample1.jpg, want 3", len(faces))
	}
	var embs [][]float32
	for _, f := range faces {
		b := f.BoundingBox
		for _, v := range []float64{b.X1, b.Y1, b.X2, b.Y2} {
			if v != math.Round(v) {
				t.Errorf("box value %v is not rounded", v)
			}
		}
		if b.X2 <= b.X1 || b.Y2 <= b.Y1 {
			t.Errorf("degenerate box %+v", b)
		}
		if f.Score < 0.7 || f.Score > 1 {
			t.Errorf("score %v", f.Score)
		}
		var e []float32
		if err := json.Unmarshal([]byte(f.Embedding), &e); err != nil || len(e) != 512 {
			t.Fatalf("embedding: %d values, %v", len(e), err)
		}
		embs = append(embs, e)
	}
	// Three different people.
	for i := range embs {
		for j := i + 1; j < len(embs); j++ {
			if c := cosine(embs[i], embs[j]); c > 0.5 {
				t.Errorf("faces %d and %d have cosine %.2f", i, j, c)
			}
		}
	}
	var w, h int
	if err := json.Unmarshal(body["imageWidth"], &w); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body["imageHeight"], &h); err != nil {
		t.Fatal(err)
	}
	if w != 1920 && h != 1920 {
		t.Errorf("image %d×%d", w, h)
	}

	// Detection alone returns the detector's output.
	body = immichJSON(t, st.url, `{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":{"minScore":0.7}}}}`, img, nil)
	var det struct {
		Boxes     [][4]float64
		Scores    []float64
		Landmarks [][5][2]float64
	}
	if err := json.Unmarshal(body["facial-recognition"], &det); err != nil {
		t.Fatalf("%v: %s", err, body["facial-recognition"])
	}
	if len(det.Boxes) != 3 || len(det.Scores) != 3 || len(det.Landmarks) != 3 {
		t.Fatalf("detection output %+v", det)
	}

	// No face: an empty list, no recognition run.
	body = immichJSON(t, st.url, entries, pngBytes(t, 320, 240), nil)
	if string(body["facial-recognition"]) != "[]" {
		t.Fatalf("no-face image gave %s", body["facial-recognition"])
	}
}

// TestImmichServerFacesSixPhotos sends the six sample photos (22 faces)
// through /predict as the Immich server does and matches the faces found
// against the ground truth kept with the face package's tests: a face
// counts when a box's centre lies within half a face width of a true
// centre.
func TestImmichServerFacesSixPhotos(t *testing.T) {
	st := startStack(t, map[string]map[string][]byte{"immich-app/buffalo_l": faceRepo(t)}, pool.ServiceOptions{})
	raw, err := os.ReadFile(filepath.Join(testenv.Root(), "inference", "face", "testdata", "photo_faces.json"))
	if err != nil {
		t.Fatal(err)
	}
	var truth struct{ Faces map[string][][3]float64 }
	if err := json.Unmarshal(raw, &truth); err != nil {
		t.Fatal(err)
	}
	entries := `{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":{"minScore":0.7}},"recognition":{"modelName":"buffalo_l"}}}`
	total, found, falsePos := 0, 0, 0
	for i := 1; i <= 6; i++ {
		name := fmt.Sprintf("sample%d.jpg", i)
		img, err := os.ReadFile(testenv.TestData(t, "photos/"+name))
		if err != nil {
			t.Fatal(err)
		}
		var faces []wireFace
		if err := json.Unmarshal(immichJSON(t, st.url, entries, img, nil)["facial-recognition"], &faces); err != nil {
			t.Fatal(err)
		}
		want := truth.Faces[name]
		total += len(want)
		matched := make([]bool, len(want))
		for _, f := range faces {
			cx, cy := (f.BoundingBox.X1+f.BoundingBox.X2)/2, (f.BoundingBox.Y1+f.BoundingBox.Y2)/2
			hit := false
			for j, w := range want {
				if !matched[j] && math.Hypot(cx-w[0], cy-w[1]) < w[2]/2 {
					matched[j], hit = true, true
					break
				}
			}
			if hit {
				found++
			} else {
				falsePos++
			}
		}
	}
	t.Logf("faces found %d of %d, false positives %d", found, total, falsePos)
	if total != 22 || found < 21 || falsePos > 1 {
		t.Fatalf("found %d of %d faces with %d false positives; want at least 21 and at most 1", found, total, falsePos)
	}
}

func renderLines(t *testing.T, w, h int, lines []string, size float64) []byte {
	t.Helper()
	f, err := opentype.Parse(goregular.TTF)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := opentype.NewFace(f, &opentype.FaceOptions{Size: size, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		t.Fatal(err)
	}
	im := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(im, im.Bounds(), image.White, image.Point{}, draw.Src)
	for i, l := range lines {
		d := font.Drawer{Dst: im, Src: image.Black, Face: fc, Dot: fixed.P(30, int(size*1.2)*(i+1)+10)}
		d.DrawString(l)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, im); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestImmichServerOCR sends Immich's OCR request for rendered text, with
// the real PP-OCRv4 models placed in the cache as an existing Immich
// volume would hold PP-OCRv5 ones (so nothing is downloaded).
func TestImmichServerOCR(t *testing.T) {
	st := startStack(t, nil, pool.ServiceOptions{})
	link := func(src, dst string) {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(src, dst); err != nil {
			t.Fatal(err)
		}
	}
	base := filepath.Join(st.cache, "ocr", "PP-OCRv5_mobile")
	link(testenv.TestData(t, "models/ppocr/ch_PP-OCRv4_det_infer.onnx"), filepath.Join(base, "detection", "model.onnx"))
	link(testenv.TestData(t, "models/ppocr/ch_PP-OCRv4_rec_infer.onnx"), filepath.Join(base, "recognition", "model.onnx"))
	link(testenv.TestData(t, "models/ppocr/ppocr_keys_v1.txt"), filepath.Join(base, "recognition", "ppocr_keys_v1.txt"))

	img := renderLines(t, 900, 260, []string{"Immich machine learning", "Drop-in replacement 2026"}, 40)
	entries := `{"ocr":{"detection":{"modelName":"PP-OCRv5_mobile","options":{"minScore":0.5,"maxResolution":736}},"recognition":{"modelName":"PP-OCRv5_mobile","options":{"minScore":0.8}}}}`
	body := immichJSON(t, st.url, entries, img, nil)
	if st.hub.Total() != 0 {
		t.Errorf("%d hub requests for cached models", st.hub.Total())
	}
	var res struct {
		Box       []float64
		BoxScore  []float64
		Text      []string
		TextScore []float64
	}
	if err := json.Unmarshal(body["ocr"], &res); err != nil {
		t.Fatalf("%v: %s", err, body["ocr"])
	}
	want := []string{"Immich machine learning", "Drop-in replacement 2026"}
	if len(res.Text) != len(want) {
		t.Fatalf("texts %q, want %q", res.Text, want)
	}
	for i := range want {
		if res.Text[i] != want[i] {
			t.Errorf("line %d: %q, want %q", i, res.Text[i], want[i])
		}
	}
	if len(res.Box) != 8*len(res.Text) || len(res.BoxScore) != len(res.Text) || len(res.TextScore) != len(res.Text) {
		t.Fatalf("lengths box %d, boxScore %d, textScore %d for %d texts", len(res.Box), len(res.BoxScore), len(res.TextScore), len(res.Text))
	}
	for _, v := range res.Box {
		if v < 0 || v > 1 {
			t.Fatalf("box value %v not normalised", v)
		}
	}
	for _, s := range res.TextScore {
		if s <= 0.8 {
			t.Errorf("text score %v kept below minScore", s)
		}
	}
	// An image under 32 px gives the empty result.
	body = immichJSON(t, st.url, entries, pngBytes(t, 31, 200), nil)
	if string(body["ocr"]) != `{"box":[],"boxScore":[],"text":[],"textScore":[]}` {
		t.Errorf("small image: %s", body["ocr"])
	}
}
