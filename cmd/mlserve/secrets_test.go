package main

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/models/hubtest"
)

const (
	secretDB    = "Db-Pa55word-x1"
	secretRedis = "r3dis-Pa55-x2"
	secretHF    = "hf_SecretTokenValue456"
)

func checkSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range []string{secretDB, secretRedis, secretHF} {
		if strings.Contains(s, secret) {
			t.Errorf("%s shows the secret %q:\n%s", what, secret, s)
		}
	}
}

// TestCommandsNeverPrintSecrets runs mlserve's commands with passwords in
// both URLs and HF_TOKEN, where connecting fails: the database is not
// there, or the Redis URL does not parse (go-redis's error quotes the whole
// URL). What the commands print, errors and log lines, must not show them.
func TestCommandsNeverPrintSecrets(t *testing.T) {
	cliEnv(t, "")
	closed := strconv.Itoa(freePort(t))
	t.Setenv("HF_TOKEN", secretHF)
	t.Setenv("IMMICH_LOG_LEVEL", "debug")

	// index: the database refuses the connection.
	t.Setenv("MLSERVE_DATABASE_URL", "postgres://immich:"+secretDB+"@127.0.0.1:"+closed+"/immich?sslmode=disable")
	t.Setenv("MLSERVE_REDIS_URL", "redis://default:"+secretRedis+"@127.0.0.1:"+closed+"/0")
	var out, errb bytes.Buffer
	dir, _ := cliPhotos(t, 1)
	if code := run([]string{"index", dir}, &out, &errb); code != 1 {
		t.Fatalf("index against a closed port: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "127.0.0.1:"+closed) {
		t.Fatalf("index did not report the failed connection:\n%s", errb.String())
	}
	checkSecrets(t, "index", out.String()+errb.String())

	// worker: the database is there, the Redis URL does not parse (a
	// configuration error: exit 2).
	t.Setenv("MLSERVE_DATABASE_URL", testenv.DatabaseURL(t))
	t.Setenv("MLSERVE_REDIS_URL", "redis://default:"+secretRedis+"@127.0.0.1:badport/0")
	out.Reset()
	errb.Reset()
	if code := run([]string{"worker", "--schema", cliSchema(t)}, &out, &errb); code != 2 {
		t.Fatalf("worker with a bad Redis URL: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "MLSERVE_REDIS_URL") || !strings.Contains(errb.String(), "xxxxx") {
		t.Fatalf("worker did not report the Redis URL, masked:\n%s", errb.String())
	}
	checkSecrets(t, "worker", out.String()+errb.String())

	// The commands that only need the database: it refuses.
	t.Setenv("MLSERVE_DATABASE_URL", "postgres://immich:"+secretDB+"@127.0.0.1:"+closed+"/immich?sslmode=disable")
	t.Setenv("MLSERVE_REDIS_URL", "redis://default:"+secretRedis+"@127.0.0.1:"+closed+"/0")
	for _, args := range [][]string{{"people", "list"}, {"search", "--ocr", "invoice"}, {"people", "cluster", "-vv"}} {
		out.Reset()
		errb.Reset()
		if code := run(args, &out, &errb); code != 1 || !strings.Contains(errb.String(), "127.0.0.1:"+closed) {
			t.Fatalf("%v: exit %d\n%s", args, code, errb.String())
		}
		checkSecrets(t, strings.Join(args, " "), out.String()+errb.String())
	}

	// models pull from a hub that wants the token, with every log line.
	hub := hubtest.New(t, hubtest.Options{Token: secretHF})
	hub.AddRepo("immich-app/buffalo_s", map[string][]byte{"detection/model.onnx": []byte("d"), "recognition/model.onnx": []byte("r")})
	t.Setenv("HF_ENDPOINT", hub.URL())
	t.Setenv("HF_HUB_OFFLINE", "")
	t.Setenv("MACHINE_LEARNING_CACHE_FOLDER", t.TempDir())
	out.Reset()
	errb.Reset()
	if code := run([]string{"models", "pull", "-vv", "buffalo_s", "buffalo_l"}, &out, &errb); code != 1 ||
		!strings.Contains(out.String(), "buffalo_s") || !strings.Contains(errb.String(), "buffalo_l") {
		t.Fatalf("models pull: exit %d\n%s%s", code, out.String(), errb.String())
	}
	checkSecrets(t, "models pull", out.String()+errb.String())

	// serve: the start-up line lists the configuration; /search's database
	// is not there. Stopped with SIGINT once it answers.
	port := freePort(t)
	t.Setenv("IMMICH_HOST", "127.0.0.1")
	t.Setenv("IMMICH_PORT", strconv.Itoa(port))
	t.Setenv("MLSERVE_DATABASE_URL", "postgres://immich:"+secretDB+"@127.0.0.1:"+closed+"/immich?sslmode=disable")
	t.Setenv("MLSERVE_REDIS_URL", "redis://default:"+secretRedis+"@127.0.0.1:"+closed+"/0")
	var serveOut, serveErr syncWriter
	done := make(chan int, 1)
	go func() { done <- run([]string{"serve"}, &serveOut, &serveErr) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/ping")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited with %d:\n%s", code, serveErr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not answer /ping:\n%s", serveErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// run's signal.NotifyContext catches it: the test process lives on.
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not stop on SIGINT")
	}
	logs := serveErr.String()
	if !strings.Contains(logs, "MLSERVE_DATABASE_URL") || !strings.Contains(logs, "immich:xxxxx@127.0.0.1") {
		t.Fatalf("the start-up line does not show the masked database URL:\n%s", logs)
	}
	checkSecrets(t, "serve", serveOut.String()+logs)
}

// syncWriter is a buffer that run's goroutines may write while the test
// reads it.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
