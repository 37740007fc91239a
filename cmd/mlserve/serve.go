package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/mlserve/mlserve/api"
	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
)

// newRuntime starts ONNX Runtime with the configured providers and their
// options. The runtime logs, once, which providers are usable here and the
// options of the one in use; when none is, the error says what each one
// lacks.
func newRuntime(cfg *config.Config, logger *slog.Logger) (*inference.Runtime, error) {
	rt, err := inference.New(inference.Options{
		LibraryPath:       cfg.ORTLibrary,
		Providers:         cfg.Providers,
		DeviceID:          cfg.DeviceID,
		DeviceIDs:         cfg.DeviceIDs,
		IntraOpThreads:    cfg.IntraOpThreads,
		InterOpThreads:    cfg.InterOpThreads,
		DisableArena:      !cfg.Arena,
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
	return rt, err
}

// decodeOptions are the caps on decoded images (MLSERVE_MAX_IMAGE_PIXELS).
func decodeOptions(cfg *config.Config) imaging.DecodeOptions {
	return imaging.DecodeOptions{MaxPixels: cfg.MaxImagePixels}
}

// decoder decodes with decodeOptions, for the indexer's workers.
func decoder(cfg *config.Config) func([]byte) (*imaging.Image, error) {
	o := decodeOptions(cfg)
	return func(b []byte) (*imaging.Image, error) { return imaging.DecodeWith(b, o) }
}

// newService builds the model store and the prediction service.
func newService(cfg *config.Config, rt *inference.Runtime, obs pool.Observer, logger *slog.Logger) (*pool.Service, error) {
	store, err := models.NewStore(models.StoreOptions{
		CacheDir:     cfg.CacheFolder,
		HFEndpoint:   cfg.HFEndpoint,
		Organization: cfg.ModelOrganization,
		Revision:     cfg.ModelRevision,
		Offline:      cfg.HFOffline,
		HFToken:      cfg.HFToken,
		OCRBaseURL:   cfg.OCRBaseURL,
	}, logger)
	if err != nil {
		return nil, err
	}
	return pool.NewService(pool.ServiceOptions{
		Cache:        pool.CacheOptions{TTL: cfg.ModelTTL, MaxLoaded: cfg.MaxLoadedModels},
		Workers:      pool.WorkersOptions{Workers: cfg.RequestThreads, Queue: cfg.MaxQueue},
		Batch:        pool.BatchOptions{Max: cfg.BatchMax, Wait: cfg.BatchWait},
		MaxBatchFace: cfg.MaxBatchFace,
		MaxBatchOCR:  cfg.MaxBatchOCR,
		Metrics:      obs,
		DecodeLimits: decodeOptions(cfg),
	}, store, rt, logger)
}

func serve(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	logger.Info("starting mlserve", "version", config.Version, "addr", cfg.Addr(), "config", cfg)
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
	svc, err := newService(cfg, rt, metrics, logger)
	if err != nil {
		return err
	}
	defer svc.Close()

	var searcher api.Searcher
	if s, err := openSearcher(ctx, cfg, svc, logger); err != nil {
		// The Immich API does not need the database: serve it anyway.
		logger.Error("smart search disabled", "err", err)
	} else if s != nil {
		defer s.Close()
		searcher = s
	}

	srv := api.New(api.Options{
		KeepAlive:      cfg.KeepAlive,
		MaxBodyBytes:   cfg.MaxUploadBytes,
		RequestTimeout: cfg.WorkerTimeout,
		Predictor:      svc,
		Health:         svc,
		Searcher:       searcher,
		Registry:       reg,
		Metrics:        metrics,
	}, logger)

	ln, err := net.Listen("tcp", cfg.Addr())
	if err != nil {
		return err
	}
	logger.Info("listening", "addr", ln.Addr().String())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx, ln) })
	g.Go(func() error { return svc.Run(gctx, cfg.ModelTTLPoll) })
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
