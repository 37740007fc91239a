package main

import (
	"math"
	"testing"
)

// The concurrency table of `mlserve bench` (cmd/mlserve/bench.go), which the
// check parses.
const benchOutput = `concurrency sweep (10s per level):
 conc   img/s      p50      p95      p99   503   err  batch |  queue decode   prep   wait  infer   post (ms, mean of Server-Timing)
   32   41.15  761.2ms  801.0ms 1002.3ms     3     1    7.5 |  300.1   20.2    9.1    0.0   40.3    0.1
`

func TestParseBench(t *testing.T) {
	b, err := parseBench(benchOutput)
	if err != nil {
		t.Fatal(err)
	}
	if b.Concurrency != 32 || b.RPS != 41.15 || math.Abs(b.P50ms-761.2) > 1e-9 || math.Abs(b.P99ms-1002.3) > 1e-9 || b.Refused != 3 || b.Errors != 1 {
		t.Fatalf("parsed %+v", b)
	}
	if _, err := parseBench("mlserve bench: warm-up request failed: status 503"); err == nil {
		t.Fatal("an output without a summary parsed")
	}
}

func TestCosine(t *testing.T) {
	for _, c := range []struct {
		a, b []float64
		want float64
	}{
		{[]float64{1, 2, 3}, []float64{2, 4, 6}, 1},
		{[]float64{1, 0}, []float64{0, 1}, 0},
		{[]float64{1, 0}, []float64{-1, 0}, -1},
		{[]float64{0, 0}, []float64{1, 1}, 0},
		{[]float64{1}, []float64{1, 2}, 0},
	} {
		if got := cosine(c.a, c.b); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("cosine(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
