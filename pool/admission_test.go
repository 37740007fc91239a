package pool_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mlserve/mlserve/pool"
)

func TestAdmissionRefusesAtTheLimit(t *testing.T) {
	a := pool.NewAdmission(pool.AdmissionOptions{Limit: 3})
	for i := range 3 {
		if err := a.Acquire(); err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
	}
	start := time.Now()
	if err := a.Acquire(); !errors.Is(err, pool.ErrQueueFull) {
		t.Fatalf("fourth acquire: %v, want ErrQueueFull", err)
	}
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Errorf("refusal took %v", d)
	}
	a.Release()
	if err := a.Acquire(); err != nil {
		t.Fatalf("acquire after a release: %v", err)
	}
	if st := a.Stats(); st.InUse != 3 || st.Limit != 3 || st.Closed {
		t.Fatalf("stats %+v", st)
	}
}

// TestAdmissionConcurrent: however many goroutines race, no more than the
// limit are ever inside at once, and every refusal is ErrQueueFull.
func TestAdmissionConcurrent(t *testing.T) {
	const limit = 5
	a := pool.NewAdmission(pool.AdmissionOptions{Limit: limit})
	var inside, most, admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 200 {
				if err := a.Acquire(); err != nil {
					if !errors.Is(err, pool.ErrQueueFull) {
						t.Errorf("acquire: %v", err)
					}
					refused.Add(1)
					continue
				}
				n := inside.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				admitted.Add(1)
				inside.Add(-1)
				a.Release()
			}
		})
	}
	wg.Wait()
	if most.Load() > limit {
		t.Fatalf("%d inside at once, limit %d", most.Load(), limit)
	}
	if admitted.Load() == 0 || admitted.Load()+refused.Load() != 64*200 {
		t.Fatalf("admitted %d refused %d", admitted.Load(), refused.Load())
	}
	if st := a.Stats(); st.InUse != 0 {
		t.Fatalf("in use after all released: %d", st.InUse)
	}
}

func TestAdmissionCloseAndDrain(t *testing.T) {
	a := pool.NewAdmission(pool.AdmissionOptions{}) // no limit
	for range 100 {
		if err := a.Acquire(); err != nil {
			t.Fatal(err)
		}
	}
	a.Close()
	if err := a.Acquire(); !errors.Is(err, pool.ErrClosed) {
		t.Fatalf("acquire after close: %v", err)
	}
	// Drain gives up when its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := a.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("drain with requests inside: %v", err)
	}
	// And returns once the last request leaves.
	done := make(chan error, 1)
	go func() { done <- a.Drain(context.Background()) }()
	for i := range 100 {
		select {
		case err := <-done:
			t.Fatalf("drain returned with %d requests inside: %v", 100-i, err)
		default:
		}
		a.Release()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("drain did not return after the last release")
	}
	if err := a.Drain(context.Background()); err != nil {
		t.Fatalf("drain when idle: %v", err)
	}
}

func TestAdmissionReleaseWithoutAcquirePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	pool.NewAdmission(pool.AdmissionOptions{Limit: 1}).Release()
}
