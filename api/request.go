package api

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"

	"github.com/gofiber/fiber/v2"
)

// Keys of values a request carries in fiber.Ctx.Locals.
type localKey int

const (
	// localBodyRead is set once the request body has been read whole.
	localBodyRead localKey = iota
	// localAuthenticated is set when the request carried the API key.
	localAuthenticated
)

// request is one /predict or /search call in progress: its context,
// which ends at the worker timeout, at the end of the shutdown drain, or
// when the client hangs up, and its body.
type request struct {
	s      *Server
	c      *fiber.Ctx
	ctx    context.Context //nolint:containedctx // one request's context
	cancel context.CancelFunc
	conn   *conn // nil when the connection is not ours (app.Test)
	body   *bodyReader
	gone   atomic.Bool
}

func (s *Server) newRequest(c *fiber.Ctx) *request {
	ctx, cancel := context.WithTimeout(s.base, s.opts.RequestTimeout)
	r := &request{s: s, c: c, ctx: ctx, cancel: cancel}
	r.conn, _ = c.Context().Conn().(*conn)
	return r
}

// readForm reads the request body as a multipart form with the given
// field caps (see readForm), the body capped at MaxBodyBytes and charged
// to the in-flight byte budget until end.
func (r *request) readForm(caps map[string]int64) (form, error) {
	boundary, err := formBoundary(string(r.c.Request().Header.ContentType()))
	if err != nil {
		return nil, err
	}
	var nc net.Conn
	if r.conn != nil {
		nc = r.conn
	}
	r.body = newBodyReader(r.ctx, r.c.Context().RequestBodyStream(), nc, r.s.opts.ReadTimeout, r.s.opts.MaxBodyBytes, r.s.budget)
	f, err := readForm(r.body, boundary, caps)
	if err == nil {
		// Whatever follows the closing boundary, up to the body limit, so
		// that the connection can serve the next request.
		if _, err = io.Copy(io.Discard, r.body); err != nil {
			f, err = nil, formError(err)
		}
	}
	if r.body.done() {
		r.c.Locals(localBodyRead, true)
	}
	return f, err
}

// watch cancels the request's context when its client hangs up, until
// end. Call it once the body has been read.
func (r *request) watch() func() {
	if r.conn == nil || r.c.Locals(localBodyRead) == nil {
		return func() {}
	}
	return r.conn.watchHangup(func() {
		r.gone.Store(true)
		r.s.metrics.clientGone()
		r.cancel()
	})
}

// end releases what the request holds.
func (r *request) end() {
	r.cancel()
	if r.body != nil {
		r.body.done()
		r.body.release()
	}
}

// isContextErr tells the errors of a context that ended.
func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// hasBody tells whether a request declares a body: a Content-Length
// above zero, or chunked transfer encoding.
func hasBody(c *fiber.Ctx) bool {
	n := c.Request().Header.ContentLength()
	return n > 0 || n == -1
}

// takesBody tells the routes that read a body, matched as Fiber routes
// them (any case, an optional trailing slash).
func takesBody(c *fiber.Ctx) bool {
	p := strings.TrimSuffix(c.Path(), "/")
	switch c.Method() {
	case fiber.MethodPost:
		return strings.EqualFold(p, "/predict") || strings.EqualFold(p, "/search") || isPeoplePath(p)
	case fiber.MethodPut, fiber.MethodPatch:
		return isPeoplePath(p)
	}
	return false
}

// isPeoplePath tells the paths under /people/ (rename and merge read a
// small JSON body).
func isPeoplePath(p string) bool {
	return len(p) > len("/people/") && strings.EqualFold(p[:len("/people/")], "/people/")
}

// guard is the first middleware. A request whose body no route reads has
// its body detached, so that nothing (Fiber's Body, the metrics adaptor)
// buffers it; any request that ends with its body not read whole closes
// its connection, lingering so that the client reads the answer. While
// the server drains, every answer closes its connection.
func (s *Server) guard(c *fiber.Ctx) error {
	body := hasBody(c)
	if body && !takesBody(c) {
		c.Request().SetBodyStream(strings.NewReader(""), 0)
	}
	err := c.Next()
	if body && c.Locals(localBodyRead) == nil {
		c.Context().SetConnectionClose()
		if lc, ok := c.Context().Conn().(*conn); ok {
			lc.linger.Store(true)
		}
	}
	if s.draining.Load() {
		c.Context().SetConnectionClose()
	}
	return err
}

// retryAfter is the Retry-After of every 503: Immich's server moves on to
// its next machine-learning URL, or retries the job later.
const retryAfter = "1"
