package modelgen_test

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
)

func TestViTRuns(t *testing.T) {
	rt := testenv.Runtime(t)
	v := modelgen.ViT{ImageSize: 64, Patch: 16, Width: 32, Layers: 2, Heads: 4, MLP: 64, Dim: 16, Seed: 1}
	p := filepath.Join(t.TempDir(), "vit.onnx")
	if err := v.Model().WriteFile(p); err != nil {
		t.Fatal(err)
	}
	s, err := rt.NewSession(p, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, n := range []int{1, 3} {
		data := make([]float32, n*3*64*64)
		for i := range data {
			data[i] = float32(math.Sin(float64(i) * 0.01))
		}
		out, err := s.Run(context.Background(), inference.F32(data, int64(n), 3, 64, 64))
		if err != nil {
			t.Fatal(err)
		}
		if sh := out[0].Shape; sh[0] != int64(n) || sh[1] != 16 {
			t.Fatalf("shape %v", sh)
		}
		// Different images of a batch give different embeddings, each of norm 1.
		s0 := 0.0
		for _, x := range out[0].Float32[:16] {
			s0 += float64(x * x)
		}
		if math.Abs(s0-1) > 1e-4 {
			t.Fatalf("norm² %v", s0)
		}
	}
	if got, want := modelgen.ViTB32Visual().Params(), 87_849_216; math.Abs(float64(got-want)) > 0.01*float64(want) {
		t.Errorf("ViT-B/32 params = %d, want about %d (OpenAI CLIP's visual tower)", got, want)
	}
}
