package main

import (
	"bytes"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mlserve/mlserve/internal/testenv"
)

// TestBench runs `mlserve bench` in-process on a small CLIP model with
// the sample photos as they are, briefly, and checks that it prints the
// bare baseline, every concurrency level with its Server-Timing split and
// ratios, and the summary, without errors.
func TestBench(t *testing.T) {
	t.Setenv("MLSERVE_PROVIDERS", "CPU")
	t.Setenv("MLSERVE_ORT_LIBRARY", testenv.ORTLibrary(t))
	t.Setenv("MLSERVE_TESTDATA", strings.TrimSuffix(testenv.TestData(t, "photos"), "/photos"))
	var out, errb bytes.Buffer
	code := run([]string{"bench", "--cache", cliCache(t), "--preview", "0", "--concurrency", "1,3", "--requests", "12",
		"--bare-duration", "50ms", "--warmup", "1", "--preprocess", "fast"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	text := out.String()
	for _, want := range []string{
		"images: 6 photos", "preprocess fast", "bare ONNX Runtime", "batch  1:", "best: batch",
		"errors and 503s over the sweep: 0", "lone request p50:", "ms = ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in the output:\n%s", want, text)
		}
	}
	// With more than one intra-op thread the baseline also runs the graph
	// as one single-threaded run per thread at once.
	if runtime.NumCPU() > 1 {
		for _, want := range []string{"runs × 1 thread at once, batch  1:", "single-threaded runs at once: batch"} {
			if !strings.Contains(text, want) {
				t.Errorf("no %q in the output:\n%s", want, text)
			}
		}
	}
	// One row per level: concurrency, throughput, three percentiles, no
	// 503 and no error, a mean batch, six stage means, two ratios.
	row := regexp.MustCompile(`(?m)^\s+(\d+)\s+[\d.]+\s+[\d.]+ms\s+[\d.]+ms\s+[\d.]+ms\s+0\s+0\s+[\d.]+ \|(\s+[\d.]+){6} \|\s+[\d.]+\s+[\d.]+$`)
	levels := row.FindAllStringSubmatch(text, -1)
	if len(levels) != 2 || levels[0][1] != "1" || levels[1][1] != "3" {
		t.Fatalf("level rows %q in:\n%s", levels, text)
	}
}

// TestBenchPreprocessFlag: -preprocess takes exact or fast, for the
// in-process server only.
func TestBenchPreprocessFlag(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--preprocess", "pil"},
		{"bench", "--preprocess", "fast", "--url", "http://127.0.0.1:1"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code == 0 || !strings.Contains(errb.String(), "-preprocess") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errb.String())
		}
	}
}

func TestParseServerTiming(t *testing.T) {
	got := parseServerTiming("queue;dur=0.5, decode;dur=18.2, infer;desc=\"x\";dur=40, total;dur=60.1, bad;dur=x")
	want := map[string]float64{"queue": 0.5, "decode": 18.2, "infer": 40, "total": 60.1}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// TestBenchHealthSplitsTheConnectStorm: the refusal line gives the whole
// level's percentiles, those of refusals sent after the connect storm,
// and the server's part (headers written to first byte) apart.
func TestBenchHealthSplitsTheConnectStorm(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	l := levelResult{
		conc:             128,
		refusals:         ms(1, 2, 3, 120),
		refusalsSteady:   ms(1, 2, 3),
		refusalsAnswered: ms(1, 1, 2, 40),
		pings:            ms(1, 5),
	}
	got := strings.Fields(l.health())
	want := strings.Fields("128 4 2.0ms 120.0ms 120.0ms | 3.0ms 3.0ms | 40.0ms | 2 1.0ms 5.0ms 5.0ms")
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("health line\n got %q\nwant %q", got, want)
	}
}
