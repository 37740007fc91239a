// Package modelgen generates ONNX graphs with exactly the signatures of the
// models Immich uses (input and output names, element types, ranks and
// dynamic dimensions), for tests and benchmarks where the real weights
// cannot be had.
//
// Every generated graph computes something that depends on its input, with
// fixed pseudo-random weights from a seed, so a preprocessing mistake (a
// channel swap, a wrong mean, an off-by-one crop) changes the output.
// [ViTB32Visual] builds the real CLIP ViT-B/32 image tower with random
// weights, for benchmarks with the real model's cost.
package modelgen

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/mlserve/mlserve/onnx"
)

// rng returns a deterministic generator for a seed.
func rng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)) }

// normal fills n values from N(0, std²).
func normal(r *rand.Rand, n int, std float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(r.NormFloat64() * std)
	}
	return out
}

// l2Normalize appends x / ||x||₂ over the last axis.
func l2Normalize(g *onnx.Graph, x string) string {
	sq := g.Op("Mul", []string{x, x}, nil)
	sum := g.Op("ReduceSum", []string{sq, g.ConstI64(-1)}, onnx.Attrs{"keepdims": 1})
	eps := g.Const([]int64{1}, []float32{1e-12})
	norm := g.Op("Sqrt", []string{g.Op("Add", []string{sum, eps}, nil)}, nil)
	return g.Op("Div", []string{x, norm}, nil)
}

// linear appends x @ W + b with W of shape [in, out].
func linear(g *onnx.Graph, r *rand.Rand, x string, in, out int) string {
	w := g.Const([]int64{int64(in), int64(out)}, normal(r, in*out, 1/math.Sqrt(float64(in))))
	b := g.Const([]int64{int64(out)}, normal(r, out, 0.01))
	return g.Op("Add", []string{g.Op("MatMul", []string{x, w}, nil), b}, nil)
}

// Busy describes a graph that does nothing useful for a long time: Steps
// chained [Size,Size] matrix products with tanh, on input "x" float32
// [Size,Size], output "y". Tests use it to cancel long runs and to fill
// worker queues.
type Busy struct {
	Steps, Size int
}

// Model builds the graph.
func (b Busy) Model() onnx.Model {
	r := rng(7)
	g := onnx.NewGraph("busy")
	x := g.Input("x", onnx.Float, onnx.D(b.Size, b.Size))
	w := g.Const([]int64{int64(b.Size), int64(b.Size)}, normal(r, b.Size*b.Size, 1/math.Sqrt(float64(b.Size))))
	for i := 0; i < b.Steps; i++ {
		x = g.Op("Tanh", []string{g.Op("MatMul", []string{x, w}, nil)}, nil)
	}
	g.Output("y", x, onnx.Float, onnx.D(b.Size, b.Size))
	return onnx.Model{Graph: g, Producer: "mlserve-modelgen"}
}

// WriteOnce writes the model that build returns to path unless a file is
// already there, and returns path. Benchmarks use it to keep big generated
// graphs (ViT-B/32 is 350 MB) between runs.
func WriteOnce(path string, build func() onnx.Model) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	tmp := path + ".tmp"
	if err := build().WriteFile(tmp); err != nil {
		return "", err
	}
	return path, os.Rename(tmp, path)
}

// BenchFile writes the model that build returns once into the shared
// folder <temp>/mlserve-bench (kept between runs: the benchmark graphs take
// seconds to build and hundreds of MB) and returns its path.
func BenchFile(name string, build func() onnx.Model) (string, error) {
	dir := filepath.Join(os.TempDir(), "mlserve-bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return WriteOnce(filepath.Join(dir, name), build)
}
