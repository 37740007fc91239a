package pool

import (
	"context"
	"runtime"
	"slices"
	"time"

	"github.com/mlserve/mlserve/inference"
)

// exec is one request's passage through the engine. The request computes
// (decodes, preprocesses, post-processes) on a CPU worker slot, gives the
// slot up whenever it waits for a model, and takes one again, ahead of new
// requests, when it has CPU work left. exec adds up where the time went.
//
// An exec belongs to one goroutine.
type exec struct {
	s *Service
	t *Timings
	// prio is the priority of the first slot; a request's later ones
	// resume, bulk work stays in the background.
	prio Priority

	held  bool
	taken bool // a slot was held before: the next one resumes
	since time.Time
	stage *time.Duration // where the CPU time of the current stretch goes
	// ran is where the current entry's model ran (each replica once).
	ran []Where
	// heading is the batcher the request is preparing an item for (see
	// batcher.expect), nil when none.
	heading expecter
}

// expecter is a batcher seen by the requests preparing items for it.
type expecter interface {
	expect()
	arrive()
}

// headFor tells b (nil: no batcher) that the request is now preparing
// an item for it, and the batcher it was heading for before that it is
// not.
func (x *exec) headFor(b expecter) {
	if x.heading == b {
		return
	}
	if x.heading != nil {
		x.heading.arrive()
	}
	x.heading = b
	if b != nil {
		b.expect()
	}
}

// arriving tells whether the request was heading for b, which its
// submission to b then ends.
func (x *exec) arriving(b expecter) bool {
	if x.heading == nil || x.heading != b {
		return false
	}
	x.heading = nil
	return true
}

// noteRan records that a run of the current entry happened on w.
func (x *exec) noteRan(w Where) {
	if w.Device == "" || slices.Contains(x.ran, w) {
		return
	}
	x.ran = append(x.ran, w)
}

func (s *Service) newExec(t *Timings, p Priority) *exec {
	return &exec{s: s, t: t, prio: p}
}

// cpu makes sure the request holds a CPU slot and books the CPU time from
// now on to stage. The first slot may be refused (ErrQueueFull, ErrClosed);
// later ones only wait.
func (x *exec) cpu(ctx context.Context, stage *time.Duration) error {
	if x.held {
		x.switchTo(stage)
		return nil
	}
	p := x.prio
	if x.taken && p != PriorityBackground {
		p = PriorityResume
	}
	start := time.Now()
	err := x.s.workers.Acquire(ctx, p)
	x.t.Queue += time.Since(start)
	if err != nil {
		return err
	}
	x.held, x.taken = true, true
	x.since, x.stage = time.Now(), stage
	return nil
}

// switchTo books the CPU time so far to the current stage and the time
// from now on to stage.
func (x *exec) switchTo(stage *time.Duration) {
	now := time.Now()
	if x.held && x.stage != nil {
		*x.stage += now.Sub(x.since)
	}
	x.since, x.stage = now, stage
}

// spareCores is how many goroutines one preprocessing step may use: all
// the cores when nothing else runs (a lone request resizes its image on
// every core), else one.
func (x *exec) spareCores() int {
	st := x.s.workers.Stats()
	if st.Busy > 1 || st.Waiting+st.Resuming+st.Background > 0 || len(x.s.devices.slot(inference.CPU)) > 0 {
		return 1
	}
	return min(st.Workers, runtime.NumCPU())
}

// yield gives the CPU slot up (before waiting for a model).
func (x *exec) yield() {
	if !x.held {
		return
	}
	x.switchTo(nil)
	x.held = false
	x.s.workers.Release()
}

// done ends the request's CPU work.
func (x *exec) done() {
	x.headFor(nil)
	x.yield()
}

// runOn is the inference.RunFunc of models that call their session in
// the middle of their own processing (detectors), running on replica r of
// m: the request gives its CPU slot up, waits for a slot of the session's
// device, runs, and takes a CPU slot again for the post-processing that
// follows. A run that fails on its device is retried as the service's
// policy says (see retryRun), each time on a slot taken afresh.
func (x *exec) runOn(m *loaded, r *replica) inference.RunFunc {
	retry := x.s.retryRun(m, r)
	return func(ctx context.Context, s *inference.Session, inputs ...inference.Tensor) ([]inference.Tensor, error) {
		return x.run(ctx, s, retry, inputs)
	}
}

func (x *exec) run(ctx context.Context, s *inference.Session, retry func(int, error) (bool, error), inputs []inference.Tensor) ([]inference.Tensor, error) {
	x.yield()
	var out []inference.Tensor
	var err error
	for attempt := 1; ; attempt++ {
		slot := x.s.devices.slot(s.Device())
		start := time.Now()
		select {
		case slot <- struct{}{}:
		case <-ctx.Done():
			x.t.Queue += time.Since(start)
			return nil, ctx.Err()
		}
		began := time.Now()
		x.t.Queue += began.Sub(start)
		out, err = s.Run(ctx, inputs...)
		<-slot
		x.t.Inference += time.Since(began)
		if err == nil || ctx.Err() != nil {
			break
		}
		again, rerr := retry(attempt, err)
		if !again {
			err = rerr
			break
		}
	}
	if err != nil {
		return nil, err
	}
	x.noteRan(Where{Provider: s.Provider(), Device: s.Device(), Fallback: s.Fallback() != nil})
	if err := x.cpu(ctx, &x.t.Postprocess); err != nil {
		return nil, err
	}
	return out, nil
}

// submit queues in on b for x's request. The request's CPU time stops
// counting here: from now on the item's own times count (a request that
// prepares its next chunk meanwhile books that work with its next cpu
// call, and the two then overlap).
func submit[In, Out any](ctx context.Context, x *exec, b *batcher[In, Out], in In, rows, key int) (*item[In, Out], error) {
	x.switchTo(nil)
	return b.enqueue(ctx, in, rows, key, x.arriving(b))
}

// await waits for an item of a batcher, without a CPU slot, and books its
// time. With resume, the request takes a CPU slot again afterwards and
// books what follows to stage.
func await[In, Out any](ctx context.Context, x *exec, b *batcher[In, Out], it *item[In, Out], resume bool, stage *time.Duration) (Out, error) {
	x.yield()
	out, err := b.await(ctx, it)
	if err != nil {
		return out, err
	}
	x.noteRan(it.ran)
	x.t.Queue += it.queue
	x.t.BatchWait += it.wait
	x.t.Inference += it.infer
	if it.batchRows > x.t.BatchRows {
		x.t.BatchRows = it.batchRows
	}
	if resume {
		if err := x.cpu(ctx, stage); err != nil {
			return out, err
		}
	}
	return out, nil
}
