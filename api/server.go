// Package api is mlserve's HTTP surface: Immich's machine-learning wire
// contract (GET /, GET /ping, POST /predict) plus health, metrics and search
// endpoints of its own. It is the only package that knows Fiber and the only
// place where errors become HTTP status codes.
//
// Every resource a client can make it hold is bounded: connections (a cap,
// read, write and keep-alive timeouts; accept errors such as EMFILE back
// off instead of stopping the server), request bodies (streamed, never
// reserved from Content-Length, capped per request and per field, and
// charged to a byte budget shared by all requests in progress), and work
// (an admission taken right after the headers refuses a full service with
// 503 before any upload; the work's context ends at the worker timeout,
// when the client hangs up, or at the end of the shutdown drain). Routes
// outside Immich's protocol are behind access control (access.go).
package api

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/utils"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/pool"
)

// Options configure the server.
type Options struct {
	// KeepAlive is the idle timeout of kept-alive connections.
	KeepAlive time.Duration
	// ReadTimeout bounds the wait for a request's headers, and each pause
	// while its body arrives (default 10 s).
	ReadTimeout time.Duration
	// WriteTimeout bounds the writing of one response (default 30 s).
	WriteTimeout time.Duration
	// MaxConns caps the open connections; further clients wait in the
	// kernel's backlog (default 4096; negative: no cap).
	MaxConns int
	// MaxBodyBytes caps a request body; larger ones get 413.
	MaxBodyBytes int64
	// MaxInflightBytes caps the body bytes that all requests in progress
	// hold together; a request that would pass it gets 503 (default:
	// DefaultInflightBytes).
	MaxInflightBytes int64
	// RequestTimeout bounds one request's work, from admission to answer
	// (the upload included).
	RequestTimeout time.Duration
	// ShutdownTimeout bounds the drain of admitted requests when Serve's
	// context ends; those still running then are cancelled. Zero cancels
	// them at once.
	ShutdownTimeout time.Duration
	// Predictor serves /predict; nil answers 503.
	Predictor Predictor
	// Admission admits /predict and /search requests before their body is
	// read; nil admits any number (the predictor's own queue still
	// refuses). Serve closes and drains it on shutdown.
	Admission Admission
	// Health reports readiness; nil means always ready.
	Health Health
	// Searcher serves /search; nil answers 503. With a Searcher, the web
	// page is served at /ui/.
	Searcher Searcher
	// People serves /people; TextSearcher serves /search?ocr=; Files
	// serves the thumbnails (/thumbs, /faces/{id}/crop); Library the
	// status panel's library part. Nil ones answer 503 (library.go).
	People       People
	TextSearcher TextSearcher
	Files        Files
	Library      Library
	// Decode caps the images that thumbnails decode
	// (MLSERVE_MAX_IMAGE_PIXELS).
	Decode imaging.DecodeOptions
	// ThumbCacheBytes caps the thumbnail cache (default
	// DefaultThumbCacheBytes; negative: no cache).
	ThumbCacheBytes int64
	// APIKey, when set, is the Bearer token that the private routes
	// (/search…) require.
	APIKey string
	// PublicRoutes serves the private routes without a key on a listener
	// that is not loopback.
	PublicRoutes bool
	// MetricsPrivate puts /metrics behind the private routes' access
	// control.
	MetricsPrivate bool
	// AllowCIDRs, when not empty, are the client networks that may call
	// /predict.
	AllowCIDRs []netip.Prefix
	// Registry serves /metrics; nil makes a new one.
	Registry *prometheus.Registry
	// Metrics are the metrics registered on Registry (NewMetrics); nil
	// makes them. Pass the same value to the service as its observer.
	Metrics *Metrics
}

// DefaultInflightBytes is the default in-flight byte budget for a body
// limit: 128 MiB, or the limit and 8 MiB more. The Immich server sends
// previews of at most a few hundred KiB to /predict, so 128 MiB holds the
// bodies of every request the workers and the queue take at once, many
// times over, while bounding what uploads can pin in memory; a body of
// the largest size allowed still fits, beside a few previews.
func DefaultInflightBytes(maxBody int64) int64 { return max(128<<20, maxBody+8<<20) }

// Admission admits requests into the service (a *pool.Admission):
// Acquire refuses at once with pool.ErrQueueFull or pool.ErrClosed.
type Admission interface {
	Acquire() error
	Release()
	Close()
	Drain(ctx context.Context) error
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
	adm       Admission
	budget    *byteBudget
	keyHash   []byte // SHA-256 of the API key; nil without one
	thumbs    *thumbnails
	web       map[string]webFile
	shed      *shedLog

	// base is the parent of every request's context; it ends when the
	// shutdown drain runs out of time.
	base       context.Context //nolint:containedctx // the server's lifetime
	cancelBase context.CancelFunc
	draining   atomic.Bool
	loopback   atomic.Bool
	ln         atomic.Pointer[listener]
}

// New builds the server and its routes.
func New(opts Options, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 100 << 20
	}
	if opts.MaxInflightBytes <= 0 {
		opts.MaxInflightBytes = DefaultInflightBytes(opts.MaxBodyBytes)
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 2 * time.Second
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 10 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = 4096
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 300 * time.Second
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	s := &Server{opts: opts, logger: logger, predictor: opts.Predictor, adm: opts.Admission,
		budget: &byteBudget{max: opts.MaxInflightBytes}, thumbs: newThumbnails(opts.Decode, opts.ThumbCacheBytes),
		shed: newShedLog(logger)}
	if s.adm == nil {
		s.adm = pool.NewAdmission(pool.AdmissionOptions{})
	}
	if opts.APIKey != "" {
		h := sha256.Sum256([]byte(opts.APIKey))
		s.keyHash = h[:]
	}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.metrics = opts.Metrics
	if s.metrics == nil {
		s.metrics = NewMetrics(opts.Registry)
	}
	if opts.Health != nil {
		s.metrics.observeService(opts.Health)
	}
	s.metrics.observeServer(s)
	s.app = fiber.New(fiber.Config{
		AppName:               "mlserve",
		DisableStartupMessage: true,
		// The limit is ours to enforce as the body streams in: fasthttp
		// would otherwise buffer a whole body (or a whole multipart form,
		// sized by its Content-Length) before any handler runs.
		BodyLimit:                    int(opts.MaxBodyBytes),
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		// fasthttp applies ReadTimeout from the first byte of a request
		// to its handler (headers and the first 8 KiB of body); the
		// handlers then move the deadline as the body arrives.
		ReadTimeout:  opts.ReadTimeout,
		WriteTimeout: opts.WriteTimeout,
		IdleTimeout:  opts.KeepAlive,
		ErrorHandler: s.errorHandler,
	})
	srv := s.app.Server()
	srv.CloseOnShutdown = true
	srv.Logger = fasthttpLogger{logger}
	s.routes()
	return s
}

// Metrics returns the server's Prometheus metrics; the pool reports to it.
func (s *Server) Metrics() *Metrics { return s.metrics }

func (s *Server) routes() {
	s.app.Use(s.guard, s.observe)
	s.app.Get("/", func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"message": "Immich ML"})
	})
	// /ping never waits on anything: Immich's health check has a 2 s
	// timeout and marks the URL unhealthy when it passes.
	s.app.Get("/ping", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, "text/plain; charset=utf-8")
		return c.SendString("pong")
	})
	s.app.Post("/predict", s.allowClient, s.predict)
	// Routes outside Immich's protocol are private (access.go).
	s.app.Get("/search", s.private, s.searchText)
	s.app.Post("/search", s.private, s.searchImage)
	s.app.Get("/people", s.private, s.listPeople)
	s.app.Get("/people/:id", s.private, s.getPerson)
	s.app.Put("/people/:id", s.private, s.renamePerson)
	s.app.Patch("/people/:id", s.private, s.renamePerson)
	s.app.Post("/people/:id/merge", s.private, s.mergePeople)
	s.app.Get("/people/:id/assets", s.private, s.personAssets)
	s.app.Get("/thumbs/:id", s.private, s.assetThumb)
	s.app.Get("/faces/:id/crop", s.private, s.faceCrop)
	s.app.Get("/status", s.private, s.status)
	if s.opts.Searcher != nil {
		s.mountUI()
	}
	s.app.Get("/health/live", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	s.app.Get("/health/ready", s.ready)
	metrics := adaptor.HTTPHandler(promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{}))
	if s.opts.MetricsPrivate {
		s.app.Get("/metrics", s.private, metrics)
	} else {
		s.app.Get("/metrics", metrics)
	}
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
	took := time.Since(start)
	s.metrics.request(route, code, took)
	if s.logger.Enabled(c.UserContext(), slog.LevelDebug) {
		// The access log: no query string (search texts are the user's).
		s.logger.Debug("request", "method", c.Method(), "path", c.Path(), "status", code,
			"ms", float64(took.Microseconds())/1000, "remote", c.IP())
	}
	return err
}

func (s *Server) ready(c *fiber.Ctx) error {
	body := fiber.Map{"status": "ready"}
	if s.draining.Load() {
		c.Set(fiber.HeaderRetryAfter, retryAfter)
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "not ready", "reason": "shutting down"})
	}
	if s.opts.Health != nil {
		st := s.opts.Health.Stats()
		body["workers"] = st.Workers
		body["busy"] = st.Busy
		body["queued"] = st.Waiting
		body["maxQueue"] = st.MaxQueue
		loaded := []fiber.Map{} // [] rather than null when none is loaded
		for _, l := range s.opts.Health.Loaded() {
			loaded = append(loaded, readyModel(l))
		}
		body["models"] = loaded
		if r, ok := s.opts.Health.(deviceReporter); ok {
			devs := []fiber.Map{}
			for _, d := range r.Devices() {
				devs = append(devs, readyDevice(d))
			}
			body["devices"] = devs
		}
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
		// FastAPI's words for Fiber's own errors (Fiber says "Cannot GET
		// /x" for an unknown route).
		switch {
		case code == fiber.StatusNotFound:
			msg = "Not Found"
		case code == fiber.StatusMethodNotAllowed:
			msg = "Method Not Allowed"
		case code == fiber.StatusRequestEntityTooLarge && msg == utils.StatusMessage(code):
			msg = "Request body too large"
		}
	} else {
		s.logger.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
	}
	return c.Status(code).JSON(detail{msg})
}

// App exposes the Fiber app for in-process tests (app.Test).
func (s *Server) App() *fiber.App { return s.app }

// closeGrace is how long, after the drain, connections still answering
// may take before they are closed.
const closeGrace = time.Second

// Serve accepts connections on ln until ctx ends, then shuts down:
//
//  1. /predict and /search answer 503 with Retry-After at once, and every
//     answer closes its connection; /ping and the rest keep answering;
//  2. admitted requests finish, for up to ShutdownTimeout; those still
//     running then are cancelled (queued ones leave the queue, running
//     ones stop through ONNX Runtime's Terminate) and answer 503;
//  3. the listener closes, then every connection.
//
// It returns nil after a shutdown, or the listener's error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	l := newListener(ln, listenerOptions{MaxConns: max(s.opts.MaxConns, 0)}, s.logger)
	s.ln.Store(l)
	s.loopback.Store(isLoopback(ln.Addr()))
	errc := make(chan error, 1)
	go func() { errc <- s.app.Listener(l) }()
	select {
	case err := <-errc:
		s.cancelBase()
		l.closeConns()
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	case <-ctx.Done():
	}

	start := time.Now()
	s.draining.Store(true)
	s.adm.Close()
	dctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	err := s.adm.Drain(dctx)
	cancel()
	if err != nil {
		s.logger.Warn("shutdown: requests still running at the deadline are cancelled", "after", time.Since(start).Round(time.Millisecond))
	}
	s.cancelBase()
	gctx, cancel := context.WithTimeout(context.Background(), closeGrace)
	_ = s.adm.Drain(gctx)
	cancel()
	sctx, cancel := context.WithTimeout(context.Background(), closeGrace)
	if err := s.app.ShutdownWithContext(sctx); err != nil {
		s.logger.Debug("shutdown: connections still busy are closed", "err", err)
	}
	cancel()
	l.closeConns()
	if err := <-errc; err != nil {
		s.logger.Debug("shutdown: listener", "err", err)
	}
	s.logger.Info("shutdown complete", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// fasthttpLogger sends fasthttp's own messages to the service's logger.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug("fasthttp: " + fmt.Sprintf(format, args...))
}
