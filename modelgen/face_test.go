package modelgen_test

import (
	"context"
	"math"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/onnx"
)

func loadGen(t *testing.T, m onnx.Model) *inference.Session {
	t.Helper()
	p := t.TempDir() + "/model.onnx"
	if err := m.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	s, err := testenv.Runtime(t).NewSession(p, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

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
