// Package api is mlserve's HTTP surface: Immich's machine-learning wire
// contract (GET /, GET /ping, POST /predict) plus health, metrics and search
// endpoints of its own. It is the only package that knows Fiber and the only
// place where errors become HTTP status codes.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mlserve/mlserve/pool"
)

// Options configure the server.
type Options struct {
	// KeepAlive is the idle timeout of kept-alive connections.
	KeepAlive time.Duration
	// MaxBodyBytes caps a request body; larger ones get 413.
	MaxBodyBytes int64
	// RequestTimeout bounds one request's work (Fiber never cancels a
	// handler when its client goes away, so we set our own deadline).
	RequestTimeout time.Duration
	// Predictor serves /predict; nil answers 503.
	Predictor Predictor
	// Health reports readiness; nil means always ready.
	Health Health
	// Searcher serves /search; nil answers 503.
	Searcher Searcher
	// Registry serves /metrics; nil makes a new one.
	Registry *prometheus.Registry
	// Metrics are the metrics registered on Registry (NewMetrics); nil
	// makes them. Pass the same value to the service as its observer.
	Metrics *Metrics
}

// Health is what the health and metrics endpoints read from the service.
type Health interface {
	Ready() error
	Stats() pool.Stats
	Loaded() []pool.Loaded
}

// Server serves the HTTP API.
type Server struct {
	opts      Options
	logger    *slog.Logger
	app       *fiber.App
	predictor Predictor
	metrics   *Metrics
}

// New builds the server and its routes.
func New(opts Options, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 100 << 20
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 2 * time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 300 * time.Second
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	s := &Server{opts: opts, logger: logger, predictor: opts.Predictor}
	s.metrics = opts.Metrics
	if s.metrics == nil {
		s.metrics = NewMetrics(opts.Registry)
	}
	if opts.Health != nil {
		s.metrics.observeService(opts.Health)
	}
	s.app = fiber.New(fiber.Config{
		AppName:               "mlserve",
		DisableStartupMessage: true,
		BodyLimit:             int(opts.MaxBodyBytes),
		IdleTimeout:           opts.KeepAlive,
		ErrorHandler:          s.errorHandler,
	})
	s.routes()
	return s
}

// Metrics returns the server's Prometheus metrics; the pool reports to it.
func (s *Server) Metrics() *Metrics { return s.metrics }

func (s *Server) routes() {
	s.app.Use(s.observe)
	s.app.Get("/", func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"message": "Immich ML"})
	})
	// /ping never waits on anything: Immich's health check has a 2 s
	// timeout and marks the URL unhealthy when it passes.
	s.app.Get("/ping", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, "text/plain; charset=utf-8")
		return c.SendString("pong")
	})
	s.app.Post("/predict", s.predict)
	s.app.Get("/search", s.searchText)
	s.app.Post("/search", s.searchImage)
	s.app.Get("/health/live", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	s.app.Get("/health/ready", s.ready)
	s.app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{})))
}

// observe records every request's route, status and latency.
func (s *Server) observe(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	code := c.Response().StatusCode()
	if err != nil {
		var fe *fiber.Error
		if errors.As(err, &fe) {
			code = fe.Code
		} else {
			code = fiber.StatusInternalServerError
		}
	}
	route := c.Route().Path
	if route == "/" && c.Path() != "/" {
		route = "unmatched"
	}
	s.metrics.request(route, code, time.Since(start))
	return err
}

func (s *Server) ready(c *fiber.Ctx) error {
	body := fiber.Map{"status": "ready"}
	if s.opts.Health != nil {
		st := s.opts.Health.Stats()
		body["workers"] = st.Workers
		body["busy"] = st.Busy
		body["queued"] = st.Waiting
		body["maxQueue"] = st.MaxQueue
		var loaded []fiber.Map
		for _, l := range s.opts.Health.Loaded() {
			m := fiber.Map{"task": l.Key.Task, "type": l.Key.Type, "model": l.Key.Name, "inUse": l.InUse, "preloaded": l.Pinned, "idleSeconds": int(l.IdleFor.Seconds())}
			if p, ok := l.Model.(interface{ Provider() string }); ok {
				m["provider"] = p.Provider()
			}
			loaded = append(loaded, m)
		}
		body["models"] = loaded
		if err := s.opts.Health.Ready(); err != nil {
			body["status"] = "not ready"
			body["reason"] = err.Error()
			c.Set(fiber.HeaderRetryAfter, "1")
			return c.Status(fiber.StatusServiceUnavailable).JSON(body)
		}
	}
	return c.JSON(body)
}

// detail is the body of every error response, as FastAPI writes it.
type detail struct {
	Detail string `json:"detail"`
}

func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	code := fiber.StatusInternalServerError
	msg := "Internal Server Error"
	var fe *fiber.Error
	if errors.As(err, &fe) {
		code = fe.Code
		msg = fe.Message
		switch code {
		case fiber.StatusNotFound:
			msg = "Not Found"
		case fiber.StatusMethodNotAllowed:
			msg = "Method Not Allowed"
		case fiber.StatusRequestEntityTooLarge:
			msg = "Request body too large"
		}
	} else {
		s.logger.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
	}
	return c.Status(code).JSON(detail{msg})
}

// App exposes the Fiber app for in-process tests (app.Test).
func (s *Server) App() *fiber.App { return s.app }

// Serve accepts connections on ln until ctx ends, then shuts down
// gracefully, letting requests in progress finish for up to 10 s.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.app.Listener(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	err := s.app.ShutdownWithTimeout(10 * time.Second)
	<-errc
	return err
}
