package api

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The listener's accept loop backs off on errors that pass, as net/http's
// does: 5 ms, doubling up to 1 s.
const (
	acceptMinDelay = 5 * time.Millisecond
	acceptMaxDelay = time.Second
)

// A connection closed while its client may still be sending a body we did
// not read is half-closed first and drained for a while, so that the
// client reads our answer (a 413 or 503) instead of a TCP reset.
const (
	lingerTime  = time.Second
	lingerBytes = 8 << 20
)

// listener wraps the service's net.Listener for fasthttp, which gives up
// serving on the first accept error it does not know (EMFILE included).
// It retries the errors that pass (out of file descriptors, out of
// memory, an aborted handshake) with a backoff and never returns them,
// caps the open connections (Accept waits for a slot, leaving further
// clients in the kernel's backlog), and hands out conns that know how to
// linger on close and to watch for a client that hangs up.
type listener struct {
	net.Listener
	logger  *slog.Logger
	slots   chan struct{} // nil: no cap
	done    chan struct{}
	closing sync.Once

	mu    sync.Mutex
	conns map[*conn]struct{}

	open         atomic.Int64
	acceptErrors atomic.Int64
	lastLog      atomic.Int64 // unix nanoseconds of the last accept-error log line
}

type listenerOptions struct {
	// MaxConns caps the open connections; 0 means no cap.
	MaxConns int
}

func newListener(ln net.Listener, opts listenerOptions, logger *slog.Logger) *listener {
	l := &listener{Listener: ln, logger: logger, done: make(chan struct{}), conns: map[*conn]struct{}{}}
	if opts.MaxConns > 0 {
		l.slots = make(chan struct{}, opts.MaxConns)
	}
	return l
}

// Accept implements net.Listener.
func (l *listener) Accept() (net.Conn, error) {
	if l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return l.track(c), nil
		}
		if !retryableAccept(err) {
			l.releaseSlot()
			select {
			case <-l.done:
				// fasthttp ends its loop quietly on this error.
				return nil, net.ErrClosed
			default:
			}
			return nil, err
		}
		l.acceptErrors.Add(1)
		delay = min(max(2*delay, acceptMinDelay), acceptMaxDelay)
		if now := time.Now().UnixNano(); now-l.lastLog.Load() > int64(10*time.Second) {
			l.lastLog.Store(now)
			l.logger.Warn("accept failed; retrying", "err", err, "retry_in", delay, "open_conns", l.open.Load())
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			l.releaseSlot()
			return nil, net.ErrClosed
		}
	}
}

// retryableAccept tells the accept errors that pass with time: the
// process or the system is out of file descriptors or buffers, or a
// client gave up during the handshake.
func retryableAccept(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM, syscall.EINTR, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (l *listener) releaseSlot() {
	if l.slots != nil {
		<-l.slots
	}
}

func (l *listener) track(nc net.Conn) *conn {
	c := &conn{Conn: nc, l: l}
	l.mu.Lock()
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	l.open.Add(1)
	return c
}

func (l *listener) untrack(c *conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.open.Add(-1)
	l.releaseSlot()
}

// Close stops accepting; open connections stay.
func (l *listener) Close() error {
	err := net.ErrClosed
	l.closing.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}

// closeConns closes every open connection at once (the end of shutdown).
func (l *listener) closeConns() {
	l.mu.Lock()
	cs := make([]*conn, 0, len(l.conns))
	for c := range l.conns {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	for _, c := range cs {
		c.linger.Store(false)
		_ = c.Close()
	}
}

// conn is one client connection.
type conn struct {
	net.Conn
	l       *listener
	closing sync.Once
	// linger asks Close to half-close and drain first: the handler
	// answered without reading the whole request body.
	linger atomic.Bool
}

// Close implements net.Conn.
func (c *conn) Close() error {
	var err error
	c.closing.Do(func() {
		if c.linger.Load() {
			go c.lingerClose()
			return
		}
		err = c.Conn.Close()
		c.l.untrack(c)
	})
	return err
}

func (c *conn) lingerClose() {
	defer c.l.untrack(c)
	defer c.Conn.Close()
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() != nil {
			return
		}
	}
	if c.Conn.SetReadDeadline(time.Now().Add(lingerTime)) != nil { //nolint:staticcheck // QF1008: the raw connection, named as in every other call of this wrapper (which overrides Close)
		return
	}
	_, _ = io.CopyN(io.Discard, c.Conn, lingerBytes)
}

// aLongTimeAgo is a deadline that has passed: setting it wakes a blocked
// read at once.
var aLongTimeAgo = time.Unix(1, 0)
