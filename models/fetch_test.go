package models

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestRetryable(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	bg := context.Background()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"5xx", bg, &statusError{Code: 503}, true},
		{"429", bg, &statusError{Code: 429}, true},
		{"408", bg, &statusError{Code: 408}, true},
		{"404", bg, &statusError{Code: 404}, false},
		{"401", bg, &statusError{Code: 401}, false},
		{"truncated", bg, fmt.Errorf("x: %w", errTruncated), true},
		{"stalled", bg, fmt.Errorf("x: %w", errStalled), true},
		{"unexpected EOF", bg, fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"connection reset", bg, &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{"disk full", bg, fmt.Errorf("write: %w", syscall.ENOSPC), false},
		{"quota", bg, fmt.Errorf("write: %w", syscall.EDQUOT), false},
		{"checksum", bg, fmt.Errorf("%w: x", ErrChecksum), false},
		{"caller canceled", canceled, &statusError{Code: 503}, false},
		{"context error", bg, context.Canceled, false},
		{"other", bg, errors.New("mkdir: permission denied"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryable(tt.ctx, tt.err); got != tt.want {
				t.Fatalf("retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestStatusErrorIsNotFound(t *testing.T) {
	for _, tt := range []struct {
		e    statusError
		want bool
	}{
		{statusError{Code: 404}, true},
		{statusError{Code: 404, ErrorCode: "EntryNotFound"}, true},
		{statusError{Code: 401, ErrorCode: "RepoNotFound"}, true},
		{statusError{Code: 401}, false},
		{statusError{Code: 403, ErrorCode: "GatedRepo"}, false},
		{statusError{Code: 500}, false},
	} {
		if got := errors.Is(&tt.e, ErrNotFound); got != tt.want {
			t.Errorf("%+v: Is(ErrNotFound) = %v", tt.e, got)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	s := &Store{minBackoff: 100 * time.Millisecond, maxBackoff: 2 * time.Second}
	for attempt := range 40 {
		d := s.backoff(attempt)
		ceil := min(s.minBackoff<<min(attempt, 30), s.maxBackoff)
		if d < ceil/2 || d > ceil {
			t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, ceil/2, ceil)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tt := range []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 100-199/200", 100, 199, 200, true},
		{"bytes 0-0/*", 0, 0, -1, true},
		{"bytes 5-4/10", 0, 0, 0, false},
		{"bytes */10", 0, 0, 0, false},
		{"items 1-2/3", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		s, e, tot, ok := parseContentRangeTotal(tt.in)
		if ok != tt.ok || ok && (s != tt.start || e != tt.end || tot != tt.total) {
			t.Errorf("%q: %d %d %d %v", tt.in, s, e, tot, ok)
		}
	}
}

func TestValidRepoPath(t *testing.T) {
	good := []string{"config.json", "visual/model.onnx", "visual/rknpu/rk3588/model.rknn", "textual/vocab.json", ".gitattributes"}
	bad := []string{"", "/abs", "../x", "a/../b", "a/./b", "./a", "a//b", "a/", `a\b`, "a\x00b", "C:x", "model.onnx.partial", "a/.."}
	for _, p := range good {
		if !validRepoPath(p) {
			t.Errorf("validRepoPath(%q) = false", p)
		}
	}
	for _, p := range bad {
		if validRepoPath(p) {
			t.Errorf("validRepoPath(%q) = true", p)
		}
	}
}
