package pool

import (
	"context"
	"sync"
)

// Admission bounds the requests inside the service: those running on a
// worker, those waiting for one, and those still being received or
// waiting for a model to load. The HTTP layer takes a place right after a
// request's headers, before it reads the body, so that a request the
// service could not take anyway is refused at once, before any upload,
// decode or model load. It never blocks: a full service refuses with
// ErrQueueFull, a closed one with ErrClosed.
//
// Admission also carries the service's shutdown: Close refuses new
// requests and Drain waits for the admitted ones to leave.
type Admission struct {
	limit int

	mu     sync.Mutex
	inUse  int
	closed bool
	idle   chan struct{} // closed and replaced when inUse drops to 0
}

// AdmissionOptions configure an Admission.
type AdmissionOptions struct {
	// Limit is how many requests may be inside the service at once; the
	// usual value is the workers plus the queue. Zero or less admits any
	// number (Close and Drain still work).
	Limit int
}

// NewAdmission makes an Admission.
func NewAdmission(opts AdmissionOptions) *Admission {
	return &Admission{limit: opts.Limit, idle: make(chan struct{})}
}

// Acquire takes a place or refuses at once: ErrClosed after Close,
// ErrQueueFull when every place is taken. Each successful Acquire must be
// matched by one Release.
func (a *Admission) Acquire() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	if a.limit > 0 && a.inUse >= a.limit {
		return ErrQueueFull
	}
	a.inUse++
	return nil
}

// Release gives back a place taken by Acquire.
func (a *Admission) Release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inUse <= 0 {
		panic("pool: Admission.Release without Acquire")
	}
	a.inUse--
	if a.inUse == 0 {
		close(a.idle)
		a.idle = make(chan struct{})
	}
}

// Close refuses every later Acquire with ErrClosed; admitted requests
// carry on.
func (a *Admission) Close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
}

// Drain waits until no request is admitted, or ctx ends (its error is
// returned). Call it after Close, or new requests may keep it waiting.
func (a *Admission) Drain(ctx context.Context) error {
	for {
		a.mu.Lock()
		n, idle := a.inUse, a.idle
		a.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// AdmissionStats is a snapshot of an Admission.
type AdmissionStats struct {
	// InUse is how many requests are admitted now; Limit is the most
	// (0: no limit).
	InUse, Limit int
	Closed       bool
}

// Stats reports the places taken.
func (a *Admission) Stats() AdmissionStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return AdmissionStats{InUse: a.inUse, Limit: a.limit, Closed: a.closed}
}
