package pool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mlserve/mlserve/inference"
)

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
	// gather is how long, on a lane whose device is the CPU, the oldest
	// item may wait for items that requests are preparing now (expect):
	// the cores that would run the batch are the ones preparing them, so
	// running without them only shares the cores and makes two smaller
	// batches of one larger. 0 turns it off.
	gather time.Duration
	// maxQueue caps the items waiting; more are refused with
	// ErrQueueFull.
	maxQueue int
	// slot, when set, gives the batcher one lane at start: as many
	// runners as slot has places, every run taking one of them.
	slot chan struct{}
	// onSubmit, if set, is told after each submission whether a full
	// batch now waits beyond those running (the lanes do not keep up).
	onSubmit func(backlog bool)
	// nice > 0 runs the runners on threads of their own at that nice
	// value.
	nice int
}

// runFunc runs one batch: the items' inputs in order and their total
// rows; it returns one output per input.
type runFunc[In, Out any] = func(ctx context.Context, ins []In, rows int) ([]Out, error)

// lane is a group of a batcher's runners that run batches on one copy of
// the model (one device): they all take batches from the same queue, so
// work spreads over the lanes as their devices free up.
type lane struct {
	// slot returns the semaphore of the lane's device now (the CPU's
	// after its model fell back).
	slot func() chan struct{}
	// where, if set, tells where the lane's runs happen now.
	where func() Where
	// retry, if set, is asked after a failed run whether to run the batch
	// again (attempt 1, 2, ...); it may free memory or move the model
	// first, while the lane holds no slot. It returns the error to report
	// when the batch is not run again.
	retry func(attempt int, err error) (bool, error)
	stop  chan struct{}
	wg    sync.WaitGroup
	// runners is how many runners the lane has; busy how many of them
	// hold a batch (from take to the end of its run).
	runners int
	busy    atomic.Int32
}

// share is how many batches the work queued now may be split into, for
// a runner about to take one: on the CPU, this runner and every other
// runner of the lane that is not running a batch, at most as many as the
// device has slots. When the cores have room for several runs (fewer
// intra-op threads than cores), each takes a part of the queue instead
// of one taking it all while the others wait: on two cores with one
// intra-op thread, ViT-B/32 does 21.5-22.3 images a second as two runs
// of batch 2 at once, against 11.3 as one run of batch 4. (A part whose
// slot another model holds runs when that run ends, as the whole would
// have.) On an accelerator one larger batch is the better use of the
// device, and a runner takes the queue whole.
func (l *lane) share(slot chan struct{}) int {
	if !l.onCPU() {
		return 1
	}
	return max(1, min(l.runners-int(l.busy.Load()), cap(slot)))
}

// onCPU tells whether the lane's runs happen on the CPU now (a lane that
// does not tell runs on the CPU).
func (l *lane) onCPU() bool {
	return l.where == nil || l.where().Device == inference.CPU
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

	mu      sync.Mutex
	queue   []*item[In, Out]
	closed  bool
	changed chan struct{} // closed and replaced when the queue (or coming) changes
	done    chan struct{} // closed by close
	// coming counts the requests preparing an item for this batcher
	// (between expect and their submit or arrive).
	coming atomic.Int64
	wg     sync.WaitGroup

	batches, rows, items atomic.Int64
}

// item is one request's share of a batch.
type item[In, Out any] struct {
	ctx  context.Context //nolint:containedctx // the requester's context travels with its queued item so that the batcher drops items whose caller left
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
	// ran is where the batch ran (zero when its lane does not tell).
	ran Where
}

const (
	itemQueued int32 = iota
	itemTaken
	itemLeft
)

// newBatcher starts a batcher. With opts.slot set it has one lane of as
// many runners as the device has slots, so that one model alone can use
// them all, running batches with what newRun makes (one per runner: each
// may keep its own scratch memory); otherwise lanes are added with
// addLane.
func newBatcher[In, Out any](opts batchOptions, newRun func() runFunc[In, Out]) *batcher[In, Out] {
	opts.maxRows = max(1, opts.maxRows)
	if opts.maxQueue <= 0 {
		opts.maxQueue = 256
	}
	b := &batcher[In, Out]{opts: opts, changed: make(chan struct{}), done: make(chan struct{})}
	if opts.slot != nil {
		slot := opts.slot
		b.addLane(cap(slot), func() chan struct{} { return slot }, nil, nil, newRun)
	}
	return b
}

// addLane starts n runners that run batches with what newRun makes, each
// run on a place of the semaphore slot returns, until dropLane or close;
// where (may be nil) tells the items where their batch ran.
func (b *batcher[In, Out]) addLane(n int, slot func() chan struct{}, where func() Where, retry func(int, error) (bool, error), newRun func() runFunc[In, Out]) *lane {
	l := &lane{slot: slot, where: where, retry: retry, stop: make(chan struct{}), runners: max(1, n)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(l.stop)
		return l
	}
	for range max(1, n) {
		b.wg.Add(1)
		l.wg.Go(func() {
			defer b.wg.Done()
			b.runner(l, newRun())
		})
	}
	return l
}

// dropLane stops the lane's runners and waits for them: a batch running
// on the lane finishes first, and the queue stays for the other lanes.
func (b *batcher[In, Out]) dropLane(l *lane) {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// backlogLocked tells whether a full batch waits beyond those running:
// the model's lanes do not keep up. Called with mu held.
func (b *batcher[In, Out]) backlogLocked() bool {
	rows := 0
	for _, it := range b.queue {
		if it.state.Load() == itemQueued {
			rows += it.rows
		}
	}
	return rows >= b.opts.maxRows
}

// expect tells the batcher that a request is preparing an item for it:
// on the CPU a runner gathers it into the batch it is forming (gather).
// The request's enqueue(…, true) or arrive ends the expectation.
func (b *batcher[In, Out]) expect() { b.coming.Add(1) }

// arrive ends an expectation without an item (the request failed or had
// nothing to submit).
func (b *batcher[In, Out]) arrive() {
	b.mu.Lock()
	b.coming.Add(-1)
	b.broadcast()
	b.mu.Unlock()
}

// enqueue queues rows of work. It refuses with ErrQueueFull when the
// queue is full and with ErrClosed after close. expected ends the
// request's expectation (expect) with the same step that queues its
// item, so that no runner sees the one without the other; it ends even
// when the item is refused.
func (b *batcher[In, Out]) enqueue(ctx context.Context, in In, rows, key int, expected bool) (*item[In, Out], error) {
	it, err := b.check(ctx, in, rows, key)
	b.mu.Lock()
	if expected {
		b.coming.Add(-1)
	}
	if err == nil && b.closed {
		err = ErrClosed
	}
	if n := len(b.queue); err == nil && n >= b.opts.maxQueue {
		err = fmt.Errorf("%w (%s: %d items waiting)", ErrQueueFull, b.opts.name, n)
	}
	if err != nil {
		if expected {
			b.broadcast() // a runner may be gathering for it
		}
		b.mu.Unlock()
		return nil, err
	}
	b.queue = append(b.queue, it)
	b.broadcast()
	backlog := b.opts.onSubmit != nil && b.backlogLocked()
	b.mu.Unlock()
	if b.opts.onSubmit != nil {
		b.opts.onSubmit(backlog)
	}
	return it, nil
}

// check makes the item of a submission, or says why there is none.
func (b *batcher[In, Out]) check(ctx context.Context, in In, rows, key int) (*item[In, Out], error) {
	if rows < 1 || rows > b.opts.maxRows {
		return nil, fmt.Errorf("pool: %s: an item of %d rows for batches of at most %d", b.opts.name, rows, b.opts.maxRows)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &item[In, Out]{ctx: ctx, in: in, rows: rows, key: key, enq: time.Now(), done: make(chan struct{})}, nil
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

// runner takes batches off the queue until the batcher closes or its
// lane is dropped.
func (b *batcher[In, Out]) runner(l *lane, run runFunc[In, Out]) {
	if b.opts.nice > 0 {
		// The thread that calls Run works with the session's pool
		// threads, which start at the same nice value. Its priority
		// cannot be raised again without privileges, so it stays locked
		// and ends with this goroutine.
		runtime.LockOSThread()
		_ = inference.NiceThread(b.opts.nice)
	}
	var last runEnd
	for {
		first, seen, ok := b.next(l.stop)
		if !ok {
			return
		}
		ready := b.fill(first, l, last)
		slot := l.slot()
		select {
		case slot <- struct{}{}:
		case <-b.done:
			return
		case <-l.stop:
			return
		}
		batch := b.take(l, slot)
		if len(batch) == 0 {
			<-slot
			continue
		}
		start := time.Now()
		b.runBatch(l, run, slot, batch, seen, ready)
		l.busy.Add(-1)
		last = runEnd{at: time.Now(), took: time.Since(start), ctxs: last.ctxs[:0]}
		for _, it := range batch {
			last.ctxs = append(last.ctxs, it.ctx)
		}
	}
}

// next waits for the oldest item still wanted and returns it with the
// time this runner first saw it.
func (b *batcher[In, Out]) next(stop <-chan struct{}) (*item[In, Out], time.Time, bool) {
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
		case <-stop:
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

// runEnd is when a runner's last batch ended, how long it ran, and the
// contexts of its items' requests.
type runEnd struct {
	at   time.Time
	took time.Duration
	ctxs []context.Context
}

// ran tells whether the last batch had an item of the request of ctx.
func (r runEnd) ran(ctx context.Context) bool {
	return slices.Contains(r.ctxs, ctx)
}

// lingerShare is the part of its last run's time that a CPU runner
// waits after the run for requests to start preparing items (gather):
// the requests whose outputs it just delivered usually send their next
// at once, and without the pause a batch would leave with whatever
// queued during the run, which, once concurrent requests fall out of
// step, splits them into smaller batches for good.
const lingerShare = 20

// fill waits until first's batch is full, or as long as the options
// say it may wait for more: up to maxWait after first was queued, and
// on a CPU lane with gather set, up to gather after first could have
// run while requests are preparing items for the batcher, and at least
// a twentieth of the last run's time after that run (lingerShare)
// unless first's request was in that run. It returns when the waiting
// ended.
func (b *batcher[In, Out]) fill(first *item[In, Out], l *lane, last runEnd) time.Time {
	gather := time.Duration(0)
	if l.onCPU() {
		gather = b.opts.gather
	}
	if b.opts.maxWait <= 0 && gather <= 0 {
		return time.Now()
	}
	// The gather time counts from when first could have run: its
	// enqueueing, or the end of the run it queued behind.
	could := first.enq
	if last.at.After(could) {
		could = last.at
	}
	waitUntil, gatherUntil := first.enq.Add(b.opts.maxWait), could.Add(gather)
	// No lingering for a request that had items in the last batch and
	// queued its next (a chunk of its faces): it is not coming back, it
	// is here.
	if gather > 0 && !last.at.IsZero() && !last.ran(first.ctx) {
		if linger := last.at.Add(min(last.took/lingerShare, gather)); linger.After(waitUntil) {
			waitUntil = linger
		}
	}
	for {
		b.mu.Lock()
		rows := 0
		for _, it := range b.queue {
			if it.key == first.key && it.state.Load() == itemQueued {
				rows += it.rows
			}
		}
		changed := b.changed
		coming := b.coming.Load()
		b.mu.Unlock()
		now := time.Now()
		if rows >= b.opts.maxRows || first.state.Load() != itemQueued {
			return now
		}
		until := waitUntil
		if coming > 0 && gatherUntil.After(until) {
			until = gatherUntil
		}
		if !now.Before(until) {
			return now
		}
		t := time.NewTimer(until.Sub(now))
		select {
		case <-changed:
		case <-t.C:
		case <-b.done:
			t.Stop()
			return time.Now()
		case <-l.stop:
			t.Stop()
			return time.Now()
		}
		t.Stop()
	}
}

// take removes the next batch from the queue for a runner of lane l that
// holds a place of slot: the oldest wanted item and the later ones with
// its key that fit, or, when the lane can run several batches at once
// (lane.share), about its share of them. The runner counts as busy when
// the batch is not empty.
func (b *batcher[In, Out]) take(l *lane, slot chan struct{}) []*item[In, Out] {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dropLeft()
	limit := b.opts.maxRows
	if n := l.share(slot); n > 1 && len(b.queue) > 0 {
		queued := 0
		for _, it := range b.queue {
			if it.key == b.queue[0].key {
				queued += it.rows
			}
		}
		limit = min(limit, (queued+n-1)/n)
	}
	var batch []*item[In, Out]
	rows, key := 0, 0
	kept := b.queue[:0]
	for _, it := range b.queue {
		if (len(batch) == 0 || it.key == key && rows+it.rows <= limit) && it.state.CompareAndSwap(itemQueued, itemTaken) {
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
	if len(batch) > 0 {
		l.busy.Add(1)
	}
	return batch
}

// runBatch runs one batch on the slot the runner holds and delivers the
// outputs. The run's context ends only when every item's request has. A
// failed run is run again while the lane's retry says so, each time on a
// slot taken afresh (the lane's device may have changed).
func (b *batcher[In, Out]) runBatch(l *lane, run runFunc[In, Out], slot chan struct{}, batch []*item[In, Out], seen, ready time.Time) {
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
	for attempt := 1; err != nil && l.retry != nil && ctx.Err() == nil; attempt++ {
		<-slot
		slot = nil
		again, rerr := l.retry(attempt, err)
		if !again {
			err = rerr
			break
		}
		s := l.slot()
		select {
		case s <- struct{}{}:
			slot = s
			outs, err = safeRun(run, ctx, ins, rows)
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	took := time.Since(start)
	if slot != nil {
		<-slot
	}
	for _, stop := range stops {
		stop()
	}
	cancel()
	if err == nil && len(outs) != len(batch) {
		err = fmt.Errorf("pool: %s: %d outputs for %d items", b.opts.name, len(outs), len(batch))
	}
	var ran Where
	if l.where != nil {
		ran = l.where()
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
		it.ran = ran
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
func safeRun[In, Out any](run runFunc[In, Out], ctx context.Context, ins []In, rows int) (outs []Out, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", errRunPanic, p)
		}
	}()
	return run(ctx, ins, rows)
}

var errRunPanic = errors.New("pool: inference panicked")
