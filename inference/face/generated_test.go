package face_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/face"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/onnx"
)

// writeModelDir writes m as dir/model.onnx (and model.json when cfg is not
// empty) and returns dir.
func writeModelDir(t testing.TB, m onnx.Model, cfg string) string {
	t.Helper()
	dir := t.TempDir()
	if err := m.WriteFile(filepath.Join(dir, face.ModelFile)); err != nil {
		t.Fatal(err)
	}
	if cfg != "" {
		if err := os.WriteFile(filepath.Join(dir, face.ConfigFile), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func scrfdDetector(t testing.TB, gen modelgen.SCRFD) *face.Detector {
	t.Helper()
	d, err := face.LoadDetector(writeModelDir(t, gen.Model(), ""), testenv.Runtime(t), face.DetectorOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// squares draws white squares (x0, y0, side) on a black w×h image.
func squares(w, h int, sq ...[3]int) *imaging.Image {
	img := &imaging.Image{W: w, H: h, Pix: make([]byte, w*h*3)}
	for _, s := range sq {
		for y := max(0, s[1]); y < min(h, s[1]+s[2]); y++ {
			for x := max(0, s[0]); x < min(w, s[0]+s[2]); x++ {
				i := (y*w + x) * 3
				img.Pix[i], img.Pix[i+1], img.Pix[i+2] = 255, 255, 255
			}
		}
	}
	return img
}

// transpose swaps the axes of an image (a portrait version of a landscape
// scene).
func transpose(img *imaging.Image) *imaging.Image {
	out := &imaging.Image{W: img.H, H: img.W, Pix: make([]byte, len(img.Pix))}
	for y := range img.H {
		for x := range img.W {
			copy(out.Pix[(x*out.W+y)*3:(x*out.W+y)*3+3], img.Pix[(y*img.W+x)*3:(y*img.W+x)*3+3])
		}
	}
	return out
}

// TestSCRFDFindsSquares runs the whole SCRFD path (letterbox, blob, the
// generated graph with buffalo_l's signature, decoding, NMS, scaling back)
// on squares the generated detector responds to: a 1280×960 image is
// letterboxed at scale 0.5, so squares of 64, 128 and 256 pixels centred on
// the anchor grid become perfect detections at strides 8, 16 and 32.
func TestSCRFDFindsSquares(t *testing.T) {
	sq := [][3]int{{288, 288, 64}, {736, 192, 128}, {512, 576, 256}}
	want := [][4]float32{{288, 288, 352, 352}, {736, 192, 864, 320}, {512, 576, 768, 832}}
	landscape := squares(1280, 960, sq...)
	for _, batched := range []bool{false, true} {
		det := scrfdDetector(t, modelgen.SCRFD{BatchedOutputs: batched})
		if det.Family() != face.FamilySCRFD {
			t.Fatalf("family %q", det.Family())
		}
		for _, portrait := range []bool{false, true} {
			img := landscape
			if portrait {
				img = transpose(landscape)
			}
			d, err := det.Detect(context.Background(), img, 0.5)
			if err != nil {
				t.Fatal(err)
			}
			if d.Len() != len(want) {
				t.Fatalf("batched=%v portrait=%v: %d faces %v %v, want %d", batched, portrait, d.Len(), d.Boxes, d.Scores, len(want))
			}
			for _, w := range want {
				if portrait {
					w = [4]float32{w[1], w[0], w[3], w[2]}
				}
				i := indexOf(d.Boxes, w)
				if i < 0 {
					t.Errorf("batched=%v portrait=%v: no box %v in %v", batched, portrait, w, d.Boxes)
					continue
				}
				if s := d.Scores[i]; s < 0.997 || s > 0.998 {
					t.Errorf("box %v score %v, want sigmoid(6)", w, s)
				}
				// The generator lays the ArcFace template over the box.
				side := w[2] - w[0]
				for p, tp := range face.ArcFaceTemplate {
					wx := w[0] + side/2 + (tp[0]-56)/112*side
					wy := w[1] + side/2 + (tp[1]-56)/112*side
					if portrait {
						// The template is not symmetric under transposition:
						// only check the points lie in the box.
						wx, wy = d.Landmarks[i][p][0], d.Landmarks[i][p][1]
					}
					if math.Abs(float64(d.Landmarks[i][p][0]-wx)) > 0.01 || math.Abs(float64(d.Landmarks[i][p][1]-wy)) > 0.01 ||
						wx < w[0] || wx > w[2] || wy < w[1] || wy > w[3] {
						t.Errorf("landmark %d = %v, want (%v, %v) in %v", p, d.Landmarks[i][p], wx, wy, w)
					}
				}
			}
		}
	}
}

func indexOf(boxes [][4]float32, b [4]float32) int {
	for i, x := range boxes {
		if x == b {
			return i
		}
	}
	return -1
}

func TestSCRFDMinScore(t *testing.T) {
	det := scrfdDetector(t, modelgen.SCRFD{})
	// The second square fills 3/4 of its stride-16 window: score 0.68.
	img := squares(1280, 960, [3]int{288, 288, 64}, [3]int{752, 208, 96})
	for _, c := range []struct {
		min  float32
		want int
	}{{0.5, 2}, {0.7, 1}, {0.998, 0}, {float32(math.NaN()), 0}} {
		d, err := det.Detect(context.Background(), img, c.min)
		if err != nil {
			t.Fatal(err)
		}
		if d.Len() != c.want {
			t.Errorf("minScore %v: %d faces (%v), want %d", c.min, d.Len(), d.Scores, c.want)
		}
	}
	// Black: nothing, and an empty (not nil) result.
	d, err := det.Detect(context.Background(), squares(600, 800), 0.034)
	if err != nil || d.Len() != 0 || d.Boxes == nil || d.Scores == nil || d.Landmarks == nil {
		t.Errorf("black image: %+v, %v; want empty slices", d, err)
	}
}

func TestSCRFDCanceled(t *testing.T) {
	det := scrfdDetector(t, modelgen.SCRFD{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := det.Detect(ctx, squares(64, 64), 0.5)
	if !errors.Is(err, inference.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Errorf("Detect with a canceled context: %v", err)
	}
}

func arcFaceRecognizer(t testing.TB, gen modelgen.ArcFace, cfg string, maxBatch int) *face.Recognizer {
	t.Helper()
	r, err := face.LoadRecognizer(writeModelDir(t, gen.Model(), cfg), testenv.Runtime(t), face.RecognizerOptions{MaxBatch: maxBatch}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// syntheticFaces places n five-point sets on a textured image.
func syntheticFaces(n int) (*imaging.Image, *face.Detections) {
	img := &imaging.Image{W: 800, H: 600, Pix: make([]byte, 800*600*3)}
	for i := range img.Pix {
		x, y := (i/3)%800, (i/3)/800
		img.Pix[i] = byte((x*7 + y*3 + (x*y)>>5 + (i%3)*85) & 255)
	}
	d := &face.Detections{}
	for i := range n {
		ox, oy := float32(40+(i%6)*120), float32(40+(i/6)*130)
		scale := 0.8 + float32(i%3)*0.15
		var l [5][2]float32
		for p, tp := range face.ArcFaceTemplate {
			l[p] = [2]float32{ox + tp[0]*scale, oy + tp[1]*scale}
		}
		d.Boxes = append(d.Boxes, [4]float32{ox, oy, ox + 112*scale, oy + 112*scale})
		d.Scores = append(d.Scores, 0.9-float32(i)/100)
		d.Landmarks = append(d.Landmarks, l)
	}
	return img, d
}

func TestRecognizerBatching(t *testing.T) {
	const seed = 11
	img, det := syntheticFaces(7)
	ctx := context.Background()
	ref, err := arcFaceRecognizer(t, modelgen.ArcFace{Seed: seed}, "", 0).Recognize(ctx, img, det)
	if err != nil {
		t.Fatal(err)
	}
	if len(ref) != 7 {
		t.Fatalf("%d faces, want 7", len(ref))
	}
	for i, f := range ref {
		if f.Box != det.Boxes[i] || f.Score != det.Scores[i] || len(f.Embedding) != 512 {
			t.Fatalf("face %d: %v %v len %d", i, f.Box, f.Score, len(f.Embedding))
		}
		if i > 0 && f.Embedding[0] == ref[i-1].Embedding[0] {
			t.Errorf("faces %d and %d have the same embedding", i-1, i)
		}
	}
	for _, c := range []struct {
		name     string
		gen      modelgen.ArcFace
		maxBatch int
	}{
		{"max batch 1", modelgen.ArcFace{Seed: seed}, 1},
		{"max batch 3", modelgen.ArcFace{Seed: seed}, 3},
		{"max batch above count", modelgen.ArcFace{Seed: seed}, 64},
		{"fixed batch 1", modelgen.ArcFace{Seed: seed, Batch: 1}, 0},
		{"fixed batch 1, max batch 4", modelgen.ArcFace{Seed: seed, Batch: 1}, 4},
		{"fixed batch 4 (padded)", modelgen.ArcFace{Seed: seed, Batch: 4}, 0},
		// MXNet-converted: normalises in the graph, so it must be fed raw
		// pixels (mean 0, std 1) to give the same embeddings.
		{"mxnet", modelgen.ArcFace{Seed: seed, MXNet: true}, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := arcFaceRecognizer(t, c.gen, "", c.maxBatch).Recognize(ctx, img, det)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(ref) {
				t.Fatalf("%d faces, want %d", len(got), len(ref))
			}
			for i := range ref {
				if c := cosineF(got[i].Embedding, ref[i].Embedding); c < 0.99999 {
					t.Errorf("face %d: cosine %.6f with the batch-of-all result", i, c)
				}
			}
		})
	}
}

func cosineF(a, b []float32) float64 { return cosine(a, b) }

func TestRecognizerNormalisation(t *testing.T) {
	img, det := syntheticFaces(2)
	ctx := context.Background()
	plain := arcFaceRecognizer(t, modelgen.ArcFace{Seed: 3}, "", 0)
	base, err := plain.Recognize(ctx, img, det)
	if err != nil {
		t.Fatal(err)
	}
	// The same model told to use MXNet's normalisation, or MobileFaceNet's,
	// must give different embeddings: the normalisation reaches the model.
	for _, cfg := range []string{`{"mean": 0, "std": 1}`, `{"family": "mobilefacenet"}`} {
		got, err := arcFaceRecognizer(t, modelgen.ArcFace{Seed: 3}, cfg, 0).Recognize(ctx, img, det)
		if err != nil {
			t.Fatal(err)
		}
		if c := cosineF(got[0].Embedding, base[0].Embedding); c > 0.999999 {
			t.Errorf("%s: embedding unchanged (cosine %v)", cfg, c)
		}
	}
	// And an explicit (127.5, 127.5) is the default.
	got, err := arcFaceRecognizer(t, modelgen.ArcFace{Seed: 3}, `{"mean": 127.5, "std": 127.5}`, 0).Recognize(ctx, img, det)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got[0].Embedding {
		if got[0].Embedding[i] != base[0].Embedding[i] {
			t.Fatal("explicit ArcFace normalisation differs from the default")
		}
	}
}

func TestRecognizerBadInput(t *testing.T) {
	rec := arcFaceRecognizer(t, modelgen.ArcFace{Seed: 1}, "", 0)
	img, det := syntheticFaces(2)
	ctx := context.Background()

	faces, err := rec.Recognize(ctx, img, &face.Detections{})
	if err != nil || faces == nil || len(faces) != 0 {
		t.Errorf("no detections: %v, %v; want an empty slice", faces, err)
	}
	if faces, err = rec.Recognize(ctx, nil, nil); err != nil || len(faces) != 0 {
		t.Errorf("nil detections: %v, %v", faces, err)
	}
	cases := []struct {
		name string
		img  *imaging.Image
		det  *face.Detections
		want error
	}{
		{"no landmarks", img, &face.Detections{Boxes: det.Boxes, Scores: det.Scores}, face.ErrDetections},
		{"short scores", img, &face.Detections{Boxes: det.Boxes, Scores: det.Scores[:1], Landmarks: det.Landmarks}, face.ErrDetections},
		{"nil image", nil, det, face.ErrImage},
		{"short pixels", &imaging.Image{W: 10, H: 10, Pix: make([]byte, 10)}, det, face.ErrImage},
	}
	for _, c := range cases {
		if _, err := rec.Recognize(ctx, c.img, c.det); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := rec.Recognize(canceled, img, det); !errors.Is(err, inference.ErrCanceled) {
		t.Errorf("canceled: %v", err)
	}
	// Faces far outside the image align to black crops, and so do
	// landmarks that define no transform (skimage: NaN): a result, not an
	// error, so one bad detection does not fail a request.
	one := func(l [5][2]float32) *face.Detections {
		return &face.Detections{Boxes: det.Boxes[:1], Scores: det.Scores[:1], Landmarks: [][5][2]float32{l}}
	}
	black, err := rec.Recognize(ctx, img, one([5][2]float32{{-5000, -5000}, {-4960, -5000}, {-4980, -4980}, {-4995, -4960}, {-4965, -4960}}))
	if err != nil || len(black) != 1 {
		t.Fatalf("face outside the image: %v, %v", black, err)
	}
	for name, l := range map[string][5][2]float32{
		"coincident": {},
		"NaN":        {{float32(math.NaN()), 1}, {2, 2}, {3, 3}, {4, 5}, {6, 6}},
		"infinite":   {{float32(math.Inf(1)), 1}, {2, 2}, {3, 3}, {4, 5}, {6, 6}},
	} {
		got, err := rec.Recognize(ctx, img, one(l))
		if err != nil || len(got) != 1 {
			t.Fatalf("%s landmarks: %v, %v", name, got, err)
		}
		for i, v := range got[0].Embedding {
			if v != black[0].Embedding[i] {
				t.Fatalf("%s landmarks: embedding is not the black crop's", name)
			}
		}
	}
}

func TestLoadErrors(t *testing.T) {
	rt := testenv.Runtime(t)
	scrfd := modelgen.SCRFD{}.Model()
	arc := modelgen.ArcFace{}.Model()
	cases := []struct {
		name      string
		model     onnx.Model
		cfg       string
		detection bool
		want      error
	}{
		{"recognizer as SCRFD", arc, "", true, face.ErrUnsupportedModel},
		{"SCRFD as recognizer", scrfd, "", false, face.ErrUnsupportedModel},
		{"SCRFD as UltraFace without landmarks", scrfd, `{"family":"ultraface"}`, true, face.ErrConfig},
		{"missing landmark file", scrfd, `{"family":"blazeface","landmarks":"lm.onnx"}`, true, nil},
		{"SCRFD as BlazeFace", scrfd, `{"family":"blazeface"}`, true, face.ErrUnsupportedModel},
		{"unknown family", scrfd, `{"family":"yolo"}`, true, face.ErrConfig},
		{"bad json", arc, `{"family":`, false, face.ErrConfig},
		{"bad std", arc, `{"std": 0}`, false, face.ErrConfig},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeModelDir(t, c.model, c.cfg)
			var err error
			if c.detection {
				var d *face.Detector
				d, err = face.LoadDetector(dir, rt, face.DetectorOptions{}, nil)
				if err == nil {
					_ = d.Close()
				}
			} else {
				var r *face.Recognizer
				r, err = face.LoadRecognizer(dir, rt, face.RecognizerOptions{}, nil)
				if err == nil {
					_ = r.Close()
				}
			}
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
				t.Errorf("err = %v, want %v", err, c.want)
			}
		})
	}
	if _, err := face.LoadDetector(t.TempDir(), rt, face.DetectorOptions{}, nil); err == nil {
		t.Error("empty folder loads")
	}
	if _, err := face.LoadRecognizer(writeModelDir(t, arc, ""), rt, face.RecognizerOptions{MaxBatch: -1}, nil); !errors.Is(err, face.ErrConfig) {
		t.Errorf("negative MaxBatch: %v", err)
	}
}

// TestClose: a closed detector and recognizer refuse work with
// inference.ErrClosed, and closing twice is harmless.
func TestClose(t *testing.T) {
	det := scrfdDetector(t, modelgen.SCRFD{})
	if det.Provider() != inference.CPU {
		t.Errorf("provider %q", det.Provider())
	}
	if err := det.Close(); err != nil {
		t.Fatal(err)
	}
	if err := det.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := det.Detect(context.Background(), squares(64, 64), 0.5); err == nil {
		t.Error("Detect after Close works")
	}
	rec := arcFaceRecognizer(t, modelgen.ArcFace{}, "", 0)
	if rec.Provider() != inference.CPU || rec.Family() != face.FamilyArcFace {
		t.Errorf("provider %q family %q", rec.Provider(), rec.Family())
	}
	_ = rec.Close()
	img, dets := syntheticFaces(1)
	if _, err := rec.Recognize(context.Background(), img, dets); !errors.Is(err, inference.ErrClosed) {
		t.Errorf("Recognize after Close: %v", err)
	}
}

func TestWriteTestPack(t *testing.T) {
	fp := func(f string) string { return testenv.TestData(t, "models/faceplugin/"+f) }
	blaze := testenv.TestData(t, "models/blazeface/face_detection_back_256x256_barracuda.onnx")
	arc := filepath.Join(t.TempDir(), "arc.onnx")
	if err := (modelgen.ArcFace{}).Model().WriteFile(arc); err != nil {
		t.Fatal(err)
	}
	scrfd := filepath.Join(t.TempDir(), "scrfd.onnx")
	if err := (modelgen.SCRFD{}).Model().WriteFile(scrfd); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		det, lm, rec      string
		detFamily, recFam string
		detJSON, recJSON  bool
	}{
		{fp("fr_detect.onnx"), fp("fr_landmark.onnx"), fp("fr_feature.onnx"), face.FamilyUltraFace, face.FamilyMobileFaceNet, true, true},
		{blaze, "", fp("fr_feature.onnx"), face.FamilyBlazeFace, face.FamilyMobileFaceNet, true, true},
		{scrfd, "", arc, face.FamilySCRFD, face.FamilyArcFace, false, false},
	}
	rt := testenv.Runtime(t)
	for _, c := range cases {
		dir := t.TempDir()
		if err := face.WriteTestPack(dir, c.det, c.lm, c.rec); err != nil {
			t.Fatal(err)
		}
		_, err := os.Stat(filepath.Join(dir, face.DetectionDir, face.ConfigFile))
		if (err == nil) != c.detJSON {
			t.Errorf("%s: detection model.json present = %v", c.detFamily, err == nil)
		}
		_, err = os.Stat(filepath.Join(dir, face.RecognitionDir, face.ConfigFile))
		if (err == nil) != c.recJSON {
			t.Errorf("%s: recognition model.json present = %v", c.recFam, err == nil)
		}
		d, err := face.LoadDetector(filepath.Join(dir, face.DetectionDir), rt, face.DetectorOptions{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := face.LoadRecognizer(filepath.Join(dir, face.RecognitionDir), rt, face.RecognizerOptions{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d.Family() != c.detFamily || r.Family() != c.recFam {
			t.Errorf("families %s/%s, want %s/%s", d.Family(), r.Family(), c.detFamily, c.recFam)
		}
		_, _ = d.Close(), r.Close()
		// Writing again over an existing pack works.
		if err := face.WriteTestPack(dir, c.det, c.lm, c.rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := face.WriteTestPack(t.TempDir(), scrfd, fp("fr_landmark.onnx"), arc); !errors.Is(err, face.ErrConfig) {
		t.Errorf("SCRFD with a landmark model: %v", err)
	}
}
