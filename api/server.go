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
)

// Options configure the server.
type Options struct {
	// KeepAlive is the idle timeout of kept-alive connections.
	KeepAlive time.Duration
	// MaxBodyBytes caps a request body; larger ones get 413.
	MaxBodyBytes int64
}

// Server serves the HTTP API.
type Server struct {
	opts   Options
	logger *slog.Logger
	app    *fiber.App
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
	s := &Server{opts: opts, logger: logger}
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

func (s *Server) routes() {
	s.app.Get("/", func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"message": "Immich ML"})
	})
	s.app.Get("/ping", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, "text/plain; charset=utf-8")
		return c.SendString("pong")
	})
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
