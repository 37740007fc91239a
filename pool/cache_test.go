package pool

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// countingModel records whether it was closed. The cache's rules (refs,
// TTL, cap, pinning) are pure Go; real ONNX Runtime sessions are used in
// the pool's integration tests.
type countingModel struct {
	key    Key
	closed atomic.Bool
}

func (m *countingModel) Close() error {
	if m.closed.Swap(true) {
		return errors.New("closed twice")
	}
	return nil
}

type loader struct {
	mu     sync.Mutex
	loads  map[Key]int
	stops  map[Key]int // loads that ended because their context did
	models map[Key][]*countingModel
	delay  time.Duration
	// honorCtx makes the delay end with the context, as a download does;
	// otherwise it runs its course, as building an ONNX Runtime session.
	honorCtx bool
	fail     map[Key]error
}

func newLoader() *loader {
	return &loader{loads: map[Key]int{}, stops: map[Key]int{}, models: map[Key][]*countingModel{}, fail: map[Key]error{}}
}

func (l *loader) load(ctx context.Context, k Key) (Model, error) {
	l.mu.Lock()
	delay, honor := l.delay, l.honorCtx
	l.mu.Unlock()
	if delay > 0 {
		if honor {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				l.mu.Lock()
				l.stops[k]++
				l.loads[k]++
				l.mu.Unlock()
				return nil, ctx.Err()
			}
		} else {
			time.Sleep(delay)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loads[k]++
	if err := l.fail[k]; err != nil {
		return nil, err
	}
	m := &countingModel{key: k}
	l.models[k] = append(l.models[k], m)
	return m, nil
}

func (l *loader) count(k Key) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loads[k]
}

func (l *loader) canceled(k Key) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stops[k]
}

func (l *loader) all(k Key) []*countingModel {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*countingModel(nil), l.models[k]...)
}

var (
	kA = Key{"clip", "visual", "A"}
	kB = Key{"clip", "visual", "B"}
	kC = Key{"clip", "visual", "C"}
)

func TestCacheSingleLoadForConcurrentCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoader()
		l.delay = time.Second
		c, err := NewCache(CacheOptions{}, l.load, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var wg sync.WaitGroup
		var loadedBy atomic.Int32
		for i := 0; i < 20; i++ {
			wg.Go(func() {
				h, err := c.Acquire(context.Background(), kA)
				if err != nil {
					t.Error(err)
					return
				}
				if h.Loaded {
					loadedBy.Add(1)
				}
				h.Release()
			})
		}
		wg.Wait()
		if n := l.count(kA); n != 1 {
			t.Fatalf("loaded %d times, want 1", n)
		}
		if n := loadedBy.Load(); n != 1 {
			t.Fatalf("%d handles report a cold load, want 1", n)
		}
	})
}

// TestCacheLoadSurvivesOneWaiterCancel: of two callers waiting for one
// load, the one that gives up does not stop it for the other.
func TestCacheLoadSurvivesOneWaiterCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoader()
		l.delay, l.honorCtx = time.Second, true
		c, _ := NewCache(CacheOptions{}, l.load, nil)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		got := make(chan error, 1)
		go func() {
			h, err := c.Acquire(context.Background(), kA)
			if err == nil {
				h.Release()
			}
			got <- err
		}()
		if _, err := c.Acquire(ctx, kA); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
		if err := <-got; err != nil {
			t.Fatalf("the caller that kept waiting: %v", err)
		}
		if n, canceled := l.count(kA), l.canceled(kA); n != 1 || canceled != 0 {
			t.Fatalf("%d loads, %d canceled; want 1 load that finished", n, canceled)
		}
	})
}

// TestCacheLastWaiterCancelsLoad: when the only caller gives up, the load
// is canceled at once (a download stops), and the cancellation is not
// remembered as a failure.
func TestCacheLastWaiterCancelsLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoader()
		l.delay, l.honorCtx = time.Hour, true
		c, _ := NewCache(CacheOptions{FailureHoldOff: time.Hour}, l.load, nil)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		if _, err := c.Acquire(ctx, kA); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
		synctest.Wait()
		if n := l.canceled(kA); n != 1 {
			t.Fatalf("%d loads saw their context canceled, want 1", n)
		}
		if took := time.Since(start); took > 200*time.Millisecond {
			t.Fatalf("load stopped after %v", took)
		}
		// Not a failure: the next caller loads at once.
		l.mu.Lock()
		l.delay = time.Second
		l.mu.Unlock()
		h, err := c.Acquire(context.Background(), kA)
		if err != nil {
			t.Fatalf("after a canceled load: %v", err)
		}
		h.Release()
		if n := l.count(kA); n != 2 {
			t.Fatalf("%d loads, want 2", n)
		}
	})
}

// TestCacheLoadTimeout: a load that never returns is bounded by
// LoadTimeout, fails with an error that says so, and is held off.
func TestCacheLoadTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoader()
		l.delay, l.honorCtx = time.Hour, true
		c, _ := NewCache(CacheOptions{LoadTimeout: 3 * time.Second, FailureHoldOff: time.Minute}, l.load, nil)
		defer c.Close()
		start := time.Now()
		_, err := c.Acquire(context.Background(), kA)
		if !errors.Is(err, ErrLoadFailed) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want ErrLoadFailed wrapping DeadlineExceeded", err)
		}
		if took := time.Since(start); took != 3*time.Second {
			t.Fatalf("load failed after %v, want the 3s timeout", took)
		}
		if _, err := c.Acquire(context.Background(), kA); !errors.Is(err, ErrLoadFailed) {
			t.Fatalf("within the hold-off: %v", err)
		}
		if n := l.count(kA); n != 1 {
			t.Fatalf("%d loads, want 1", n)
		}
	})
}

// TestCacheCloseCancelsLoads: Close releases the callers waiting for a
// load, cancels the load and waits for it; a load that ignores its context
// delays Close by CloseTimeout at most, and its model is closed when it
// arrives.
func TestCacheCloseCancelsLoads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoader()
		l.delay, l.honorCtx = time.Hour, true
		c, _ := NewCache(CacheOptions{}, l.load, nil)
		errc := make(chan error, 1)
		go func() { _, err := c.Acquire(context.Background(), kA); errc <- err }()
		synctest.Wait()
		start := time.Now()
		c.Close()
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Fatalf("waiter: %v, want ErrClosed", err)
		}
		if n := l.canceled(kA); n != 1 {
			t.Fatalf("load not canceled by Close (%d)", n)
		}
		if took := time.Since(start); took != 0 {
			t.Fatalf("Close took %v with a load that stops at once", took)
		}
		if _, err := c.Acquire(context.Background(), kA); !errors.Is(err, ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}

		// A load that ignores its context.
		l2 := newLoader()
		l2.delay = time.Minute
		c2, _ := NewCache(CacheOptions{CloseTimeout: 5 * time.Second}, l2.load, nil)
		go func() { _, err := c2.Acquire(context.Background(), kB); errc <- err }()
		synctest.Wait()
		start = time.Now()
		c2.Close()
		if took := time.Since(start); took != 5*time.Second {
			t.Fatalf("Close took %v, want CloseTimeout (5s)", took)
		}
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Fatalf("waiter: %v", err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if ms := l2.all(kB); len(ms) != 1 || !ms[0].closed.Load() {
			t.Fatalf("the model of a load that finished after Close is not closed: %v", ms)
		}
	})
}

// TestCacheEvictedInUseNotLoadedTwice: a model pushed out by the cap
// while in use is still in memory; the next request takes it back instead
// of loading a second copy.
func TestCacheEvictedInUseNotLoadedTwice(t *testing.T) {
	l := newLoader()
	c, _ := NewCache(CacheOptions{MaxLoaded: 2}, l.load, nil)
	defer c.Close()
	ctx := context.Background()
	ha, _ := c.Acquire(ctx, kA) // A in use
	hb, _ := c.Acquire(ctx, kB)
	hb.Release()
	hc, _ := c.Acquire(ctx, kC) // pushes out A, which is in use
	hc.Release()
	ha2, err := c.Acquire(ctx, kA)
	if err != nil {
		t.Fatal(err)
	}
	if n := l.count(kA); n != 1 {
		t.Fatalf("A loaded %d times while one copy was in memory", n)
	}
	if ha2.Model != ha.Model || ha2.Loaded {
		t.Fatal("the second request did not get the copy in memory")
	}
	// A is back in the cache, the most recent; B (least recent) made room.
	if !l.models[kB][0].closed.Load() {
		t.Fatal("B not pushed out when A came back")
	}
	ha.Release()
	ha2.Release()
	if l.models[kA][0].closed.Load() {
		t.Fatal("A closed although it is back in the cache")
	}
	var keys []Key
	for _, m := range c.Loaded() {
		keys = append(keys, m.Key)
	}
	if len(keys) != 2 || keys[0] != kA || keys[1] != kC {
		t.Fatalf("loaded %v, want A and C", keys)
	}
	// Concurrent requests while pushed out: still one copy.
	h1, _ := c.Acquire(ctx, kA)
	hb, _ = c.Acquire(ctx, kB)
	hc, _ = c.Acquire(ctx, kC) // A out again, in use by h1
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			h, err := c.Acquire(ctx, kA)
			if err != nil {
				t.Error(err)
				return
			}
			h.Release()
		})
	}
	wg.Wait()
	h1.Release()
	hb.Release()
	hc.Release()
	if n := l.count(kA); n != 1 {
		t.Fatalf("A loaded %d times", n)
	}
}

func TestCacheTTLUnloadsIdleOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoader()
		c, _ := NewCache(CacheOptions{TTL: 10 * time.Second}, l.load, nil)
		defer c.Close()
		ctx := context.Background()
		busy, err := c.Acquire(ctx, kA) // held across the TTL
		if err != nil {
			t.Fatal(err)
		}
		h, _ := c.Acquire(ctx, kB)
		h.Release()
		if err := c.Preload(ctx, kC); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		if n := c.Sweep(); n != 0 {
			t.Fatalf("swept %d before the TTL", n)
		}
		time.Sleep(6 * time.Second)
		if n := c.Sweep(); n != 1 {
			t.Fatalf("swept %d, want 1 (B only)", n)
		}
		if !l.models[kB][0].closed.Load() {
			t.Fatal("B not closed")
		}
		if l.models[kA][0].closed.Load() {
			t.Fatal("A closed while in use")
		}
		if l.models[kC][0].closed.Load() {
			t.Fatal("preloaded C closed")
		}
		busy.Release()
		time.Sleep(11 * time.Second)
		c.Sweep()
		if !l.models[kA][0].closed.Load() {
			t.Fatal("A not closed after idle TTL")
		}
		// Using a model slides its TTL.
		for i := 0; i < 5; i++ {
			h, _ := c.Acquire(ctx, kB)
			h.Release()
			time.Sleep(4 * time.Second)
			c.Sweep()
		}
		if got := len(l.models[kB]); got != 2 {
			t.Fatalf("B loaded %d times, want 2", got)
		}
		if l.models[kB][1].closed.Load() {
			t.Fatal("B unloaded although used every 4 s")
		}
	})
}

func TestCacheCapEvictsLRUButNeverInUse(t *testing.T) {
	l := newLoader()
	c, _ := NewCache(CacheOptions{MaxLoaded: 2}, l.load, nil)
	ctx := context.Background()
	ha, _ := c.Acquire(ctx, kA) // A in use
	hb, _ := c.Acquire(ctx, kB)
	hb.Release()
	hc, _ := c.Acquire(ctx, kC) // pushes out A (least recently used) — in use
	if l.models[kA][0].closed.Load() {
		t.Fatal("A closed while in use")
	}
	ha.Release() // now it goes
	if !l.models[kA][0].closed.Load() {
		t.Fatal("evicted A not closed at release")
	}
	hc.Release()
	if got := len(c.Loaded()); got != 2 {
		t.Fatalf("%d loaded, want 2", got)
	}
	c.Close()
	for k, ms := range l.models {
		for _, m := range ms {
			if !m.closed.Load() {
				t.Errorf("%v not closed by Close", k)
			}
		}
	}
}

func TestCacheRemembersFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoader()
		boom := errors.New("corrupt")
		l.fail[kA] = boom
		c, _ := NewCache(CacheOptions{FailureHoldOff: time.Minute}, l.load, nil)
		defer c.Close()
		for i := 0; i < 3; i++ {
			_, err := c.Acquire(context.Background(), kA)
			if !errors.Is(err, ErrLoadFailed) || !errors.Is(err, boom) {
				t.Fatalf("err = %v", err)
			}
		}
		if n := l.count(kA); n != 1 {
			t.Fatalf("%d load attempts within the hold-off, want 1", n)
		}
		delete(l.fail, kA)
		time.Sleep(2 * time.Minute)
		h, err := c.Acquire(context.Background(), kA)
		if err != nil {
			t.Fatal(err)
		}
		h.Release()
	})
}

func TestWorkersRefuseWhenQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := NewWorkers(WorkersOptions{Workers: 2, Queue: 1})
		release := make(chan struct{})
		var wg sync.WaitGroup
		for i := 0; i < 3; i++ { // 2 running + 1 queued
			wg.Go(func() {
				_, err := w.Do(context.Background(), func(context.Context) error { <-release; return nil })
				if err != nil {
					t.Error(err)
				}
			})
		}
		synctest.Wait()
		if s := w.Stats(); s.Busy != 2 || s.Waiting != 1 {
			t.Fatalf("stats %+v", s)
		}
		if _, err := w.Do(context.Background(), func(context.Context) error { return nil }); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("err = %v, want ErrQueueFull", err)
		}
		// A queued request whose context ends leaves the queue.
		ctx, cancel := context.WithCancel(context.Background())
		w2 := NewWorkers(WorkersOptions{Workers: 1, Queue: 1})
		hold := make(chan struct{})
		wg.Go(func() { _, _ = w2.Do(context.Background(), func(context.Context) error { <-hold; return nil }) })
		synctest.Wait()
		errc := make(chan error)
		go func() { _, err := w2.Do(ctx, func(context.Context) error { return nil }); errc <- err }()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		if s := w2.Stats(); s.Waiting != 0 {
			t.Fatalf("waiting %d after cancel", s.Waiting)
		}
		close(hold)
		close(release)
		wg.Wait()
	})
}
