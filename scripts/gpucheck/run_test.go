package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mlserve/mlserve/internal/testenv"
)

// TestCheckOnCPU builds mlserve, checks its shared libraries against the
// budget (scripts/check-libs.sh: at most 30, 60 MB) and runs the whole GPU
// check on CPU with small graphs, as `scripts/gpu-check.sh --dry-run` does:
// two real servers, the fixed requests, cosine of CPU against CPU, and
// `mlserve bench` at concurrency 1, 8 and 32. Only the GPU itself (CUDA,
// nvidia-smi, the forced out-of-memory) is not exercised here.
func TestCheckOnCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("builds mlserve and starts two servers")
	}
	ort := testenv.ORTLibrary(t)
	merges := testenv.TestData(t, "clip/bpe_simple_vocab_16e6.txt")
	dir := t.TempDir()
	bin := filepath.Join(dir, "mlserve")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./cmd/mlserve")...)
	build.Dir = testenv.Root()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	libs := exec.Command(filepath.Join(testenv.Root(), "scripts", "check-libs.sh"), bin)
	out, err := libs.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("the binary is over its shared-library budget: %v", err)
	}

	tok := filepath.Join(dir, "tokenizer")
	if err := writeTokenizer(merges, tok); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MLSERVE_ORT_LIBRARY", ort)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	o := checkOptions{
		MLServe: bin, Models: filepath.Join(dir, "models"), Tokenizer: tok, Out: filepath.Join(dir, "summary.json"),
		LogDir: dir, BenchFor: time.Second, Port: freePortPair(t), Budget: 4 * time.Minute, Python: "python3",
	}
	s, err := check(ctx, o, testWriter{t})
	if err != nil {
		for _, l := range []string{"mlserve-cpu.log", "mlserve-device.log"} {
			t.Logf("%s:\n%s", l, tail(filepath.Join(dir, l), 3000))
		}
		t.Fatal(err)
	}
	if !s.Passed || len(s.Failed) > 0 {
		t.Fatalf("check failed: %v", s.Failed)
	}
	for _, name := range []string{"clip_visual", "clip_textual", "faces_recognition"} {
		c, ok := s.Cosine[name]
		if !ok || c.N == 0 || c.Min < 0.999999 {
			t.Errorf("%s: %+v; CPU against CPU must agree", name, c)
		}
	}
	if n := s.Cosine["faces_recognition"].N; n < 3 {
		t.Errorf("only %d faces compared; the detector should find the bright squares", n)
	}
	for _, task := range []string{"clip-visual", "faces"} {
		if len(s.Bench[task]) != 3 {
			t.Errorf("%s: %d bench runs, want 3 (concurrency 1, 8, 32)", task, len(s.Bench[task]))
		}
		for _, b := range s.Bench[task] {
			if b.RPS <= 0 || b.P50ms <= 0 || b.P99ms < b.P50ms {
				t.Errorf("%s: implausible bench result %+v", task, b)
			}
		}
	}
	for task, p := range s.Providers {
		if p == "" {
			t.Errorf("%s: no X-Mlserve-Provider header", task)
		}
	}
	if s.VRAM != nil {
		t.Error("GPU memory was read on a CPU run")
	}
}

// freePortPair finds two consecutive free loopback ports.
func freePortPair(t *testing.T) int {
	for i := 0; i < 20; i++ {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l1.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no two consecutive free ports")
	return 0
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}
