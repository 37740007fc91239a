package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/mlserve/mlserve/api"
	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
)

// serveCommand is `mlserve serve`.
func (a *app) serveCommand() *cobra.Command {
	var host string
	var port int
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve Immich's machine-learning API on IMMICH_HOST:IMMICH_PORT",
		Long: `Serves Immich's machine-learning API (GET /, /ping, POST /predict), plus
/search, /health/live, /health/ready and /metrics, on IMMICH_HOST:IMMICH_PORT
(0.0.0.0:3003). --host and --port override those variables. Settings are
checked before anything starts: an invalid one stops serve with exit 2.`,
		Example: `  mlserve serve
  mlserve serve --host 127.0.0.1 --port 4000
  HF_HUB_OFFLINE=1 MLSERVE_PROVIDERS=CPU mlserve serve`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := a.setup(false)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("host") {
				cfg.Host = host
			}
			if cmd.Flags().Changed("port") {
				if port < 1 || port > 65535 {
					return usagef("--port %d: want 1..65535", port)
				}
				cfg.Port = port
			}
			return serve(cmd.Context(), cfg, logger)
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "listen on this address (overrides IMMICH_HOST; default 0.0.0.0)")
	cmd.Flags().IntVar(&port, "port", 0, "listen on this port (overrides IMMICH_PORT; default 3003)")
	return cmd
}

// checkServe checks what the environment names before anything starts:
// the preloaded model names and the model cache folder. Its errors wrap
// config.ErrInvalid and name the variable.
func checkServe(cfg *config.Config) error {
	var errs []error
	for _, p := range cfg.Preload {
		v := "MACHINE_LEARNING_PRELOAD__" + strings.ToUpper(strings.ReplaceAll(p.Task, "-", "_")) + "__" + strings.ToUpper(p.Type)
		for _, name := range p.Names {
			if _, err := models.Lookup(models.Task(p.Task), models.Type(p.Type), name); err != nil {
				errs = append(errs, fmt.Errorf("%w: %s: %w", config.ErrInvalid, v, err))
			}
		}
	}
	if err := models.CheckCache(cfg.CacheFolder, !cfg.HFOffline); err != nil {
		errs = append(errs, fmt.Errorf("%w: MACHINE_LEARNING_CACHE_FOLDER=%s: %w", config.ErrInvalid, cfg.CacheFolder, err))
	}
	return errors.Join(errs...)
}

// findLibrary is where ONNX Runtime's library is (inference.FindLibrary).
func findLibrary(cfg *config.Config) inference.Library {
	exe, _ := os.Executable()
	wd, _ := os.Getwd()
	return inference.FindLibrary(inference.LibraryOptions{Configured: cfg.ORTLibrary, Executable: exe, WorkDir: wd})
}

// newRuntime starts ONNX Runtime with the configured providers and their
// options. The runtime logs, once, which providers are usable here and the
// options of the one in use; when none is, the error says what each one
// lacks. A library that cannot be found is explained: where it was looked
// for, MLSERVE_ORT_LIBRARY and make setup.
func newRuntime(cfg *config.Config, logger *slog.Logger) (*inference.Runtime, error) {
	return newRuntimeFor(cfg, false, logger)
}

// newRuntimeFor starts ONNX Runtime; bulk arranges CPU threads for
// throughput (inference.Options.Throughput) where the environment does
// not set them.
func newRuntimeFor(cfg *config.Config, bulk bool, logger *slog.Logger) (*inference.Runtime, error) {
	lib := findLibrary(cfg)
	logger.Debug("ONNX Runtime library", "path", lib.Path, "found", lib.From)
	rt, err := inference.New(inference.Options{
		LibraryPath:       lib.Path,
		Providers:         cfg.Providers,
		DeviceID:          cfg.DeviceID,
		DeviceIDs:         cfg.DeviceIDs,
		IntraOpThreads:    cfg.IntraOpThreads,
		InterOpThreads:    cfg.InterOpThreads,
		Throughput:        bulk,
		DisableArena:      !cfg.Arena,
		ThreadNice:        cfg.InferenceNice,
		OpenVINOPrecision: cfg.OpenVINOPrecision,
		Verbose:           cfg.LogLevel <= slog.LevelDebug,
		AllowCPUFallback:  cfg.AllowCPUFallback,
		CUDA: inference.CUDAOptions{
			MemLimit:             cfg.CUDAMemLimit,
			ArenaExtendStrategy:  cfg.CUDAArenaExtendStrategy,
			ConvAlgoSearch:       cfg.CUDAConvAlgoSearch,
			CopyInSeparateStream: !cfg.CUDACopyInDefaultStream,
			ShrinkArena:          cfg.CUDAArenaShrink,
		},
		TensorRT: inference.TensorRTOptions{FP16: cfg.TensorRTFP16},
		OpenVINO: inference.OpenVINOOptions{Device: cfg.OpenVINODevice},
	}, logger)
	if errors.Is(err, inference.ErrNoUsableProvider) {
		return nil, fmt.Errorf("MLSERVE_PROVIDERS=%s: %w (list CPU, or set MLSERVE_ALLOW_CPU_FALLBACK=true, to serve from the CPU)",
			strings.Join(cfg.Providers, ","), err)
	}
	if err != nil {
		return nil, lib.LibraryError(err)
	}
	return rt, nil
}

// decodeOptions are the caps on decoded images (MLSERVE_MAX_IMAGE_PIXELS).
func decodeOptions(cfg *config.Config) imaging.DecodeOptions {
	return imaging.DecodeOptions{MaxPixels: cfg.MaxImagePixels}
}

// decoder decodes for the indexer's workers with svc's decoder (its caps
// and MLSERVE_PREPROCESS). Unless full, it lets the decoder scale a JPEG
// down to what the CLIP model needs (with MLSERVE_PREPROCESS=fast); faces
// and OCR (-faces, -ocr) need the full image. If the model's size cannot
// be had (the model does not load), images are decoded at full size and
// the embedding step reports the error.
func decoder(ctx context.Context, svc *pool.Service, model string, full bool) func([]byte) (*imaging.Image, error) {
	minSide := sync.OnceValue(func() int {
		if full {
			return 0
		}
		n, err := svc.VisualMinSide(ctx, model)
		if err != nil {
			return 0
		}
		return n
	})
	return func(b []byte) (*imaging.Image, error) {
		img, _, _, err := svc.Decode(b, minSide())
		return img, err
	}
}

// newStore is the model cache and downloader of the configuration; obs
// (may be nil) hears about downloads.
func newStore(cfg *config.Config, obs models.DownloadObserver, logger *slog.Logger) (*models.Store, error) {
	return models.NewStore(models.StoreOptions{
		CacheDir:     cfg.CacheFolder,
		HFEndpoint:   cfg.HFEndpoint,
		Organization: cfg.ModelOrganization,
		Revision:     cfg.ModelRevision,
		Offline:      cfg.HFOffline,
		HFToken:      cfg.HFToken,
		OCRBaseURL:   cfg.OCRBaseURL,
		Observer:     obs,
	}, logger)
}

// newService builds the model store and the prediction service.
func newService(cfg *config.Config, rt *inference.Runtime, obs pool.Observer, logger *slog.Logger) (*pool.Service, error) {
	var dl models.DownloadObserver
	if o, ok := obs.(models.DownloadObserver); ok {
		dl = o
	}
	store, err := newStore(cfg, dl, logger)
	if err != nil {
		return nil, err
	}
	return pool.NewService(pool.ServiceOptions{
		Cache:        pool.CacheOptions{TTL: cfg.ModelTTL, MaxLoaded: cfg.MaxLoadedModels},
		Workers:      pool.WorkersOptions{Workers: cfg.RequestThreads, Queue: cfg.MaxQueue},
		Batch:        pool.BatchOptions{Max: cfg.BatchMax, Wait: cfg.BatchWait, Gather: gatherOption(cfg.BatchGather), Nice: cfg.InferenceNice, NoSplit: !cfg.SplitBatch},
		MaxBatchFace: cfg.MaxBatchFace,
		MaxBatchOCR:  cfg.MaxBatchOCR,
		Metrics:      obs,
		DecodeLimits: decodeOptions(cfg),
		Devices:      deviceOptions(cfg),
		Preprocess:   pool.Preprocess(cfg.Preprocess),
	}, store, rt, logger)
}

// deviceOptions are the placement options on the runtime's devices
// (MACHINE_LEARNING_DEVICE_IDS): the per-GPU memory budget, the headroom
// kept for runs, and when a busy model gets a replica.
func deviceOptions(cfg *config.Config) pool.DeviceOptions {
	o := pool.DeviceOptions{Budget: cfg.DeviceBudget, Headroom: cfg.DeviceHeadroom, ReplicaAfter: cfg.ReplicaAfter}
	if cfg.ReplicaAfter <= 0 {
		o.ReplicaAfter = -1 // never
	}
	return o
}

func serve(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	logger.Debug("configuration", "config", cfg)
	// Settings are checked before anything starts (a malformed database
	// URL was refused by config); an unreachable database is not an
	// error (see newSearchBackend).
	if err := checkServe(cfg); err != nil {
		return err
	}
	rt, err := newRuntime(cfg, logger)
	if err != nil {
		return err
	}
	defer rt.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mlserve_c_heap_bytes",
			Help: "Bytes the C heap (ONNX Runtime, OpenCV) has allocated and not freed (glibc mallinfo2).",
		}, func() float64 { return float64(inference.CHeapBytes()) }))
	metrics := api.NewMetrics(reg)
	metrics.BuildInfo(config.Version, runtime.Version(), rt.Version())
	svc, err := newService(cfg, rt, metrics, logger)
	if err != nil {
		return err
	}
	defer svc.Close()

	// The Immich API does not need the database: the searcher connects in
	// the background, and /search answers 503 until it has (a malformed
	// URL is an error now).
	backend, err := newSearchBackend(cfg, svc, logger)
	if err != nil {
		return err
	}
	if backend != nil {
		defer backend.Close()
	}

	// Admission: the workers plus the queue. A request past them is
	// refused right after its headers, before its body is read.
	adm := pool.NewAdmission(pool.AdmissionOptions{Limit: cfg.RequestThreads + cfg.MaxQueue})
	maxConns := connLimit(cfg.MaxConns, logger)
	opts := api.Options{
		KeepAlive:        cfg.KeepAlive,
		ReadTimeout:      cfg.HTTPReadTimeout,
		WriteTimeout:     cfg.HTTPWriteTimeout,
		MaxConns:         maxConns,
		MaxBodyBytes:     cfg.MaxUploadBytes,
		MaxInflightBytes: cfg.MaxInflightBytes,
		RequestTimeout:   cfg.WorkerTimeout,
		ShutdownTimeout:  cfg.ShutdownTimeout,
		Predictor:        svc,
		Admission:        adm,
		Health:           svc,
		Decode:           decodeOptions(cfg),
		APIKey:           cfg.APIKey,
		PublicRoutes:     cfg.SearchPublic,
		MetricsPrivate:   cfg.MetricsPrivate,
		AllowCIDRs:       cfg.AllowCIDRs,
		Registry:         reg,
		Metrics:          metrics,
	}
	// Search, people, text in photos, thumbnails and the web page, when a
	// database is configured.
	backend.serveLibrary(&opts)
	srv := api.New(opts, logger)

	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", cfg.Addr())
	if err != nil {
		return err
	}
	var devices []string
	for _, d := range rt.Devices() {
		devices = append(devices, d.Name())
	}
	logger.Info("mlserve "+config.Version+" listening on "+ln.Addr().String(), "providers", strings.Join(rt.Providers(), ","),
		"devices", strings.Join(devices, ","),
		"cache", cfg.CacheFolder, "max_conns", maxConns, "search", backend != nil)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx, ln) })
	g.Go(func() error { return svc.Run(gctx, cfg.ModelTTLPoll) })
	if backend != nil {
		g.Go(func() error { return backend.run(gctx) })
	}
	g.Go(func() error {
		// Preload after the listener is up, so /ping answers at once; a
		// failed preload is logged, not fatal (Immich's lifespan would
		// crash the worker; we keep serving the other models).
		for _, p := range cfg.Preload {
			if err := svc.Preload(gctx, p.Task, p.Type, p.Names); err != nil {
				logger.Error("preload failed", "task", p.Task, "type", p.Type, "models", p.Names, "err", err)
			}
		}
		return nil
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// fdReserve is how many file descriptors the connection cap leaves to the
// rest of the process: model files, ONNX Runtime, the database pool,
// listeners, logs.
const fdReserve = 128

// connLimit lowers the connection cap to fit the process's file
// descriptor limit (Go raises the soft limit to the hard one at start),
// so that idle connections alone cannot exhaust it; the accept loop still
// backs off if something else does.
func connLimit(want int, logger *slog.Logger) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur >= 1<<62 {
		return want
	}
	fit := int(min(rl.Cur, 1<<30)) - fdReserve
	if fit < want {
		n := max(fit, 16)
		logger.Warn("connection cap lowered to fit the file descriptor limit (raise it with ulimit -n)", "max_conns", n, "wanted", want, "nofile", rl.Cur)
		return n
	}
	return want
}

// gatherOption is MLSERVE_BATCH_GATHER_MS as pool.BatchOptions.Gather
// takes it: 0 there means the default, off is negative.
func gatherOption(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
