package pool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/clip"
	"github.com/mlserve/mlserve/inference/face"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/inference/imaging/imagingtest"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/models"
)

// engineCache lays out, in a model cache, a small ViT (the layers of
// CLIP's image tower: GEMMs, attention, LayerNorm) and a CLIP text encoder
// as ViT-B-32__openai, an ArcFace-type recognizer with a dynamic batch as
// buffalo_l, and the real PP-OCRv4 recognizer as PP-OCRv5_mobile.
func engineCache(t testing.TB) string {
	t.Helper()
	cache := t.TempDir()
	write := func(rel string, data []byte) {
		p := filepath.Join(cache, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(src, rel string) {
		p := filepath.Join(cache, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(src, p); err != nil {
			t.Fatal(err)
		}
	}
	clip := "clip/ViT-B-32__openai/"
	// Width 128: its weights are large enough (64 KiB) for a CPU session
	// to share them with a single-threaded twin that runs split batches.
	vit := modelgen.ViT{ImageSize: 64, Patch: 16, Width: 128, Layers: 2, Heads: 4, MLP: 512, Dim: 32, Seed: 5}
	write(clip+"visual/model.onnx", vit.Model().Marshal())
	write(clip+"visual/preprocess_cfg.json", []byte(`{"size":[64,64],"mean":[0.48145466,0.4578275,0.40821073],"std":[0.26862954,0.26130258,0.27577711]}`))
	write(clip+"textual/model.onnx", modelgen.CLIPTextual{Context: 77, Vocab: modelgen.CLIPVocabSize, Dim: 32, Seed: 6}.Model().Marshal())
	if err := (modelgen.CLIPTokenizer{Merges: testenv.TestData(t, "clip/bpe_simple_vocab_16e6.txt")}).WriteDir(filepath.Join(cache, clip, "textual")); err != nil {
		t.Fatal(err)
	}
	write(clip+"config.json", []byte(`{"embed_dim":32,"text_cfg":{"context_length":77}}`))
	write("facial-recognition/buffalo_l/recognition/model.onnx", modelgen.ArcFace{Seed: 7}.Model().Marshal())
	rec := "ocr/PP-OCRv5_mobile/recognition/"
	link(testenv.TestData(t, "models/ppocr/ch_PP-OCRv4_rec_infer.onnx"), rec+"model.onnx")
	link(testenv.TestData(t, "models/ppocr/ppocr_keys_v1.txt"), rec+"ppocr_keys_v1.txt")
	return cache
}

func engineService(t testing.TB, cache string, opts ServiceOptions) *Service {
	t.Helper()
	store, err := models.NewStore(models.StoreOptions{CacheDir: cache, Offline: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Runs.CPU == 0 {
		opts.Runs.CPU = 1
	}
	s, err := NewService(opts, store, testenv.Runtime(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// photos decodes the sample photos.
func photos(t testing.TB) []*imaging.Image {
	t.Helper()
	var out []*imaging.Image
	for i := 1; i <= 6; i++ {
		b, err := os.ReadFile(testenv.TestData(t, fmt.Sprintf("photos/sample%d.jpg", i)))
		if err != nil {
			t.Fatal(err)
		}
		img, err := imaging.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, img)
	}
	return out
}

// coalesced runs fn(i) for i < n concurrently while the CPU's inference
// slots are held, waits until queued items are in the model's queue, then
// frees the device, so that the items run as few batches. It returns the
// model's batch counters for the calls.
func coalesced(t *testing.T, s *Service, key Key, queued int, n int, fn func(i int) error) BatchStats {
	t.Helper()
	slot := s.devices.slot("CPU")
	for range cap(slot) {
		slot <- struct{}{}
	}
	held := true
	free := func() {
		if held {
			held = false
			for range cap(slot) {
				<-slot
			}
		}
	}
	defer free()
	before := batchStats(s, key)
	var wg sync.WaitGroup
	errs := make([]error, n)
	done := make(chan int, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = fn(i)
			done <- i
		})
	}
	deadline := time.Now().Add(time.Minute)
	for batchStats(s, key).Queued < queued {
		select {
		case i := <-done:
			free()
			wg.Wait()
			t.Fatalf("call %d ended before the device was free: %v", i, errs[i])
		default:
		}
		if time.Now().After(deadline) {
			free()
			wg.Wait()
			t.Fatalf("%d items queued, want %d", batchStats(s, key).Queued, queued)
		}
		time.Sleep(time.Millisecond)
	}
	free()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	after := batchStats(s, key)
	after.Batches -= before.Batches
	after.Items -= before.Items
	after.Rows -= before.Rows
	return after
}

func batchStats(s *Service, key Key) BatchStats {
	for _, st := range s.BatchStats() {
		if st.Key == key {
			return st
		}
	}
	return BatchStats{}
}

// sameBits compares two embeddings bit for bit and reports the largest
// difference when they differ.
func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if diff, maxd := compare(t, what, got, want); diff > 0 {
		t.Errorf("%s: %d of %d values differ from the unbatched run, max |Δ| %g", what, diff, len(got), maxd)
	}
}

// compare counts the values of got that differ from want and returns the
// largest difference.
func compare(t *testing.T, what string, got, want []float32) (diff int, maxd float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			diff++
			maxd = math.Max(maxd, math.Abs(float64(got[i])-float64(want[i])))
		}
	}
	return diff, maxd
}

// TestBatchedEqualsUnbatched sends the same inputs through the engine one
// at a time (each runs alone) and all at once while the device is busy
// (they run as shared batches), for every batched model: CLIP images and
// texts, face crops and text lines.
//
// Where a graph computes each row on its own with kernels whose
// arithmetic does not depend on the batch, the results are the same bits:
// the ViT (convolution, MatMul/GEMM, attention, LayerNorm, softmax), the
// ArcFace-type CNN and the real PP-OCRv4 recognizer. (ONNX Runtime's
// MatMul gives a row the same bits for M = 1 and M > 1.) The generated
// text encoder sums its tokens with ReduceSum over the sequence axis of
// [batch, 77, width]: for batch 1 ONNX Runtime folds the leading axis of
// size 1 away and sums in another order than for batch > 1, so the
// embedding may differ in its last bits (measured: up to 9e-8 on
// unit-norm embeddings, a few ulps). Real text towers that pool with a
// mean over the sequence (M-CLIP) behave the same way; the test bounds
// that difference instead.
func TestBatchedEqualsUnbatched(t *testing.T) {
	// Enough CPU workers for every call to prepare its input at once.
	s := engineService(t, engineCache(t), ServiceOptions{Workers: WorkersOptions{Workers: 8, Queue: 8}})
	ctx := context.Background()
	imgs := photos(t)

	t.Run("clip/visual", func(t *testing.T) {
		key := Key{"clip", "visual", "ViT-B-32__openai"}
		alone := make([][]float32, len(imgs))
		for i, img := range imgs {
			out, err := s.EmbedImages(ctx, key.Name, []*imaging.Image{img})
			if err != nil {
				t.Fatal(err)
			}
			alone[i] = out[0]
		}
		together := make([][]float32, len(imgs))
		st := coalesced(t, s, key, len(imgs), len(imgs), func(i int) error {
			out, err := s.EmbedImages(ctx, key.Name, imgs[i:i+1])
			if err == nil {
				together[i] = out[0]
			}
			return err
		})
		if st.Batches != 1 || st.Rows != int64(len(imgs)) {
			t.Fatalf("batches %+v, want one of %d images", st, len(imgs))
		}
		if intra, _ := testenv.Runtime(t).Threads(inference.CPU); intra > 1 {
			// The batch ran as single-threaded runs at once on the twin.
			for _, m := range s.loadedModels() {
				if v, ok := m.model.(*clip.Visual); ok && m.key == key && v.SplitRuns() != intra {
					t.Errorf("visual model: SplitRuns %d, want %d (the intra-op threads)", v.SplitRuns(), intra)
				}
			}
		}
		for i := range imgs {
			sameBits(t, fmt.Sprintf("image %d", i), together[i], alone[i])
		}
	})

	t.Run("clip/textual", func(t *testing.T) {
		key := Key{"clip", "textual", "ViT-B-32__openai"}
		texts := []string{"a dog on a beach", "two cats", "sunset over the mountains", "a red car", "birthday party", "snow"}
		alone := make([][]float32, len(texts))
		for i, q := range texts {
			e, err := s.EmbedText(ctx, key.Name, q, "")
			if err != nil {
				t.Fatal(err)
			}
			alone[i] = e
		}
		together := make([][]float32, len(texts))
		st := coalesced(t, s, key, len(texts), len(texts), func(i int) error {
			text := texts[i]
			res, err := s.Predict(ctx, &Request{Entries: []Entry{{Task: "clip", Type: "textual", ModelName: key.Name}}, Text: &text})
			if err == nil {
				together[i] = res.Output("clip").(*CLIPResult).Embedding
			}
			return err
		})
		if st.Batches != 1 || st.Rows != int64(len(texts)) {
			t.Fatalf("batches %+v", st)
		}
		for i := range texts {
			// See above: ReduceSum over a middle axis sums in
			// another order for batch 1.
			if diff, maxd := compare(t, texts[i], together[i], alone[i]); maxd > 1e-6 {
				t.Errorf("%s: %d values differ from the unbatched run, max |Δ| %g", texts[i], diff, maxd)
			} else if diff > 0 {
				t.Logf("%s: %d of %d values differ in their last bits, max |Δ| %g", texts[i], diff, len(alone[i]), maxd)
			}
		}
	})

	t.Run("facial-recognition", func(t *testing.T) {
		key := Key{"facial-recognition", "recognition", "buffalo_l"}
		// Three images with 5, 11 and 3 faces: chunks of 8, so the
		// second image's faces come in two items.
		dets := []*FaceDetectionResult{fakeFaces(imgs[0], 5, 1), fakeFaces(imgs[1], 11, 2), fakeFaces(imgs[2], 3, 3)}
		run := func(i int) ([]Face, error) {
			m, release, err := s.acquireModel(ctx, key.Task, key.Type, key.Name)
			if err != nil {
				return nil, err
			}
			defer release()
			var tm Timings
			x := s.newExec(&tm, PriorityRequest)
			defer x.done()
			return recognizeFaces(ctx, x, m, imgs[i], dets[i])
		}
		alone := make([][]Face, len(dets))
		for i := range dets {
			f, err := run(i)
			if err != nil {
				t.Fatal(err)
			}
			alone[i] = f
		}
		together := make([][]Face, len(dets))
		st := coalesced(t, s, key, 4, len(dets), func(i int) (err error) {
			together[i], err = run(i)
			return err
		})
		if st.Items != 4 || st.Batches >= 4 {
			t.Fatalf("batches %+v: the face chunks did not share runs", st)
		}
		for i := range dets {
			if len(together[i]) != len(dets[i].Boxes) {
				t.Fatalf("image %d: %d faces", i, len(together[i]))
			}
			for j := range together[i] {
				if together[i][j].Box != dets[i].Boxes[j] {
					t.Fatalf("image %d face %d: box %v, want %v", i, j, together[i][j].Box, dets[i].Boxes[j])
				}
				sameBits(t, fmt.Sprintf("image %d face %d", i, j), together[i][j].Embedding, alone[i][j].Embedding)
			}
		}
	})

	t.Run("ocr/recognition", func(t *testing.T) {
		key := Key{"ocr", "recognition", "PP-OCRv5_mobile"}
		boxes := []*TextDetectionResult{fakeLines(imgs[3], 7, 1), fakeLines(imgs[4], 4, 2), fakeLines(imgs[5], 9, 3)}
		run := func(i int) (*OCRResult, error) {
			m, release, err := s.acquireModel(ctx, key.Task, key.Type, key.Name)
			if err != nil {
				return nil, err
			}
			defer release()
			var tm Timings
			x := s.newExec(&tm, PriorityRequest)
			defer x.done()
			return recognizeText(ctx, x, m, imgs[3+i], boxes[i], 0)
		}
		alone := make([]*OCRResult, len(boxes))
		for i := range boxes {
			r, err := run(i)
			if err != nil {
				t.Fatal(err)
			}
			alone[i] = r
		}
		together := make([]*OCRResult, len(boxes))
		// 7, 4 and 9 lines in chunks of 6: five items, of widths 320
		// and wider.
		st := coalesced(t, s, key, 5, len(boxes), func(i int) (err error) {
			together[i], err = run(i)
			return err
		})
		if st.Items != 5 || st.Batches >= 5 {
			t.Fatalf("batches %+v: the chunks did not share runs", st)
		}
		for i := range boxes {
			a, b := alone[i], together[i]
			if fmt.Sprint(a.Text) != fmt.Sprint(b.Text) || fmt.Sprint(a.Box) != fmt.Sprint(b.Box) {
				t.Fatalf("image %d: %q, alone %q", i, b.Text, a.Text)
			}
			for j := range a.TextScore {
				if math.Float64bits(a.TextScore[j]) != math.Float64bits(b.TextScore[j]) {
					t.Errorf("image %d line %d: score %v, alone %v", i, j, b.TextScore[j], a.TextScore[j])
				}
			}
		}
	})
}

// fakeFaces places n faces on img: boxes and five landmarks at distinct
// places and sizes (the recognizer aligns whatever the points say).
func fakeFaces(img *imaging.Image, n, seed int) *FaceDetectionResult {
	d := &FaceDetectionResult{}
	for i := range n {
		s := float32(40 + 13*((i+seed)%7))
		x := float32((i*97+seed*31)%(img.W-200)) + 50
		y := float32((i*61+seed*17)%(img.H-200)) + 50
		d.Boxes = append(d.Boxes, [4]float32{x, y, x + s, y + s*1.2})
		d.Scores = append(d.Scores, 0.9-float32(i)*0.01)
		d.Landmarks = append(d.Landmarks, [5][2]float32{
			{x + 0.3*s, y + 0.4*s}, {x + 0.7*s, y + 0.4*s}, {x + 0.5*s, y + 0.6*s},
			{x + 0.35*s, y + 0.85*s}, {x + 0.65*s, y + 0.85*s},
		})
	}
	return d
}

// fakeLines places n text boxes on img: most of them short (aspect
// ratios 2 to 6, which Immich's batching pads to a tensor width of 320),
// every fourth one long (a wider tensor of its own).
func fakeLines(img *imaging.Image, n, seed int) *TextDetectionResult {
	d := &TextDetectionResult{}
	for i := range n {
		h := float32(20 + 5*((i+seed)%4))
		ratio := float32(2 + (i+seed)%5)
		if i%4 == 3 {
			ratio = float32(8 + i + seed)
		}
		w := h * ratio
		x := float32((i*113 + seed*41) % (img.W - int(w) - 10))
		y := float32((i*71 + seed*29) % (img.H - int(h) - 10))
		d.Boxes = append(d.Boxes, [4][2]float32{{x, y}, {x + w, y}, {x + w, y + h}, {x, y + h}})
		d.Scores = append(d.Scores, 0.8)
	}
	return d
}

// faceCache adds a face pack to cache as "antelopev2": the real
// UltraFace-type detector with its 68-point landmark model, and an
// ArcFace-type recognizer with a dynamic batch.
func faceCache(t testing.TB, cache string) {
	t.Helper()
	rec := filepath.Join(t.TempDir(), "rec.onnx")
	if err := (modelgen.ArcFace{Seed: 9}).Model().WriteFile(rec); err != nil {
		t.Fatal(err)
	}
	if err := face.WriteTestPack(filepath.Join(cache, "facial-recognition", "antelopev2"),
		testenv.TestData(t, "models/faceplugin/fr_detect.onnx"),
		testenv.TestData(t, "models/faceplugin/fr_landmark.onnx"), rec); err != nil {
		t.Fatal(err)
	}
}

func jpegOf(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(testenv.TestData(t, "photos/"+name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPredictStages: a face request's time is split into decoding,
// preprocessing, inference and post-processing, and inference no longer
// includes the CPU work around it.
func TestPredictStages(t *testing.T) {
	cache := engineCache(t)
	faceCache(t, cache)
	s := engineService(t, cache, ServiceOptions{})
	ctx := context.Background()
	req := &Request{Image: jpegOf(t, "sample5.jpg"), Entries: []Entry{
		{Task: "facial-recognition", Type: "detection", ModelName: "antelopev2"},
		{Task: "facial-recognition", Type: "recognition", ModelName: "antelopev2"},
	}}
	if _, err := s.Predict(ctx, req); err != nil { // load the models
		t.Fatal(err)
	}
	start := time.Now()
	res, err := s.Predict(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	total := time.Since(start)
	faces := res.Output("facial-recognition").(*FacesResult).Faces
	if len(faces) != 5 || len(faces[0].Embedding) != 512 {
		t.Fatalf("%d faces", len(faces))
	}
	tm := res.Timings
	if tm.Decode <= 0 || tm.Preprocess <= 0 || tm.Inference <= 0 || tm.Postprocess <= 0 || tm.Load != 0 {
		t.Fatalf("timings %+v", tm)
	}
	if sum := tm.Queue + tm.Decode + tm.Preprocess + tm.BatchWait + tm.Inference + tm.Postprocess; sum > total {
		t.Fatalf("stages add up to %v, more than the request's %v: %+v", sum, total, tm)
	}
	if res.ImageWidth != 1920 || res.ImageHeight != 1398 || res.Providers["facial-recognition/recognition"] != "CPU" {
		t.Fatalf("response %+v", res)
	}

	// Detection alone returns the detector's arrays.
	res, err = s.Predict(ctx, &Request{Image: req.Image, Entries: req.Entries[:1]})
	if err != nil {
		t.Fatal(err)
	}
	if d := res.Output("facial-recognition").(*FaceDetectionResult); len(d.Boxes) != 5 || len(d.Landmarks) != 5 {
		t.Fatalf("detection %+v", d)
	}
}

// TestFaceBatchCap: the faces of one image go to the model at most
// MaxBatchFace at a time, whatever their number, so that memory stays
// bounded; the embeddings keep the detections' order.
func TestFaceBatchCap(t *testing.T) {
	s := engineService(t, engineCache(t), ServiceOptions{MaxBatchFace: 8})
	ctx := context.Background()
	img := photos(t)[0]
	det := fakeFaces(img, 60, 4)
	m, release, err := s.acquireModel(ctx, "facial-recognition", "recognition", "buffalo_l")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var tm Timings
	x := s.newExec(&tm, PriorityRequest)
	faces, err := recognizeFaces(ctx, x, m, img, det)
	x.done()
	if err != nil {
		t.Fatal(err)
	}
	if len(faces) != 60 {
		t.Fatalf("%d faces", len(faces))
	}
	for i, f := range faces {
		if f.Box != det.Boxes[i] || f.Score != det.Scores[i] {
			t.Fatalf("face %d is out of order", i)
		}
	}
	st := batchStats(s, Key{"facial-recognition", "recognition", "buffalo_l"})
	if tm.BatchRows > 8 || st.Rows != 60 || st.Batches < 8 {
		t.Fatalf("largest batch %d rows, %+v", tm.BatchRows, st)
	}
}

// TestRequestLeavesQueue: a request whose client goes away while it waits
// for the device returns at once and its image is never run; a full model
// queue refuses with ErrQueueFull.
func TestRequestLeavesQueue(t *testing.T) {
	s := engineService(t, engineCache(t), ServiceOptions{Batch: BatchOptions{Queue: 1}})
	bg := context.Background()
	req := &Request{Image: jpegOf(t, "sample1.jpg"), Entries: []Entry{{Task: "clip", Type: "visual", ModelName: "ViT-B-32__openai"}}}
	if _, err := s.Predict(bg, req); err != nil {
		t.Fatal(err)
	}
	key := Key{"clip", "visual", "ViT-B-32__openai"}
	before := batchStats(s, key)
	slot := s.devices.slot("CPU")
	slot <- struct{}{}
	ctx, cancel := context.WithCancel(bg)
	errc := make(chan error, 1)
	go func() { _, err := s.Predict(ctx, req); errc <- err }()
	for batchStats(s, key).Queued < 1 {
		time.Sleep(time.Millisecond)
	}
	if _, err := s.Predict(bg, req); !errors.Is(err, ErrQueueFull) {
		t.Errorf("a request beyond the model's queue: %v", err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
	<-slot
	if _, err := s.Predict(bg, req); err != nil {
		t.Fatal(err)
	}
	if after := batchStats(s, key); after.Items-before.Items != 1 {
		t.Fatalf("%d items ran, want only the last request's", after.Items-before.Items)
	}
}

type threadsOf int

func (threadsOf) NewSession(string, inference.SessionOptions) (*inference.Session, error) {
	return nil, errors.New("no sessions here")
}

func (t threadsOf) Threads(string) (int, int) { return int(t), 1 }

// TestCPURunsFitTheCores: runs × intra-op threads never exceed the cores.
func TestCPURunsFitTheCores(t *testing.T) {
	cores := runtime.NumCPU()
	for _, tc := range []struct {
		sessions Sessions
		want     int
	}{
		{threadsOf(cores), 1},
		{threadsOf(1), cores},
		{threadsOf(0), 1},
		{threadsOf(cores * 4), 1},
		{struct{ Sessions }{}, 1},
	} {
		if got := defaultCPURuns(tc.sessions); got != tc.want {
			t.Errorf("%v: %d runs, want %d", tc.sessions, got, tc.want)
		}
	}
	if n := inference.DefaultIntraOpThreads(cores); n*defaultCPURuns(threadsOf(n)) > cores {
		t.Errorf("default: %d threads × %d runs on %d cores", n, defaultCPURuns(threadsOf(n)), cores)
	}
}

// TestQueuedRequestsDropDecodedImages: a CLIP request waiting for its
// batch holds its tensor, not the decoded photo, so that a full queue of
// preview-size photos does not hold a decoded image each (9 MB at 1440p,
// 96 MB at the pixel cap).
func TestQueuedRequestsDropDecodedImages(t *testing.T) {
	s := engineService(t, engineCache(t), ServiceOptions{Batch: BatchOptions{Queue: 64}, Workers: WorkersOptions{Workers: 2, Queue: 64}})
	const w, h, n = 2400, 1600, 8 // 11.5 MB decoded each
	pix := make([]byte, w*h*3)
	for i := range pix {
		pix[i] = byte(i * 7 % 251)
	}
	jpg, err := imagingtest.JPEG(pix, w, h, 3, 80)
	if err != nil {
		t.Fatal(err)
	}
	req := &Request{Image: jpg, Entries: []Entry{{Task: "clip", Type: "visual", ModelName: "ViT-B-32__openai"}}}
	bg := context.Background()
	if _, err := s.Predict(bg, req); err != nil { // loads the model
		t.Fatal(err)
	}
	key := Key{"clip", "visual", "ViT-B-32__openai"}
	heap := func() uint64 {
		// Twice: the recycled buffers of the service's decoder (a
		// sync.Pool, held by nobody) go with the second collection.
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	slot := s.devices.slot("CPU")
	for range cap(slot) {
		slot <- struct{}{}
	}
	errc := make(chan error, n)
	for range n {
		go func() { _, err := s.Predict(bg, req); errc <- err }()
	}
	// Every item stays queued while the runner waits for the device
	// (waiting for fewer would count a photo still being decoded).
	deadline := time.Now().Add(time.Minute)
	for batchStats(s, key).Queued < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d requests queued", batchStats(s, key).Queued, n)
		}
		select {
		case err := <-errc:
			t.Fatalf("a request ended while the device was held: %v", err)
		default:
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	held := int64(heap()) - int64(before)
	for range cap(slot) {
		<-slot
	}
	for range n {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if limit := int64(w * h * 3); held > limit {
		t.Fatalf("%d queued requests hold %d MiB of heap (a decoded photo is %d MiB)", n, held>>20, limit>>20)
	}
	t.Logf("%d queued requests hold %d KiB of heap", n, held>>10)
}

// TestRequestsEndTheirExpectations: a request announces its input to
// its first model's batcher from its decoding on (so that a CPU batch
// forming there waits for it) and ends that expectation whether it
// submits, fails to decode, or the model refuses its input.
func TestRequestsEndTheirExpectations(t *testing.T) {
	s := engineService(t, engineCache(t), ServiceOptions{})
	good := previews(t)[0]
	entries := []Entry{{Task: "clip", Type: "visual", ModelName: "ViT-B-32__openai"}}
	for _, tc := range []struct {
		name  string
		image []byte
		ok    bool
	}{
		{"embedded", good, true},
		{"truncated", good[:len(good)/2], false},
		{"not an image", []byte("not an image at all"), false},
		{"embedded again", good, true},
	} {
		_, err := s.Predict(context.Background(), &Request{Image: tc.image, Entries: entries})
		if (err == nil) != tc.ok {
			t.Fatalf("%s: err %v", tc.name, err)
		}
		m, release, err := s.acquireModel(context.Background(), "clip", "visual", "ViT-B-32__openai")
		if err != nil {
			t.Fatal(err)
		}
		coming := m.batch.(*batcher[[]float32, []float32]).coming.Load()
		release()
		if coming != 0 {
			t.Fatalf("%s: the batcher still expects %d inputs", tc.name, coming)
		}
	}
}

// TestDecodeAhead: a bulk indexer decodes one batch ahead of a model on
// the CPU (MLSERVE_BATCH_MAX when set).
func TestDecodeAhead(t *testing.T) {
	cache := engineCache(t)
	for _, tc := range []struct{ max, want int }{{0, DefaultBatchMaxCPU}, {3, 3}} {
		s := engineService(t, cache, ServiceOptions{Batch: BatchOptions{Max: tc.max}})
		n, err := s.DecodeAhead(context.Background(), "ViT-B-32__openai")
		if err != nil || n != tc.want {
			t.Errorf("batch max %d: DecodeAhead %d, %v; want %d", tc.max, n, err, tc.want)
		}
	}
}
