package modelgen_test

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/onnx"
)

func loadOCRGen(t *testing.T, m onnx.Model) *inference.Session { return testenv.Load(t, m) }

// checkDims compares a signature with the real PP-OCRv4 file's: fixed
// values where they are fixed, dynamic elsewhere.
func checkDims(t *testing.T, v onnx.ValueInfo, name string, want ...int64) {
	t.Helper()
	if v.Name != name || v.Type != onnx.Float || len(v.Dims) != len(want) {
		t.Fatalf("%v, want %s float32 of rank %d", v, name, len(want))
	}
	for i, d := range v.Dims {
		if (want[i] < 0) != d.Dynamic() || (want[i] >= 0 && d.Value != want[i]) {
			t.Errorf("%v: dimension %d, want %d (-1: dynamic)", v, i, want[i])
		}
	}
}

func TestPPOCRDetection(t *testing.T) {
	s := loadOCRGen(t, modelgen.PPOCRDetection{}.Model())
	if len(s.Inputs()) != 1 || len(s.Outputs()) != 1 {
		t.Fatalf("inputs %v outputs %v", s.Inputs(), s.Outputs())
	}
	checkDims(t, s.Inputs()[0], "x", -1, 3, -1, -1)
	checkDims(t, s.Outputs()[0], "sigmoid_0.tmp_0", -1, 1, -1, -1)

	// A white 64×96 image (Immich's normalisation: 255 → 1.996) with a
	// black 10×30 bar: high probability on the bar, low elsewhere.
	const h, w = 64, 96
	white := float32((255 - 0.5) / 127.5)
	black := float32((0 - 0.5) / 127.5)
	in := make([]float32, 2*3*h*w)
	for i := range in {
		in[i] = white
	}
	for c := range 3 {
		for y := 20; y < 30; y++ {
			for x := 30; x < 60; x++ {
				in[c*h*w+y*w+x] = black
			}
		}
	}
	// Second image: only the B channel dark, to show channel weights.
	for y := range h {
		for x := range w {
			in[3*h*w+y*w+x] = black
		}
	}
	out, err := s.Run(context.Background(), inference.F32(in, 2, 3, h, w))
	if err != nil {
		t.Fatal(err)
	}
	p := out[0]
	if len(p.Shape) != 4 || p.Shape[0] != 2 || p.Shape[1] != 1 || p.Shape[2] != h || p.Shape[3] != w {
		t.Fatalf("shape %v", p.Shape)
	}
	at := func(n, y, x int) float32 { return p.Float32[n*h*w+y*w+x] }
	if at(0, 25, 45) < 0.99 || at(0, 5, 5) > 0.01 || at(0, 20, 45) < 0.3 || at(0, 20, 45) > 0.9 {
		t.Errorf("bar %v, background %v, edge %v", at(0, 25, 45), at(0, 5, 5), at(0, 20, 45))
	}
	// B weighs 0.5: halfway between black and white.
	if v := at(1, 30, 40); math.Abs(float64(v)-0.5) > 0.05 {
		t.Errorf("B-only dark image: %v, want about 0.5", v)
	}
}

func TestPPOCRRecognition(t *testing.T) {
	g := modelgen.PPOCRRecognition{Seed: 1}
	s := loadOCRGen(t, g.Model())
	checkDims(t, s.Inputs()[0], "x", -1, 3, 48, -1)
	checkDims(t, s.Outputs()[0], "softmax_11.tmp_0", -1, -1, int64(g.Classes()))
	dict, ok := s.Metadata("character")
	if !ok || strings.Count(dict, "\n") != g.Classes()-3 || !strings.HasPrefix(dict, "0\n1\n") {
		t.Errorf("character metadata %q", dict)
	}
	for _, width := range []int{320, 100} {
		in := make([]float32, 2*3*48*width)
		for i := range in {
			in[i] = float32(math.Sin(float64(i) * 0.001))
		}
		out, err := s.Run(context.Background(), inference.F32(in, 2, 3, 48, int64(width)))
		if err != nil {
			t.Fatal(err)
		}
		o := out[0]
		steps := width / 8
		if len(o.Shape) != 3 || o.Shape[0] != 2 || o.Shape[1] != int64(steps) || o.Shape[2] != int64(g.Classes()) {
			t.Fatalf("width %d: shape %v", width, o.Shape)
		}
		differ := false
		for k := range steps {
			sum := float32(0)
			for c := range g.Classes() {
				sum += o.Float32[k*g.Classes()+c]
			}
			if math.Abs(float64(sum)-1) > 1e-4 {
				t.Fatalf("step %d: probabilities sum to %v", k, sum)
			}
			if k > 0 && o.Float32[k*g.Classes()] != o.Float32[0] {
				differ = true
			}
		}
		if !differ {
			t.Errorf("width %d: output does not depend on the input", width)
		}
	}
	if _, ok := loadOCRGen(t, modelgen.PPOCRRecognition{OmitDictionary: true}.Model()).Metadata("character"); ok {
		t.Error("OmitDictionary: metadata present")
	}
}
