package pool

import (
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

// Workers bounds how many requests are processed at once (the workers)
// and how many may wait for a worker (the queue). When the queue is full,
// Do refuses at once with ErrQueueFull instead of blocking: a bounded
// queue that refuses is how backpressure reaches the client.
//
// The caller's goroutine does the work; Workers only admits it.
type Workers struct {
	slots    chan struct{}
	maxQueue int

	mu      sync.Mutex
	waiting int
	closed  bool
}

// WorkersOptions configure Workers.
type WorkersOptions struct {
	// Workers is how many requests run at once (at least 1).
	Workers int
	// Queue is how many requests may wait for a worker; 0 refuses any
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
	return &Workers{slots: make(chan struct{}, opts.Workers), maxQueue: opts.Queue}
}

// Do runs fn on a worker slot, waiting in the queue if every worker is
// busy. It returns ErrQueueFull at once if the queue is full, ctx.Err() if
// ctx ends while waiting, and otherwise fn's error. queued is how long the
// request waited for its slot.
func (w *Workers) Do(ctx context.Context, fn func(ctx context.Context) error) (queued time.Duration, err error) {
	start := time.Now()
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return 0, ErrClosed
	}
	select {
	case w.slots <- struct{}{}:
		w.mu.Unlock()
	default:
		if w.waiting >= w.maxQueue {
			w.mu.Unlock()
			return 0, ErrQueueFull
		}
		w.waiting++
		w.mu.Unlock()
		select {
		case w.slots <- struct{}{}:
			w.mu.Lock()
			w.waiting--
			w.mu.Unlock()
		case <-ctx.Done():
			w.mu.Lock()
			w.waiting--
			w.mu.Unlock()
			return time.Since(start), ctx.Err()
		}
	}
	queued = time.Since(start)
	defer func() { <-w.slots }()
	return queued, fn(ctx)
}

// Stats is a snapshot of the pool.
type Stats struct {
	Busy, Workers, Waiting, MaxQueue int
	Closed                           bool
}

// Stats reports busy workers and the queue depth.
func (w *Workers) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Stats{Busy: len(w.slots), Workers: cap(w.slots), Waiting: w.waiting, MaxQueue: w.maxQueue, Closed: w.closed}
}

// Close refuses new work; work already admitted finishes.
func (w *Workers) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}
