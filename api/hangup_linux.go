package api

import (
	"errors"
	"syscall"
	"time"
)

// watchHangup calls gone when the client closes or resets the connection,
// until the returned stop is called; stop returns once the watch has
// ended. fasthttp does not notice a client that goes away while its
// handler runs, so the handler asks the kernel: a non-consuming peek
// (MSG_PEEK) that waits in Go's network poller for the socket to become
// readable. Reading nothing then means end of stream; an error means a
// reset. Bytes waiting (a pipelined request) end the watch without a
// verdict. Call it only once the request body has been read whole, or the
// body's own bytes would end the watch at once.
func (c *conn) watchHangup(gone func()) (stop func()) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return func() {}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	// The poller honours the read deadline; the body's is not ours to keep.
	if c.Conn.SetReadDeadline(time.Time{}) != nil { //nolint:staticcheck // QF1008: the raw connection, named as in every other call of this wrapper (which overrides Close)
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf [1]byte
		hungUp := false
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
				switch {
				case errors.Is(err, syscall.EINTR):
					continue
				case errors.Is(err, syscall.EAGAIN):
					return false // wait until readable
				case err != nil:
					hungUp = true // reset
				case n == 0:
					hungUp = true // end of stream
				}
				return true
			}
		})
		if err == nil && hungUp {
			gone()
		}
	}()
	return func() {
		// A deadline in the past wakes the poller; fasthttp sets the next
		// request's deadline before it reads again.
		_ = c.Conn.SetReadDeadline(aLongTimeAgo) //nolint:staticcheck // QF1008: the raw connection, named as in every other call of this wrapper (which overrides Close)
		<-done
	}
}
