package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/mlserve/mlserve/models/hubtest"
)

// TestProgressBarInTerminal runs `models pull` in a pseudo-terminal: the
// bar is redrawn in place (cursor movements, not one line per update),
// shows bytes, rate and ETA, and log lines (-v) print above it.
func TestProgressBarInTerminal(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	src := filepath.Join(cliCache(t), "clip", "ViT-B-32__openai")
	if _, err := hub.AddRepoDir("immich-app/ViT-B-32__openai", "main", src); err != nil {
		t.Fatal(err)
	}
	visual, err := os.ReadFile(filepath.Join(src, "visual", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	// The image tower's download pauses half-way for a while: the bar is
	// drawn several times meanwhile.
	hub.Fail(hubtest.CDNKey("immich-app/ViT-B-32__openai", "visual/model.onnx"),
		hubtest.Fault{Times: 1, Stall: 1500 * time.Millisecond, StallAt: len(visual) / 2})
	cache := t.TempDir()
	text := runInTerminal(t, userEnv("MACHINE_LEARNING_CACHE_FOLDER="+cache, "HF_ENDPOINT="+hub.URL(), "IMMICH_LOG_LEVEL=", "HF_HUB_OFFLINE=", "TERM=xterm"),
		"models", "pull", "-v", "ViT-B-32__openai")
	// mpb redraws by moving the cursor up and erasing ("\x1b[<n>A\x1b[J").
	redraws := strings.Count(text, "\x1b[1A\x1b[J")
	if redraws < 3 {
		t.Fatalf("the bar was not redrawn in place (%d redraws):\n%q", redraws, text)
	}
	// Lines left on the screen: those the next frame does not erase (the
	// log lines, the last frame, the result).
	if kept := strings.Count(text, "\n") - strings.Count(text, "\n\x1b[1A\x1b[J"); kept > 5 {
		t.Errorf("%d lines left on the screen:\n%q", kept, text)
	}
	for _, want := range []string{"iB/", "iB/s", "ETA", "(100%)", "downloaded model", filepath.Join(cache, "clip", "ViT-B-32__openai")} {
		if !strings.Contains(text, want) {
			t.Errorf("the terminal shows no %q:\n%q", want, text)
		}
	}
}

// TestIndexBarInTerminal: `index` on a terminal draws one bar with the
// count, then prints its summary.
func TestIndexBarInTerminal(t *testing.T) {
	cliEnv(t, "")
	t.Setenv("MACHINE_LEARNING_CACHE_FOLDER", slowCache(t)) // a few hundred ms per image: the bar is drawn meanwhile
	schema := cliSchema(t)
	dir, _ := cliPhotos(t, 4)
	text := runInTerminal(t, userEnv("IMMICH_LOG_LEVEL=", "TERM=xterm"), "index", dir, "--schema", schema, "--batch", "1")
	if strings.Count(text, "\x1b[1A\x1b[J") < 2 || !regexp.MustCompile(`indexing +\[`).MatchString(text) {
		t.Fatalf("no bar redrawn in place:\n%q", text)
	}
	if !strings.Contains(text, "/4 (") || !strings.Contains(text, "4/4 (100%)") || !strings.Contains(text, "indexed 4 of 4 images (0 failed)") {
		t.Fatalf("index on a terminal:\n%q", text)
	}
	// Lines left on the screen: those the next frame does not erase.
	if kept := strings.Count(text, "\n") - strings.Count(text, "\n\x1b[1A\x1b[J"); kept > 4 {
		t.Errorf("%d lines left on the screen:\n%q", kept, text)
	}
	// The summary comes after the bar's last frame, not under it.
	if last, sum := strings.LastIndex(text, "4/4 (100%)"), strings.Index(text, "indexed 4 of 4"); sum < last {
		t.Errorf("the summary was printed before the bar ended:\n%q", text)
	}
}

// runInTerminal runs the binary with a pseudo-terminal as its standard
// input, output and error, and returns all it wrote.
func runInTerminal(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(builtBinary(t), args...)
	cmd.Env = env
	cmd.Dir = t.TempDir()
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out bytes.Buffer
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(&out, tty)
		copied <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("mlserve %v: %v\n%q", args, err, out.String())
		}
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		t.Fatalf("mlserve %v did not end\n%q", args, out.String())
	}
	// The output ends with EIO once the child closed the terminal.
	if err := <-copied; err != nil && !errors.Is(err, syscall.EIO) {
		t.Fatal(err)
	}
	return out.String()
}
