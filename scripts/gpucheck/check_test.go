package main

import (
	"math"
	"testing"
)

// The two summary lines of `mlserve bench` (cmd/mlserve/bench.go), which
// the check parses.
const benchOutput = `task clip-visual, 412 ok in 10.012s with 32 in flight: 41.15 req/s
latency mean 770.1ms  p50 761.2ms  p90 801ms  p99 1.0023s  max 1.2s
status codes map[200:412], transport errors 0
`

func TestParseBench(t *testing.T) {
	b, err := parseBench(benchOutput)
	if err != nil {
		t.Fatal(err)
	}
	if b.OK != 412 || b.RPS != 41.15 || math.Abs(b.P50ms-761.2) > 1e-9 || math.Abs(b.P99ms-1002.3) > 1e-9 {
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
