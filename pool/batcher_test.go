package pool

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeModel records the batches a batcher runs: each input v gives
// v*10, unless run blocks on gate.
type fakeModel struct {
	mu      sync.Mutex
	batches [][]int
	gate    chan struct{} // nil: runs at once
	ctxs    []context.Context
	panicOn int
	took    time.Duration // each run's (fake) time
}

func (f *fakeModel) newRun() func(ctx context.Context, ins []int, rows int) ([]int, error) {
	return func(ctx context.Context, ins []int, rows int) ([]int, error) {
		f.mu.Lock()
		f.batches = append(f.batches, slices.Clone(ins))
		f.ctxs = append(f.ctxs, ctx)
		gate := f.gate
		f.mu.Unlock()
		time.Sleep(f.took)
		if gate != nil {
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		out := make([]int, len(ins))
		for i, v := range ins {
			if v == f.panicOn && v != 0 {
				panic("bad input")
			}
			out[i] = v * 10
		}
		return out, nil
	}
}

func (f *fakeModel) got() [][]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

func newTestBatcher(f *fakeModel, slot chan struct{}, maxRows int, wait time.Duration, queue int) *batcher[int, int] {
	return newBatcher(batchOptions{name: "test", maxRows: maxRows, maxWait: wait, maxQueue: queue, slot: slot}, f.newRun)
}

// submit queues an item that no request announced.
func (b *batcher[In, Out]) submit(ctx context.Context, in In, rows, key int) (*item[In, Out], error) {
	return b.enqueue(ctx, in, rows, key, false)
}

// submitAll queues one item of rows rows per value and returns them.
func submitAll(t *testing.T, b *batcher[int, int], ctx context.Context, rows int, vals ...int) []*item[int, int] {
	t.Helper()
	var its []*item[int, int]
	for _, v := range vals {
		it, err := b.submit(ctx, v, rows, 0)
		if err != nil {
			t.Fatal(err)
		}
		its = append(its, it)
	}
	return its
}

// TestBatcherContinuous: a lone item runs at once, alone; items that
// arrive while the device is busy run together in the next batch, in
// order, each getting its own output.
func TestBatcherContinuous(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeModel{}
		slot := make(chan struct{}, 1)
		b := newTestBatcher(f, slot, 8, 0, 0)
		defer b.close()
		ctx := context.Background()

		it := submitAll(t, b, ctx, 1, 1)[0]
		if out, err := b.await(ctx, it); err != nil || out != 10 {
			t.Fatalf("lone item: %v %v", out, err)
		}
		if it.wait != 0 || it.batchRows != 1 {
			t.Fatalf("lone item waited %v in a batch of %d", it.wait, it.batchRows)
		}

		slot <- struct{}{} // the device is busy with another model
		its := submitAll(t, b, ctx, 1, 2, 3, 4)
		synctest.Wait()
		<-slot
		for i, it := range its {
			if out, err := b.await(ctx, it); err != nil || out != (i+2)*10 {
				t.Fatalf("item %d: %v %v", i, out, err)
			}
		}
		if got := f.got(); !slices.EqualFunc(got, [][]int{{1}, {2, 3, 4}}, slices.Equal) {
			t.Fatalf("batches %v", got)
		}
		if st := b.stats(); st.Batches != 2 || st.Items != 4 || st.Rows != 4 || st.Queued != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// TestBatcherLimits: a batch never exceeds maxRows, never mixes keys, and
// keeps arrival order within a key.
func TestBatcherLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeModel{}
		slot := make(chan struct{}, 1)
		b := newTestBatcher(f, slot, 8, 0, 0)
		defer b.close()
		ctx := context.Background()
		slot <- struct{}{}
		var its []*item[int, int]
		for _, x := range []struct{ v, rows, key int }{{1, 3, 0}, {2, 3, 1}, {3, 3, 0}, {4, 3, 0}, {5, 2, 0}, {6, 3, 1}} {
			it, err := b.submit(ctx, x.v, x.rows, x.key)
			if err != nil {
				t.Fatal(err)
			}
			its = append(its, it)
		}
		if _, err := b.submit(ctx, 9, 9, 0); err == nil {
			t.Fatal("an item over maxRows was queued")
		}
		synctest.Wait()
		<-slot
		for _, it := range its {
			if _, err := b.await(ctx, it); err != nil {
				t.Fatal(err)
			}
		}
		// Key 0 first: 3+3 rows, and the 2-row item that still fits
		// (first fit); then key 1's items together; then the rest.
		want := [][]int{{1, 3, 5}, {2, 6}, {4}}
		if got := f.got(); !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("batches %v, want %v", got, want)
		}
	})
}

// TestBatcherCancellation: a request that leaves before its batch is
// formed is never run; one that leaves a running batch does not stop it;
// when every member has left, the run's context ends.
func TestBatcherCancellation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeModel{}
		slot := make(chan struct{}, 1)
		b := newTestBatcher(f, slot, 8, 0, 0)
		defer b.close()
		bg := context.Background()

		slot <- struct{}{}
		ctxA, cancelA := context.WithCancel(bg)
		a := submitAll(t, b, ctxA, 1, 1)[0]
		c := submitAll(t, b, bg, 1, 2)[0]
		errA := make(chan error, 1)
		go func() { _, err := b.await(ctxA, a); errA <- err }()
		synctest.Wait()
		cancelA()
		if err := <-errA; !errors.Is(err, context.Canceled) {
			t.Fatalf("left item: %v", err)
		}
		<-slot
		if out, err := b.await(bg, c); err != nil || out != 20 {
			t.Fatalf("remaining item: %v %v", out, err)
		}
		if got := f.got(); !slices.EqualFunc(got, [][]int{{2}}, slices.Equal) {
			t.Fatalf("batches %v: the item that left was run", got)
		}

		// A running batch of two: one leaves, the run goes on.
		f.gate = make(chan struct{})
		slot <- struct{}{}
		ctx1, cancel1 := context.WithCancel(bg)
		ctx2, cancel2 := context.WithCancel(bg)
		i1 := submitAll(t, b, ctx1, 1, 3)[0]
		i2 := submitAll(t, b, ctx2, 1, 4)[0]
		<-slot
		synctest.Wait() // the batch {3, 4} is running, blocked on gate
		cancel1()
		if _, err := b.await(ctx1, i1); !errors.Is(err, context.Canceled) {
			t.Fatalf("leaver: %v", err)
		}
		synctest.Wait()
		f.mu.Lock()
		runCtx := f.ctxs[len(f.ctxs)-1]
		f.mu.Unlock()
		if runCtx.Err() != nil {
			t.Fatal("the batch was cancelled when one of its two requests left")
		}
		cancel2()
		synctest.Wait()
		if runCtx.Err() == nil {
			t.Fatal("the batch runs on after every request left")
		}
		if _, err := b.await(bg, i2); !errors.Is(err, context.Canceled) {
			t.Fatalf("the batch's error: %v", err)
		}
	})
}

// TestBatcherRefusesWhenFull: the queue is bounded; a full queue refuses
// with ErrQueueFull, and a closed batcher with ErrClosed.
func TestBatcherRefusesWhenFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeModel{}
		slot := make(chan struct{}, 1)
		b := newTestBatcher(f, slot, 8, 0, 2)
		ctx := context.Background()
		slot <- struct{}{}
		its := submitAll(t, b, ctx, 1, 1, 2)
		if _, err := b.submit(ctx, 3, 1, 0); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("third item: %v", err)
		}
		<-slot
		for _, it := range its {
			if _, err := b.await(ctx, it); err != nil {
				t.Fatal(err)
			}
		}
		b.close()
		if _, err := b.submit(ctx, 4, 1, 0); !errors.Is(err, ErrClosed) {
			t.Fatalf("after close: %v", err)
		}
	})
}

// TestBatcherWait: with a batch wait, a lone item waits that long before
// it runs; a full batch runs at once.
func TestBatcherWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeModel{}
		slot := make(chan struct{}, 1)
		b := newTestBatcher(f, slot, 3, 10*time.Millisecond, 0)
		defer b.close()
		ctx := context.Background()
		start := time.Now()
		it := submitAll(t, b, ctx, 1, 1)[0]
		time.Sleep(4 * time.Millisecond)
		it2 := submitAll(t, b, ctx, 1, 2)[0]
		if _, err := b.await(ctx, it); err != nil {
			t.Fatal(err)
		}
		if _, err := b.await(ctx, it2); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != 10*time.Millisecond {
			t.Fatalf("the batch ran after %v, want the 10ms wait", took)
		}
		if it.wait != 10*time.Millisecond || it2.wait != 6*time.Millisecond || it.queue != 0 {
			t.Fatalf("waits %v and %v, queue %v", it.wait, it2.wait, it.queue)
		}
		start = time.Now()
		its := submitAll(t, b, ctx, 1, 3, 4, 5)
		for _, it := range its {
			if _, err := b.await(ctx, it); err != nil {
				t.Fatal(err)
			}
		}
		if took := time.Since(start); took != 0 {
			t.Fatalf("a full batch waited %v", took)
		}
		if got := f.got(); !slices.EqualFunc(got, [][]int{{1, 2}, {3, 4, 5}}, slices.Equal) {
			t.Fatalf("batches %v", got)
		}
	})
}

// TestBatcherGather: on the CPU, a batch about to run waits for the items
// that requests announced (expect), until they arrive, give up, fill the
// batch, or the gather time ends; a lone item, and a lane on another
// device, never wait.
func TestBatcherGather(t *testing.T) {
	const gather = 50 * time.Millisecond
	newGathering := func(f *fakeModel, device string) *batcher[int, int] {
		b := newBatcher[int, int](batchOptions{name: "test", maxRows: 3, gather: gather}, nil)
		slot := make(chan struct{}, 1)
		b.addLane(1, func() chan struct{} { return slot }, func() Where { return Where{Provider: "p", Device: device} }, nil, f.newRun)
		return b
	}
	awaitAll := func(t *testing.T, b *batcher[int, int], its ...*item[int, int]) {
		t.Helper()
		for _, it := range its {
			if _, err := b.await(context.Background(), it); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx := context.Background()
	t.Run("arrivals", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeModel{}
			b := newGathering(f, "CPU")
			defer b.close()
			start := time.Now()
			lone := submitAll(t, b, ctx, 1, 1)
			awaitAll(t, b, lone...)
			if took := time.Since(start); took != 0 {
				t.Fatalf("a lone item waited %v", took)
			}
			b.expect()
			b.expect()
			start = time.Now()
			first := submitAll(t, b, ctx, 1, 2)[0]
			time.Sleep(5 * time.Millisecond)
			second, err := b.enqueue(ctx, 3, 1, 0, true)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
			third, err := b.enqueue(ctx, 4, 1, 0, true)
			if err != nil {
				t.Fatal(err)
			}
			awaitAll(t, b, first, second, third)
			if took := time.Since(start); took != 10*time.Millisecond {
				t.Fatalf("the batch ran after %v, want 10ms: when the last expected item came", took)
			}
			if first.wait != 10*time.Millisecond || third.wait != 0 {
				t.Fatalf("waits %v, %v", first.wait, third.wait)
			}
			if b.coming.Load() != 0 {
				t.Fatalf("%d still expected", b.coming.Load())
			}
			if got := f.got(); !slices.EqualFunc(got, [][]int{{1}, {2, 3, 4}}, slices.Equal) {
				t.Fatalf("batches %v", got)
			}
		})
	})
	t.Run("gives up", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeModel{}
			b := newGathering(f, "CPU")
			defer b.close()
			b.expect()
			start := time.Now()
			it := submitAll(t, b, ctx, 1, 1)[0]
			time.Sleep(3 * time.Millisecond)
			b.arrive() // the request failed before it had an item
			awaitAll(t, b, it)
			if took := time.Since(start); took != 3*time.Millisecond {
				t.Fatalf("ran after %v, want 3ms", took)
			}
		})
	})
	t.Run("bounded", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeModel{}
			b := newGathering(f, "CPU")
			defer b.close()
			b.expect()
			defer b.arrive()
			start := time.Now()
			it := submitAll(t, b, ctx, 1, 1)[0]
			awaitAll(t, b, it)
			if took := time.Since(start); took != gather {
				t.Fatalf("ran after %v, want the gather time %v", took, gather)
			}
			start = time.Now()
			its := submitAll(t, b, ctx, 1, 2, 3, 4)
			awaitAll(t, b, its...)
			if took := time.Since(start); took != 0 {
				t.Fatalf("a full batch waited %v", took)
			}
		})
	})
	t.Run("refused", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newGathering(&fakeModel{}, "CPU")
			defer b.close()
			b.expect()
			if _, err := b.enqueue(ctx, 1, 9, 0, true); err == nil {
				t.Fatal("an item of 9 rows for batches of 3 was queued")
			}
			if b.coming.Load() != 0 {
				t.Fatal("a refused item is still expected")
			}
		})
	})
	t.Run("accelerator", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeModel{}
			b := newGathering(f, "CUDA:0")
			defer b.close()
			b.expect()
			defer b.arrive()
			start := time.Now()
			awaitAll(t, b, submitAll(t, b, ctx, 1, 1)...)
			if took := time.Since(start); took != 0 {
				t.Fatalf("a batch on an accelerator waited %v for the CPU's work", took)
			}
		})
	})
	t.Run("linger", func(t *testing.T) {
		// After a 100ms run, the runner waits 100ms/lingerShare for the
		// requests it answered to announce their next items.
		synctest.Test(t, func(t *testing.T) {
			f := &fakeModel{took: 100 * time.Millisecond}
			b := newGathering(f, "CPU")
			defer b.close()
			// Each item is another request's.
			request := func() context.Context {
				c, cancel := context.WithCancel(ctx)
				t.Cleanup(cancel)
				return c
			}
			start := time.Now()
			a := submitAll(t, b, request(), 1, 1)[0]
			time.Sleep(time.Millisecond)
			queued := submitAll(t, b, request(), 1, 2)[0] // during the run
			awaitAll(t, b, a)
			go func() {
				time.Sleep(2 * time.Millisecond)
				b.expect()
				time.Sleep(10 * time.Millisecond)
				_, _ = b.enqueue(request(), 3, 1, 0, true)
			}()
			awaitAll(t, b, queued)
			if got := f.got(); !slices.EqualFunc(got, [][]int{{1}, {2, 3}}, slices.Equal) {
				t.Fatalf("batches %v", got)
			}
			if took := time.Since(start); took != 212*time.Millisecond {
				t.Fatalf("the second batch ended after %v, want 100ms + 12ms + 100ms", took)
			}
			start = time.Now()
			awaitAll(t, b, submitAll(t, b, request(), 1, 4)...)
			if took := time.Since(start); took != 105*time.Millisecond {
				t.Fatalf("the third batch took %v, want 5ms of lingering + 100ms", took)
			}
			// A request whose next item queued while its last one ran
			// (its next chunk) is not waited for: it is here.
			time.Sleep(time.Second) // the lingering after the last run is over
			req := request()
			start = time.Now()
			chunk1 := submitAll(t, b, req, 1, 5)[0]
			time.Sleep(time.Millisecond)
			chunk2 := submitAll(t, b, req, 1, 6)[0] // during chunk1's run
			awaitAll(t, b, chunk1, chunk2)
			if took := time.Since(start); took != 200*time.Millisecond {
				t.Fatalf("two chunks of one request took %v, want two runs and no lingering", took)
			}
		})
	})
}

// TestBatcherPanic: a run that panics fails its batch, not the runner.
func TestBatcherPanic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeModel{panicOn: 7}
		b := newTestBatcher(f, make(chan struct{}, 1), 8, 0, 0)
		defer b.close()
		ctx := context.Background()
		if _, err := b.await(ctx, submitAll(t, b, ctx, 1, 7)[0]); !errors.Is(err, errRunPanic) {
			t.Fatalf("err = %v", err)
		}
		if out, err := b.await(ctx, submitAll(t, b, ctx, 1, 1)[0]); err != nil || out != 10 {
			t.Fatalf("after the panic: %v %v", out, err)
		}
	})
}

// TestBatcherRunners: with two device slots, one model runs two batches
// at once.
func TestBatcherRunners(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeModel{gate: make(chan struct{})}
		slot := make(chan struct{}, 2)
		b := newTestBatcher(f, slot, 1, 0, 0)
		defer b.close()
		ctx := context.Background()
		its := submitAll(t, b, ctx, 1, 1, 2, 3)
		synctest.Wait()
		if n := len(f.got()); n != 2 {
			t.Fatalf("%d batches running, want 2", n)
		}
		close(f.gate)
		for _, it := range its {
			if _, err := b.await(ctx, it); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestBatcherSplitsAcrossRunners: on a CPU lane with two runners and two
// free slots, work queued while both were idle is split into two batches
// that run at once; with one slot, or on an accelerator, it runs as one
// batch.
func TestBatcherSplitsAcrossRunners(t *testing.T) {
	for _, c := range []struct {
		name   string
		slots  int
		device string
		want   [][]int
	}{
		{"cpu two slots", 2, "CPU", [][]int{{1, 2, 3}, {4, 5}}},
		{"cpu one slot", 1, "CPU", [][]int{{1, 2, 3, 4, 5}}},
		{"accelerator", 2, "FakeGPU:0", [][]int{{1, 2, 3, 4, 5}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeModel{gate: make(chan struct{})}
				b := newBatcher[int, int](batchOptions{name: "test", maxRows: 8}, nil)
				defer b.close()
				slot := make(chan struct{}, c.slots)
				b.addLane(c.slots, func() chan struct{} { return slot }, func() Where { return Where{Provider: "p", Device: c.device} }, nil, f.newRun)
				for range c.slots { // other models run while the items queue
					slot <- struct{}{}
				}
				its := submitAll(t, b, context.Background(), 1, 1, 2, 3, 4, 5)
				synctest.Wait()
				for range c.slots {
					<-slot
				}
				synctest.Wait()
				got := f.got()
				slices.SortFunc(got, func(a, b []int) int { return a[0] - b[0] })
				if !slices.EqualFunc(got, c.want, slices.Equal) {
					t.Fatalf("batches running %v, want %v", got, c.want)
				}
				close(f.gate)
				for i, it := range its {
					if out, err := b.await(context.Background(), it); err != nil || out != (i+1)*10 {
						t.Fatalf("item %d: %v %v", i, out, err)
					}
				}
			})
		})
	}
}

// TestWorkersPriority: a freed slot goes to a resuming request first,
// then to new requests, then to background work.
func TestWorkersPriority(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := NewWorkers(WorkersOptions{Workers: 1, Queue: 4})
		ctx := context.Background()
		if err := w.Acquire(ctx, PriorityRequest); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var order []Priority
		var wg sync.WaitGroup
		for _, p := range []Priority{PriorityBackground, PriorityRequest, PriorityResume} {
			wg.Go(func() {
				if err := w.Acquire(ctx, p); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				order = append(order, p)
				mu.Unlock()
				w.Release()
			})
			synctest.Wait()
		}
		if st := w.Stats(); st.Waiting != 1 || st.Resuming != 1 || st.Background != 1 {
			t.Fatalf("stats %+v", st)
		}
		w.Release()
		wg.Wait()
		if !slices.Equal(order, []Priority{PriorityResume, PriorityRequest, PriorityBackground}) {
			t.Fatalf("order %v", order)
		}
		w.Close()
		if err := w.Acquire(ctx, PriorityRequest); !errors.Is(err, ErrClosed) {
			t.Fatalf("after close: %v", err)
		}
		if err := w.Acquire(ctx, PriorityResume); err != nil {
			t.Fatalf("a resuming request after close: %v", err)
		}
		w.Release()
	})
}
