package pool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// devices hands out inference slots: a run of any model on the CPU takes
// one of the CPU's slots, so that runs × intra-op threads stay within the
// cores (two sessions running at once on the same cores slow each other
// down); each accelerator has slots of its own.
type devices struct {
	cpu, accel int

	mu    sync.Mutex
	slots map[string]chan struct{}
}

func newDevices(cpu, accel int) *devices {
	return &devices{cpu: max(1, cpu), accel: max(1, accel), slots: map[string]chan struct{}{}}
}

// deviceOf maps a session's provider ("CPU", "CUDA", "OpenVINO:GPU.0",
// "OpenVINO:CPU") to the device whose slots it takes.
func deviceOf(provider string) string {
	if provider == "" || provider == "CPU" || strings.HasSuffix(provider, ":CPU") {
		return "CPU"
	}
	return provider
}

// slot returns the semaphore of provider's device.
func (d *devices) slot(provider string) chan struct{} {
	dev := deviceOf(provider)
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.slots[dev]
	if s == nil {
		n := d.accel
		if dev == "CPU" {
			n = d.cpu
		}
		s = make(chan struct{}, n)
		d.slots[dev] = s
	}
	return s
}

// runs is how many runs a device's slots allow at once.
func (d *devices) runs(provider string) int { return cap(d.slot(provider)) }

// batchOptions configure one batcher.
type batchOptions struct {
	// name is for errors and stats ("clip/visual/ViT-B-32__openai").
	name string
	// maxRows caps the rows of one batch; an item may not have more.
	maxRows int
	// maxWait is how long the oldest item may wait for more to arrive
	// before its batch runs; 0 runs at once (continuous batching: a batch
	// takes whatever queued while the device was busy).
	maxWait time.Duration
	// maxQueue caps the items waiting; more are refused with
	// ErrQueueFull.
	maxQueue int
	// slot is the device semaphore every run takes.
	slot chan struct{}
}

// batcher coalesces the work of concurrent requests for one loaded model
// into batches. Items (one request's rows: an image, a text, a chunk of
// face crops or text lines) queue in arrival order; a runner takes the
// oldest item and every later one with the same key that still fits in
// maxRows, runs them as one batch on a device slot, and hands each item
// its own outputs. Items with different keys (text lines of different
// tensor widths) never share a batch.
//
// An item whose request ends before its batch is formed leaves the queue
// and is never run; once its batch runs, a request leaving does not stop
// it (the others still want their results), unless every request of the
// batch has left.
type batcher[In, Out any] struct {
	opts batchOptions
	// newRun makes the run function of one runner goroutine (each may
	// keep its own scratch memory). run gets the items' inputs in order
	// and their total rows, and returns one output per input.
	newRun func() func(ctx context.Context, ins []In, rows int) ([]Out, error)

	mu      sync.Mutex
	queue   []*item[In, Out]
	closed  bool
	changed chan struct{} // closed and replaced when the queue changes
	done    chan struct{} // closed by close
	wg      sync.WaitGroup

	batches, rows, items atomic.Int64
}

// item is one request's share of a batch.
type item[In, Out any] struct {
	ctx  context.Context
	in   In
	rows int
	key  int
	enq  time.Time

	state atomic.Int32 // itemQueued, itemTaken, itemLeft
	done  chan struct{}
	out   Out
	err   error
	// Where the item's time went: waiting for the device (queue),
	// waiting on purpose for a fuller batch (wait), and the batch's run.
	queue, wait, infer time.Duration
	batchRows          int
}

const (
	itemQueued int32 = iota
	itemTaken
	itemLeft
)

// newBatcher starts a batcher with as many runners as the device has
// slots, so that one model alone can use them all.
func newBatcher[In, Out any](opts batchOptions, newRun func() func(ctx context.Context, ins []In, rows int) ([]Out, error)) *batcher[In, Out] {
	opts.maxRows = max(1, opts.maxRows)
	if opts.maxQueue <= 0 {
		opts.maxQueue = 256
	}
	b := &batcher[In, Out]{opts: opts, newRun: newRun, changed: make(chan struct{}), done: make(chan struct{})}
	for range cap(opts.slot) {
		b.wg.Go(b.runner)
	}
	return b
}

// submit queues rows of work. It refuses with ErrQueueFull when the queue
// is full and with ErrClosed after close.
func (b *batcher[In, Out]) submit(ctx context.Context, in In, rows, key int) (*item[In, Out], error) {
	if rows < 1 || rows > b.opts.maxRows {
		return nil, fmt.Errorf("pool: %s: an item of %d rows for batches of at most %d", b.opts.name, rows, b.opts.maxRows)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	it := &item[In, Out]{ctx: ctx, in: in, rows: rows, key: key, enq: time.Now(), done: make(chan struct{})}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	if n := len(b.queue); n >= b.opts.maxQueue {
		b.mu.Unlock()
		return nil, fmt.Errorf("%w (%s: %d items waiting)", ErrQueueFull, b.opts.name, n)
	}
	b.queue = append(b.queue, it)
	b.broadcast()
	b.mu.Unlock()
	return it, nil
}

// broadcast wakes every runner waiting for the queue to change (under mu).
func (b *batcher[In, Out]) broadcast() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// await waits for the item's outputs. If ctx ends first, the item leaves
// its queue (or, if its batch is already running, its outputs are
// dropped) and ctx's error is returned.
func (b *batcher[In, Out]) await(ctx context.Context, it *item[In, Out]) (Out, error) {
	select {
	case <-it.done:
		return it.out, it.err
	case <-ctx.Done():
		if it.state.CompareAndSwap(itemQueued, itemLeft) {
			// A runner may be filling a batch for this item.
			b.mu.Lock()
			b.broadcast()
			b.mu.Unlock()
		}
		var zero Out
		return zero, ctx.Err()
	}
}

// close stops the runners. The cache calls it once no request holds the
// model, so the queue is empty; anything left fails with ErrClosed.
func (b *batcher[In, Out]) close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	left := b.queue
	b.queue = nil
	b.mu.Unlock()
	close(b.done)
	b.wg.Wait()
	for _, it := range left {
		it.err = ErrClosed
		close(it.done)
	}
}

// BatchStats count a batcher's work since its model was loaded.
type BatchStats struct {
	Key Key
	// Batches run, Items and Rows they held, Queued items now.
	Batches, Items, Rows int64
	Queued               int
}

func (b *batcher[In, Out]) stats() BatchStats {
	b.mu.Lock()
	q := len(b.queue)
	b.mu.Unlock()
	return BatchStats{Batches: b.batches.Load(), Items: b.items.Load(), Rows: b.rows.Load(), Queued: q}
}

// runner takes batches off the queue until the batcher closes.
func (b *batcher[In, Out]) runner() {
	run := b.newRun()
	for {
		first, seen, ok := b.next()
		if !ok {
			return
		}
		ready := b.fill(first)
		select {
		case b.opts.slot <- struct{}{}:
		case <-b.done:
			return
		}
		batch := b.take()
		if len(batch) == 0 {
			<-b.opts.slot
			continue
		}
		b.runBatch(run, batch, seen, ready)
	}
}

// next waits for the oldest item still wanted and returns it with the
// time this runner first saw it.
func (b *batcher[In, Out]) next() (*item[In, Out], time.Time, bool) {
	for {
		b.mu.Lock()
		b.dropLeft()
		if len(b.queue) > 0 {
			first := b.queue[0]
			b.mu.Unlock()
			return first, time.Now(), true
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-b.done:
			return nil, time.Time{}, false
		}
	}
}

// dropLeft removes items whose requests left (under mu).
func (b *batcher[In, Out]) dropLeft() {
	kept := b.queue[:0]
	for _, it := range b.queue {
		if it.state.Load() == itemLeft || it.ctx.Err() != nil && it.state.CompareAndSwap(itemQueued, itemLeft) {
			continue
		}
		kept = append(kept, it)
	}
	clear(b.queue[len(kept):])
	b.queue = kept
}

// fill waits, when maxWait is set, until first's batch is full or first
// has waited maxWait, and returns when that was.
func (b *batcher[In, Out]) fill(first *item[In, Out]) time.Time {
	if b.opts.maxWait <= 0 {
		return time.Now()
	}
	deadline := first.enq.Add(b.opts.maxWait)
	for {
		b.mu.Lock()
		rows := 0
		for _, it := range b.queue {
			if it.key == first.key && it.state.Load() == itemQueued {
				rows += it.rows
			}
		}
		changed := b.changed
		b.mu.Unlock()
		left := time.Until(deadline)
		if rows >= b.opts.maxRows || left <= 0 || first.state.Load() != itemQueued {
			return time.Now()
		}
		t := time.NewTimer(left)
		select {
		case <-changed:
		case <-t.C:
		case <-b.done:
		}
		t.Stop()
	}
}

// take removes the next batch from the queue: the oldest wanted item and
// the later ones with its key that fit.
func (b *batcher[In, Out]) take() []*item[In, Out] {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dropLeft()
	var batch []*item[In, Out]
	rows, key := 0, 0
	kept := b.queue[:0]
	for _, it := range b.queue {
		if (len(batch) == 0 || it.key == key && rows+it.rows <= b.opts.maxRows) && it.state.CompareAndSwap(itemQueued, itemTaken) {
			if len(batch) == 0 {
				key = it.key
			}
			batch = append(batch, it)
			rows += it.rows
			continue
		}
		if it.state.Load() != itemLeft {
			kept = append(kept, it)
		}
	}
	clear(b.queue[len(kept):])
	b.queue = kept
	if len(b.queue) > 0 {
		b.broadcast() // more work for another runner
	}
	return batch
}

// runBatch runs one batch on the slot the runner holds and delivers the
// outputs. The run's context ends only when every item's request has.
func (b *batcher[In, Out]) runBatch(run func(context.Context, []In, int) ([]Out, error), batch []*item[In, Out], seen, ready time.Time) {
	ins := make([]In, len(batch))
	rows := 0
	for i, it := range batch {
		ins[i] = it.in
		rows += it.rows
	}
	ctx, cancel := context.WithCancel(context.Background())
	var members atomic.Int64
	members.Store(int64(len(batch)))
	stops := make([]func() bool, len(batch))
	for i, it := range batch {
		stops[i] = context.AfterFunc(it.ctx, func() {
			if members.Add(-1) == 0 {
				cancel()
			}
		})
	}
	start := time.Now()
	outs, err := safeRun(run, ctx, ins, rows)
	took := time.Since(start)
	<-b.opts.slot
	for _, stop := range stops {
		stop()
	}
	cancel()
	if err == nil && len(outs) != len(batch) {
		err = fmt.Errorf("pool: %s: %d outputs for %d items", b.opts.name, len(outs), len(batch))
	}
	b.batches.Add(1)
	b.items.Add(int64(len(batch)))
	b.rows.Add(int64(rows))
	for i, it := range batch {
		// The deliberate wait is the part of [seen, ready] the item was
		// queued for; the rest of its time before the run is queueing.
		from := it.enq
		if seen.After(from) {
			from = seen
		}
		if ready.After(from) {
			it.wait = ready.Sub(from)
		}
		it.queue = start.Sub(it.enq) - it.wait
		it.infer = took
		it.batchRows = rows
		if err != nil {
			it.err = err
		} else {
			it.out = outs[i]
		}
		close(it.done)
	}
}

// safeRun turns a panic in a run into an error, so that one bad batch
// does not take the runner (and every later request) down with it.
func safeRun[In, Out any](run func(context.Context, []In, int) ([]Out, error), ctx context.Context, ins []In, rows int) (outs []Out, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", errRunPanic, p)
		}
	}()
	return run(ctx, ins, rows)
}

var errRunPanic = errors.New("pool: inference panicked")
