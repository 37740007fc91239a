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
	models map[Key][]*countingModel
	delay  time.Duration
	fail   map[Key]error
}

func newLoader() *loader {
	return &loader{loads: map[Key]int{}, models: map[Key][]*countingModel{}, fail: map[Key]error{}}
}

func (l *loader) load(ctx context.Context, k Key) (Model, error) {
	if l.delay > 0 {
		time.Sleep(l.delay)
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

func TestCacheWaiterCancelDoesNotStopLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoader()
		l.delay = time.Second
		c, _ := NewCache(CacheOptions{}, l.load, nil)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if _, err := c.Acquire(ctx, kA); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
		h, err := c.Acquire(context.Background(), kA)
		if err != nil {
			t.Fatal(err)
		}
		h.Release()
		if n := l.count(kA); n != 1 {
			t.Fatalf("loaded %d times, want 1 (the first load should have finished)", n)
		}
	})
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
		wg.Go(func() { w2.Do(context.Background(), func(context.Context) error { <-hold; return nil }) })
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
