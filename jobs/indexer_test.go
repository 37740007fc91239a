package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mlserve/mlserve/inference/face"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
	"github.com/mlserve/mlserve/search"
)

// testCache is a model cache with the small generated CLIP image graph,
// and with faces the npm face test pack as buffalo_l.
func testCache(t *testing.T, faces bool) string {
	t.Helper()
	cache := t.TempDir()
	writeCLIPDir(t, filepath.Join(cache, "clip", testModel), smallCLIP())
	if faces {
		if err := face.WriteTestPack(filepath.Join(cache, "facial-recognition", "buffalo_l"),
			testenv.TestData(t, "models/faceplugin/fr_detect.onnx"),
			testenv.TestData(t, "models/faceplugin/fr_landmark.onnx"),
			testenv.TestData(t, "models/faceplugin/fr_feature.onnx")); err != nil {
			t.Fatal(err)
		}
	}
	return cache
}

// testEngine is the inference service on cache (offline: a model missing
// from it does not load).
func testEngine(t *testing.T, cache string) *pool.Service {
	t.Helper()
	store, err := models.NewStore(models.StoreOptions{CacheDir: cache, Offline: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pool.NewService(pool.ServiceOptions{Cache: pool.CacheOptions{FailureHoldOff: time.Millisecond}}, store, testenv.Runtime(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

// countingEngine counts the images embedded and the images analysed,
// and can fail every embedding.
type countingEngine struct {
	*pool.Service
	embedded, faced atomic.Int64
	fail            error
	delay           time.Duration
}

func (e *countingEngine) EmbedImages(ctx context.Context, model string, imgs []*imaging.Image) ([][]float32, error) {
	e.embedded.Add(int64(len(imgs)))
	if e.delay > 0 {
		sleep(ctx, e.delay)
	}
	if e.fail != nil {
		return nil, e.fail
	}
	return e.Service.EmbedImages(ctx, model, imgs)
}

func (e *countingEngine) Faces(ctx context.Context, model string, img *imaging.Image, minScore float32) ([]pool.Face, error) {
	e.faced.Add(1)
	return e.Service.Faces(ctx, model, img, minScore)
}

// indexOpts are the options of an index run of roots into schema at url.
func indexOpts(engine Engine, url, schema string, roots ...string) IndexerOptions {
	return IndexerOptions{
		Engine: engine, Roots: roots, Prune: true, BatchSize: 4, ProgressEvery: 20 * time.Millisecond,
		Open: func(ctx context.Context) (search.Index, error) {
			return search.OpenIndex(ctx, search.IndexOptions{URL: url, Schema: schema}, nil)
		},
	}
}

// schemaExists tells whether the test database has schema.
func schemaExists(t *testing.T, schema string) bool {
	t.Helper()
	ctx := ctxT(t)
	conn, err := pgx.Connect(ctx, testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", pgx.QueryExecModeSimpleProtocol, schema).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// count runs a count(*) query on the test database.
func count(t *testing.T, sql string) int64 {
	t.Helper()
	ctx := ctxT(t)
	conn, err := pgx.Connect(ctx, testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, sql, pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestIndexerFolders(t *testing.T) {
	engine := &countingEngine{Service: testEngine(t, testCache(t, false))}
	schema := testSchema(t)
	f := newFolder(t, 10)
	opts := indexOpts(engine, testenv.DatabaseURL(t), schema, f.dir)
	opts.Workers = 2
	var reports atomic.Int32
	opts.Progress = func(Progress) { reports.Add(1) }
	var maxImages atomic.Int32
	opts.worker = func(o *WorkerOptions) { maxImages.Store(int32(o.MaxImages)) }

	// First run: every image, and the corrupt file fails, once.
	sum, err := NewIndexer(opts, nil).Run(ctxT(t))
	if !errors.Is(err, ErrItemsFailed) {
		t.Fatalf("first run: %v, want ErrItemsFailed", err)
	}
	if sum.Found != 11 || sum.Queued != 11 || sum.Indexed != 10 || sum.Failed != 1 || sum.Load <= 0 || sum.Elapsed <= 0 || sum.Rate() <= 0 {
		t.Fatalf("first run: %+v", sum)
	}
	if len(sum.Failures) != 1 || sum.Failures[0].Path != f.corrupt || !strings.Contains(sum.Failures[0].Error, "decode") {
		t.Fatalf("failures %+v", sum.Failures)
	}
	if reports.Load() == 0 {
		t.Error("no progress reported")
	}
	// The model runs on the CPU: the worker decodes one batch ahead.
	if n := maxImages.Load(); n != pool.DefaultBatchMaxCPU {
		t.Errorf("the worker holds up to %d decoded photos, want the engine's CPU batch, %d", n, pool.DefaultBatchMaxCPU)
	}
	embedded := engine.embedded.Load()
	if embedded != 10 {
		t.Fatalf("%d images embedded, want 10", embedded)
	}

	// Nothing changed: nothing to do, and the undecodable file is not
	// tried again.
	sum, err = NewIndexer(opts, nil).Run(ctxT(t))
	if err != nil || sum.Queued != 0 || sum.Unchanged != 10 || sum.KnownFailures != 1 || sum.Skipped() != 11 || sum.Indexed != 0 {
		t.Fatalf("second run: %v, %+v", err, sum)
	}
	// Unless asked to, or the file changed.
	retry := opts
	retry.RetryFailed = true
	sum, err = NewIndexer(retry, nil).Run(ctxT(t))
	if !errors.Is(err, ErrItemsFailed) || sum.Queued != 1 || sum.Failed != 1 {
		t.Fatalf("retry-failed run: %v, %+v", err, sum)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(f.corrupt, later, later); err != nil {
		t.Fatal(err)
	}
	sum, err = NewIndexer(opts, nil).Run(ctxT(t))
	if !errors.Is(err, ErrItemsFailed) || sum.Queued != 1 || sum.Failed != 1 || sum.KnownFailures != 0 {
		t.Fatalf("run after the failed file changed: %v, %+v", err, sum)
	}
	// A file that now decodes is indexed and its failure forgotten.
	good, err := os.ReadFile(f.images[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.corrupt, good, 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err = NewIndexer(opts, nil).Run(ctxT(t))
	if err != nil || sum.Queued != 1 || sum.Indexed != 1 || sum.KnownFailures != 0 {
		t.Fatalf("run after the failed file was fixed: %v, %+v", err, sum)
	}
	if n := count(t, "SELECT count(*) FROM "+pgx.Identifier{schema, "index_failures"}.Sanitize()); n != 0 {
		t.Fatalf("%d failures recorded after the file was fixed", n)
	}

	// Files that disappeared are removed from the index, with their
	// embeddings; a folder under which nothing is found is left alone.
	for _, p := range f.images[:3] {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	sum, err = NewIndexer(opts, nil).Run(ctxT(t))
	if err != nil || sum.Pruned != 3 || sum.Queued != 0 {
		t.Fatalf("run after removing 3 files: %v, %+v", err, sum)
	}
	store := openStore(t, testenv.DatabaseURL(t), schema)
	assets, embs, err := store.Count(ctxT(t), testModel)
	if err != nil || assets != 8 || embs != 8 {
		t.Fatalf("after pruning: %d assets, %d embeddings, %v; want 8 (7 images and the fixed file)", assets, embs, err)
	}
	empty := t.TempDir()
	both := indexOpts(engine, testenv.DatabaseURL(t), schema, f.dir, empty)
	if sum, err = NewIndexer(both, nil).Run(ctxT(t)); err != nil || sum.Pruned != 0 {
		t.Fatalf("run with an empty folder: %v, %+v", err, sum)
	}
	if assets, _, _ = store.Count(ctxT(t), testModel); assets != 8 {
		t.Fatalf("%d assets after a run with an empty folder", assets)
	}
}

// TestIndexerAddsOnlyMissingAnalyses indexes real photos with CLIP, then
// again with faces: the second run computes faces only (no image is
// embedded again), groups them into people, and a third run has nothing
// to do. A photo without faces is not analysed again either.
func TestIndexerAddsOnlyMissingAnalyses(t *testing.T) {
	engine := &countingEngine{Service: testEngine(t, testCache(t, true))}
	schema := testSchema(t)
	dir := t.TempDir()
	for _, name := range []string{"sample1.jpg", "sample4.jpg", "sample2.jpg"} {
		b, err := os.ReadFile(testenv.TestData(t, "photos/"+name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	genImages(t, dir, 2, 9) // no faces in these
	opts := indexOpts(engine, testenv.DatabaseURL(t), schema, dir)
	sum, err := NewIndexer(opts, nil).Run(ctxT(t))
	if err != nil || sum.Indexed != 5 || sum.Faces != 0 || engine.faced.Load() != 0 {
		t.Fatalf("CLIP run: %v, %+v", err, sum)
	}

	opts.FaceModel = "buffalo_l"
	engine.embedded.Store(0)
	sum, err = NewIndexer(opts, nil).Run(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Queued != 5 || sum.Partial != 5 || sum.Indexed != 5 || engine.embedded.Load() != 0 || engine.faced.Load() != 5 {
		t.Fatalf("faces run: %+v, %d embedded, %d analysed; want faces only, on all 5", sum, engine.embedded.Load(), engine.faced.Load())
	}
	faces := count(t, "SELECT count(*) FROM "+pgx.Identifier{schema, "faces"}.Sanitize())
	if sum.Faces < 7 || faces != sum.Faces {
		t.Fatalf("%d faces found, %d stored; want at least the 7 of sample1 and sample4", sum.Faces, faces)
	}
	if sum.People == nil || sum.People.Faces != int(faces) {
		t.Fatalf("people after the faces run: %+v", sum.People)
	}
	store := openStore(t, testenv.DatabaseURL(t), schema)
	if _, embs, _ := store.Count(ctxT(t), testModel); embs != 5 {
		t.Fatalf("%d embeddings", embs)
	}

	engine.faced.Store(0)
	sum, err = NewIndexer(opts, nil).Run(ctxT(t))
	if err != nil || sum.Queued != 0 || sum.Unchanged != 5 || engine.faced.Load() != 0 || engine.embedded.Load() != 0 {
		t.Fatalf("third run: %v, %+v", err, sum)
	}
	// A changed photo gets everything again.
	if err := os.WriteFile(filepath.Join(dir, "sample2.jpg"), mustRead(t, testenv.TestData(t, "photos/sample5.jpg")), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err = NewIndexer(opts, nil).Run(ctxT(t))
	if err != nil || sum.Queued != 1 || sum.Partial != 0 || engine.embedded.Load() != 1 || engine.faced.Load() != 1 {
		t.Fatalf("run after a photo changed: %v, %+v", err, sum)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIndexerFatalBeforeDatabase: a model that cannot load fails the run
// with one error before the database is opened, so no table is created.
// The same for a folder that does not exist.
func TestIndexerFatalBeforeDatabase(t *testing.T) {
	engine := testEngine(t, t.TempDir()) // empty cache, offline
	schema := testSchema(t)
	f := newFolder(t, 2)
	opened := 0
	opts := indexOpts(engine, testenv.DatabaseURL(t), schema, f.dir)
	open := opts.Open
	opts.Open = func(ctx context.Context) (search.Index, error) { opened++; return open(ctx) }
	_, err := NewIndexer(opts, nil).Run(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "load clip/visual model "+testModel) {
		t.Fatalf("run without the model: %v", err)
	}
	opts.Roots = []string{filepath.Join(f.dir, "missing")}
	if _, err := NewIndexer(opts, nil).Run(ctxT(t)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("run of a missing folder: %v", err)
	}
	opts.Roots = []string{f.dir}
	opts.FaceModel = "no-such-pack"
	if _, err := NewIndexer(opts, nil).Run(ctxT(t)); err == nil || !strings.Contains(err.Error(), "face model") {
		t.Fatalf("run with an unknown face model: %v", err)
	}
	if _, err := NewIndexer(opts, nil).Work(ctxT(t)); err == nil || !strings.Contains(err.Error(), "MLSERVE_REDIS_URL") {
		t.Fatalf("work without Redis: %v", err)
	}
	if opened != 0 || schemaExists(t, schema) {
		t.Fatalf("the database was opened %d times; schema exists: %v", opened, schemaExists(t, schema))
	}
}

// TestIndexerAllFailing: when inference fails on every image, the run
// stops with one error (ErrAllFailing, the cause once) instead of failing
// every image with it; when every file is undecodable, each is a failure
// of its own (ErrItemsFailed, one line each).
func TestIndexerAllFailing(t *testing.T) {
	boom := errors.New("the model cannot run (boom)")
	engine := &countingEngine{Service: testEngine(t, testCache(t, false)), fail: boom}
	f := newFolder(t, 40)
	opts := indexOpts(engine, testenv.DatabaseURL(t), testSchema(t), f.dir)
	sum, err := NewIndexer(opts, nil).Run(ctxT(t))
	if !errors.Is(err, ErrAllFailing) || !errors.Is(err, boom) || strings.Count(err.Error(), "boom") != 1 {
		t.Fatalf("run with a failing model: %v", err)
	}
	if n := engine.embedded.Load(); n > 2*int64(opts.BatchSize)+3*int64(opts.BatchSize) {
		t.Fatalf("%d images tried before giving up; want about two batches' worth", n)
	}
	if sum.Indexed != 0 {
		t.Fatalf("summary %+v", sum)
	}

	dir := t.TempDir()
	for i := range 5 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("bad%d.jpg", i)), []byte("not an image"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	engine.fail = nil
	sum, err = NewIndexer(indexOpts(engine, testenv.DatabaseURL(t), testSchema(t), dir), nil).Run(ctxT(t))
	if !errors.Is(err, ErrItemsFailed) || sum.Failed != 5 || len(sum.Failures) != 5 || sum.Indexed != 0 {
		t.Fatalf("run of undecodable files: %v, %+v", err, sum)
	}
}

// TestIndexerInterrupt: when the run's context ends, the batches in
// flight are finished, the run says it was interrupted, and its count is
// what the database holds; the next run does the rest.
func TestIndexerInterrupt(t *testing.T) {
	engine := &countingEngine{Service: testEngine(t, testCache(t, false)), delay: 30 * time.Millisecond}
	schema := testSchema(t)
	f := newFolder(t, 40)
	opts := indexOpts(engine, testenv.DatabaseURL(t), schema, f.dir)
	ctx, cancel := context.WithCancel(ctxT(t))
	opts.Progress = func(pr Progress) {
		if pr.Done >= 8 {
			cancel()
		}
	}
	sum, err := NewIndexer(opts, nil).Run(ctx)
	if !errors.Is(err, ErrInterrupted) || !errors.Is(err, context.Canceled) || !sum.Interrupted {
		t.Fatalf("interrupted run: %v, %+v", err, sum)
	}
	store := openStore(t, testenv.DatabaseURL(t), schema)
	_, embs, err := store.Count(ctxT(t), testModel)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Indexed < 8 || sum.Indexed != embs || sum.Indexed >= 40 {
		t.Fatalf("interrupted run counts %d indexed, the database holds %d", sum.Indexed, embs)
	}
	// The undecodable file was in the first batch: it failed then, and
	// is skipped now.
	opts.Progress = nil
	sum2, err := NewIndexer(opts, nil).Run(ctxT(t))
	if err != nil || sum2.Unchanged != sum.Indexed || sum2.KnownFailures != 1 || sum2.Indexed+sum.Indexed != 40 {
		t.Fatalf("next run: %v, %+v (after %d)", err, sum2, sum.Indexed)
	}
}

// TestIndexerRedis runs `mlserve index` and `mlserve worker` over Redis:
// the failing file is listed from the dead-letter stream, the run fails,
// and the next run does not queue it again.
func TestIndexerRedis(t *testing.T) {
	engine := testEngine(t, testCache(t, false))
	schema := testSchema(t)
	f := newFolder(t, 12)
	c := redisClient(t, testenv.RedisURL(t))
	name := newRedisQueue(t, c, RedisOptions{}).Options().Name
	opts := indexOpts(engine, testenv.DatabaseURL(t), schema, f.dir)
	opts.Redis, opts.Queue = c, RedisOptions{Name: name, Block: 50 * time.Millisecond}
	opts.Workers = 2

	ctx, stop := context.WithCancel(ctxT(t))
	var wg sync.WaitGroup
	var werr error
	var wst Stats
	wg.Go(func() { wst, werr = NewIndexer(opts, nil).Work(ctx) })
	producer := opts
	producer.Engine = nil // enqueues only
	run := func() (Summary, error) { return NewIndexer(producer, nil).Run(ctxT(t)) }
	sum, err := run()
	if !errors.Is(err, ErrItemsFailed) || sum.Queue != name || sum.Indexed != 12 || sum.Failed != 1 {
		t.Fatalf("first run: %v, %+v", err, sum)
	}
	if len(sum.Failures) != 1 || sum.Failures[0].Path != f.corrupt || !strings.Contains(sum.Failures[0].Error, "decode") {
		t.Fatalf("failures %+v", sum.Failures)
	}
	sum, err = run()
	if err != nil || sum.Queued != 0 || sum.KnownFailures != 1 || sum.Unchanged != 12 || len(sum.Failures) != 0 {
		t.Fatalf("second run: %v, %+v", err, sum)
	}
	// A file that disappeared is pruned by the producer.
	if err := os.Remove(f.images[5]); err != nil {
		t.Fatal(err)
	}
	sum, err = run()
	if err != nil || sum.Pruned != 1 {
		t.Fatalf("third run: %v, %+v", err, sum)
	}
	stop()
	wg.Wait()
	if werr != nil || wst.Done != 12 || wst.Dead != 1 {
		t.Fatalf("worker: %v, %+v", werr, wst)
	}
}

// TestIndexerNeverStalls reproduces the stall of `mlserve index --workers
// 2` on PGlite, at 0% CPU: PGlite runs every connection on one backend and
// holds all of them while one client's transaction is open (and a client
// whose query was canceled keeps its transaction open until pgx gives up
// on the connection, 15 s later); it answers connections beyond its limit
// with "Too many connections" in plain text. The workers waited either out
// without end: blocked in pgx with no timeout, or retrying a refused
// connection every 10 s, silently. A proxy in front of the test database
// plays PGlite in both states. Now the run ends with one error naming
// MLSERVE_DATABASE_URL once the outage outlasts its deadline, in-process
// and with the Redis queue; and a Redis outage names MLSERVE_REDIS_URL.
func TestIndexerNeverStalls(t *testing.T) {
	engine := testEngine(t, testCache(t, false))
	u, err := url.Parse(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, u.Host)
	u.Host = px.Addr()
	f := newFolder(t, 24)
	fast := func(o *WorkerOptions) {
		o.OpTimeout, o.Backoff, o.MaxBackoff = 300*time.Millisecond, 20*time.Millisecond, 100*time.Millisecond
	}
	for _, tc := range []struct {
		name  string
		fault func()
		want  string
	}{
		{"blocked", px.Freeze, "MLSERVE_DATABASE_URL"},
		{"too many connections", func() { px.Refuse("Too many connections\n") }, "too many connections"},
	} {
		for _, queue := range []string{"memory", "redis"} {
			t.Run(tc.name+"/"+queue, func(t *testing.T) {
				px.Restore()
				defer px.Cut() // frees the test database's connections
				opts := indexOpts(engine, u.String(), testSchema(t), f.dir)
				opts.Workers, opts.OutageDeadline, opts.worker = 2, 1500*time.Millisecond, fast
				var faulted atomic.Bool
				fault := func() {
					if !faulted.Swap(true) {
						tc.fault()
					}
				}
				opts.worker = func(o *WorkerOptions) {
					fast(o)
					o.hook = func(stage string, _ []Delivery) {
						if stage == "written" {
							fault() // after the first batch
						}
					}
				}
				start := time.Now()
				if queue == "memory" {
					_, err = NewIndexer(opts, nil).Run(ctxT(t))
				} else {
					c := redisClient(t, testenv.RedisURL(t))
					opts.Redis = c
					opts.Queue = RedisOptions{Name: newRedisQueue(t, c, RedisOptions{}).Options().Name, Block: 50 * time.Millisecond}
					producer := opts
					producer.Engine, producer.NoWait = nil, true
					if _, err := NewIndexer(producer, nil).Run(ctxT(t)); err != nil {
						t.Fatalf("producer: %v", err)
					}
					_, err = NewIndexer(opts, nil).Work(ctxT(t))
				}
				took := time.Since(start)
				var oe *OutageError
				if !errors.As(err, &oe) || oe.Service != ServiceDatabase || !strings.Contains(err.Error(), tc.want) ||
					!strings.Contains(err.Error(), "MLSERVE_DATABASE_URL") {
					t.Fatalf("run against a %s database: %v", tc.name, err)
				}
				if took > 20*time.Second {
					t.Fatalf("the run took %s to give up", took)
				}
				t.Logf("%s", err)
			})
		}
	}
}
