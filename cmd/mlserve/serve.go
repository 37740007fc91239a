package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/mlserve/mlserve/api"
	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
)

// newRuntime starts ONNX Runtime with the configured providers and logs
// which ones this library can really use.
func newRuntime(cfg *config.Config, logger *slog.Logger) (*inference.Runtime, error) {
	rt, err := inference.New(inference.Options{
		LibraryPath:       cfg.ORTLibrary,
		Providers:         cfg.Providers,
		DeviceID:          cfg.DeviceID,
		IntraOpThreads:    cfg.IntraOpThreads,
		InterOpThreads:    cfg.InterOpThreads,
		DisableArena:      !cfg.Arena,
		OpenVINOPrecision: cfg.OpenVINOPrecision,
		Verbose:           cfg.LogLevel <= slog.LevelDebug,
	}, logger)
	if err != nil {
		return nil, err
	}
	status := rt.ProviderStatus()
	for _, p := range rt.Providers() {
		if err := status[p]; err != nil {
			logger.Warn("execution provider unavailable; models fall back to the next one", "provider", p, "reason", firstLine(err.Error()))
		} else {
			logger.Info("execution provider available", "provider", p)
		}
	}
	return rt, nil
}

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
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
