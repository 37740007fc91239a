package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"go.uber.org/goleak"
)

// Some tests run `mlserve serve` in a child process: this test binary,
// started again with childEnv set. childNoFile lowers the child's file
// descriptor limit first.
const (
	childEnv    = "MLSERVE_CMD_TEST_CHILD"
	childNoFile = "MLSERVE_CMD_TEST_NOFILE"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "serve" {
		if v := os.Getenv(childNoFile); v != "" {
			n, _ := strconv.ParseUint(v, 10, 64)
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
				fmt.Fprintln(os.Stderr, "setrlimit:", err)
				os.Exit(3)
			}
		}
		os.Exit(run([]string{"serve"}, os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m,
		// fasthttp refreshes its Date header on a goroutine that runs for
		// the life of the process, from the first server started.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		// After a shutdown, fasthttp's idle-worker cleaner notices the stop
		// only when its sleep of MaxIdleWorkerDuration (10 s) ends. A server
		// left running still shows: its accept loop stays.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.Cleanup(func(code int) {
			if binaryRoot != "" {
				_ = os.RemoveAll(binaryRoot)
			}
			os.Exit(code)
		}))
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitPing waits until base answers /ping.
func waitPing(t *testing.T, base string, exited <-chan error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("serve did not start")
		}
		select {
		case err := <-exited:
			t.Fatalf("serve exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// serveInProcess runs serve() with the environment as it is, on a free
// loopback port; stop ends it (as SIGTERM does) and waits, and runs when
// the test ends anyway. Only one can run at a time: ONNX Runtime's
// environment is process-wide.
func serveInProcess(t *testing.T) (base string, stop func()) {
	t.Helper()
	port := freePort(t)
	if os.Getenv("IMMICH_HOST") == "" {
		t.Setenv("IMMICH_HOST", "127.0.0.1")
	}
	t.Setenv("IMMICH_PORT", strconv.Itoa(port))
	cfg, err := config.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	exited := make(chan error, 1)
	var once sync.Once
	var serveErr error
	wait := func() {
		once.Do(func() {
			serveErr = <-done
			exited <- serveErr
		})
	}
	stop = func() {
		cancel()
		wait()
		if serveErr != nil {
			t.Errorf("serve: %v", serveErr)
		}
	}
	t.Cleanup(stop)
	base = "http://127.0.0.1:" + strconv.Itoa(port)
	ready := make(chan error, 1)
	go func() { wait(); ready <- <-exited }()
	waitPing(t, base, ready)
	return base, stop
}

// startServeChild runs `mlserve serve` in a child process with the test's
// environment and extra variables; it returns the base URL, the process
// and a channel that receives its exit.
func startServeChild(t *testing.T, env ...string) (string, *exec.Cmd, <-chan error) {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=serve", "IMMICH_HOST=127.0.0.1", "IMMICH_PORT="+strconv.Itoa(port))
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			t.Logf("serve, killed: %v", <-exited)
		}
		if t.Failed() {
			t.Logf("child's log:\n%s", stderr.String())
		}
	})
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	waitPing(t, base, exited)
	return base, cmd, exited
}

func predictForm(t *testing.T, img []byte) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	_ = w.WriteField("entries", `{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}`)
	p, _ := w.CreateFormFile("image", "blob")
	_, _ = p.Write(img)
	w.Close()
	return &buf, w.FormDataContentType()
}

func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// slowCache is cliCache with a visual tower that takes a while per image
// (about 20 GFLOP: several hundred ms on two cores, even batched).
func slowCache(t *testing.T) string {
	t.Helper()
	cache := cliCache(t)
	m := modelgen.ViT{ImageSize: 224, Patch: 8, Width: 512, Layers: 8, Heads: 8, MLP: 2048, Dim: 512}.Model()
	if err := m.WriteFile(filepath.Join(cache, "clip", "ViT-B-32__openai", "visual", "model.onnx")); err != nil {
		t.Fatal(err)
	}
	return cache
}

// TestServeSIGTERMDrains: SIGTERM with 10 requests in flight. Each ends
// with 200 (finished within MLSERVE_SHUTDOWN_TIMEOUT) or 503 (cancelled
// at the deadline), never a broken connection; a new /predict gets 503
// with Retry-After at once; /ping answers during the drain; the process
// exits 0.
func TestServeSIGTERMDrains(t *testing.T) {
	_, photos := cliPhotos(t, 1)
	img, _ := os.ReadFile(photos[0])
	base, cmd, exited := startServeChild(t,
		"MACHINE_LEARNING_CACHE_FOLDER="+slowCache(t), "HF_HUB_OFFLINE=true", "MLSERVE_PROVIDERS=CPU",
		"MLSERVE_ORT_LIBRARY="+testenv.ORTLibrary(t), "IMMICH_LOG_LEVEL=warn", "MLSERVE_DATABASE_URL=",
		"MACHINE_LEARNING_REQUEST_THREADS=1", "MLSERVE_SHUTDOWN_TIMEOUT=0.5",
		"MACHINE_LEARNING_PRELOAD__CLIP__VISUAL=ViT-B-32__openai")
	post := func() (int, http.Header, error) {
		body, ct := predictForm(t, img)
		resp, err := http.Post(base+"/predict", ct, body)
		if err != nil {
			return 0, nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header, nil
	}
	if code, _, err := post(); code != 200 {
		t.Fatalf("warm-up: %d %v", code, err)
	}
	start := time.Now()
	if code, _, err := post(); code != 200 {
		t.Fatalf("%d %v", code, err)
	}
	one := time.Since(start)

	type result struct {
		code int
		err  error
	}
	results := make(chan result, 10)
	for range 10 {
		go func() {
			code, _, err := post()
			results <- result{code, err}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, base, "mlserve_requests_admitted") < 10 {
		if time.Now().After(deadline) {
			t.Fatal("the 10 requests never got in")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sigterm := time.Now()
	// Readiness says when the drain has begun.
	for {
		resp, err := http.Get(base + "/health/ready")
		if err != nil {
			t.Fatalf("/health/ready: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode == 503 {
			break
		}
		if time.Since(sigterm) > 5*time.Second {
			t.Fatal("/health/ready still ready 5 s after SIGTERM")
		}
		time.Sleep(2 * time.Millisecond)
	}

	// During the drain: /ping answers, /predict is refused at once.
	pings := 0
	refused := false
	for {
		resp, err := http.Get(base + "/ping")
		if err != nil {
			break // the listener has closed
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("/ping during the drain: %d", resp.StatusCode)
		}
		pings++
		if !refused {
			s := time.Now()
			code, h, err := post()
			if err != nil || code != 503 || h.Get("Retry-After") == "" {
				t.Errorf("a new /predict during the drain: %d %v, Retry-After %q", code, err, h.Get("Retry-After"))
			}
			if d := time.Since(s); d > one {
				t.Errorf("the refusal took %v", d)
			}
			refused = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	codes := map[int]int{}
	for range 10 {
		r := <-results
		if r.err != nil {
			t.Errorf("a request in flight at SIGTERM: %v", r.err)
			continue
		}
		codes[r.code]++
		if r.code != 200 && r.code != 503 {
			t.Errorf("a request in flight at SIGTERM: status %d", r.code)
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the process did not exit")
	}
	t.Logf("SIGTERM with 10 in flight (one takes %v alone): %v, %d pings answered during the drain, exit 0 after %v",
		one.Round(time.Millisecond), codes, pings, time.Since(sigterm).Round(time.Millisecond))
	if pings == 0 {
		t.Error("/ping never answered during the drain")
	}
}

// TestServeFewFileDescriptors: `mlserve serve` with `ulimit -n 256` and
// 300 idle clients stays up (its connection cap fits the limit, and
// accept backs off if the descriptors run out anyway), and /ping answers
// once they leave.
func TestServeFewFileDescriptors(t *testing.T) {
	base, _, exited := startServeChild(t,
		childNoFile+"=256", "MACHINE_LEARNING_CACHE_FOLDER="+t.TempDir(), "HF_HUB_OFFLINE=true",
		"MLSERVE_PROVIDERS=CPU", "MLSERVE_ORT_LIBRARY="+testenv.ORTLibrary(t), "IMMICH_LOG_LEVEL=error",
		"MLSERVE_DATABASE_URL=", "MLSERVE_HTTP_READ_TIMEOUT_S=60")
	addr := strings.TrimPrefix(base, "http://")
	var conns []net.Conn
	for range 300 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	select {
	case err := <-exited:
		t.Fatalf("serve exited with 300 idle clients: %v", err)
	case <-time.After(2 * time.Second):
	}
	for _, c := range conns {
		c.Close()
	}
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(base + "/ping")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ping never answered after the clients left: %v", err)
		}
		select {
		case err := <-exited:
			t.Fatalf("serve exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type searchResult struct {
	Results []struct {
		AssetID  string
		Path     string
		Distance float64
	}
}

func getSearch(t *testing.T, base, q, key string) (int, searchResult, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/search?limit=3&q="+url.QueryEscape(q), nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r searchResult
	if err := json.Unmarshal(b, &r); err != nil && resp.StatusCode == http.StatusOK {
		t.Fatalf("GET /search: %v: %s", err, b)
	}
	return resp.StatusCode, r, string(b)
}

// TestServeSearch indexes a folder with `mlserve index`, then starts
// `mlserve serve` with the database and searches over HTTP, by text and by
// example image (the example's own file comes first, at distance 0).
// Without the API key the paths are relative to the library's root; with
// it they are absolute; a wrong key is refused.
func TestServeSearch(t *testing.T) {
	cliEnv(t, "")
	schema := cliSchema(t)
	dir, photos := cliPhotos(t, 5)
	runCLI(t, "index", "--schema", schema, "--batch", "4", dir)
	t.Setenv("MLSERVE_SEARCH_SCHEMA", schema)
	base, stop := serveInProcess(t)

	// The database connects in the background.
	deadline := time.Now().Add(30 * time.Second)
	var r searchResult
	for {
		code, res, body := getSearch(t, base, "a dog on the beach", "")
		if code == 200 {
			r = res
			break
		}
		if code != 503 || time.Now().After(deadline) {
			t.Fatalf("GET /search: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(r.Results) != 3 {
		t.Fatalf("text search: %+v", r)
	}
	for _, h := range r.Results {
		if h.AssetID == "" || strings.HasPrefix(h.Path, "/") || !strings.HasPrefix(h.Path, "photo") {
			t.Fatalf("a caller without the key sees %+v; want the path relative to %s", h, dir)
		}
	}
	img, _ := os.ReadFile(photos[3])
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	p, _ := w.CreateFormFile("image", "blob")
	_, _ = p.Write(img)
	_ = w.WriteField("limit", "2")
	w.Close()
	resp, err := http.Post(base+"/search", w.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("POST /search: %d %s", resp.StatusCode, b)
	}
	if resp.StatusCode != 200 || len(r.Results) != 2 || r.Results[0].Path != filepath.Base(photos[3]) || r.Results[0].Distance > 1e-4 {
		t.Fatalf("POST /search: %d %s", resp.StatusCode, b)
	}
	resp, _ = http.Get(base + "/search")
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("GET /search without q: %d", resp.StatusCode)
	}

	stop()
	t.Run("with an API key", func(t *testing.T) {
		t.Setenv("MLSERVE_API_KEY", "k3y-for-tests")
		base, _ := serveInProcess(t)
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, r, body := getSearch(t, base, "a dog", "k3y-for-tests")
			if code == 200 {
				if len(r.Results) != 3 || !strings.HasPrefix(r.Results[0].Path, dir+"/") {
					t.Fatalf("a caller with the key sees %s; want absolute paths", body)
				}
				break
			}
			if code != 503 || time.Now().After(deadline) {
				t.Fatalf("GET /search with the key: %d %s", code, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code, _, body := getSearch(t, base, "a dog", ""); code != 401 || !strings.Contains(body, "MLSERVE_API_KEY") {
			t.Fatalf("without the key: %d %s", code, body)
		}
		if code, _, _ := getSearch(t, base, "a dog", "wrong"); code != 401 {
			t.Fatalf("with a wrong key: %d", code)
		}
	})
}

// TestServeWithoutDatabase: a database that is down at start leaves /,
// /ping and /predict serving; /search answers 503 with the reason, and
// works once the database is back. A malformed URL is a start-up error.
func TestServeWithoutDatabase(t *testing.T) {
	cliEnv(t, "")
	schema := cliSchema(t)
	dir, _ := cliPhotos(t, 2)
	runCLI(t, "index", "--schema", schema, dir)
	t.Setenv("MLSERVE_SEARCH_SCHEMA", schema)

	// The database's address goes through a proxy that is down at first.
	real, err := url.Parse(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxyPort := freePort(t)
	viaProxy := *real
	viaProxy.Host = "127.0.0.1:" + strconv.Itoa(proxyPort)
	t.Setenv("MLSERVE_DATABASE_URL", viaProxy.String())
	base, stop := serveInProcess(t)

	for _, path := range []string{"/", "/ping"} {
		resp, err := http.Get(base + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s with the database down: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
	_, photos := cliPhotos(t, 1)
	img, _ := os.ReadFile(photos[0])
	body, ct := predictForm(t, img)
	resp, err := http.Post(base+"/predict", ct, body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/predict with the database down: %v %v", resp, err)
	}
	resp.Body.Close()
	code, _, msg := getSearch(t, base, "a dog", "")
	if code != 503 || !strings.Contains(msg, "unavailable") {
		t.Fatalf("/search with the database down: %d %s", code, msg)
	}
	// The library routes say the same; the page opens and shows it.
	for _, path := range []string{"/people", "/people/1/assets", "/thumbs/1", "/faces/1/crop", "/search?ocr=x"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.Contains(string(b), "unavailable") || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s with the database down: %d %s", path, resp.StatusCode, b)
		}
	}
	if resp, err := http.Get(base + "/ui/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/ui/ with the database down: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if strings.Contains(msg, real.User.String()) && real.User.String() != "" {
		if p, ok := real.User.Password(); ok && strings.Contains(msg, p) {
			t.Fatalf("the 503 reveals the password: %s", msg)
		}
	}

	// The database comes back.
	ln, err := net.Listen("tcp", viaProxy.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				up, err := net.Dial("tcp", real.Host)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c); up.Close() }()
				_, _ = io.Copy(c, up)
			})
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, r, msg := getSearch(t, base, "a dog", "")
		if code == 200 {
			if len(r.Results) != 2 {
				t.Fatalf("search after the database came back: %s", msg)
			}
			break
		}
		if code != 503 || time.Now().After(deadline) {
			t.Fatalf("/search after the database came back: %d %s", code, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop()

	t.Run("malformed URL", func(t *testing.T) {
		// A configuration error: serve does not start (exit 2).
		t.Setenv("MLSERVE_DATABASE_URL", "postgres://x:y@[::1/db")
		var out, errb bytes.Buffer
		if code := run([]string{"serve"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "MLSERVE_DATABASE_URL") {
			t.Fatalf("serve: exit %d\n%s", code, errb.String())
		}
		if strings.Contains(errb.String(), ":y@") {
			t.Fatalf("the error reveals the password: %s", errb.String())
		}
	})
}
