package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/inference/imaging/imagingtest"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/onnx"
)

// previews scales the sample photos to Immich's preview size (shorter
// side 1440) and encodes them as JPEG quality 80.
func previews(b testing.TB) [][]byte {
	b.Helper()
	var out [][]byte
	for i := 1; i <= 6; i++ {
		raw, err := os.ReadFile(testenv.TestData(b, fmt.Sprintf("photos/sample%d.jpg", i)))
		if err != nil {
			b.Fatal(err)
		}
		src, err := imaging.Decode(raw)
		if err != nil {
			b.Fatal(err)
		}
		m, err := src.Mat()
		if err != nil {
			b.Fatal(err)
		}
		w, h := src.W, src.H
		nw, nh := w*1440/h, 1440
		if w < h {
			nw, nh = 1440, h*1440/w
		}
		scaled := gocv.NewMat()
		gocv.Resize(m, &scaled, image.Pt(nw, nh), 0, 0, gocv.InterpolationCubic)
		pix, err := scaled.DataPtrUint8()
		if err != nil {
			b.Fatal(err)
		}
		jpg, err := imagingtest.JPEG(pix, nw, nh, 3, 80)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, jpg)
		scaled.Close()
		m.Close()
	}
	return out
}

// benchCache lays out generated graphs of the real models' size (written
// once under <temp>/mlserve-bench) in a model cache.
func benchCache(b testing.TB, faces bool) string {
	b.Helper()
	cache := b.TempDir()
	link := func(name string, build func() onnx.Model, rel string) {
		src, err := modelgen.BenchFile(name, build)
		if err != nil {
			b.Fatal(err)
		}
		p := filepath.Join(cache, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.Symlink(src, p); err != nil {
			b.Fatal(err)
		}
	}
	link("vit-b-32-visual.onnx", modelgen.ViTB32Visual().Model, "clip/ViT-B-32__openai/visual/model.onnx")
	if err := os.WriteFile(filepath.Join(cache, "clip/ViT-B-32__openai/visual/preprocess_cfg.json"),
		[]byte(`{"size":[224,224],"mean":[0.48145466,0.4578275,0.40821073],"std":[0.26862954,0.26130258,0.27577711]}`), 0o644); err != nil {
		b.Fatal(err)
	}
	if faces {
		link("scrfd-10g.onnx", modelgen.SCRFD10G{}.Model, "facial-recognition/buffalo_l/detection/model.onnx")
		link("arcface-r50.onnx", modelgen.ArcFaceR50{}.Model, "facial-recognition/buffalo_l/recognition/model.onnx")
	}
	return cache
}

// load runs n requests from conc goroutines and reports throughput and
// the mean batch the engine formed.
func load(b *testing.B, s *Service, conc int, key Key, req func(i int) *Request) {
	b.Helper()
	before := batchStats(s, key)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if _, err := s.Predict(context.Background(), req(i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	after := batchStats(s, key)
	if n := after.Batches - before.Batches; n > 0 {
		b.ReportMetric(float64(after.Rows-before.Rows)/float64(n), "rows/batch")
	}
}

// BenchmarkEngineVisual is /predict's CLIP image path without HTTP:
// decode a preview-size photo, preprocess it exactly as Immich does, and
// embed it with the ViT-B/32-architecture graph, at 1, 4 and 8 requests
// in flight, with the service's defaults. Compare with
// BenchmarkBareVisual (the graph alone) for the engine's overhead;
// `mlserve bench` does both in one run, alternated.
func BenchmarkEngineVisual(b *testing.B) {
	s := engineService(b, benchCache(b, false), ServiceOptions{Runs: RunsOptions{CPU: defaultCPURuns(testenv.Runtime(b))}})
	imgs := previews(b)
	key := Key{"clip", "visual", "ViT-B-32__openai"}
	req := func(i int) *Request {
		return &Request{Image: imgs[i%len(imgs)], Entries: []Entry{{Task: key.Task, Type: key.Type, ModelName: key.Name}}}
	}
	if _, err := s.Predict(context.Background(), req(0)); err != nil {
		b.Fatal(err)
	}
	for _, conc := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) { load(b, s, conc, key, req) })
	}
}

// BenchmarkBareVisual runs the ViT-B/32-architecture graph alone on the
// runtime's threads, at batch 1 and 8: the ceiling for
// BenchmarkEngineVisual.
func BenchmarkBareVisual(b *testing.B) {
	model, err := modelgen.BenchFile("vit-b-32-visual.onnx", modelgen.ViTB32Visual().Model)
	if err != nil {
		b.Fatal(err)
	}
	sess, err := testenv.Runtime(b).NewSession(model, inference.SessionOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			x := inference.F32(make([]float32, n*3*224*224), int64(n), 3, 224, 224)
			if _, err := sess.Run(context.Background(), x); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if _, err := sess.Run(context.Background(), x); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "img/s")
		})
	}
}

// BenchmarkEngineFaces is a face request (detection and recognition) on
// buffalo_l-sized graphs (SCRFD-10GF and IResNet-50, generated) for the
// group photo sample5.jpg at preview size, one request at a time. The
// generated detector's faces are noise; faces/op tells how many there
// were.
func BenchmarkEngineFaces(b *testing.B) {
	s := engineService(b, benchCache(b, true), ServiceOptions{Runs: RunsOptions{CPU: defaultCPURuns(testenv.Runtime(b))}})
	img := previews(b)[4]
	req := &Request{Image: img, Entries: []Entry{
		{Task: "facial-recognition", Type: "detection", ModelName: "buffalo_l", Options: map[string]json.RawMessage{"minScore": json.RawMessage("0.3")}},
		{Task: "facial-recognition", Type: "recognition", ModelName: "buffalo_l"},
	}}
	res, err := s.Predict(context.Background(), req)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(res.Output("facial-recognition").(*FacesResult).Faces)), "faces/op")
	load(b, s, 1, Key{"facial-recognition", "recognition", "buffalo_l"}, func(int) *Request { return req })
}
