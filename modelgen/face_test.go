package modelgen_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/onnx"
)

func loadGen(t *testing.T, m onnx.Model) *inference.Session { return testenv.Load(t, m) }

// blobWithSquare is a 640×640 SCRFD blob ((x−127.5)/128), black, with a
// white square of the given side whose top-left corner is at x0, y0.
func blobWithSquare(x0, y0, side int) []float32 {
	const n = 640
	blob := make([]float32, 3*n*n)
	for i := range blob {
		blob[i] = -127.5 / 128
	}
	for c := range 3 {
		for y := y0; y < y0+side; y++ {
			for x := x0; x < x0+side; x++ {
				blob[c*n*n+y*n+x] = 127.5 / 128
			}
		}
	}
	return blob
}

func TestSCRFDSignatureAndResponse(t *testing.T) {
	for _, batched := range []bool{false, true} {
		s := loadGen(t, modelgen.SCRFD{BatchedOutputs: batched}.Model())
		in := s.Inputs()
		if len(in) != 1 || in[0].Name != "input.1" || in[0].Dims[1].Value != 3 || !in[0].Dims[2].Dynamic() || !in[0].Dims[3].Dynamic() {
			t.Fatalf("inputs = %v", in)
		}
		outs := s.Outputs()
		if len(outs) != 9 {
			t.Fatalf("outputs = %v", outs)
		}
		for i, o := range outs {
			if o.Name != modelgen.SCRFDOutputs[i] {
				t.Errorf("output %d = %s, want %s", i, o.Name, modelgen.SCRFDOutputs[i])
			}
		}
		// A 64-pixel square centred on the stride-16 anchor (320, 160).
		res, err := s.Run(context.Background(), inference.F32(blobWithSquare(288, 128, 64), 1, 3, 640, 640))
		if err != nil {
			t.Fatal(err)
		}
		wantShapes := [][]int64{{12800, 1}, {3200, 1}, {800, 1}, {12800, 4}, {3200, 4}, {800, 4}, {12800, 10}, {3200, 10}, {800, 10}}
		for i, r := range res {
			want := wantShapes[i]
			if batched {
				want = append([]int64{1}, want...)
			}
			if !equalShape(r.Shape, want) {
				t.Errorf("output %d shape %v, want %v", i, r.Shape, want)
			}
		}
		// Stride 16: 40 cells a row, 2 anchors a cell.
		idx := (160/16*40 + 320/16) * 2
		if got := res[1].Float32[idx]; got < 0.99 {
			t.Errorf("score at the square = %v, want > 0.99", got)
		}
		if got := res[1].Float32[idx+1]; got > res[1].Float32[idx] {
			t.Errorf("second anchor %v scores above the first %v", got, res[1].Float32[idx])
		}
		for k := range 4 {
			if got := res[4].Float32[idx*4+k]; math.Abs(float64(got)-2) > 1e-5 {
				t.Errorf("box distance %d = %v, want 2 strides", k, got)
			}
		}
		// Far from the square, and at the wrong scale, scores are low.
		var maxOther float32
		for _, v := range res[0].Float32 {
			maxOther = max(maxOther, v)
		}
		if maxOther > 0.5 {
			t.Errorf("stride-8 scores reach %v for a square twice their size", maxOther)
		}
	}
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestArcFaceVariants(t *testing.T) {
	const seed = 5
	plain := loadGen(t, modelgen.ArcFace{Seed: seed}.Model())
	fixed := loadGen(t, modelgen.ArcFace{Seed: seed, Batch: 1}.Model())
	mx := loadGen(t, modelgen.ArcFace{Seed: seed, MXNet: true}.Model())

	if d := plain.Inputs()[0].Dims[0]; d.Param != "batch" {
		t.Errorf("plain batch dim = %v, want \"batch\"", d)
	}
	if d := fixed.Inputs()[0].Dims[0]; d.Dynamic() || d.Value != 1 {
		t.Errorf("fixed batch dim = %v, want 1", d)
	}
	nodes := mx.Info().Nodes
	if len(nodes) < 2 || nodes[0].Name != "_minusscalar0" || nodes[0].OpType != "Sub" || nodes[1].Name != "_mulscalar0" || nodes[1].OpType != "Mul" {
		t.Errorf("MXNet variant's first nodes = %v", nodes[:min(len(nodes), 3)])
	}

	const n = 3 * 112 * 112
	raw := make([]float32, 2*n)
	norm := make([]float32, 2*n)
	for i := range raw {
		raw[i] = float32((i*7 + i/5) % 256)
		norm[i] = (raw[i] - 127.5) / 127.5
	}
	ctx := context.Background()
	a, err := plain.Run(ctx, inference.F32(norm, 2, 3, 112, 112))
	if err != nil {
		t.Fatal(err)
	}
	b, err := mx.Run(ctx, inference.F32(raw, 2, 3, 112, 112))
	if err != nil {
		t.Fatal(err)
	}
	c, err := fixed.Run(ctx, inference.F32(norm[n:], 1, 3, 112, 112))
	if err != nil {
		t.Fatal(err)
	}
	if !equalShape(a[0].Shape, []int64{2, 512}) {
		t.Fatalf("embedding shape %v", a[0].Shape)
	}
	var sq float64
	for i, v := range a[0].Float32 {
		if math.Abs(float64(v-b[0].Float32[i])) > 1e-4 {
			t.Fatalf("MXNet variant differs at %d: %v vs %v", i, v, b[0].Float32[i])
		}
		if i >= 512 {
			if math.Abs(float64(v-c[0].Float32[i-512])) > 1e-5 {
				t.Fatalf("fixed-batch variant differs at %d", i)
			}
		} else {
			sq += float64(v) * float64(v)
		}
	}
	if norm := math.Sqrt(sq); norm < 1 || norm > 50 {
		t.Errorf("embedding norm %v, want a few units (not normalised)", norm)
	}
	if a[0].Float32[0] == a[0].Float32[512] {
		t.Error("embeddings of different inputs are equal")
	}
}

// benchModel writes a big generated model once into a shared temporary
// folder (kept between runs) and loads it.
func benchModel(t testing.TB, name string, build func() onnx.Model) *inference.Session {
	t.Helper()
	p, err := modelgen.BenchFile(name, build)
	if err != nil {
		t.Fatal(err)
	}
	s, err := testenv.Runtime(t).NewSession(p, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestFaceArchitectures runs the architecture-sized generators once: the
// signatures are buffalo_l's and the outputs finite.
func TestFaceArchitectures(t *testing.T) {
	ctx := context.Background()
	det := benchModel(t, "scrfd-10g.onnx", modelgen.SCRFD10G{}.Model)
	res, err := det.Run(ctx, inference.F32(blobWithSquare(100, 100, 64), 1, 3, 640, 640))
	if err != nil {
		t.Fatal(err)
	}
	want := [][]int64{{12800, 1}, {3200, 1}, {800, 1}, {12800, 4}, {3200, 4}, {800, 4}, {12800, 10}, {3200, 10}, {800, 10}}
	for i, r := range res {
		if det.Outputs()[i].Name != modelgen.SCRFDOutputs[i] || !equalShape(r.Shape, want[i]) {
			t.Errorf("output %d: %s %v", i, det.Outputs()[i].Name, r.Shape)
		}
		for _, v := range r.Float32 {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("output %d not finite", i)
			}
		}
	}
	rec := benchModel(t, "arcface-r50.onnx", modelgen.ArcFaceR50{}.Model)
	in := make([]float32, 2*3*112*112)
	for i := range in {
		in[i] = float32(i%255)/127.5 - 1
	}
	out, err := rec.Run(ctx, inference.F32(in, 2, 3, 112, 112))
	if err != nil {
		t.Fatal(err)
	}
	if !equalShape(out[0].Shape, []int64{2, 512}) || rec.Inputs()[0].Name != "input.1" {
		t.Fatalf("recognizer: %v -> %v", rec.Inputs(), out[0].Shape)
	}
	for _, v := range out[0].Float32 {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("embedding not finite")
		}
	}
}

// BenchmarkSCRFD10GRun: one 640×640 detection pass of a det_10g-sized
// network (the network alone; see inference/face for the whole path).
func BenchmarkSCRFD10GRun(b *testing.B) {
	s := benchModel(b, "scrfd-10g.onnx", modelgen.SCRFD10G{}.Model)
	x := inference.F32(blobWithSquare(100, 100, 64), 1, 3, 640, 640)
	for b.Loop() {
		if _, err := s.Run(context.Background(), x); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkArcFaceR50Run: w600k_r50-sized recognition, per face, at
// batch 1 and 8.
func BenchmarkArcFaceR50Run(b *testing.B) {
	s := benchModel(b, "arcface-r50.onnx", modelgen.ArcFaceR50{}.Model)
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("batch%d", n), func(b *testing.B) {
			x := inference.F32(make([]float32, n*3*112*112), int64(n), 3, 112, 112)
			for b.Loop() {
				if _, err := s.Run(context.Background(), x); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n)/1e6, "ms/face")
		})
	}
}
