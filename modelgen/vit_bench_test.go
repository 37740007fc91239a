package modelgen_test

import (
	"context"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
)

// BenchmarkViTB32Run is a bare session.Run of the ViT-B/32 image tower
// (random weights, real cost) at batch 1, the baseline for end-to-end
// benchmarks.
func BenchmarkViTB32Run(b *testing.B) {
	rt := testenv.Runtime(b)
	p, err := modelgen.BenchFile("vit-b-32-visual.onnx", modelgen.ViTB32Visual().Model)
	if err != nil {
		b.Fatal(err)
	}
	s, err := rt.NewSession(p, inference.SessionOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	x := inference.F32(make([]float32, 3*224*224), 1, 3, 224, 224)
	s.Run(context.Background(), x)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Run(context.Background(), x); err != nil {
			b.Fatal(err)
		}
	}
}
