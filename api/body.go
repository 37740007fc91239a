package api

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// Errors of reading a request body. The handlers answer them with 413,
// 503 and 408.
var (
	errBodyTooLarge = errors.New("request body too large")
	errBudget       = errors.New("server busy: too many request bytes in progress")
	errReadTimeout  = errors.New("request body arrived too slowly")
)

// byteBudget caps the request body bytes that all requests in progress
// hold together. A request takes bytes before it reads them and keeps
// them until it ends; one that would pass the cap is refused, so that
// memory held by uploads stays bounded whatever clients declare or send.
type byteBudget struct {
	max  int64
	used atomic.Int64
}

// take reserves n bytes, or reports false when they do not fit.
func (b *byteBudget) take(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *byteBudget) give(n int64) { b.used.Add(-n) }

// bodyReader reads a request body from fasthttp's stream: at most limit
// bytes (one more is an error), every byte charged to the budget before it
// is read and held until release, each read bounded by readTimeout of
// silence and by ctx (its deadline, and its cancellation, which wakes a
// blocked read).
type bodyReader struct {
	ctx         context.Context //nolint:containedctx // one request's reader
	r           io.Reader
	conn        net.Conn // nil: no deadlines (in-process tests)
	readTimeout time.Duration
	limit       int64
	budget      *byteBudget

	n        int64 // bytes read
	held     int64 // bytes charged to the budget
	eof      bool
	deadline time.Time // the read deadline last set
	stop     func() bool
	stopped  chan struct{}
}

func newBodyReader(ctx context.Context, r io.Reader, conn net.Conn, readTimeout time.Duration, limit int64, budget *byteBudget) *bodyReader {
	b := &bodyReader{ctx: ctx, r: r, conn: conn, readTimeout: readTimeout, limit: limit, budget: budget}
	if conn != nil {
		b.stopped = make(chan struct{})
		b.stop = context.AfterFunc(ctx, func() {
			defer close(b.stopped)
			_ = conn.SetReadDeadline(aLongTimeAgo)
		})
	}
	return b
}

// Read implements io.Reader.
func (b *bodyReader) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	if b.r == nil {
		b.eof = true
		return 0, io.EOF
	}
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if b.n > b.limit {
		return 0, errBodyTooLarge
	}
	if left := b.limit + 1 - b.n; int64(len(p)) > left {
		p = p[:left]
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !b.budget.take(int64(len(p))) {
		return 0, errBudget
	}
	b.setDeadline()
	if err := b.ctx.Err(); err != nil {
		b.budget.give(int64(len(p)))
		return 0, err
	}
	n, err := b.r.Read(p)
	b.budget.give(int64(len(p) - n))
	b.held += int64(n)
	b.n += int64(n)
	if b.n > b.limit {
		return n, errBodyTooLarge
	}
	switch {
	case errors.Is(err, io.EOF):
		b.eof = true
	case err != nil:
		if cerr := b.ctx.Err(); cerr != nil {
			return n, cerr
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return n, errReadTimeout
		}
	}
	return n, err
}

// setDeadline moves the read deadline to readTimeout from now (or the
// context's deadline, if sooner). It skips the call while the deadline
// set last is still more than three quarters away.
func (b *bodyReader) setDeadline() {
	if b.conn == nil {
		return
	}
	now := time.Now()
	d := now.Add(b.readTimeout)
	if cd, ok := b.ctx.Deadline(); ok && cd.Before(d) {
		d = cd
	}
	if !b.deadline.IsZero() && b.deadline.Sub(now) > b.readTimeout*3/4 && !d.Before(b.deadline) {
		return
	}
	b.deadline = d
	_ = b.conn.SetReadDeadline(d)
}

// done ends the reader's watch on ctx; after it the connection's deadlines
// are the caller's again. It reports whether the body was read to its end.
func (b *bodyReader) done() bool {
	if b.stop != nil && !b.stop() {
		<-b.stopped // the cancellation ran or is running: wait for it
	}
	b.stop = nil
	return b.eof
}

// release gives the bytes held back to the budget.
func (b *bodyReader) release() {
	b.budget.give(b.held)
	b.held = 0
}
