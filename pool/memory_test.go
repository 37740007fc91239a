package pool_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
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
