package api_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mlserve/mlserve/api"
	"go.uber.org/goleak"
)

// Some tests run a server in a child process: this test binary, started
// again with childEnv set to the child's kind.
const childEnv = "MLSERVE_API_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		goleak.VerifyTestMain(m,
			// fasthttp refreshes its Date header on a goroutine that runs
			// for the life of the process, from the first server started.
			goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
			// After a shutdown, fasthttp's idle-worker cleaner notices the
			// stop only when its sleep of MaxIdleWorkerDuration (10 s) ends.
			// A server left running still shows: its accept loop stays.
			goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		)
	case "emfile":
		os.Exit(emfileChild())
	default:
		fmt.Fprintln(os.Stderr, "unknown child", os.Getenv(childEnv))
		os.Exit(3)
	}
}

// emfileChild serves with a file descriptor limit of 64 and no connection
// cap, so that idle clients make accept fail with EMFILE. It prints its
// port, then serves until SIGTERM.
func emfileChild() int {
	lim := syscall.Rlimit{Cur: 64, Max: 64}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		return 3
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := api.New(api.Options{MaxConns: -1, ReadTimeout: time.Minute}, logger)
	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := srv.Serve(ctx, ln); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	return 0
}

// startChild starts this test binary as a child of the given kind and
// returns it with the port it printed.
func startChild(t *testing.T, kind string) (*exec.Cmd, <-chan error, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+kind)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("child: %v", err)
	}
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Logf("child: %v", err)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	port, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "port ")))
	if err != nil {
		t.Fatalf("child said %q", line)
	}
	return cmd, exited, port
}

// TestAcceptOutOfFiles: with 64 file descriptors, 300 idle clients make
// accept fail with EMFILE. The server backs off instead of exiting, and
// once the clients leave, /ping answers again. (fasthttp alone treats
// EMFILE as a permanent error and stops serving.)
func TestAcceptOutOfFiles(t *testing.T) {
	_, exited, port := startChild(t, "emfile")
	addr := "127.0.0.1:" + strconv.Itoa(port)
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
		t.Fatalf("the server exited with 300 idle clients: %v", err)
	case <-time.After(2 * time.Second):
	}
	for _, c := range conns {
		c.Close()
	}
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ping never answered after the clients left: %v", err)
		}
		select {
		case err := <-exited:
			t.Fatalf("the server exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var n float64
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "mlserve_http_accept_errors_total "); ok {
			n, _ = strconv.ParseFloat(v, 64)
		}
	}
	if n == 0 {
		t.Fatal("accept never failed: the test did not exhaust the file descriptors")
	}
	t.Logf("%v failed accepts (EMFILE) retried; the server kept serving", n)
}
