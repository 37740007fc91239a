package jobs

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/clip"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/search"
)

// The SIGKILL test runs a worker in a child process: this test binary,
// started again with these variables set.
const (
	childEnv       = "MLSERVE_JOBS_TEST_CHILD"
	childRedis     = "MLSERVE_JOBS_TEST_REDIS"
	childDB        = "MLSERVE_JOBS_TEST_DB"
	childSchema    = "MLSERVE_JOBS_TEST_SCHEMA"
	childQueue     = "MLSERVE_JOBS_TEST_QUEUE"
	childModelDir  = "MLSERVE_JOBS_TEST_MODEL_DIR"
	childStallAt   = "MLSERVE_JOBS_TEST_STALL_AT"    // stage of a batch
	childStallWhen = "MLSERVE_JOBS_TEST_STALL_BATCH" // which batch (1-based)
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m)
}

// runChild is a worker that, at the given stage of the given batch, says
// so on stdout and hangs until it is killed.
func runChild() int {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fail := func(err error) int {
		logger.Error("child worker", "err", err)
		return 3
	}
	ctx := context.Background()
	rt, err := inference.New(inference.Options{LibraryPath: os.Getenv("MLSERVE_ORT_LIBRARY"), Providers: []string{inference.CPU}}, logger)
	if err != nil {
		return fail(err)
	}
	v, err := clip.LoadVisual(os.Getenv(childModelDir), rt, clip.VisualOptions{}, logger)
	if err != nil {
		return fail(err)
	}
	store, err := search.Open(ctx, search.Options{URL: os.Getenv(childDB), Schema: os.Getenv(childSchema)}, logger)
	if err != nil {
		return fail(err)
	}
	if _, err := store.EnsureModel(ctx, testModel, v.Dim()); err != nil {
		return fail(err)
	}
	opt, err := redis.ParseURL(os.Getenv(childRedis))
	if err != nil {
		return fail(err)
	}
	q, err := NewRedis(ctx, RedisOptions{Client: redis.NewClient(opt), Name: os.Getenv(childQueue), Consumer: "child", Block: 100 * time.Millisecond}, logger)
	if err != nil {
		return fail(err)
	}
	stallAt := os.Getenv(childStallAt)
	stallBatch, _ := strconv.Atoi(os.Getenv(childStallWhen))
	// Batches overlap (the next is read while one is written): the stall
	// waits until every batch before it is acknowledged, so that the test
	// knows what the child finished before it died.
	var mu sync.Mutex
	batchOf := map[string]int{}
	read, acked := 0, 0
	ackedCh := make(chan struct{}, 100)
	opts := WorkerOptions{Model: testModel, BatchSize: 4, hook: func(stage string, ds []Delivery) {
		mu.Lock()
		if stage == "read" {
			read++
			batchOf[ds[0].ID] = read
		}
		if stage == "acked" {
			acked++
			ackedCh <- struct{}{}
		}
		batch := batchOf[ds[0].ID]
		mu.Unlock()
		if stage == stallAt && batch == stallBatch {
			for {
				mu.Lock()
				n := acked
				mu.Unlock()
				if n >= stallBatch-1 {
					break
				}
				<-ackedCh
			}
			fmt.Printf("STALLED %s %d\n", stage, len(ds))
			select {} // until SIGKILL
		}
	}}
	w := NewWorker(q, EmbedFunc(v.EmbedBatch), IndexSink{Index: store, Model: testModel}, opts, logger)
	if err := w.Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// startChild starts a child worker and waits until it stalls.
func startChild(t *testing.T, env []string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, childEnv+"=1", "MLSERVE_ORT_LIBRARY="+testenv.ORTLibrary(t))...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	stalled := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "STALLED") {
				stalled <- sc.Text()
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case line := <-stalled:
		t.Logf("child worker %d: %s", cmd.Process.Pid, line)
	case <-time.After(2 * time.Minute):
		t.Fatal("child worker never reached the stall point")
	}
	return cmd
}

// waitDone polls the run's counts until done+failed reaches total.
func waitDone(t *testing.T, q Enqueuer, run string, total int64) Counts {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var c Counts
	for time.Now().Before(deadline) {
		var err error
		c, err = q.Progress(context.Background(), run)
		if err == nil && c.Done+c.Failed >= total {
			return c
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("run %s not finished: %+v", run, c)
	return c
}

// checkExactlyOnce asserts every image is stored once, counted done once,
// and nothing is left in the queue.
func checkExactlyOnce(t *testing.T, store *search.Store, q *Redis, run string, n int) {
	t.Helper()
	ctx := ctxT(t)
	c, err := q.Progress(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	if c.Total != int64(n) || c.Done != int64(n) || c.Failed != 0 {
		t.Fatalf("counts %+v, want %d done exactly once and none failed", c, n)
	}
	assets, embs, err := store.Count(ctx, testModel)
	if err != nil {
		t.Fatal(err)
	}
	if assets != int64(n) || embs != int64(n) {
		t.Fatalf("%d assets and %d embeddings stored, want %d", assets, embs, n)
	}
	qs, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if qs != (QueueStats{DeadMax: q.Options().DeadMaxLen}) {
		t.Fatalf("queue after the run: %+v", qs)
	}
}

func TestWorkerKilledMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	redisURL, dbURL := testenv.RedisURL(t), testenv.DatabaseURL(t)
	modelDir := clipDir(t, smallCLIP())
	v := loadVisual(t, modelDir)
	f := newFolder(t, 12)
	for _, stage := range []string{"decoded", "embedded", "written"} {
		t.Run("at "+stage, func(t *testing.T) {
			ctx := ctxT(t)
			schema := testSchema(t)
			store := openStore(t, dbURL, schema)
			if _, err := store.EnsureModel(ctx, testModel, v.Dim()); err != nil {
				t.Fatal(err)
			}
			c := redisClient(t, redisURL)
			q := newRedisQueue(t, c, RedisOptions{VisibilityTimeout: time.Second, Block: 100 * time.Millisecond})
			p := NewProducer(q, ProducerOptions{Model: testModel}, nil)
			if _, err := p.Folders(ctx, nil, f.images...); err != nil {
				t.Fatal(err)
			}
			child := startChild(t, []string{
				childRedis + "=" + redisURL, childDB + "=" + dbURL, childSchema + "=" + schema,
				childQueue + "=" + q.Options().Name, childModelDir + "=" + modelDir,
				childStallAt + "=" + stage, childStallWhen + "=2",
			})
			if err := child.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = child.Wait()
			before, err := q.Progress(ctx, p.Run())
			if err != nil {
				t.Fatal(err)
			}
			if before.Done != 4 {
				t.Fatalf("the child finished %d items before it died, want its first batch of 4", before.Done)
			}
			// A new worker takes the rest, including the dead worker's
			// batch once its visibility timeout has passed.
			wctx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			w := NewWorker(q, EmbedFunc(v.EmbedBatch), IndexSink{Index: store, Model: testModel}, WorkerOptions{Model: testModel, BatchSize: 4}, nil)
			wg.Go(func() { _ = w.Run(wctx) })
			waitDone(t, q, p.Run(), 12)
			stop()
			wg.Wait()
			checkExactlyOnce(t, store, q, p.Run(), 12)
		})
	}
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startRedis runs a redis-server of the test's own that persists every
// write (appendfsync always), so that it can be killed and restarted
// without losing the queue.
func startRedis(t *testing.T, dir string, port int) *exec.Cmd {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testenv.Missing(t, "redis-server: %v", err)
	}
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer c.Close()
	for range 100 {
		if c.Ping(context.Background()).Err() == nil {
			return cmd
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("redis-server did not start")
	return nil
}

func TestRedisRestartMidRun(t *testing.T) {
	ctx := ctxT(t)
	dir, port := t.TempDir(), freePort(t)
	srv := startRedis(t, dir, port)
	redisURL := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	v := loadVisual(t, clipDir(t, smallCLIP()))
	store := openStore(t, testenv.DatabaseURL(t), testSchema(t))
	if _, err := store.EnsureModel(ctx, testModel, v.Dim()); err != nil {
		t.Fatal(err)
	}
	f := newFolder(t, 20)
	c := redisClient(t, redisURL)
	q := newRedisQueue(t, c, RedisOptions{Block: 100 * time.Millisecond, VisibilityTimeout: 2 * time.Second})
	p := NewProducer(q, ProducerOptions{Model: testModel}, nil)
	if _, err := p.Folders(ctx, nil, f.images...); err != nil {
		t.Fatal(err)
	}

	var batches atomic.Int32
	killed := make(chan struct{})
	slow := EmbedFunc(func(ctx context.Context, imgs []*imaging.Image) ([][]float32, error) {
		time.Sleep(100 * time.Millisecond)
		return v.EmbedBatch(ctx, imgs)
	})
	w := NewWorker(q, slow, IndexSink{Index: store, Model: testModel}, WorkerOptions{
		Model: testModel, BatchSize: 3, Backoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		hook: func(stage string, _ []Delivery) {
			if stage == "embedded" && batches.Add(1) == 2 {
				// Redis dies while a batch is between the model and the
				// database.
				_ = srv.Process.Signal(syscall.SIGKILL)
				close(killed)
			}
		},
	}, nil)
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(wctx) })
	<-killed
	_ = srv.Wait()
	time.Sleep(time.Second) // workers retry against a dead port
	startRedis(t, dir, port)
	pr, err := p.Watch(ctx, 100*time.Millisecond, nil)
	stop()
	wg.Wait()
	if err != nil {
		t.Fatalf("watch: %v (%+v)", err, pr)
	}
	checkExactlyOnce(t, store, q, p.Run(), 20)
}

// proxy forwards TCP connections to a server until it is cut: then every
// open connection is closed and new ones are refused until Restore. It can
// also freeze (hold every byte, answer nothing: what a client sees of a
// PGlite while another client holds a transaction open), or refuse new
// connections with a message (what PGlite writes beyond its connection
// limit).
type proxy struct {
	ln     net.Listener
	target string
	down   atomic.Bool
	frozen atomic.Bool
	refuse atomic.Pointer[string]
	mu     sync.Mutex
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		_ = ln.Close()
		p.frozen.Store(false)
		p.Cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if msg := p.refuse.Load(); msg != nil {
			_, _ = c.Write([]byte(*msg))
			_ = c.Close()
			continue
		}
		if p.down.Load() {
			_ = c.Close()
			continue
		}
		if p.frozen.Load() {
			// Held here, not at the server: a test must not take the
			// shared server's connections.
			p.mu.Lock()
			p.conns[c] = true
			p.mu.Unlock()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				for n > 0 && p.frozen.Load() && !p.down.Load() {
					time.Sleep(5 * time.Millisecond)
				}
				if n > 0 {
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			_ = dst.Close()
			_ = src.Close()
		}
		p.wg.Go(func() { pipe(s, c) })
		p.wg.Go(func() { pipe(c, s) })
	}
}

// Cut closes every connection and refuses new ones.
func (p *proxy) Cut() {
	p.down.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// Restore accepts connections again.
func (p *proxy) Restore() {
	p.refuse.Store(nil)
	p.frozen.Store(false)
	p.down.Store(false)
}

// Freeze holds every byte from now on, both ways, on open and new
// connections, until Restore.
func (p *proxy) Freeze() { p.frozen.Store(true) }

// Refuse cuts every connection and answers new ones with msg, then hangs
// up, until Restore.
func (p *proxy) Refuse(msg string) {
	p.refuse.Store(&msg)
	p.Cut()
	p.down.Store(false)
}

func TestDatabaseOutage(t *testing.T) {
	ctx := ctxT(t)
	dbURL := testenv.DatabaseURL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, u.Host)
	u.Host = px.Addr()
	v := loadVisual(t, clipDir(t, smallCLIP()))
	schema := testSchema(t)
	store := openStore(t, u.String(), schema)
	if _, err := store.EnsureModel(ctx, testModel, v.Dim()); err != nil {
		t.Fatal(err)
	}
	f := newFolder(t, 16)
	q := NewMemory(MemoryOptions{Wait: 50 * time.Millisecond})
	var items []Item
	for _, p := range f.images {
		items = append(items, Item{Path: p, Model: testModel, Run: "r"})
	}
	if err := q.Enqueue(ctx, items); err != nil {
		t.Fatal(err)
	}
	q.Close()
	var written atomic.Int32
	restored := make(chan struct{})
	w := NewWorker(q, EmbedFunc(v.EmbedBatch), IndexSink{Index: store, Model: testModel}, WorkerOptions{
		Model: testModel, BatchSize: 4, Backoff: 50 * time.Millisecond, MaxBackoff: 400 * time.Millisecond,
		hook: func(stage string, _ []Delivery) {
			if stage == "written" && written.Add(1) == 1 {
				// The database goes away for two seconds after the first
				// batch: the next batches must wait, not fail.
				px.Cut()
				go func() {
					time.Sleep(2 * time.Second)
					px.Restore()
					close(restored)
				}()
			}
		},
	}, nil)
	start := time.Now()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	<-restored
	if time.Since(start) < 2*time.Second {
		t.Fatal("the worker finished before the database came back")
	}
	if len(q.Dead()) != 0 {
		t.Fatalf("dead letters during an outage: %+v", q.Dead())
	}
	c, _ := q.Progress(ctx, "r")
	if c.Done != int64(len(f.images)) || c.Failed != 0 {
		t.Fatalf("counts %+v", c)
	}
	// Check through a direct connection.
	direct := openStore(t, dbURL, schema)
	if _, err := direct.EnsureModel(ctx, testModel, v.Dim()); err != nil {
		t.Fatal(err)
	}
	assets, embs, err := direct.Count(ctx, testModel)
	if err != nil {
		t.Fatal(err)
	}
	if assets != int64(len(f.images)) || embs != int64(len(f.images)) {
		t.Fatalf("%d assets, %d embeddings after the outage; want %d", assets, embs, len(f.images))
	}
}
