package jobs

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/search"
)

// benchPreviews writes n JPEGs the size of Immich's previews (1440 px on
// the long side), with texture, so decoding costs what it costs in real
// use. They are kept between runs in the temporary folder.
func benchPreviews(b *testing.B, n int) []string {
	b.Helper()
	dir := filepath.Join(os.TempDir(), "mlserve-bench", "previews")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	var paths []string
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("preview%04d.jpg", i))
		paths = append(paths, p)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		r := mrand.New(mrand.NewPCG(uint64(i), 99))
		w, h := 1440, 1080
		if i%4 == 3 {
			w, h = 1080, 1440
		}
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		base := [3]int{r.IntN(200), r.IntN(200), r.IntN(200)}
		for y := range h {
			for x := range w {
				n := r.IntN(56)
				img.SetRGBA(x, y, color.RGBA{uint8(base[0] + n), uint8(base[1] + (x*y)%56), uint8(base[2] + (x+y)%56), 255})
			}
		}
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return paths
}

// benchCLIPDir is a model folder with the ViT-B/32-architecture image
// tower (random weights, the real model's shapes and cost; 350 MB, kept
// between runs).
func benchCLIPDir(b *testing.B) string {
	b.Helper()
	model, err := modelgen.BenchFile("vit-b-32-visual.onnx", modelgen.ViTB32Visual().Model)
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(b.TempDir(), "clip", testModel)
	if err := os.MkdirAll(filepath.Join(dir, "visual"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.Symlink(model, filepath.Join(dir, "visual", "model.onnx")); err != nil {
		b.Fatal(err)
	}
	cfg := `{"size": [224, 224], "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}`
	if err := os.WriteFile(filepath.Join(dir, "visual", "preprocess_cfg.json"), []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkIndexPipeline measures index → queue → worker → pgvector on
// Immich-sized previews with the ViT-B/32-architecture graph: images/s
// end to end, and the share of the worker's time spent decoding (read,
// hash, decode), in inference (resize, normalise, run) and writing (one
// transaction per batch). Variants: the in-process queue or Redis, one or
// two batches at once, with the HNSW index kept up to date while writing
// or built afterwards.
func BenchmarkIndexPipeline(b *testing.B) {
	const n = 32
	previews := benchPreviews(b, n)
	v := loadVisual(b, benchCLIPDir(b))
	dbURL := testenv.DatabaseURL(b)
	for _, bc := range []struct {
		queue   string
		workers int
		batch   int
		hnsw    bool
	}{
		{"memory", 1, 8, true},
		{"memory", 2, 8, true},
		{"memory", 1, 8, false},
		{"redis", 1, 8, true},
		{"redis", 2, 8, true},
	} {
		name := fmt.Sprintf("queue=%s/workers=%d/batch=%d/hnsw=%v", bc.queue, bc.workers, bc.batch, bc.hnsw)
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			store, err := search.Open(ctx, search.Options{URL: dbURL, Schema: testSchema(b), DeferIndexes: !bc.hnsw}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			if _, err := store.EnsureModel(ctx, testModel, v.Dim()); err != nil {
				b.Fatal(err)
			}
			var total Stats
			var wall time.Duration
			for b.Loop() {
				var q interface {
					Queue
					Enqueuer
				}
				var mem *Memory
				if bc.queue == "redis" {
					q = newRedisQueue(b, redisClient(b, testenv.RedisURL(b)), RedisOptions{Block: 100 * time.Millisecond})
				} else {
					mem = NewMemory(MemoryOptions{Wait: 50 * time.Millisecond})
					q = mem
				}
				p := NewProducer(q, ProducerOptions{Model: testModel}, nil)
				w := NewWorker(q, EmbedFunc(v.EmbedBatch), IndexSink{Index: store, Model: testModel}, WorkerOptions{Model: testModel, BatchSize: bc.batch}, nil)
				start := time.Now()
				wctx, stop := context.WithCancel(ctx)
				var wg sync.WaitGroup
				for range bc.workers {
					wg.Go(func() { _ = w.Run(wctx) })
				}
				if _, err := p.Folders(ctx, nil, previews...); err != nil {
					b.Fatal(err)
				}
				if mem != nil {
					mem.Close()
				}
				pr, err := p.Watch(ctx, 20*time.Millisecond, nil)
				if err != nil || pr.Done != n {
					b.Fatalf("progress %+v, %v", pr, err)
				}
				stop()
				wg.Wait()
				wall += time.Since(start)
				st := w.Stats()
				total.Decode += st.Decode
				total.Infer += st.Infer
				total.Write += st.Write
				total.Ack += st.Ack
			}
			busy := float64(total.Decode + total.Infer + total.Write + total.Ack)
			b.ReportMetric(float64(n*b.N)/wall.Seconds(), "img/s")
			b.ReportMetric(100*float64(total.Decode)/busy, "%decode")
			b.ReportMetric(100*float64(total.Infer)/busy, "%infer")
			b.ReportMetric(100*float64(total.Write)/busy, "%write")
			b.ReportMetric(100*float64(total.Ack)/busy, "%queue")
			b.ReportMetric(float64(total.Write.Milliseconds())/float64(b.N*n/bc.batch), "ms/batch-write")
		})
	}
}
