package jobs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference/clip"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/search"
)

// folder is a photo folder with images, a corrupt JPEG and files that are
// no work.
type folder struct {
	dir     string
	images  []string
	corrupt string
}

func newFolder(t *testing.T, n int) folder {
	t.Helper()
	dir := t.TempDir()
	f := folder{dir: dir, images: genImages(t, dir, n, 42)}
	f.corrupt = filepath.Join(dir, "broken.jpg")
	junk := append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, []byte(strings.Repeat("not a jpeg ", 50))...)
	for _, p := range []struct {
		path string
		data []byte
	}{
		{f.corrupt, junk},
		{filepath.Join(dir, "notes.txt"), []byte("hello")},
		{filepath.Join(dir, "phone.heic"), []byte("....ftypheic")},
		{filepath.Join(dir, ".thumbs", "x.jpg"), []byte("hidden")},
		{filepath.Join(dir, "@eaDir", "x.jpg"), []byte("synology")},
	} {
		if err := os.MkdirAll(filepath.Dir(p.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p.path, p.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// embedFile is the embedding the model gives a file, computed outside the
// pipeline, to search with.
func embedFile(t *testing.T, v *clip.Visual, path string) []float32 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := imaging.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	e, err := v.Embed(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// checkIndexed asserts that every image is stored exactly once and that
// searching with an image's own embedding finds it first.
func checkIndexed(t *testing.T, store *search.Store, v *clip.Visual, f folder) {
	t.Helper()
	ctx := ctxT(t)
	assets, embs, err := store.Count(ctx, testModel)
	if err != nil {
		t.Fatal(err)
	}
	if assets != int64(len(f.images)) || embs != int64(len(f.images)) {
		t.Fatalf("stored %d assets and %d embeddings, want %d of each", assets, embs, len(f.images))
	}
	for _, i := range []int{0, 1, 2, len(f.images) - 1} {
		p := f.images[i]
		hits, err := store.SearchCLIP(ctx, testModel, embedFile(t, v, p), 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) == 0 || hits[0].Path != p || hits[0].Distance > 1e-4 {
			t.Fatalf("search with the embedding of %s: %+v", p, hits)
		}
	}
}

func TestIndexFolderInProcess(t *testing.T) {
	ctx := ctxT(t)
	v, store := visualStore(t)
	f := newFolder(t, 14)

	run := func() (ProduceStats, Progress, *Memory, Stats) {
		q := NewMemory(MemoryOptions{Capacity: 4, Wait: 50 * time.Millisecond})
		p := NewProducer(q, ProducerOptions{Model: testModel, Chunk: 5}, nil)
		w := NewWorker(q, EmbedFunc(v.EmbedBatch), IndexSink{Index: store, Model: testModel}, WorkerOptions{Model: testModel, BatchSize: 4}, nil)
		var wg sync.WaitGroup
		var st ProduceStats
		var perr, werr error
		wg.Go(func() {
			defer q.Close()
			st, perr = p.Folders(ctx, store, f.dir)
		})
		wg.Go(func() { werr = w.Run(ctx) })
		var reports int
		pr, err := p.Watch(ctx, 20*time.Millisecond, func(Progress) { reports++ })
		wg.Wait()
		if perr != nil || werr != nil || err != nil {
			t.Fatalf("producer %v, worker %v, watch %v", perr, werr, err)
		}
		if reports == 0 {
			t.Error("no progress reported")
		}
		return st, pr, q, w.Stats()
	}

	st, pr, q, ws := run()
	if st.Files != int64(len(f.images)+1) || st.Queued != st.Files || st.HEIC != 1 || st.Skipped != 1 {
		t.Fatalf("first run: %+v", st)
	}
	if pr.Done != int64(len(f.images)) || pr.Failed != 1 || pr.Total != st.Queued {
		t.Fatalf("progress %+v", pr)
	}
	dead := q.Dead()
	if len(dead) != 1 || dead[0].Item.Path != f.corrupt || !strings.Contains(dead[0].Error, "decode") || dead[0].Attempts != 1 {
		t.Fatalf("dead letters %+v: want the corrupt file, once, with its decode error", dead)
	}
	if ws.Done != int64(len(f.images)) || ws.Dead != 1 || ws.Batches == 0 || ws.Infer <= 0 {
		t.Fatalf("worker stats %+v", ws)
	}
	checkIndexed(t, store, v, f)

	// Again: nothing changed, and the corrupt file's failure is recorded
	// for its size and time, so nothing is queued.
	st, _, _, _ = run()
	if st.Queued != 0 || st.KnownFailures != 1 || st.Unchanged != int64(len(f.images)) {
		t.Fatalf("second run: %+v", st)
	}
	// A touched file (same bytes) is hashed and skipped; a rewritten one
	// is queued.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(f.images[0], later, later); err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(f.images[3]) // same format (JPEG), other content
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.images[6], other, 0o644); err != nil {
		t.Fatal(err)
	}
	st, _, _, _ = run()
	if st.Queued != 1 || st.KnownFailures != 1 || st.Unchanged != int64(len(f.images)-1) {
		t.Fatalf("third run: %+v; want the rewritten file queued, the corrupt one still a known failure", st)
	}
	hits, err := store.SearchCLIP(ctx, testModel, embedFile(t, v, f.images[3]), 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 2 || hits[1].Distance > 1e-4 {
		t.Fatalf("the rewritten file should now match image 3 exactly: %+v", hits)
	}
}

func TestIndexFolderRedis(t *testing.T) {
	ctx := ctxT(t)
	v, store := visualStore(t)
	f := newFolder(t, 16)
	c := redisClient(t, testenv.RedisURL(t))
	q := newRedisQueue(t, c, RedisOptions{MaxLen: 6, Block: 100 * time.Millisecond})
	p := NewProducer(q, ProducerOptions{Model: testModel, Chunk: 4}, nil)

	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	workers := make([]*Worker, 2)
	for i := range workers {
		// Each worker host has its own connection and consumer name.
		wq := newRedisQueue(t, redisClient(t, testenv.RedisURL(t)), RedisOptions{Name: q.Options().Name, Block: 100 * time.Millisecond})
		workers[i] = NewWorker(wq, EmbedFunc(v.EmbedBatch), IndexSink{Index: store, Model: testModel}, WorkerOptions{Model: testModel, BatchSize: 3}, nil)
		wg.Go(func() { _ = workers[i].Run(wctx) })
	}
	var st ProduceStats
	var perr error
	var pg sync.WaitGroup
	pg.Go(func() { st, perr = p.Folders(ctx, store, f.dir) })
	pr, err := p.Watch(ctx, 50*time.Millisecond, nil)
	pg.Wait()
	stop()
	wg.Wait()
	if perr != nil || err != nil {
		t.Fatalf("producer %v, watch %v", perr, err)
	}
	if pr.Done != int64(len(f.images)) || pr.Failed != 1 || st.Queued != int64(len(f.images)+1) {
		t.Fatalf("progress %+v, produced %+v", pr, st)
	}
	for i, w := range workers {
		if w.Stats().Done == 0 {
			t.Errorf("worker %d did nothing: both should share the work", i)
		}
	}
	qs, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if qs.Length != 0 || qs.Pending != 0 || qs.Dead != 1 {
		t.Fatalf("queue after the run: %+v", qs)
	}
	dl, err := q.Dead(ctx, 10)
	if err != nil || len(dl) != 1 || dl[0].Item.Path != f.corrupt || !strings.Contains(dl[0].Error, "decode") {
		t.Fatalf("dead letters %+v, %v", dl, err)
	}
	checkIndexed(t, store, v, f)
}

func TestWorkerGracefulShutdown(t *testing.T) {
	ctx := ctxT(t)
	v, store := visualStore(t)
	f := newFolder(t, 6)
	for _, tt := range []struct {
		name     string
		shutdown time.Duration
		wantDone int64
	}{
		{"finishes the batch in flight", 10 * time.Second, 3},
		{"hands the batch back", 50 * time.Millisecond, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := NewMemory(MemoryOptions{Wait: 20 * time.Millisecond})
			if err := q.Enqueue(ctx, []Item{{Path: f.images[0]}, {Path: f.images[1]}, {Path: f.images[2]}}); err != nil {
				t.Fatal(err)
			}
			wctx, stop := context.WithCancel(ctx)
			inside := make(chan struct{})
			var once sync.Once
			slow := EmbedFunc(func(ctx context.Context, imgs []*imaging.Image) ([][]float32, error) {
				once.Do(func() { close(inside) })
				time.Sleep(300 * time.Millisecond) // a long inference
				return v.EmbedBatch(ctx, imgs)
			})
			w := NewWorker(q, slow, IndexSink{Index: store, Model: testModel}, WorkerOptions{BatchSize: 3, ShutdownTimeout: tt.shutdown}, nil)
			done := make(chan error)
			go func() { done <- w.Run(wctx) }()
			<-inside
			stop() // SIGTERM while the batch is in the model
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got := w.Stats().Done; got != tt.wantDone {
				t.Fatalf("done %d, want %d", got, tt.wantDone)
			}
			// Nothing is lost: what was not finished is back in the queue.
			q.Close()
			var back int64
			for {
				ds, err := q.Read(ctx, 10)
				if errors.Is(err, ErrDrained) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				back += int64(len(ds))
				_ = q.Ack(ctx, ds)
			}
			if back+tt.wantDone != 3 {
				t.Fatalf("%d items back in the queue and %d done, want 3 in all", back, tt.wantDone)
			}
		})
	}
}

func TestWalk(t *testing.T) {
	f := newFolder(t, 5)
	link := filepath.Join(f.dir, "link.jpg")
	if err := os.Symlink(f.images[0], link); err != nil {
		t.Fatal(err)
	}
	var got []string
	st, err := Walk(context.Background(), []string{f.dir, f.images[1]}, WalkOptions{}, func(file File) error {
		if !filepath.IsAbs(file.Path) || file.Size <= 0 || file.ModTime.IsZero() {
			t.Errorf("file %+v", file)
		}
		got = append(got, file.Path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// 5 images + the broken JPEG + the link, then images[1] named directly.
	if len(got) != 8 || st.Files != 8 || st.HEIC != 1 || st.Skipped != 1 {
		t.Fatalf("walk: %d files %v, stats %+v", len(got), got, st)
	}
	for _, p := range got {
		if strings.Contains(p, ".thumbs") || strings.Contains(p, "@eaDir") {
			t.Errorf("hidden file walked: %s", p)
		}
	}
	st, err = Walk(context.Background(), []string{f.dir}, WalkOptions{HEIC: true, Extensions: []string{".PNG"}}, func(File) error { return nil })
	if err != nil || st.Files != 3 { // the two PNGs (images 1 and 4) and the HEIC
		t.Fatalf("PNG and HEIC only: %+v, %v", st, err)
	}
	if _, err := Walk(context.Background(), []string{filepath.Join(f.dir, "missing")}, WalkOptions{}, func(File) error { return nil }); err == nil {
		t.Fatal("walking a missing folder must fail")
	}
	stopErr := errors.New("stop")
	if _, err := Walk(context.Background(), []string{f.dir}, WalkOptions{}, func(File) error { return stopErr }); !errors.Is(err, stopErr) {
		t.Fatalf("callback error: %v", err)
	}
}

// TestWorkerRecyclesImages: with WorkerOptions.Recycle, each decoded
// image goes back once, after its models are done with it.
func TestWorkerRecyclesImages(t *testing.T) {
	ctx := ctxT(t)
	v, store := visualStore(t)
	f := newFolder(t, 6)
	var mu sync.Mutex
	embedded := map[*imaging.Image]bool{}
	recycled := map[*imaging.Image]int{}
	emb := EmbedFunc(func(ctx context.Context, imgs []*imaging.Image) ([][]float32, error) {
		mu.Lock()
		for _, img := range imgs {
			if recycled[img] > 0 {
				t.Errorf("an image was embedded after it was recycled")
			}
			embedded[img] = true
		}
		mu.Unlock()
		return v.EmbedBatch(ctx, imgs)
	})
	q := NewMemory(MemoryOptions{Wait: 20 * time.Millisecond})
	p := NewProducer(q, ProducerOptions{Model: testModel}, nil)
	w := NewWorker(q, emb, IndexSink{Index: store, Model: testModel}, WorkerOptions{
		Model: testModel, BatchSize: 4,
		Recycle: func(img *imaging.Image) {
			mu.Lock()
			defer mu.Unlock()
			if !embedded[img] {
				t.Errorf("an image was recycled before it was embedded")
			}
			recycled[img]++
		},
	}, nil)
	var wg sync.WaitGroup
	var perr, werr error
	wg.Go(func() {
		defer q.Close()
		_, perr = p.Folders(ctx, store, f.dir)
	})
	wg.Go(func() { werr = w.Run(ctx) })
	wg.Wait()
	if perr != nil || werr != nil {
		t.Fatalf("producer %v, worker %v", perr, werr)
	}
	if len(recycled) != len(f.images) || len(embedded) != len(f.images) {
		t.Fatalf("%d images recycled, %d embedded, of %d", len(recycled), len(embedded), len(f.images))
	}
	for _, n := range recycled {
		if n != 1 {
			t.Fatalf("an image was recycled %d times", n)
		}
	}
	checkIndexed(t, store, v, f)
}
