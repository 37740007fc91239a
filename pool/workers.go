package pool

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"
)

// Errors of the worker pool.
var (
	// ErrQueueFull: every worker is busy and the queue is at its limit.
	// The API answers 503 with Retry-After, so that the Immich server
	// moves on to its next machine-learning URL.
	ErrQueueFull = errors.New("server busy: request queue is full")
	// ErrClosed: the pool or cache is shutting down.
	ErrClosed = errors.New("shutting down")
)

// Priority orders the waiters for a CPU worker slot.
type Priority int

// Priorities, highest first.
const (
	// PriorityResume is a request that gave its slot up while its model
	// ran and now has post-processing (or its next model's preprocessing)
	// to do: finishing admitted work comes before starting new work.
	// Never refused.
	PriorityResume Priority = iota
	// PriorityRequest is a new request. It waits in the bounded queue, or is
	// refused with ErrQueueFull when the queue is full.
	PriorityRequest
	// PriorityBackground is bulk work (indexing): it runs when no request
	// waits, and is never refused (its callers bound it).
	PriorityBackground
	priorities
)

// Workers bounds the CPU work of the service: decoding, preprocessing and
// post-processing run on at most Workers slots at once, so that they
// neither oversubscribe the cores nor hold more decoded images in memory
// than there are slots (plus requests waiting for a model). Inference does
// not run on these slots: a request gives its slot up while it waits for
// a model, and another request's image is decoded meanwhile.
//
// New requests wait in a bounded queue; when it is full, Acquire refuses at
// once with ErrQueueFull instead of blocking: a bounded queue that refuses
// is how backpressure reaches the client. A freed slot goes to the oldest
// waiter of the highest priority.
//
// The caller's goroutine does the work; Workers only admits it.
type Workers struct {
	n        int
	maxQueue int

	mu      sync.Mutex
	busy    int
	waiting [priorities]list.List // of *waiter
	closed  bool
}

type waiter struct {
	ready   chan struct{}
	granted bool
}

// WorkersOptions configure Workers.
type WorkersOptions struct {
	// Workers is how many requests are decoded and preprocessed at once
	// (MACHINE_LEARNING_REQUEST_THREADS; at least 1).
	Workers int
	// Queue is how many new requests may wait for a worker; 0 refuses any
	// request that finds every worker busy.
	Queue int
}

// NewWorkers makes a worker pool.
func NewWorkers(opts WorkersOptions) *Workers {
	if opts.Workers < 1 {
		opts.Workers = 1
	}
	if opts.Queue < 0 {
		opts.Queue = 0
	}
	return &Workers{n: opts.Workers, maxQueue: opts.Queue}
}

// Acquire takes a slot, waiting behind higher priorities. It returns
// ErrQueueFull at once for a PriorityRequest when the queue is full,
// ErrClosed after Close (except for PriorityResume: admitted work
// finishes), and ctx.Err() if ctx ends while waiting. Every nil return must be paired with Release.
func (w *Workers) Acquire(ctx context.Context, p Priority) error {
	w.mu.Lock()
	if w.closed && p != PriorityResume {
		w.mu.Unlock()
		return ErrClosed
	}
	// A free slot means nobody waits: Release hands slots over directly.
	if w.busy < w.n {
		w.busy++
		w.mu.Unlock()
		return nil
	}
	if p == PriorityRequest && w.waiting[PriorityRequest].Len() >= w.maxQueue {
		w.mu.Unlock()
		return ErrQueueFull
	}
	wt := &waiter{ready: make(chan struct{})}
	el := w.waiting[p].PushBack(wt)
	w.mu.Unlock()
	select {
	case <-wt.ready:
		return nil
	case <-ctx.Done():
		w.mu.Lock()
		if wt.granted {
			// The slot arrived as ctx ended: pass it on.
			w.mu.Unlock()
			w.Release()
		} else {
			w.waiting[p].Remove(el)
			w.mu.Unlock()
		}
		return ctx.Err()
	}
}

// Release returns a slot: it goes to the first waiter of the highest
// priority, or back to the pool.
func (w *Workers) Release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p := range w.waiting {
		if el := w.waiting[p].Front(); el != nil {
			wt := w.waiting[p].Remove(el).(*waiter)
			wt.granted = true
			close(wt.ready)
			return
		}
	}
	w.busy--
}

// Do runs fn on a slot as a PriorityRequest, waiting in the queue if
// every worker is busy. It returns ErrQueueFull at once if the queue is full, ctx.Err()
// if ctx ends while waiting, and otherwise fn's error. queued is how long
// the request waited for its slot.
func (w *Workers) Do(ctx context.Context, fn func(ctx context.Context) error) (queued time.Duration, err error) {
	start := time.Now()
	if err := w.Acquire(ctx, PriorityRequest); err != nil {
		return time.Since(start), err
	}
	queued = time.Since(start)
	defer w.Release()
	return queued, fn(ctx)
}

// Stats is a snapshot of the pool.
type Stats struct {
	// Busy slots of Workers; Waiting new requests, of at most MaxQueue.
	Busy, Workers, Waiting, MaxQueue int
	// Resuming requests wait to post-process; Background bulk calls wait
	// behind requests.
	Resuming, Background int
	Closed               bool
}

// Stats reports busy workers and the queue depth.
func (w *Workers) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Stats{
		Busy: w.busy, Workers: w.n, Waiting: w.waiting[PriorityRequest].Len(), MaxQueue: w.maxQueue,
		Resuming: w.waiting[PriorityResume].Len(), Background: w.waiting[PriorityBackground].Len(), Closed: w.closed,
	}
}

// Close refuses new work; work already admitted finishes.
func (w *Workers) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}
