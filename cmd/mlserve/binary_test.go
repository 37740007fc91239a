package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/models/hubtest"
)

// The tests in this file drive the built binary as a user would, from a
// layout like a clean clone after `make build`: <repo>/bin/mlserve with
// <repo>/.deps/onnxruntime beside it, and no MLSERVE_ORT_LIBRARY.

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
	binaryRoot string // removed by TestMain
)

// builtBinary builds cmd/mlserve once into <tmp>/repo/bin/mlserve, with
// <tmp>/repo/.deps/onnxruntime linking to the test's ONNX Runtime.
func builtBinary(t *testing.T) string {
	t.Helper()
	lib := testenv.ORTLibrary(t)
	binaryOnce.Do(func() {
		binaryRoot, binaryErr = os.MkdirTemp("", "mlserve-bin-")
		if binaryErr != nil {
			return
		}
		repo := filepath.Join(binaryRoot, "repo")
		deps := filepath.Join(repo, ".deps", "onnxruntime")
		if binaryErr = os.MkdirAll(deps, 0o755); binaryErr != nil {
			return
		}
		abs, err := filepath.Abs(lib)
		if err != nil {
			binaryErr = err
			return
		}
		if binaryErr = os.Symlink(abs, filepath.Join(deps, "libonnxruntime.so.1")); binaryErr != nil {
			return
		}
		binaryPath = filepath.Join(repo, "bin", "mlserve")
		cmd := exec.Command("go", "build", "-ldflags", "-X github.com/mlserve/mlserve/config.Version=test-build", "-o", binaryPath, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binaryErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// userEnv is the environment of a user's shell: the test's environment
// without MLSERVE_ORT_LIBRARY (nor the child switch), plus kv.
func userEnv(kv ...string) []string {
	var env []string
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "MLSERVE_ORT_LIBRARY=") || strings.HasPrefix(e, childEnv+"=") {
			continue
		}
		env = append(env, e)
	}
	return append(env, kv...)
}

// binResult is one run of the binary.
type binResult struct {
	code           int
	stdout, stderr string
}

// runBinary runs the binary to its end (bounded by a minute).
func runBinary(t *testing.T, env []string, args ...string) binResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, builtBinary(t), args...)
	cmd.Env = env
	cmd.Dir = t.TempDir() // not the repository: the binary finds its .deps itself
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := binResult{stdout: out.String(), stderr: errb.String()}
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("mlserve %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// must fails the test unless the run exited 0.
func (r binResult) must(t *testing.T, what string) binResult {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", what, r.code, r.stdout, r.stderr)
	}
	return r
}

// TestBinaryIndexAndSearch: index and search as the README shows them,
// without MLSERVE_ORT_LIBRARY; flags after the positional arguments are
// flags; a one-shot command prints only its binResult.
func TestBinaryIndexAndSearch(t *testing.T) {
	cliEnv(t, "")
	schema := cliSchema(t)
	dir, photos := cliPhotos(t, 6)
	env := userEnv("IMMICH_LOG_LEVEL=") // unset: one-shot commands log only warnings

	r := runBinary(t, env, "index", dir, "--schema", schema, "--batch", "4").must(t, "index")
	if !strings.Contains(r.stdout, "indexed 6 of 6 images (0 failed)") {
		t.Fatalf("index output:\n%s", r.stdout)
	}
	if strings.Contains(r.stderr, "level=INFO") {
		t.Errorf("index logged info lines without -v:\n%s", r.stderr)
	}

	r = runBinary(t, env, "search", "a dog", "--limit", "2", "--schema", schema, "--json").must(t, "search")
	var hits []struct{ Path string }
	if err := json.Unmarshal([]byte(r.stdout), &hits); err != nil || len(hits) != 2 {
		t.Fatalf("search \"a dog\" --limit 2: %v\n%s", err, r.stdout)
	}
	if r.stderr != "" {
		t.Errorf("search printed more than its binResult:\n%s", r.stderr)
	}
	r = runBinary(t, env, "search", "--image", photos[3], "-n", "1", "--schema", schema).must(t, "search --image")
	if !strings.Contains(r.stdout, photos[3]) || strings.Count(r.stdout, "\n") != 2 {
		t.Fatalf("search --image, table:\n%s", r.stdout)
	}

	// -v shows the log.
	r = runBinary(t, env, "search", "-v", "sunset", "--schema", schema).must(t, "search -v")
	if !strings.Contains(r.stderr, "level=INFO") {
		t.Errorf("search -v logged no info line:\n%s", r.stderr)
	}
}

// TestBinaryUsage: help exits 0 and does nothing else (serve -h listens
// on nothing); bad flags and arguments exit 2; a missing library is
// explained.
func TestBinaryUsage(t *testing.T) {
	port := freePort(t)
	env := userEnv("IMMICH_HOST=127.0.0.1", "IMMICH_PORT="+strconv.Itoa(port), "MACHINE_LEARNING_CACHE_FOLDER="+t.TempDir())
	for _, args := range [][]string{{"serve", "-h"}, {"serve", "--help"}, {"index", "-h"}, {"bench", "-h"},
		{"models", "pull", "-h"}, {"help", "serve"}, {"-h"}} {
		done := make(chan binResult, 1)
		go func() { done <- runBinary(t, env, args...) }()
		// While it runs (it should not), nothing listens on the port.
		time.Sleep(100 * time.Millisecond)
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			t.Fatalf("%v: something listens on the port", args)
		}
		r := <-done
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Fatalf("%v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
	}
	for _, args := range [][]string{{"serve", "--bogus"}, {"search", "x", "--limit", "many"}, {"index", "--faces"},
		{"frobnicate"}, {}, {"models"}, {"serve", "extra"}, {"search", "-limit", "2", "x"}, {"version", "x"}} {
		r := runBinary(t, env, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "mlserve") {
			t.Errorf("%v: exit %d, want 2\n%s", args, r.code, r.stderr)
		}
	}
	// A configuration error is exit 2 too, and names the variable.
	r := runBinary(t, append(env, "MACHINE_LEARNING_MODEL_TTL=-1", "MLSERVE_PROVIDERS=CPU"), "serve")
	if r.code != 2 || !strings.Contains(r.stderr, "MACHINE_LEARNING_MODEL_TTL") {
		t.Errorf("negative TTL: exit %d\n%s", r.code, r.stderr)
	}
	r = runBinary(t, append(env, "MACHINE_LEARNING_PRELOAD__CLIP__VISUAL=ViT-Q-99__nobody", "MLSERVE_PROVIDERS=CPU"), "serve")
	if r.code != 2 || !strings.Contains(r.stderr, "MACHINE_LEARNING_PRELOAD__CLIP__VISUAL") || !strings.Contains(r.stderr, "unknown model") {
		t.Errorf("unknown preload: exit %d\n%s", r.code, r.stderr)
	}
	notDir := filepath.Join(t.TempDir(), "file")
	_ = os.WriteFile(notDir, nil, 0o644)
	r = runBinary(t, append(env, "MACHINE_LEARNING_CACHE_FOLDER="+notDir, "MLSERVE_PROVIDERS=CPU"), "serve")
	if r.code != 2 || !strings.Contains(r.stderr, "MACHINE_LEARNING_CACHE_FOLDER") {
		t.Errorf("unusable cache folder: exit %d\n%s", r.code, r.stderr)
	}
	r = runBinary(t, append(env, "MACHINE_LEARNING_MODEL_TTLL=5", "MLSERVE_PROVIDERS=CPU"), "models", "list")
	if r.code != 0 || !strings.Contains(r.stderr, "did you mean MACHINE_LEARNING_MODEL_TTL?") {
		t.Errorf("typo in a name: exit %d\n%s", r.code, r.stderr)
	}

	// A library that is nowhere: the error says what to do.
	r = runBinary(t, append(env, "MLSERVE_ORT_LIBRARY=/nonexistent/libonnxruntime.so.1", "MLSERVE_PROVIDERS=CPU"), "serve")
	if r.code != 1 || !strings.Contains(r.stderr, "MLSERVE_ORT_LIBRARY") || !strings.Contains(r.stderr, "make setup") {
		t.Errorf("missing library: exit %d\n%s", r.code, r.stderr)
	}

	r = runBinary(t, env, "completion", "bash").must(t, "completion bash")
	if !strings.Contains(r.stdout, "bash completion") {
		t.Errorf("completion bash:\n%.300s", r.stdout)
	}
	r = runBinary(t, env, "__complete", "models", "pull", "ViT-B-32__o").must(t, "__complete")
	if !strings.Contains(r.stdout, "ViT-B-32__openai") {
		t.Errorf("model name completion:\n%s", r.stdout)
	}
	r = runBinary(t, env, "version").must(t, "version")
	if r.stdout != "mlserve test-build\n" {
		t.Errorf("version: %q", r.stdout)
	}
}

// TestBinaryPullServePs: `models pull` fills Immich's layout from a fake
// hub (HF_ENDPOINT), `serve` with HF_HUB_OFFLINE=1 answers from it, `ps`
// shows what it loaded; `models list/verify/rm` see and check it.
func TestBinaryPullServePs(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	if _, err := hub.AddRepoDir("immich-app/ViT-B-32__openai", "main", filepath.Join(cliCache(t), "clip", "ViT-B-32__openai")); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	env := userEnv("MACHINE_LEARNING_CACHE_FOLDER="+cache, "HF_ENDPOINT="+hub.URL(), "MLSERVE_PROVIDERS=CPU",
		"IMMICH_LOG_LEVEL=", "HF_HUB_OFFLINE=", "MLSERVE_DATABASE_URL=", "MLSERVE_REDIS_URL=")

	r := runBinary(t, env, "models", "pull", "ViT-B-32__openai").must(t, "models pull")
	dir := filepath.Join(cache, "clip", "ViT-B-32__openai")
	if !strings.Contains(r.stdout, dir) {
		t.Fatalf("pull output:\n%s", r.stdout)
	}
	// Not a terminal: plain lines, no escape sequences.
	if strings.ContainsAny(r.stderr, "\r\x1b") {
		t.Errorf("pull drew a bar on a pipe:\n%q", r.stderr)
	}
	for _, f := range []string{"config.json", "visual/model.onnx", "visual/preprocess_cfg.json", "textual/model.onnx", "textual/tokenizer.json", ".mlserve-manifest.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the cache lacks %s: %v", f, err)
		}
	}

	r = runBinary(t, env, "models", "list").must(t, "models list")
	if !strings.Contains(r.stdout, "ViT-B-32__openai") || !strings.Contains(r.stdout, "textual,visual") || !strings.Contains(r.stdout, "yes") {
		t.Fatalf("models list:\n%s", r.stdout)
	}
	r = runBinary(t, env, "models", "verify").must(t, "models verify")
	if !strings.Contains(r.stdout, "clip/ViT-B-32__openai: ok") {
		t.Fatalf("models verify:\n%s", r.stdout)
	}

	// serve offline from what pull fetched; ps shows the loaded model.
	port := freePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	serveEnv := append(env, "HF_HUB_OFFLINE=1", "HF_ENDPOINT=http://127.0.0.1:1", "IMMICH_LOG_LEVEL=debug", "MLSERVE_LOG_FORMAT=json")
	cmd := exec.Command(builtBinary(t), "serve", "--port", strconv.Itoa(port), "--host", "127.0.0.1")
	cmd.Env = append(serveEnv, "IMMICH_PORT=1") // the flag wins
	cmd.Dir = t.TempDir()
	var serveLog syncWriter
	cmd.Stdout, cmd.Stderr = &serveLog, &serveLog
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
			t.Logf("serve's log:\n%s", serveLog.String())
		}
	})
	waitPing(t, base, exited)
	_, photos := cliPhotos(t, 1)
	img, _ := os.ReadFile(photos[0])
	body, ct := predictForm(t, img)
	resp, err := http.Post(base+"/predict", ct, body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"clip"`) {
		t.Fatalf("/predict offline: %d %s", resp.StatusCode, b)
	}

	r = runBinary(t, env, "ps", "--url", base).must(t, "ps")
	if !strings.Contains(r.stdout, "mlserve test-build, ready") || !strings.Contains(r.stdout, "ViT-B-32__openai") ||
		!strings.Contains(r.stdout, "visual") || !strings.Contains(r.stdout, "CPU") || !strings.Contains(r.stdout, "resident") {
		t.Fatalf("ps:\n%s", r.stdout)
	}
	r = runBinary(t, env, "ps", "--url", base, "--json").must(t, "ps --json")
	var st psStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Models) != 1 || st.Models[0].Provider != "CPU" || st.Models[0].Device != "CPU" || st.RSSBytes <= 0 {
		t.Fatalf("ps --json: %v\n%s", err, r.stdout)
	}
	if r := runBinary(t, env, "ps", "--url", "http://127.0.0.1:1"); r.code != 1 || !strings.Contains(r.stderr, "no mlserve answers") {
		t.Fatalf("ps without a server: exit %d\n%s", r.code, r.stderr)
	}

	// Metrics: the build, the loaded model where it runs.
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`mlserve_build_info{goversion="`, `version="test-build"`,
		`mlserve_model_loaded{device="CPU",model="ViT-B-32__openai",provider="CPU",task="clip",type="visual"} 1`,
		"mlserve_model_download_bytes_total 0"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("serve after SIGINT: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop on SIGINT")
	}
	// JSON lines, the banner, the access log at debug.
	var banner, access bool
	for _, line := range strings.Split(strings.TrimSpace(serveLog.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a log line is not JSON: %q", line)
		}
		msg, _ := rec["msg"].(string)
		banner = banner || strings.HasPrefix(msg, "mlserve test-build listening on 127.0.0.1:"+strconv.Itoa(port))
		access = access || msg == "request" && rec["path"] == "/predict" && rec["status"] == float64(200)
	}
	if !banner || !access {
		t.Errorf("banner %v, access log %v:\n%s", banner, access, serveLog.String())
	}

	// Damage a file: verify fails (exit 1) and names it; rm removes the
	// model; verify of a model not there fails too.
	_ = os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o644)
	r = runBinary(t, env, "models", "verify", "ViT-B-32__openai")
	if r.code != 1 || !strings.Contains(r.stdout, "config.json: size 2, want") {
		t.Fatalf("verify a damaged model: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runBinary(t, env, "models", "rm", "ViT-B-32__openai").must(t, "models rm")
	if _, err := os.Stat(dir); !os.IsNotExist(err) || !strings.Contains(r.stdout, "removed "+dir) {
		t.Fatalf("rm: %v\n%s", err, r.stdout)
	}
	if r := runBinary(t, env, "models", "rm", "ViT-B-32__openai"); r.code != 1 || !strings.Contains(r.stderr, "not in the cache") {
		t.Fatalf("second rm: exit %d\n%s", r.code, r.stderr)
	}
	if r := runBinary(t, env, "models", "pull", "ViT-Q-99__nobody"); r.code != 2 {
		t.Fatalf("pull an unknown name: exit %d\n%s", r.code, r.stderr)
	}
}
