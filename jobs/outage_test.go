package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
)

// TestInferenceOutageDoesNotBurnAttempts runs a worker against a real
// inference pool that cannot serve at first: its model is not in the cache
// (offline: every load fails with pool.ErrLoadFailed) and its only worker
// slot is taken (pool.ErrQueueFull). With MaxAttempts 1, any failure
// charged to an item would dead-letter it at once; instead the worker
// waits the outage out and every image is stored on its first attempt.
// An item that is really bad (a folder where a file should be) is still
// charged and dead-lettered.
func TestInferenceOutageDoesNotBurnAttempts(t *testing.T) {
	ctx := ctxT(t)
	c := redisClient(t, testenv.RedisURL(t))
	q := newRedisQueue(t, c, RedisOptions{MaxAttempts: 1, Block: 50 * time.Millisecond})
	cache := t.TempDir()
	store, err := models.NewStore(models.StoreOptions{CacheDir: cache, Offline: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pool.NewService(pool.ServiceOptions{
		Cache:   pool.CacheOptions{FailureHoldOff: 50 * time.Millisecond},
		Workers: pool.WorkersOptions{Workers: 1, Queue: 0},
	}, store, testenv.Runtime(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	var outages atomic.Int32
	emb := EmbedFunc(func(ctx context.Context, imgs []*imaging.Image) ([][]float32, error) {
		out, err := svc.EmbedImages(ctx, testModel, imgs)
		if IsOutage(err) {
			outages.Add(1)
		}
		return out, err
	})

	db := openStore(t, testenv.DatabaseURL(t), testSchema(t))
	if _, err := db.EnsureModel(ctx, testModel, 512); err != nil {
		t.Fatal(err)
	}
	f := newFolder(t, 8)
	bad := filepath.Join(t.TempDir(), "folder.jpg")
	if err := os.Mkdir(bad, 0o755); err != nil {
		t.Fatal(err)
	}
	its := []Item{{Path: bad, Model: testModel, Run: "r"}}
	for _, p := range f.images {
		its = append(its, Item{Path: p, Model: testModel, Run: "r"})
	}
	if err := q.Enqueue(ctx, its); err != nil {
		t.Fatal(err)
	}

	// The pool's only slot is busy for the first 1.5 s; the model
	// arrives in the cache after 0.8 s.
	release := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() {
		_, _ = svc.Workers().Do(context.Background(), func(context.Context) error { <-release; return nil })
	})
	bg.Go(func() {
		time.Sleep(800 * time.Millisecond)
		writeCLIPDir(t, filepath.Join(cache, "clip", testModel), smallCLIP())
		time.Sleep(700 * time.Millisecond)
		close(release)
	})
	defer bg.Wait()

	var mu sync.Mutex
	attempts := map[string]int{}
	w := NewWorker(q, emb, IndexSink{Index: db, Model: testModel}, WorkerOptions{
		Model: testModel, BatchSize: 4, Backoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		hook: func(stage string, ds []Delivery) {
			if stage == "read" {
				mu.Lock()
				for _, d := range ds {
					attempts[d.Item.Path] = max(attempts[d.Item.Path], d.Attempt)
				}
				mu.Unlock()
			}
		},
	}, nil)
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(wctx) })
	counts := waitDone(t, q, "r", int64(len(its)))
	stop()
	wg.Wait()

	if n := outages.Load(); n < 2 {
		t.Fatalf("the embedder saw %d outage errors; the test did not exercise an outage", n)
	}
	if counts.Done != int64(len(f.images)) || counts.Failed != 1 {
		t.Fatalf("counts %+v, want %d done and the folder failed", counts, len(f.images))
	}
	dl, err := q.Dead(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 || dl[0].Item.Path != bad {
		t.Fatalf("dead letters %+v, want only %s", dl, bad)
	}
	for p, a := range attempts {
		if a != 1 {
			t.Errorf("%s delivered with attempt %d during an outage", p, a)
		}
	}
	// The folder is the only item failed (the queue, not the worker, knows
	// that its one attempt made it dead).
	if st := w.Stats(); st.Retried+st.Dead != 1 || st.Done != int64(len(f.images)) {
		t.Fatalf("worker stats %+v", st)
	}
}

// TestIsOutage: failures of the machine (a full queue, a device out of
// memory, a database that went away) are outages; an image that does not
// decode or that the model rejects is the item's.
func TestIsOutage(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("embed: %w", pool.ErrQueueFull), true},
		{fmt.Errorf("load: %w", pool.ErrLoadFailed), true},
		{fmt.Errorf("embed: %w", &inference.DeviceError{Op: "run", Device: "CUDA:0", Err: inference.ErrOutOfMemory}), true},
		{&inference.DeviceError{Op: "run", Device: "CUDA:0", Err: inference.ErrDevice}, false},
		{fmt.Errorf("run: %w", inference.ErrOutOfMemory), true},
		{context.DeadlineExceeded, true},
		{fmt.Errorf("photo.jpg: %w", imaging.ErrDecode), false},
		{fmt.Errorf("run: %w", inference.ErrInput), false},
		{errors.New("something else"), false},
		{nil, false},
	} {
		if got := IsOutage(c.err); got != c.want {
			t.Errorf("IsOutage(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
