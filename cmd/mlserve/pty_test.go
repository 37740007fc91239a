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

	cmd := exec.Command(builtBinary(t), "models", "pull", "-v", "ViT-B-32__openai")
	cmd.Env = userEnv("MACHINE_LEARNING_CACHE_FOLDER="+cache, "HF_ENDPOINT="+hub.URL(), "IMMICH_LOG_LEVEL=", "HF_HUB_OFFLINE=", "TERM=xterm")
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
			t.Fatalf("models pull: %v\n%q", err, out.String())
		}
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		t.Fatalf("models pull did not end\n%q", out.String())
	}
	// The output ends with EIO once the child closed the terminal.
	if err := <-copied; err != nil && !errors.Is(err, syscall.EIO) {
		t.Fatal(err)
	}
	text := out.String()
	// mpb redraws by moving the cursor up and erasing ("\x1b[<n>A\x1b[J").
	redraws := strings.Count(text, "\x1b[1A\x1b[J")
	if redraws < 3 {
		t.Fatalf("the bar was not redrawn in place (%d redraws):\n%q", redraws, text)
	}
	bars := len(regexp.MustCompile(`downloading +\[`).FindAllString(text, -1))
	if lines := strings.Count(text, "\n"); lines >= bars+6 {
		t.Errorf("%d lines for %d draws of the bar: not in place\n%q", lines, bars, text)
	}
	for _, want := range []string{"iB/", "iB/s", "ETA", "(100%)", "downloaded model", filepath.Join(cache, "clip", "ViT-B-32__openai")} {
		if !strings.Contains(text, want) {
			t.Errorf("the terminal shows no %q:\n%q", want, text)
		}
	}
}
