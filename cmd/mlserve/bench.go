package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gocv.io/x/gocv"

	"github.com/mlserve/mlserve/api"
	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/clip"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/inference/imaging/imagingtest"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/onnx"
	"github.com/mlserve/mlserve/pool"
)

// benchFlags are `mlserve bench`'s options.
type benchFlags struct {
	url                       string
	task                      string
	clipModel, faceModel      string
	ocrModel                  string
	cache                     string
	photos                    string
	image                     string
	short, quality            int
	concurrency               []int
	duration, bareDuration    time.Duration
	requests                  int
	bare                      bool
	bareModel                 string
	faces                     int
	faceMinScore              float64
	text                      string
	withCLIP                  bool
	quiet                     bool
	warmup                    int
	threads                   bool
	retryAfter                bool
	preprocess                string
	detModel, recModel, vitGr string // generated graphs (in-process)
}

// benchCommand is `mlserve bench`: a load generator for any Immich-compatible
// machine-learning server (mlserve or Immich's own) that prints, in one
// run, a concurrency sweep (throughput, latency percentiles, 503s), where
// the time went (from Server-Timing), and a bare ONNX Runtime baseline on
// the same graph and threads, alternated with the HTTP runs (A/B/A) so
// that the ratios hold on a noisy machine.
//
// Without --url it starts its own server in-process, with the service's
// defaults (the environment's MACHINE_LEARNING_* and MLSERVE_* variables
// apply), on generated graphs of the real models' architecture and cost
// (ViT-B/32 for CLIP; SCRFD-10GF and IResNet-50 for faces, as buffalo_l)
// unless --cache names a model cache. The requests carry real photos at
// Immich's preview size, as Immich sends them.
func (a *app) benchCommand() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench [flags]",
		Short: "Load-test an Immich-compatible machine-learning server",
		Long: `Loads an Immich-compatible machine-learning server (mlserve, or with --url any
other, Immich's own included) with real photos at Immich's preview size, and
prints a concurrency sweep (throughput, latency percentiles, 503s, batch
sizes), where the time went (from Server-Timing), and a bare ONNX Runtime
baseline on the same graph and threads, run between the levels so that the
ratios hold on a busy machine.

Without --url it starts mlserve in-process with the environment's settings,
on generated graphs of the real models' architecture and cost unless --cache
names a model cache.`,
		Example: `  mlserve bench
  mlserve bench --task faces --faces 60
  mlserve bench --url http://gpu-host:3003 --concurrency 1,8,32`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd.Context(), cmd.Flags(), &f, a.stdout, a.stderr)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.url, "url", "", "server to load (empty: start one in-process on generated graphs)")
	fs.StringVar(&f.task, "task", "clip-visual", "clip-visual | clip-textual | faces | ocr")
	fs.StringVar(&f.clipModel, "clip-model", "ViT-B-32__openai", "CLIP model name")
	fs.StringVar(&f.faceModel, "face-model", "buffalo_l", "face model name")
	fs.StringVar(&f.ocrModel, "ocr-model", "PP-OCRv5_mobile", "OCR model name")
	fs.StringVar(&f.cache, "cache", "", "in-process: serve this model cache (Immich layout) instead of generated graphs")
	fs.StringVar(&f.photos, "photos", "", "folder of JPEG photos (default: $MLSERVE_TESTDATA/photos, the six face-api samples)")
	fs.StringVar(&f.image, "image", "", "send this one file as is instead of the photos")
	fs.IntVar(&f.short, "preview", 1440, "scale the photos so their shorter side is this (Immich's preview size; 0: as they are)")
	fs.IntVar(&f.quality, "quality", 80, "JPEG quality of the scaled photos")
	fs.String("concurrency", "1,2,4,8,16", "requests in flight, one level after another")
	fs.DurationVar(&f.duration, "duration", 8*time.Second, "how long each concurrency level runs")
	fs.IntVar(&f.requests, "requests", 0, "requests per level instead of --duration")
	fs.BoolVar(&f.bare, "bare", true, "run the bare ONNX Runtime baseline between the levels (in-process, or with --bare-model)")
	fs.StringVar(&f.bareModel, "bare-model", "", "with --url: the ONNX file the server runs, for the bare baseline (threads from the environment)")
	fs.DurationVar(&f.bareDuration, "bare-duration", 3*time.Second, "how long each bare measurement runs")
	fs.IntVar(&f.faces, "faces", 0, "faces: pick the detection minScore so that the first photo gives about this many faces (0: use -face-min-score)")
	fs.Float64Var(&f.faceMinScore, "face-min-score", 0.7, "face detection minScore (Immich's default)")
	fs.StringVar(&f.text, "text", "a photo of a dog on the beach", "query for clip-textual")
	fs.BoolVar(&f.withCLIP, "with-clip", true, "faces, in-process: load the CLIP image model too, as a server has both (for the memory figures)")
	fs.BoolVar(&f.quiet, "quiet", true, "in-process: keep the server's log quiet")
	fs.IntVar(&f.warmup, "warmup", 0, "warm-up requests before measuring (0: one per photo)")
	fs.StringVar(&f.preprocess, "preprocess", "", "in-process: exact or fast (default: MLSERVE_PREPROCESS, else exact); run once with each to compare")
	fs.BoolVar(&f.retryAfter, "retry-after", false, "on a 503, a client waits what Retry-After says (jittered 0.5–1.5×) before its next request, as Immich's job queue backs off; without it, it sends again at once")
	fs.BoolVar(&f.threads, "threads", false, "in-process: only compare, on the bare graphs, one run on every core with one run per core (A/B/A), per batch size")
	return cmd
}

// runBench runs the benchmark with the parsed flags.
func runBench(ctx context.Context, fs *pflag.FlagSet, fp *benchFlags, stdout, stderr io.Writer) error {
	f := *fp
	if f.preprocess != "" {
		if _, err := pool.ParsePreprocess(f.preprocess); err != nil {
			return usageError{fmt.Errorf("--preprocess: %w", err)}
		}
		if f.url != "" {
			return usageError{errors.New("--preprocess applies to the in-process server; set MLSERVE_PREPROCESS on the server that --url names")}
		}
	}
	conc, _ := fs.GetString("concurrency")
	f.concurrency = nil
	for _, s := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return usagef("--concurrency: %q is not a positive integer", s)
		}
		f.concurrency = append(f.concurrency, n)
	}
	b := &bench{f: f, out: stdout, err: stderr}
	defer b.close()
	return b.run(ctx)
}

// bench is one `mlserve bench` run.
type bench struct {
	f        benchFlags
	out, err io.Writer

	url      string
	rt       *inference.Runtime
	svc      *pool.Service
	stop     func()
	cfg      *config.Config
	raws     [][]byte         // the photos' JPEGs
	bodies   [][]byte         // one request body per photo
	ctypes   []string         // and its content type
	imgs     []*imaging.Image // decoded photos, for the bare baseline
	entries  string
	client   *http.Client
	startMem string
}

func (b *bench) close() {
	if b.stop != nil {
		b.stop()
	}
	if b.svc != nil {
		b.svc.Close()
	}
	if b.rt != nil {
		_ = b.rt.Close()
	}
}

func (b *bench) printf(format string, args ...any) { fmt.Fprintf(b.out, format, args...) }

func (b *bench) run(ctx context.Context) error {
	f := b.f
	if f.url == "" {
		if err := b.startServer(ctx); err != nil {
			return err
		}
	} else {
		b.url = strings.TrimRight(f.url, "/")
	}
	if err := b.loadImages(); err != nil {
		return err
	}
	b.startMem = memory()
	if f.threads {
		return b.compareThreads(ctx)
	}
	maxConc := slicesMax(f.concurrency)
	b.client = &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: maxConc + 1}}

	minScore := f.faceMinScore
	if f.task == "faces" && f.faces > 0 {
		var err error
		if minScore, err = b.findMinScore(ctx, f.faces); err != nil {
			return err
		}
	}
	if f.task == "faces" && len(b.raws) > 1 {
		// One group photo, the one minScore was chosen on: the face
		// count of every request is the same.
		b.raws, b.imgs = b.raws[:1], b.imgs[:1]
	}
	if err := b.setEntries(minScore); err != nil {
		return err
	}
	if b.svc != nil && f.task == "faces" && f.withCLIP {
		// A server has CLIP loaded too: load it before the measurements.
		clipEntries := fmt.Sprintf(`{"clip":{"visual":{"modelName":%q}}}`, f.clipModel)
		body, ctype, err := immichForm(clipEntries, b.raws[0], "")
		if err != nil {
			return err
		}
		if r := b.send(ctx, body, ctype); r.err != nil || r.code != http.StatusOK {
			return fmt.Errorf("loading the CLIP model: status %d, %v", r.code, r.err) //nolint:errorlint // r.err is nil for an answer other than 200 (%w would print %!w(<nil>)); the message is for the operator
		}
	}
	// Warm-up: the model loads, the arena grows.
	warm := f.warmup
	if warm <= 0 {
		warm = len(b.bodies)
	}
	for j := range warm {
		i := j % len(b.bodies)
		if r := b.send(ctx, b.bodies[i], b.ctypes[i]); r.err != nil || r.code != http.StatusOK {
			return fmt.Errorf("warm-up request failed: status %d, %v %s", r.code, r.err, r.body) //nolint:errorlint // r.err is nil for an answer other than 200 (%w would print %!w(<nil>)); the message is for the operator
		}
	}
	var faces int
	if f.task == "faces" {
		r := b.send(ctx, b.bodies[0], b.ctypes[0])
		faces = strings.Count(string(r.body), `"boundingBox"`)
		b.printf("faces: %d per request on the first photo (minScore %.4g)\n", faces, minScore)
		if b.svc != nil {
			b.printf("memory: %s at start; with the models loaded and after the requests above: %s\n", b.startMem, memory())
		}
	}

	var base baseline
	if f.bare {
		var err error
		base, err = b.newBaseline(faces)
		if err != nil {
			return err
		}
		if base != nil {
			defer base.close()
		}
	}
	var a []bareResult
	if base != nil {
		b.printf("\nbare ONNX Runtime, same graphs and threads (%s):\n", base.describe())
		first := base.sweep(ctx, f.bareDuration)
		for _, r := range first.rows {
			b.printf("  %s\n", r)
		}
		b.printf("  best: %s\n", first.summary())
		a = append(a, first)
	}

	b.printf("\nconcurrency sweep (%s", describeLoad(f))
	if base != nil {
		b.printf("; a bare run after each level, ratios against the mean of the bare runs before and after")
	}
	b.printf("):\n")
	b.printf("%5s %7s %8s %8s %8s %5s %5s %6s | %6s %6s %6s %6s %6s %6s (ms, mean of Server-Timing)", "conc", "img/s", "p50", "p95", "p99", "503", "err", "batch",
		"queue", "decode", "prep", "wait", "infer", "post")
	if base != nil {
		b.printf(" | %8s %8s", "×bare/s", "×bare p50")
	}
	b.printf("\n")
	var levels []levelResult
	for _, c := range f.concurrency {
		lr := b.level(ctx, c)
		if base != nil {
			next := base.quick(ctx, f.bareDuration)
			lr.bareTput = (a[len(a)-1].bestTput + next.bestTput) / 2
			lr.bareP50 = (a[len(a)-1].p50 + next.p50) / 2
			lr.barePar = (a[len(a)-1].parTput + next.parTput) / 2
			a = append(a, next)
		}
		levels = append(levels, lr)
		b.printf("%s\n", lr.row(base != nil))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	retry := "clients send again at once after a 503"
	if f.retryAfter {
		retry = "clients honour Retry-After"
	}
	b.printf("\nrefusals and health during each level (client-side times; /ping every 20 ms; %s).\n", retry)
	b.printf("503s: whole level; sent after its first %v (the connect storm of every client starting at once is over);\n", stormEnd)
	b.printf("\"answer\": whole level, from the request's headers written to the answer's first byte (the server's part):\n")
	b.printf("%5s %6s %8s %8s %8s | %8s %8s | %8s | %5s %8s %8s %8s\n", "conc", "503s", "p50", "p99", "max", "p99 >1s", "max >1s", "answer99", "pings", "p50", "p99", "max")
	for _, l := range levels {
		b.printf("%s\n", l.health())
	}
	b.summary(levels, base != nil)
	if b.svc != nil && f.task == "faces" {
		if base != nil {
			base.close()
		}
		b.svc.Close()
		b.svc = nil
		inference.ReleaseMemory()
		b.printf("memory: %s after every model was unloaded (start: %s)\n", memory(), b.startMem)
	}
	return nil
}

// startServer starts mlserve in-process with the service's defaults on a
// cache of generated graphs (or -cache).
func (b *bench) startServer(ctx context.Context) error {
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	b.cfg = cfg
	cache := b.f.cache
	if cache == "" {
		if cache, err = b.generatedCache(); err != nil {
			return err
		}
	}
	cfg.CacheFolder, cfg.HFOffline, cfg.Preload = cache, true, nil
	cfg.ModelTTL = 0 // no unloading in the middle of a sweep
	if b.f.preprocess != "" {
		p, _ := pool.ParsePreprocess(b.f.preprocess) // checked in runBench
		cfg.Preprocess = string(p)
	}
	level := slog.LevelWarn
	if !b.f.quiet {
		level = cfg.LogLevel
	}
	logger := slog.New(slog.NewTextHandler(b.err, &slog.HandlerOptions{Level: level}))
	if b.rt, err = newRuntime(cfg, logger); err != nil {
		return err
	}
	if b.svc, err = newService(cfg, b.rt, nil, logger); err != nil {
		return err
	}
	srv := api.New(api.Options{
		KeepAlive: 30 * time.Second, MaxBodyBytes: cfg.MaxUploadBytes, RequestTimeout: cfg.WorkerTimeout,
		Predictor: b.svc, Health: b.svc,
	}, logger)
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = srv.Serve(sctx, ln); close(done) }()
	b.stop = func() { cancel(); <-done }
	b.url = "http://" + ln.Addr().String()
	intra, _ := b.rt.Threads(inference.CPU)
	st := b.svc.Stats()
	b.printf("mlserve bench: in-process server on %s, model cache %s\n", b.url, cache)
	b.printf("service: %d CPUs, intra-op threads %d, CPU workers %d (queue %d), batch max %s, batch wait %v, gather %v, face batch %s, preprocess %s, split CLIP batches %v\n",
		runtime.NumCPU(), intra, st.Workers, st.MaxQueue, orDefault(cfg.BatchMax), cfg.BatchWait, cfg.BatchGather, orDefault(cfg.MaxBatchFace), cfg.Preprocess, cfg.SplitBatch)
	return nil
}

func orDefault(n int) string {
	if n == 0 {
		return "default"
	}
	return strconv.Itoa(n)
}

// generatedCache lays out the models of the task in a cache folder,
// linked to generated graphs written once under <temp>/mlserve-bench.
func (b *bench) generatedCache() (string, error) {
	root := filepath.Join(os.TempDir(), "mlserve-bench")
	cache := filepath.Join(root, "cache")
	link := func(src, rel string) error {
		p := filepath.Join(cache, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		_ = os.Remove(p)
		return os.Symlink(src, p)
	}
	write := func(rel, data string) error {
		p := filepath.Join(cache, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, []byte(data), 0o644)
	}
	gen := func(name string, build func() onnx.Model) (string, error) {
		if _, err := os.Stat(filepath.Join(root, name)); err != nil {
			b.printf("generating %s (once; kept in %s)...\n", name, root)
		}
		return modelgen.BenchFile(name, build)
	}
	switch b.f.task {
	case "clip-visual", "faces":
		vit, err := gen("vit-b-32-visual.onnx", modelgen.ViTB32Visual().Model)
		if err != nil {
			return "", err
		}
		b.f.vitGr = vit
		dir := "clip/" + b.f.clipModel + "/"
		if err := link(vit, dir+"visual/model.onnx"); err != nil {
			return "", err
		}
		if err := write(dir+"visual/preprocess_cfg.json", `{"size":[224,224],"mean":[0.48145466,0.4578275,0.40821073],"std":[0.26862954,0.26130258,0.27577711]}`); err != nil {
			return "", err
		}
		if err := write(dir+"config.json", `{"embed_dim":512}`); err != nil {
			return "", err
		}
		if b.f.task == "clip-visual" {
			break
		}
		det, err := gen("scrfd-10g.onnx", modelgen.SCRFD10G{}.Model)
		if err != nil {
			return "", err
		}
		rec, err := gen("arcface-r50.onnx", modelgen.ArcFaceR50{}.Model)
		if err != nil {
			return "", err
		}
		b.f.detModel, b.f.recModel = det, rec
		dir = "facial-recognition/" + b.f.faceModel + "/"
		if err := link(det, dir+"detection/model.onnx"); err != nil {
			return "", err
		}
		if err := link(rec, dir+"recognition/model.onnx"); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("--task %s needs --cache (a model cache with the real models) or --url", b.f.task)
	}
	return cache, nil
}

// loadImages reads the photos and scales them to preview size, once: the
// JPEGs are kept under <temp>/mlserve-bench/previews.
func (b *bench) loadImages() error {
	var raws [][]byte
	if b.f.image != "" {
		data, err := os.ReadFile(b.f.image)
		if err != nil {
			return err
		}
		raws = append(raws, data)
		b.printf("image: %s (%d bytes)\n", b.f.image, len(data))
	} else {
		dir := b.f.photos
		if dir == "" {
			td := os.Getenv("MLSERVE_TESTDATA")
			if td == "" {
				td = filepath.Join(".deps", "testdata")
			}
			dir = filepath.Join(td, "photos")
		}
		paths, _ := filepath.Glob(filepath.Join(dir, "*.jpg"))
		if len(paths) == 0 {
			return fmt.Errorf("no JPEG photos in %s (set -photos or MLSERVE_TESTDATA; scripts/setup.sh installs the samples)", dir)
		}
		sort.Strings(paths)
		var sizes []string
		for _, p := range paths {
			data, w, h, err := preview(p, b.f.short, b.f.quality)
			if err != nil {
				return err
			}
			raws = append(raws, data)
			sizes = append(sizes, fmt.Sprintf("%d×%d", w, h))
		}
		what := "as they are"
		if b.f.short > 0 {
			what = fmt.Sprintf("shorter side %d, JPEG q%d", b.f.short, b.f.quality)
		}
		b.printf("images: %d photos from %s at preview size (%s): %s\n", len(raws), dir, what, strings.Join(sizes, ", "))
	}
	for _, raw := range raws {
		img, err := imaging.Decode(raw)
		if err != nil {
			return err
		}
		b.imgs = append(b.imgs, img)
	}
	b.raws = raws
	return nil
}

// preview scales the photo at path so its shorter side is short (area
// interpolation down, cubic up) and encodes it as JPEG, caching the file.
func preview(path string, short, quality int) ([]byte, int, int, error) {
	if short <= 0 {
		data, err := os.ReadFile(path) //nolint:gosec // G703: a photo the operator named on the command line
		if err != nil {
			return nil, 0, 0, err
		}
		img, err := imaging.Decode(data)
		if err != nil {
			return nil, 0, 0, err
		}
		return data, img.W, img.H, nil
	}
	dir := filepath.Join(os.TempDir(), "mlserve-bench", "previews")
	name := fmt.Sprintf("%s_%d_q%d.jpg", strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)), short, quality)
	cached := filepath.Join(dir, name)
	if data, err := os.ReadFile(cached); err == nil { //nolint:gosec // G703: the bench's own preview cache under the temp folder, named after the operator's photo
		if img, err := imaging.Decode(data); err == nil {
			return data, img.W, img.H, nil
		}
	}
	raw, err := os.ReadFile(path) //nolint:gosec // G703: a photo the operator named on the command line
	if err != nil {
		return nil, 0, 0, err
	}
	src, err := imaging.Decode(raw)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	m, err := src.Mat() // RGB
	if err != nil {
		return nil, 0, 0, err
	}
	defer m.Close()
	w, h := src.W, src.H
	var nw, nh int
	if w < h {
		nw, nh = short, int(math.Round(float64(h)*float64(short)/float64(w)))
	} else {
		nw, nh = int(math.Round(float64(w)*float64(short)/float64(h))), short
	}
	interp := gocv.InterpolationArea
	if nw > w {
		interp = gocv.InterpolationCubic
	}
	scaled := gocv.NewMat()
	defer scaled.Close()
	gocv.Resize(m, &scaled, image.Pt(nw, nh), 0, 0, interp)
	pix, err := scaled.DataPtrUint8()
	if err != nil {
		return nil, 0, 0, err
	}
	data, err := imagingtest.JPEG(pix, nw, nh, 3, quality)
	if err != nil {
		return nil, 0, 0, err
	}
	if err := os.MkdirAll(dir, 0o755); err == nil {
		tmp := cached + ".tmp"
		if os.WriteFile(tmp, data, 0o644) == nil { //nolint:gosec // G703: the bench's own preview cache under the temp folder, named after the operator's photo
			_ = os.Rename(tmp, cached) //nolint:gosec // G703: the bench's own preview cache under the temp folder, named after the operator's photo
		}
	}
	return data, nw, nh, nil
}

// setEntries builds the request bodies of the task, one per photo.
func (b *bench) setEntries(minScore float64) error {
	f := b.f
	img := true
	switch f.task {
	case "clip-visual":
		b.entries = fmt.Sprintf(`{"clip":{"visual":{"modelName":%q}}}`, f.clipModel)
	case "clip-textual":
		b.entries = fmt.Sprintf(`{"clip":{"textual":{"modelName":%q,"options":{}}}}`, f.clipModel)
		img = false
	case "faces":
		b.entries = fmt.Sprintf(`{"facial-recognition":{"detection":{"modelName":%q,"options":{"minScore":%g}},"recognition":{"modelName":%q}}}`, f.faceModel, minScore, f.faceModel)
	case "ocr":
		b.entries = fmt.Sprintf(`{"ocr":{"detection":{"modelName":%q,"options":{"minScore":0.5,"maxResolution":736}},"recognition":{"modelName":%q,"options":{"minScore":0.8}}}}`, f.ocrModel, f.ocrModel)
	default:
		return fmt.Errorf("unknown task %q", f.task)
	}
	bodies := make([][]byte, len(b.raws))
	b.ctypes = make([]string, len(b.raws))
	for i, raw := range b.raws {
		var data []byte
		if img {
			data = raw
		}
		body, ctype, err := immichForm(b.entries, data, f.text)
		if err != nil {
			return err
		}
		bodies[i], b.ctypes[i] = body, ctype
	}
	b.bodies = bodies
	return nil
}

// findMinScore picks the detection minScore at which the first photo
// gives about n faces (at least n, as few more as the detector allows).
func (b *bench) findMinScore(ctx context.Context, n int) (float64, error) {
	count := func(score float64) (int, error) {
		entries := fmt.Sprintf(`{"facial-recognition":{"detection":{"modelName":%q,"options":{"minScore":%g}}}}`, b.f.faceModel, score)
		body, ctype, err := immichForm(entries, b.raws[0], "")
		if err != nil {
			return 0, err
		}
		r := b.send(ctx, body, ctype)
		if r.err != nil || r.code != http.StatusOK {
			return 0, fmt.Errorf("face detection: status %d, %v %s", r.code, r.err, r.body) //nolint:errorlint // r.err is nil for an answer other than 200 (%w would print %!w(<nil>)); the message is for the operator
		}
		i := bytes.Index(r.body, []byte(`"scores":[`))
		if i < 0 {
			return 0, fmt.Errorf("face detection answered %s", r.body)
		}
		rest := r.body[i+len(`"scores":[`):]
		end := bytes.IndexByte(rest, ']')
		if end <= 0 {
			return 0, nil
		}
		return bytes.Count(rest[:end], []byte(",")) + 1, nil
	}
	lo, hi := 0.0, 1.0 // count(lo) ≥ n > count(hi), as far as known
	for range 24 {
		mid := (lo + hi) / 2
		c, err := count(mid)
		if err != nil {
			return 0, err
		}
		if c >= n {
			lo = mid
		} else {
			hi = mid
		}
		if c == n {
			break
		}
	}
	return lo, nil
}

// result is one request's outcome.
type result struct {
	took   time.Duration
	code   int
	err    error
	body   []byte
	timing map[string]float64
	// retryAfter is the answer's Retry-After, 0 without one.
	retryAfter time.Duration
	// answered is from the request's headers written to the answer's
	// first byte: the server's part of took, without the client's own
	// connecting and writing (which, on a machine the server saturates,
	// can be most of a refusal's time).
	answered time.Duration
}

func (b *bench) send(ctx context.Context, body []byte, ctype string) result {
	start := time.Now()
	var wrote, first time.Time
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteHeaders:         func() { wrote = time.Now() },
		GotFirstResponseByte: func() { first = time.Now() },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url+"/predict", bytes.NewReader(body))
	if err != nil {
		return result{err: err}
	}
	req.Header.Set("Content-Type", ctype)
	resp, err := b.client.Do(req)
	if err != nil {
		return result{err: err, took: time.Since(start)}
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := result{took: time.Since(start), code: resp.StatusCode, err: err, body: data}
	if !wrote.IsZero() && first.After(wrote) {
		r.answered = first.Sub(wrote)
	}
	if s, e := strconv.Atoi(resp.Header.Get("Retry-After")); e == nil && s > 0 {
		r.retryAfter = time.Duration(s) * time.Second
	}
	r.timing = parseServerTiming(resp.Header.Get("Server-Timing"))
	return r
}

// ping times one GET /ping.
func (b *bench) ping(ctx context.Context, c *http.Client) (time.Duration, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/ping", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return time.Since(start), err
}

// parseServerTiming reads "name;dur=1.5, other;dur=2" into a map.
func parseServerTiming(h string) map[string]float64 {
	if h == "" {
		return nil
	}
	out := map[string]float64{}
	for _, part := range strings.Split(h, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		for _, p := range strings.Split(params, ";") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(p), "dur="); ok {
				if d, err := strconv.ParseFloat(v, 64); err == nil {
					out[name] = d
				}
			}
		}
	}
	return out
}

// stormEnd is when a level's connect storm is over: every client starts
// at once and, on a machine the server saturates, the first second's
// refusals wait mostly for the load generator itself (connecting and
// writing a hundred requests at once); later ones come at the pace of
// Retry-After. The health table shows refusals after it apart.
const stormEnd = time.Second

// levelResult is one concurrency level.
type levelResult struct {
	conc             int
	ok, errs         int
	wall             time.Duration
	lat              []time.Duration // answers 200, sorted
	refusals         []time.Duration // answers 503, sorted
	refusalsAnswered []time.Duration // their answered times, sorted
	refusalsSteady   []time.Duration // answers 503 to requests sent after stormEnd, sorted
	pings            []time.Duration // GET /ping every 20 ms during the level, sorted
	pingErrs         int
	stages           map[string]float64 // sums
	batchRows        float64            // mean rows per batch (in-process)
	bareTput         float64
	bareP50          time.Duration
	// barePar is the bare throughput of single-threaded runs at once (0
	// where not measured).
	barePar float64
}

func (l levelResult) tput() float64 { return float64(l.ok) / l.wall.Seconds() }

func (l levelResult) pct(p float64) time.Duration { return percentile(l.lat, p) }

// percentile of sorted durations (nearest rank), 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[max(0, min(len(sorted)-1, int(math.Ceil(p*float64(len(sorted))))-1))]
}

// health is the level's line on refusals and /ping, client-side times.
func (l levelResult) health() string {
	s := fmt.Sprintf("%5d %6d %8s %8s %8s | %8s %8s | %8s | %5d %8s %8s %8s", l.conc,
		len(l.refusals), ms(percentile(l.refusals, .5)), ms(percentile(l.refusals, .99)), ms(percentile(l.refusals, 1)),
		ms(percentile(l.refusalsSteady, .99)), ms(percentile(l.refusalsSteady, 1)),
		ms(percentile(l.refusalsAnswered, .99)),
		len(l.pings), ms(percentile(l.pings, .5)), ms(percentile(l.pings, .99)), ms(percentile(l.pings, 1)))
	if l.pingErrs > 0 {
		s += fmt.Sprintf("  (%d /ping failed)", l.pingErrs)
	}
	return s
}

func (l levelResult) stage(name string) float64 {
	if l.ok == 0 {
		return 0
	}
	return l.stages[name] / float64(l.ok)
}

func (l levelResult) row(withBare bool) string {
	batch := "-"
	if l.batchRows > 0 {
		batch = fmt.Sprintf("%.1f", l.batchRows)
	}
	s := fmt.Sprintf("%5d %7.2f %8s %8s %8s %5d %5d %6s | %6.1f %6.1f %6.1f %6.1f %6.1f %6.1f",
		l.conc, l.tput(), ms(l.pct(.5)), ms(l.pct(.95)), ms(l.pct(.99)), len(l.refusals), l.errs, batch,
		l.stage("queue"), l.stage("decode"), l.stage("preprocess"), l.stage("batch"), l.stage("infer"), l.stage("postprocess"))
	if withBare && l.bareTput > 0 {
		s += fmt.Sprintf(" | %8.2f %8.2f", l.tput()/l.bareTput, float64(l.pct(.5))/float64(l.bareP50))
	}
	return s
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func mib(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }

// level runs one concurrency level: c clients send requests back to back,
// cycling through the photos.
func (b *bench) level(ctx context.Context, c int) levelResult {
	lr := levelResult{conc: c, stages: map[string]float64{}}
	var before []pool.BatchStats
	if b.svc != nil {
		before = b.svc.BatchStats()
	}
	var mu sync.Mutex
	var sent int
	deadline := time.Now().Add(b.f.duration)
	start := time.Now()
	var wg sync.WaitGroup
	done := make(chan struct{})
	pinged := make(chan struct{})
	go func() { // a health check beside the load, as Immich's every 2 s, but often
		defer close(pinged)
		pinger := &http.Client{Timeout: 10 * time.Second}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			took, err := b.ping(ctx, pinger)
			mu.Lock()
			if err != nil {
				lr.pingErrs++
			} else {
				lr.pings = append(lr.pings, took)
			}
			mu.Unlock()
		}
	}()
	for w := range c {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i += c {
				mu.Lock()
				if b.f.requests > 0 {
					if sent >= b.f.requests {
						mu.Unlock()
						return
					}
					sent++
				}
				mu.Unlock()
				if b.f.requests == 0 && time.Now().After(deadline) {
					return
				}
				sentAt := time.Since(start)
				r := b.send(ctx, b.bodies[i%len(b.bodies)], b.ctypes[i%len(b.bodies)])
				mu.Lock()
				switch {
				case r.err != nil:
					lr.errs++
				case r.code == http.StatusServiceUnavailable:
					lr.refusals = append(lr.refusals, r.took)
					lr.refusalsAnswered = append(lr.refusalsAnswered, r.answered)
					if sentAt >= stormEnd {
						lr.refusalsSteady = append(lr.refusalsSteady, r.took)
					}
				case r.code != http.StatusOK:
					lr.errs++
				default:
					lr.ok++
					lr.lat = append(lr.lat, r.took)
					for k, v := range r.timing {
						lr.stages[k] += v
					}
				}
				mu.Unlock()
				if r.code == http.StatusServiceUnavailable && b.f.retryAfter && r.retryAfter > 0 {
					// Independent clients (Immich's job retries) do not all
					// come back at the same instant.
					wait := r.retryAfter/2 + rand.N(r.retryAfter) //nolint:gosec // G404: jitter for a load generator, not a secret
					if b.f.requests == 0 {
						wait = min(wait, time.Until(deadline))
					}
					select {
					case <-time.After(wait):
					case <-ctx.Done():
					}
				}
			}
		})
	}
	wg.Wait()
	lr.wall = time.Since(start)
	close(done)
	<-pinged
	for _, d := range [][]time.Duration{lr.lat, lr.refusals, lr.refusalsAnswered, lr.refusalsSteady, lr.pings} {
		slices.Sort(d)
	}
	if b.svc != nil {
		var batches, rows int64
		for _, a := range b.svc.BatchStats() {
			batches += a.Batches
			rows += a.Rows
			for _, p := range before {
				if p.Key == a.Key {
					batches -= p.Batches
					rows -= p.Rows
				}
			}
		}
		if batches > 0 {
			lr.batchRows = float64(rows) / float64(batches)
		}
	}
	return lr
}

// summary prints the "done when" lines the run can tell.
func (b *bench) summary(levels []levelResult, withBare bool) {
	b.printf("\n")
	errs := 0
	for _, l := range levels {
		errs += l.errs + len(l.refusals)
	}
	b.printf("errors and 503s over the sweep: %d\n", errs)
	var eight *levelResult
	for i, l := range levels {
		if l.conc == 8 && l.pct(.5) > 0 {
			eight = &levels[i]
			b.printf("p99/p50 at concurrency 8: %.2f (target ≤ 2)\n", float64(l.pct(.99))/float64(l.pct(.5)))
		}
	}
	if top := levels[len(levels)-1]; eight != nil && top.conc > 8 && eight.tput() > 0 {
		b.printf("overload, concurrency %d: %.2f img/s = %.2f× concurrency 8; 503 p99 %s (after the first %v %s; headers written to answer %s), /ping p99 %s\n",
			top.conc, top.tput(), top.tput()/eight.tput(), ms(percentile(top.refusals, .99)), stormEnd, ms(percentile(top.refusalsSteady, .99)),
			ms(percentile(top.refusalsAnswered, .99)), ms(percentile(top.pings, .99)))
	}
	if !withBare {
		return
	}
	for _, l := range levels {
		if l.conc == 1 && l.bareP50 > 0 {
			b.printf("lone request p50: %s = %.2f× bare batch-1 p50 %s\n", ms(l.pct(.5)), float64(l.pct(.5))/float64(l.bareP50), ms(l.bareP50))
		}
		if l.conc == 4 && l.bareTput > 0 {
			b.printf("throughput at concurrency 4: %.2f img/s = %.2f× best bare %.2f img/s\n", l.tput(), l.tput()/l.bareTput, l.bareTput)
			if l.barePar > 0 {
				b.printf("  and %.2f× bare single-threaded runs, one per thread at once (%.2f img/s): the same threads arranged for throughput instead of latency\n",
					l.tput()/l.barePar, l.barePar)
			}
		}
	}
}

func describeLoad(f benchFlags) string {
	if f.requests > 0 {
		return fmt.Sprintf("%d requests per level", f.requests)
	}
	return fmt.Sprintf("%v per level", f.duration)
}

func slicesMax(v []int) int {
	m := 0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// memory describes the process's memory: the resident set as it is, and
// after handing freed memory back to the system (Go's and the C heap's),
// with the C heap (ONNX Runtime, OpenCV) and Go heap in use.
func memory() string {
	before := rss()
	debug.FreeOSMemory()
	inference.ReleaseMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return fmt.Sprintf("RSS %s (%s once freed memory is handed back; C heap %s, Go heap %s in use)",
		mib(before), mib(rss()), mib(inference.CHeapBytes()), mib(int64(ms.HeapInuse)))
}

// rss is the process's resident memory (Linux), 0 elsewhere.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// baseline is a bare ONNX Runtime run of the task's graphs, with the
// server's threads, on inputs the server would make of the same photos.
type baseline interface {
	describe() string
	// sweep measures every batch size; quick only batch 1 and the best.
	sweep(ctx context.Context, d time.Duration) bareResult
	quick(ctx context.Context, d time.Duration) bareResult
	close()
}

// bareResult is one bare measurement.
type bareResult struct {
	rows     []string
	bestTput float64       // items per second at the best batch
	best     int           // the best batch
	p50      time.Duration // batch-1 (one request's) run time
	// parTput is the items per second of one single-threaded run per
	// thread at once, at batch parBest (0 where not measured): the same
	// threads arranged for throughput instead of latency.
	parTput float64
	parBest int
}

func (r bareResult) summary() string {
	s := fmt.Sprintf("batch %d, %.2f img/s; batch-1 p50 %s", r.best, r.bestTput, ms(r.p50))
	if r.parTput > 0 {
		s += fmt.Sprintf("; single-threaded runs at once: batch %d, %.2f img/s", r.parBest, r.parTput)
	}
	return s
}

func (b *bench) newBaseline(faces int) (baseline, error) {
	rt := b.rt
	if rt == nil {
		if b.f.bareModel == "" {
			b.printf("(no bare baseline: --url without --bare-model)\n")
			return nil, nil
		}
		cfg, err := config.FromEnv()
		if err != nil {
			return nil, err
		}
		if rt, err = newRuntime(cfg, slog.New(slog.DiscardHandler)); err != nil {
			return nil, err
		}
		b.rt = rt
	}
	switch b.f.task {
	case "clip-visual":
		model := b.f.bareModel
		if model == "" {
			model = filepath.Join(b.cfg.CacheFolder, "clip", b.f.clipModel, "visual", "model.onnx")
		}
		return newVisualBaseline(rt, model, b.imgs)
	case "faces":
		if b.f.detModel == "" && b.cfg != nil {
			dir := filepath.Join(b.cfg.CacheFolder, "facial-recognition", b.f.faceModel)
			b.f.detModel, b.f.recModel = filepath.Join(dir, "detection", "model.onnx"), filepath.Join(dir, "recognition", "model.onnx")
		}
		if b.f.detModel == "" {
			b.printf("(no bare baseline for faces against -url)\n")
			return nil, nil
		}
		chunk := pool.DefaultMaxBatchFace
		if b.cfg != nil && b.cfg.MaxBatchFace > 0 {
			chunk = b.cfg.MaxBatchFace
		}
		return newFaceBaseline(rt, b.f.detModel, b.f.recModel, faces, chunk)
	}
	b.printf("(no bare baseline for %s)\n", b.f.task)
	return nil, nil
}

// visualBaseline runs the CLIP image graph on preprocessed photos: as
// the server's sessions do (one run at a time on every intra-op thread),
// and, where there are several threads, as one single-threaded run per
// thread at once (one session, its weights shared), which trades a lone
// image's latency for throughput.
type visualBaseline struct {
	s    *inference.Session
	one  *inference.Session // single-threaded; nil with one thread
	par  int                // runs of one at once: the intra-op threads
	in   []float32          // 16 preprocessed images
	size int
	best int
	// parBest is one's best batch.
	parBest int
}

func newVisualBaseline(rt *inference.Runtime, model string, imgs []*imaging.Image) (*visualBaseline, error) {
	dir := filepath.Dir(filepath.Dir(model))
	v, err := clip.LoadVisual(dir, rt, clip.VisualOptions{}, nil)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	size := v.Size()
	per := 3 * size * size
	in := make([]float32, 16*per)
	for i := range 16 {
		v.Preprocess(imgs[i%len(imgs)], in[i*per:(i+1)*per])
	}
	s, err := rt.NewSession(model, inference.SessionOptions{})
	if err != nil {
		return nil, err
	}
	vb := &visualBaseline{s: s, in: in, size: size}
	if intra, _ := rt.Threads(inference.CPU); intra > 1 && s.Device() == inference.CPU {
		if vb.one, err = rt.NewSession(model, inference.SessionOptions{IntraOpThreads: 1}); err != nil {
			_ = s.Close()
			return nil, err
		}
		vb.par = intra
	}
	return vb, nil
}

func (v *visualBaseline) describe() string {
	return fmt.Sprintf("%s on the photos' preprocessed tensors", v.s.Path())
}

func (v *visualBaseline) close() {
	_ = v.s.Close()
	if v.one != nil {
		_ = v.one.Close()
	}
}

// runFor runs batch n until d has passed (at least 3 runs) and returns
// items per second and the median run time.
func runFor(ctx context.Context, d time.Duration, n int, run func() error) (float64, time.Duration, error) {
	if err := run(); err != nil { // warm-up
		return 0, 0, err
	}
	var lat []time.Duration
	start := time.Now()
	for len(lat) < 3 || time.Since(start) < d {
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		t := time.Now()
		if err := run(); err != nil {
			return 0, 0, err
		}
		lat = append(lat, time.Since(t))
	}
	wall := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return float64(n*len(lat)) / wall.Seconds(), lat[len(lat)/2], nil
}

// input is the first n preprocessed images as one batch.
func (v *visualBaseline) input(n int) inference.Tensor {
	sz := int64(v.size)
	return inference.F32(v.in[:n*3*v.size*v.size], int64(n), 3, sz, sz)
}

func (v *visualBaseline) batch(ctx context.Context, d time.Duration, n int) (float64, time.Duration, error) {
	x := v.input(n)
	return runFor(ctx, d, n, func() error {
		_, err := v.s.Run(ctx, x)
		return err
	})
}

// parallel runs batch n on the single-threaded session from v.par
// goroutines at once.
func (v *visualBaseline) parallel(ctx context.Context, d time.Duration, n int) (float64, time.Duration, error) {
	x := v.input(n)
	tput, p50, _, err := parallelRuns(ctx, d, v.par, n, func() error {
		_, err := v.one.Run(ctx, x)
		return err
	})
	return tput, p50, err
}

func (v *visualBaseline) sweep(ctx context.Context, d time.Duration) bareResult {
	var r bareResult
	for _, n := range []int{1, 2, 4, 8, 16} {
		tput, p50, err := v.batch(ctx, d, n)
		if err != nil {
			r.rows = append(r.rows, fmt.Sprintf("batch %2d: %v", n, err))
			break
		}
		r.rows = append(r.rows, fmt.Sprintf("batch %2d: %7.2f img/s, run p50 %s", n, tput, ms(p50)))
		if n == 1 {
			r.p50 = p50
		}
		if tput > r.bestTput {
			r.bestTput, r.best = tput, n
		}
	}
	v.best = r.best
	if v.one == nil {
		return r
	}
	for _, n := range []int{1, 2, 4, 8} {
		tput, p50, err := v.parallel(ctx, d, n)
		if err != nil {
			r.rows = append(r.rows, fmt.Sprintf("%d runs × 1 thread, batch %d: %v", v.par, n, err))
			break
		}
		r.rows = append(r.rows, fmt.Sprintf("%d runs × 1 thread at once, batch %2d: %7.2f img/s, run p50 %s", v.par, n, tput, ms(p50)))
		if tput > r.parTput {
			r.parTput, r.parBest = tput, n
		}
	}
	v.parBest = r.parBest
	return r
}

func (v *visualBaseline) quick(ctx context.Context, d time.Duration) bareResult {
	r := bareResult{best: v.best, parBest: v.parBest}
	_, r.p50, _ = v.batch(ctx, d/2, 1)
	r.bestTput, _, _ = v.batch(ctx, d/2, v.best)
	if v.one != nil && v.parBest > 0 {
		r.parTput, _, _ = v.parallel(ctx, d/2, v.parBest)
	}
	return r
}

// faceBaseline runs the detection graph on a 640×640 input and the
// recognition graph on the faces a request has, in one batch and in
// chunks of the service's face batch; the better counts.
type faceBaseline struct {
	det, rec     *inference.Session
	faces, chunk int
	bestChunk    int
}

func newFaceBaseline(rt *inference.Runtime, det, rec string, faces, chunk int) (*faceBaseline, error) {
	d, err := rt.NewSession(det, inference.SessionOptions{})
	if err != nil {
		return nil, err
	}
	r, err := rt.NewSession(rec, inference.SessionOptions{})
	if err != nil {
		_ = d.Close()
		return nil, err
	}
	return &faceBaseline{det: d, rec: r, faces: faces, chunk: chunk}, nil
}

func (f *faceBaseline) describe() string {
	return fmt.Sprintf("%s on 1×3×640×640, then %s on the %d faces", filepath.Base(f.det.Path()), filepath.Base(f.rec.Path()), f.faces)
}

func (f *faceBaseline) close() {
	_ = f.det.Close()
	_ = f.rec.Close()
}

// request runs one request's graphs, recognition in chunks of chunk.
func (f *faceBaseline) request(ctx context.Context, d time.Duration, chunk int) (float64, time.Duration, error) {
	x := make([]float32, 3*640*640)
	crops := make([]float32, max(1, f.faces)*3*112*112)
	for i := range crops {
		crops[i] = float32(i%255)/128 - 1
	}
	return runFor(ctx, d, 1, func() error {
		if _, err := f.det.Run(ctx, inference.F32(x, 1, 3, 640, 640)); err != nil {
			return err
		}
		for from := 0; from < f.faces; from += chunk {
			n := min(chunk, f.faces-from)
			if _, err := f.rec.Run(ctx, inference.F32(crops[from*3*112*112:(from+n)*3*112*112], int64(n), 3, 112, 112)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (f *faceBaseline) sweep(ctx context.Context, d time.Duration) bareResult {
	var r bareResult
	for _, chunk := range []int{max(1, f.faces), f.chunk} {
		tput, p50, err := f.request(ctx, d, chunk)
		if err != nil {
			r.rows = append(r.rows, fmt.Sprintf("recognition batch %d: %v", chunk, err))
			continue
		}
		r.rows = append(r.rows, fmt.Sprintf("recognition batch %2d: %6.2f requests/s, request p50 %s", chunk, tput, ms(p50)))
		if tput > r.bestTput {
			r.bestTput, r.best, r.p50 = tput, chunk, p50
		}
	}
	f.bestChunk = r.best
	return r
}

func (f *faceBaseline) quick(ctx context.Context, d time.Duration) bareResult {
	tput, p50, _ := f.request(ctx, d, f.bestChunk)
	return bareResult{best: f.bestChunk, bestTput: tput, p50: p50}
}

// compareThreads measures each graph of the task bare, A/B/A: one run at
// a time on every core (A: the default) against one single-threaded run
// per core at once (B), at batch 1 and 8; throughput, median run time and
// CPU time per item (which is what throughput is on a saturated machine).
func (b *bench) compareThreads(ctx context.Context) error {
	if b.rt == nil || b.cfg == nil {
		return errors.New("--threads needs the in-process server (no --url)")
	}
	cores := runtime.NumCPU()
	intra, _ := b.rt.Threads(inference.CPU)
	type graph struct {
		path  string
		shape []int64
		batch bool
	}
	var graphs []graph
	dir := b.cfg.CacheFolder
	switch b.f.task {
	case "clip-visual":
		graphs = append(graphs, graph{filepath.Join(dir, "clip", b.f.clipModel, "visual", "model.onnx"), []int64{3, 224, 224}, true})
	case "faces":
		fd := filepath.Join(dir, "facial-recognition", b.f.faceModel)
		graphs = append(graphs, graph{filepath.Join(fd, "detection", "model.onnx"), []int64{3, 640, 640}, false},
			graph{filepath.Join(fd, "recognition", "model.onnx"), []int64{3, 112, 112}, true})
	default:
		return fmt.Errorf("--threads: no graphs for %s", b.f.task)
	}
	b.printf("\nthreads, bare (A: 1 run × %d threads, B: %d runs × 1 thread; A/B/A/B, %v each):\n", intra, cores, b.f.bareDuration)
	for _, g := range graphs {
		a, err := b.rt.NewSession(g.path, inference.SessionOptions{IntraOpThreads: intra})
		if err != nil {
			return err
		}
		one, err := b.rt.NewSession(g.path, inference.SessionOptions{IntraOpThreads: 1})
		if err != nil {
			_ = a.Close()
			return err
		}
		batches := []int{1}
		if g.batch {
			batches = append(batches, 2, 4, 8)
		}
		for _, n := range batches {
			per := 1
			for _, d := range g.shape {
				per *= int(d)
			}
			x := make([]float32, n*per)
			for i := range x {
				x[i] = float32(i%255)/128 - 1
			}
			shape := append([]int64{int64(n)}, g.shape...)
			for round := range 2 {
				for _, c := range []struct {
					name string
					s    *inference.Session
					par  int
				}{{"A", a, 1}, {"B", one, cores}} {
					tput, p50, cpu, err := parallelRuns(ctx, b.f.bareDuration, c.par, n, func() error {
						_, err := c.s.Run(ctx, inference.F32(x, shape...))
						return err
					})
					if err != nil {
						return err
					}
					b.printf("  %-28s batch %d  %s  %7.2f items/s  run p50 %9s  CPU %6.1f ms/item  (round %d)\n",
						filepath.Join(filepath.Base(filepath.Dir(g.path)), filepath.Base(g.path)), n, c.name, tput, ms(p50), cpu, round+1)
				}
			}
		}
		_ = a.Close()
		_ = one.Close()
	}
	return nil
}

// parallelRuns runs run from par goroutines for d (after one warm-up run
// each) and returns items per second (n per run), the median run time and
// the process's CPU milliseconds per item.
func parallelRuns(ctx context.Context, d time.Duration, par, n int, run func() error) (float64, time.Duration, float64, error) {
	var wg sync.WaitGroup
	errs := make([]error, par)
	for i := range par {
		wg.Go(func() { errs[i] = run() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, 0, 0, err
	}
	var mu sync.Mutex
	var lat []time.Duration
	cpu0 := cpuTime()
	start := time.Now()
	for i := range par {
		wg.Go(func() {
			// Every goroutine runs at least once, then until d has passed.
			for first := true; ctx.Err() == nil && (first || time.Since(start) < d); first = false {
				t := time.Now()
				if errs[i] = run(); errs[i] != nil {
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(t))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, 0, 0, err
	}
	cpu := cpuTime() - cpu0
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	items := float64(n * len(lat))
	return items / wall.Seconds(), lat[len(lat)/2], float64(cpu.Microseconds()) / 1000 / items, nil
}

// cpuTime is the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// immichForm builds the multipart body the Immich server sends (undici's
// FormData): "entries" first, then the image as a Blob part named "blob"
// of type application/octet-stream, or the text field.
func immichForm(entries string, img []byte, text string) ([]byte, string, error) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if err := w.WriteField("entries", entries); err != nil {
		return nil, "", err
	}
	if img != nil {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="image"; filename="blob"`)
		h.Set("Content-Type", "application/octet-stream")
		p, err := w.CreatePart(h)
		if err != nil {
			return nil, "", err
		}
		if _, err := p.Write(img); err != nil {
			return nil, "", err
		}
	} else if err := w.WriteField("text", text); err != nil {
		return nil, "", err
	}
	if err := w.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), w.FormDataContentType(), nil
}
