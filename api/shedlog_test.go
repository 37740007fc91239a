package api

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestShedLogSummarises: a burst of refusals makes one line at once and
// one summary with the count once the interval has passed, not a line per
// refusal.
func TestShedLogSummarises(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	h := slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil)
	l := newShedLog(slog.New(h))
	l.every = 50 * time.Millisecond
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				l.note("server busy: request queue is full")
			}
		})
	}
	wg.Wait()
	mu.Lock()
	lines := strings.Count(buf.String(), "\n")
	mu.Unlock()
	if lines != 1 {
		t.Fatalf("800 refusals in a burst logged %d lines, want 1:\n%s", lines, buf.String())
	}
	time.Sleep(60 * time.Millisecond)
	l.note("server busy: request queue is full")
	mu.Lock()
	defer mu.Unlock()
	out := buf.String()
	if n := strings.Count(out, "\n"); n != 2 || !strings.Contains(out, "refused=800") || !strings.Contains(out, "level=WARN") {
		t.Fatalf("after the interval, want a second line counting the 799 held back and this one (refused=800):\n%s", out)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
