package jobs

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/clip"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/inference/imaging/imagingtest"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
	"github.com/mlserve/mlserve/search"
)

// benchPhotos writes n preview-size photos: the six real sample photos
// scaled as Immich's previews are (shorter side 1440, JPEG quality 80),
// in turn, each copy made distinct by bytes after the JPEG's end (which
// decoders ignore), so that every file has a content hash of its own.
func benchPhotos(b *testing.B, n int) (dir string, jpegs [][]byte) {
	b.Helper()
	for i := 1; i <= 6; i++ {
		raw, err := os.ReadFile(testenv.TestData(b, fmt.Sprintf("photos/sample%d.jpg", i)))
		if err != nil {
			b.Fatal(err)
		}
		src, err := imaging.Decode(raw)
		if err != nil {
			b.Fatal(err)
		}
		m, err := src.Mat() // RGB
		if err != nil {
			b.Fatal(err)
		}
		nw, nh := src.W*1440/src.H, 1440
		if src.W < src.H {
			nw, nh = 1440, src.H*1440/src.W
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
		jpegs = append(jpegs, jpg)
		scaled.Close()
		m.Close()
	}
	dir = b.TempDir()
	for i := range n {
		data := append(bytes.Clone(jpegs[i%len(jpegs)]), fmt.Sprintf("copy %d", i)...)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("photo%04d.jpg", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir, jpegs
}

// benchEngine is the inference service as `mlserve index` builds it (the
// service's defaults), on a model cache holding the ViT-B/32-architecture
// image tower (random weights, the real model's shapes and cost; 350 MB,
// generated once under <temp>/mlserve-bench).
func benchEngine(b *testing.B, mode pool.Preprocess) (svc *pool.Service, modelDir string) {
	b.Helper()
	model, err := modelgen.BenchFile("vit-b-32-visual.onnx", modelgen.ViTB32Visual().Model)
	if err != nil {
		b.Fatal(err)
	}
	cache := b.TempDir()
	dir := filepath.Join(cache, "clip", testModel, "visual")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.Symlink(model, filepath.Join(dir, "model.onnx")); err != nil {
		b.Fatal(err)
	}
	cfg := `{"size": [224, 224], "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}`
	if err := os.WriteFile(filepath.Join(dir, "preprocess_cfg.json"), []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	store, err := models.NewStore(models.StoreOptions{CacheDir: cache, Offline: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	// The runtime `mlserve index` makes: CPU sessions arranged for
	// throughput (one single-threaded run per core).
	rt, err := inference.New(inference.Options{LibraryPath: testenv.ORTLibrary(b), Providers: []string{inference.CPU}, Throughput: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rt.Close() })
	svc, err = pool.NewService(pool.ServiceOptions{Preprocess: mode}, store, rt, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(svc.Close)
	return svc, filepath.Dir(dir)
}

// bareVisual runs the same graph alone: a batch of 16 of the photos,
// preprocessed exactly as the pipeline does, through one session on every
// core (the ceiling the ratio uses), and as one single-threaded
// run of 8 of them per core at once (the arrangement the pipeline uses,
// and ONNX Runtime's limit for throughput here).
type bareVisual struct {
	s, one *inference.Session
	in     []float32
}

func newBareVisual(b *testing.B, modelDir string, jpegs [][]byte) *bareVisual {
	b.Helper()
	v, err := clip.LoadVisual(modelDir, testenv.Runtime(b), clip.VisualOptions{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	per := v.InputSize()
	in := make([]float32, 16*per)
	for i := range 16 {
		img, err := imaging.Decode(jpegs[i%len(jpegs)])
		if err != nil {
			b.Fatal(err)
		}
		v.Preprocess(img, in[i*per:(i+1)*per])
	}
	path := filepath.Join(modelDir, "visual", "model.onnx")
	s, err := testenv.Runtime(b).NewSession(path, inference.SessionOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	one, err := testenv.Runtime(b).NewSession(path, inference.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = one.Close() })
	return &bareVisual{s: s, one: one, in: in}
}

// parRate runs batch 8 on the single-threaded session from one goroutine
// per core, after a warm-up run each, for at least d and returns images
// per second.
func (v *bareVisual) parRate(b *testing.B, d time.Duration) float64 {
	x := inference.F32(v.in[:len(v.in)/2], 8, 3, 224, 224)
	loop := func(d time.Duration) int64 {
		var runs atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range runtime.NumCPU() {
			wg.Go(func() {
				for first := true; first || time.Since(start) < d; first = false {
					if _, err := v.one.Run(context.Background(), x); err != nil {
						b.Error(err)
						return
					}
					runs.Add(1)
				}
			})
		}
		wg.Wait()
		return runs.Load()
	}
	loop(0)
	start := time.Now()
	runs := loop(d)
	return float64(8*runs) / time.Since(start).Seconds()
}

// cpuTime is the CPU time this process has used (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// dbCPU is the CPU time of the PGlite server that scripts/services.sh
// started (its pid file), or -1 when it cannot be read: on a small
// machine its work (the HNSW index in WebAssembly) competes with the
// pipeline's for the cores.
func dbCPU() time.Duration {
	dir := os.Getenv("MLSERVE_SERVICES_DIR")
	if dir == "" {
		dir = filepath.Join(testenv.DepsDir(), "run")
	}
	pid, err := os.ReadFile(filepath.Join(dir, "pglite", "pglite.pid"))
	if err != nil {
		return -1
	}
	stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
	if err != nil {
		return -1
	}
	// Fields after the command (which may hold spaces): state is field
	// 3, utime and stime fields 14 and 15, in clock ticks (100 a second).
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(u+st) * 10 * time.Millisecond
}

// rate runs batch 16 for at least d (and 3 runs) after a warm-up run and
// returns images per second and the CPU time per image.
func (v *bareVisual) rate(b *testing.B, d time.Duration) (float64, time.Duration) {
	x := inference.F32(v.in, 16, 3, 224, 224)
	run := func() {
		if _, err := v.s.Run(context.Background(), x); err != nil {
			b.Fatal(err)
		}
	}
	run()
	start, cpu := time.Now(), cpuTime()
	n := 0
	for n < 3 || time.Since(start) < d {
		run()
		n++
	}
	return float64(16*n) / time.Since(start).Seconds(), (cpuTime() - cpu) / time.Duration(16*n)
}

// BenchmarkIndexPipeline measures `mlserve index` as the command runs it
// (jobs.Indexer on the inference service's defaults for bulk work, into
// PGlite with the HNSW index kept up to date) on 96 preview-size copies
// of the real sample photos with the ViT-B/32-architecture graph, and,
// in the same run, the bare graph on the same photos preprocessed the
// same way (measured before and after each variant, averaged): at batch
// 16 on every core, and as one single-threaded run of batch 8 per core at
// once. It reports the pipeline's img/s after the model is loaded, the
// bare img/s, the ratios, and the model's load time:
//
//	go test -run '^$' -bench IndexPipeline -benchtime 1x ./jobs/
//
// (with the test services' URLs exported: `make test` does, or see
// scripts/services.sh). Variants: the in-process queue and Redis (a
// producer and a worker in this process), one and two batches at once.
func BenchmarkIndexPipeline(b *testing.B) {
	const n = 96
	dir, jpegs := benchPhotos(b, n)
	for _, mode := range []pool.Preprocess{pool.PreprocessExact, pool.PreprocessFast} {
		b.Run("preprocess="+string(mode), func(b *testing.B) { benchIndexPipeline(b, mode, dir, jpegs, n) })
	}
}

// benchIndexPipeline runs BenchmarkIndexPipeline's variants with one
// preprocessing mode (MLSERVE_PREPROCESS), decoding as `mlserve index`
// does (scaled for CLIP when fast).
func benchIndexPipeline(b *testing.B, mode pool.Preprocess, dir string, jpegs [][]byte, n int) {
	svc, modelDir := benchEngine(b, mode)
	bare := newBareVisual(b, modelDir, jpegs)
	dbURL := testenv.DatabaseURL(b)
	var redisURL string
	// Load the model once, apart: every variant's figures exclude it.
	start := time.Now()
	if err := svc.Preload(context.Background(), "clip", "visual", []string{testModel}); err != nil {
		b.Fatal(err)
	}
	load := time.Since(start)
	minSide, err := svc.VisualMinSide(context.Background(), testModel)
	if err != nil {
		b.Fatal(err)
	}
	decode := func(data []byte) (*imaging.Image, error) {
		img, _, _, err := svc.Decode(data, minSide)
		return img, err
	}
	for _, bc := range []struct {
		queue   string
		workers int
	}{
		{"memory", 1},
		{"memory", 2},
		{"redis", 1},
		{"redis", 2},
	} {
		b.Run(fmt.Sprintf("queue=%s/workers=%d", bc.queue, bc.workers), func(b *testing.B) {
			if bc.queue == "redis" && redisURL == "" {
				redisURL = testenv.RedisURL(b)
			}
			var rate, bareRate, parRate, batchRows, allocMB float64
			var cpu, bareCPU, dbUsed time.Duration
			runs := 0
			for b.Loop() {
				before, beforeCPU := bare.rate(b, 3*time.Second)
				parBefore := bare.parRate(b, 3*time.Second)
				schema := testSchema(b)
				opts := IndexerOptions{
					Engine: svc, Roots: []string{dir}, Workers: bc.workers, Prune: true, Decode: decode, Recycle: svc.Recycle,
					Open: func(ctx context.Context) (search.Index, error) {
						return search.OpenIndex(ctx, search.IndexOptions{URL: dbURL, Schema: schema}, nil)
					},
				}
				var sum Summary
				var err error
				batches0, rows0 := batchTotals(svc)
				var ms0, ms1 runtime.MemStats
				runtime.ReadMemStats(&ms0)
				used, db := cpuTime(), dbCPU()
				if bc.queue == "memory" {
					sum, err = NewIndexer(opts, nil).Run(context.Background())
				} else {
					sum, err = runRedisIndex(b, opts, redisURL)
				}
				if err != nil || sum.Indexed != int64(n) {
					b.Fatalf("index: %v (%+v)", err, sum)
				}
				used = cpuTime() - used
				batches1, rows1 := batchTotals(svc)
				runtime.ReadMemStats(&ms1)
				allocMB += float64(ms1.TotalAlloc-ms0.TotalAlloc) / 1e6 / float64(n)
				batchRows += float64(rows1-rows0) / float64(max(1, batches1-batches0))
				if db >= 0 && dbUsed >= 0 {
					dbUsed += (dbCPU() - db) / time.Duration(n)
				} else {
					dbUsed = -1
				}
				after, afterCPU := bare.rate(b, 3*time.Second)
				parRate += (parBefore + bare.parRate(b, 3*time.Second)) / 2
				rate += sum.Rate()
				bareRate += (before + after) / 2
				cpu += used / time.Duration(n)
				bareCPU += (beforeCPU + afterCPU) / 2
				runs++
			}
			rate /= float64(runs)
			bareRate /= float64(runs)
			parRate /= float64(runs)
			cpu /= time.Duration(runs)
			bareCPU /= time.Duration(runs)
			b.ReportMetric(rate, "img/s")
			b.ReportMetric(bareRate, "bare-img/s")
			b.ReportMetric(rate/bareRate, "ratio")
			b.ReportMetric(parRate, "bare-1thr-img/s")
			b.ReportMetric(rate/parRate, "ratio-1thr")
			b.ReportMetric(float64(cpu)/1e6, "cpu-ms/img")
			b.ReportMetric(float64(bareCPU)/1e6, "bare-cpu-ms/img")
			// On a machine whose cores are all busy, no scheduling beats
			// the bare graph's share of the CPU work.
			b.ReportMetric(float64(bareCPU)/float64(cpu), "cpu-bound-ceiling")
			if dbUsed >= 0 {
				b.ReportMetric(float64(dbUsed)/float64(runs)/1e6, "db-cpu-ms/img")
			}
			b.ReportMetric(load.Seconds(), "load-s")
			b.ReportMetric(batchRows/float64(runs), "rows/batch")
			b.ReportMetric(allocMB/float64(runs), "alloc-MB/img")
			b.Logf("%s: %.2f img/s after the model load; bare ONNX Runtime, batch 16, same graph and photos: %.2f img/s; ratio %.2f (single-threaded runs at once %.2f img/s: %.2f); CPU per image %s (bare %s: a CPU-bound ceiling of %.2f)",
				b.Name(), rate, bareRate, rate/bareRate, parRate, rate/parRate, cpu.Round(time.Millisecond), bareCPU.Round(time.Millisecond), float64(bareCPU)/float64(cpu))
		})
	}
}

// batchTotals adds up the engine's batches and their rows so far.
func batchTotals(svc *pool.Service) (batches, rows int64) {
	for _, st := range svc.BatchStats() {
		batches += st.Batches
		rows += st.Rows
	}
	return batches, rows
}

// runRedisIndex runs an index through a Redis queue of its own: the
// producer (Run) and a worker (Work) in this process, on one engine.
func runRedisIndex(b *testing.B, opts IndexerOptions, redisURL string) (Summary, error) {
	c := redisClient(b, redisURL)
	name := uniqueName(b, "mlserve-bench:")
	b.Cleanup(func() {
		ctx := context.Background()
		if keys, _ := c.Keys(ctx, "{"+name+"}*").Result(); len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
	opts.Redis, opts.Queue = c, RedisOptions{Name: name, Block: 100 * time.Millisecond}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() { _, werr = NewIndexer(opts, nil).Work(ctx) })
	producer := opts
	producer.Engine = nil
	sum, err := NewIndexer(producer, nil).Run(context.Background())
	stop()
	wg.Wait()
	if err == nil {
		err = werr
	}
	return sum, err
}
