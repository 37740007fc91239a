package pool_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/pool"
)

func rss(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	pages, _ := strconv.ParseInt(strings.Fields(string(b))[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// TestUnloadReleasesMemory loads a model with 144 MB of weights through
// the cache, lets the idle TTL unload it, and checks that the
// process's resident memory goes back down.
func TestUnloadReleasesMemory(t *testing.T) {
	rt := testenv.Runtime(t)
	const size = 6000 // one 6000×6000 float32 weight: 144 MB
	path := filepath.Join(t.TempDir(), "big.onnx")
	if err := (modelgen.Busy{Steps: 1, Size: size}).Model().WriteFile(path); err != nil {
		t.Fatal(err)
	}
	// Writing the model left its bytes in Go's heap: hand them back first.
	debug.FreeOSMemory()
	inference.ReleaseMemory()
	base := rss(t)

	var loaded, afterUnload int64
	synctest.Test(t, func(t *testing.T) {
		unloaded := make(chan struct{}, 1)
		c, err := pool.NewCache(pool.CacheOptions{
			TTL: time.Minute,
			OnUnload: func(pool.Key) {
				inference.ReleaseMemory()
				unloaded <- struct{}{}
			},
		}, func(ctx context.Context, k pool.Key) (pool.Model, error) {
			return rt.NewSession(path, inference.SessionOptions{})
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		h, err := c.Acquire(context.Background(), pool.Key{Task: "t", Type: "x", Name: "big"})
		if err != nil {
			t.Fatal(err)
		}
		h.Release()
		loaded = rss(t)
		time.Sleep(2 * time.Minute)
		if n := c.Sweep(); n != 1 {
			t.Fatalf("swept %d", n)
		}
		<-unloaded
		afterUnload = rss(t)
	})
	t.Logf("RSS: %d MiB before load, %d MiB loaded, %d MiB after unload", base>>20, loaded>>20, afterUnload>>20)
	if loaded-base < 100<<20 {
		t.Fatalf("loading 144 MB of weights grew RSS by only %d MiB; the test measures nothing", (loaded-base)>>20)
	}
	if afterUnload-base > 40<<20 {
		t.Fatalf("after unload RSS is %d MiB above the baseline (loaded: +%d MiB)", (afterUnload-base)>>20, (loaded-base)>>20)
	}
}

// TestLoadUnloadSoak loads and unloads a generated model through the cache
// 1,000 times (MLSERVE_SOAK_CYCLES for more), each load followed by one
// run, and checks that the process does not grow: after the first 100
// cycles (arenas and Go's heap warm up), RSS must stay within 30 MB and the
// C heap (glibc's count of bytes allocated, which does not depend on what
// the allocator caches) within 4 MB. Every load builds a new ONNX Runtime session;
// every unload is the cap pushing the model out, as in service.
func TestLoadUnloadSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	rt := testenv.Runtime(t)
	cycles := 1000
	if s := os.Getenv("MLSERVE_SOAK_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 200 {
			t.Fatalf("MLSERVE_SOAK_CYCLES=%q: want a number ≥ 200", s)
		}
		cycles = n
	}
	// A tiny graph keeps a cycle at a few milliseconds; the C heap check
	// sees a leak of its 16 KB of weights per load (16 MB over the run).
	path := filepath.Join(t.TempDir(), "m.onnx")
	if err := (modelgen.Busy{Steps: 2, Size: 64}).Model().WriteFile(path); err != nil {
		t.Fatal(err)
	}
	var unloads atomic.Int64
	c, err := pool.NewCache(pool.CacheOptions{
		MaxLoaded: 1,
		OnUnload:  func(pool.Key) { unloads.Add(1) },
	}, func(ctx context.Context, k pool.Key) (pool.Model, error) {
		return rt.NewSession(path, inference.SessionOptions{})
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	x := inference.F32(make([]float32, 64*64), 64, 64)
	keys := []pool.Key{{Task: "t", Type: "x", Name: "a"}, {Task: "t", Type: "x", Name: "b"}}
	cycle := func(i int) {
		h, err := c.Acquire(context.Background(), keys[i%2]) // loads, and pushes out the other
		if err != nil {
			t.Fatal(err)
		}
		if !h.Loaded {
			t.Fatalf("cycle %d: model was not loaded afresh", i)
		}
		if _, err := h.Model.(*inference.Session).Run(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		h.Release()
	}
	measure := func() (heap, resident int64) {
		runtime.GC()
		debug.FreeOSMemory()
		inference.ReleaseMemory()
		return inference.CHeapBytes(), rss(t)
	}
	start := time.Now()
	for i := range 100 {
		cycle(i)
	}
	heap0, rss0 := measure()
	for i := 100; i < cycles; i++ {
		cycle(i)
	}
	heap1, rss1 := measure()
	t.Logf("%d load+run+unload cycles in %v (%v each): after 100, RSS %d MiB, C heap %d KiB; after %d, RSS %d MiB (%+d KiB), C heap %d KiB (%+d KiB)",
		cycles, time.Since(start).Round(time.Millisecond), (time.Since(start) / time.Duration(cycles)).Round(time.Microsecond),
		rss0>>20, heap0>>10, cycles, rss1>>20, (rss1-rss0)>>10, heap1>>10, (heap1-heap0)>>10)
	if unloads := int(unloads.Load()); unloads != cycles-1 {
		t.Fatalf("%d unloads after %d loads, want %d", unloads, cycles, cycles-1)
	}
	if grow := rss1 - rss0; grow > 30<<20 {
		t.Errorf("RSS grew by %d MiB over %d load/unload cycles", grow>>20, cycles-100)
	}
	if heap0 >= 0 && heap1-heap0 > 4<<20 {
		t.Errorf("C heap grew by %d KiB over %d load/unload cycles", (heap1-heap0)>>10, cycles-100)
	}
}
