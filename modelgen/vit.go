package modelgen

import (
	"math"
	"math/rand/v2"

	"github.com/mlserve/mlserve/onnx"
)

// ViT describes an OpenCLIP vision transformer image tower: patch
// embedding, class token, positional embedding, pre-LayerNorm residual
// blocks with multi-head attention and a QuickGELU MLP, post-LayerNorm of
// the class token, projection and L2 normalisation. With random weights it
// has the real model's shapes and cost; its signature is Immich's
// ("image" [batch,3,S,S] → "embedding" [batch,Dim]).
type ViT struct {
	ImageSize, Patch     int
	Width, Layers, Heads int
	MLP, Dim             int
	Seed                 uint64
}

// ViTB32Visual is CLIP ViT-B/32's image tower: 224 px, patch 32, width 768,
// 12 layers of 12 heads, MLP 3072, projection 512 (about 88 M parameters,
// 4.4 G multiply-adds per image).
func ViTB32Visual() ViT {
	return ViT{ImageSize: 224, Patch: 32, Width: 768, Layers: 12, Heads: 12, MLP: 3072, Dim: 512, Seed: 32}
}

// Params is the number of weights.
func (v ViT) Params() int {
	grid := v.ImageSize / v.Patch
	tokens := grid*grid + 1
	n := 3*v.Patch*v.Patch*v.Width + v.Width + tokens*v.Width + 2*v.Width
	block := 2*v.Width + 3*v.Width*v.Width + 3*v.Width + v.Width*v.Width + v.Width + 2*v.Width + v.Width*v.MLP + v.MLP + v.MLP*v.Width + v.Width
	return n + v.Layers*block + 2*v.Width + v.Width*v.Dim
}

// Model builds the graph.
func (v ViT) Model() onnx.Model {
	r := rng(v.Seed + 3)
	g := onnx.NewGraph("vit_visual")
	w := int64(v.Width)
	grid := v.ImageSize / v.Patch
	tokens := int64(grid*grid + 1)
	img := g.Input("image", onnx.Float, onnx.D("batch", 3, v.ImageSize, v.ImageSize))

	// Patch embedding: [N,W,g,g] → [N,g*g,W].
	p := int64(v.Patch)
	conv := g.Op("Conv", []string{img, g.Const([]int64{w, 3, p, p}, normal(r, v.Width*3*v.Patch*v.Patch, 1/math.Sqrt(float64(3*v.Patch*v.Patch))))},
		onnx.Attrs{"kernel_shape": []int64{p, p}, "strides": []int64{p, p}})
	x := g.Op("Reshape", []string{conv, g.ConstI64(0, w, -1)}, nil)
	x = g.Op("Transpose", []string{x}, onnx.Attrs{"perm": []int64{0, 2, 1}})

	// Class token, broadcast over the batch without shape arithmetic:
	// first patch × 0 + class embedding.
	first := g.Op("Slice", []string{x, g.ConstI64(0), g.ConstI64(1), g.ConstI64(1)}, nil)
	cls := g.Op("Add", []string{
		g.Op("Mul", []string{first, g.Const([]int64{1}, []float32{0})}, nil),
		g.Const([]int64{1, 1, w}, normal(r, v.Width, 0.02)),
	}, nil)
	x = g.Op("Concat", []string{cls, x}, onnx.Attrs{"axis": 1})
	x = g.Op("Add", []string{x, g.Const([]int64{tokens, w}, normal(r, int(tokens)*v.Width, 0.01))}, nil)
	x = layerNorm(g, x, v.Width)

	for i := 0; i < v.Layers; i++ {
		x = g.Op("Add", []string{x, v.attention(g, r, layerNorm(g, x, v.Width))}, nil)
		x = g.Op("Add", []string{x, v.mlp(g, r, layerNorm(g, x, v.Width))}, nil)
	}

	// Class token → LayerNorm → projection → L2 norm.
	x = g.Op("Gather", []string{x, g.Init("i", onnx.Int64s(nil, []int64{0}))}, onnx.Attrs{"axis": 1})
	x = layerNorm(g, x, v.Width)
	x = g.Op("MatMul", []string{x, g.Const([]int64{w, int64(v.Dim)}, normal(r, v.Width*v.Dim, 1/math.Sqrt(float64(v.Width))))}, nil)
	g.Output("embedding", l2Normalize(g, x), onnx.Float, onnx.D("batch", v.Dim))
	return onnx.Model{Graph: g, Producer: "mlserve-modelgen"}
}

func layerNorm(g *onnx.Graph, x string, width int) string {
	ones := make([]float32, width)
	for i := range ones {
		ones[i] = 1
	}
	return g.Op("LayerNormalization", []string{x,
		g.Const([]int64{int64(width)}, ones),
		g.Const([]int64{int64(width)}, make([]float32, width)),
	}, onnx.Attrs{"axis": -1, "epsilon": float32(1e-5)})
}

// attention is multi-head self-attention over [N,T,W].
func (v ViT) attention(g *onnx.Graph, r *rand.Rand, x string) string {
	w := int64(v.Width)
	h := int64(v.Heads)
	hd := w / h
	qkv := linear(g, r, x, v.Width, 3*v.Width)
	parts := g.OpN("Split", 3, []string{qkv, g.ConstI64(w, w, w)}, onnx.Attrs{"axis": -1})
	heads := func(t string) string { // [N,T,W] → [N,H,T,hd]
		t = g.Op("Reshape", []string{t, g.ConstI64(0, 0, h, hd)}, nil)
		return g.Op("Transpose", []string{t}, onnx.Attrs{"perm": []int64{0, 2, 1, 3}})
	}
	q, k, val := heads(parts[0]), heads(parts[1]), heads(parts[2])
	q = g.Op("Mul", []string{q, g.Const([]int64{1}, []float32{float32(1 / math.Sqrt(float64(hd)))})}, nil)
	kt := g.Op("Transpose", []string{k}, onnx.Attrs{"perm": []int64{0, 1, 3, 2}})
	att := g.Op("Softmax", []string{g.Op("MatMul", []string{q, kt}, nil)}, onnx.Attrs{"axis": -1})
	o := g.Op("MatMul", []string{att, val}, nil)
	o = g.Op("Transpose", []string{o}, onnx.Attrs{"perm": []int64{0, 2, 1, 3}})
	o = g.Op("Reshape", []string{o, g.ConstI64(0, 0, w)}, nil)
	return linear(g, r, o, v.Width, v.Width)
}

// mlp is Linear → QuickGELU (x·σ(1.702x)) → Linear.
func (v ViT) mlp(g *onnx.Graph, r *rand.Rand, x string) string {
	hdn := linear(g, r, x, v.Width, v.MLP)
	gate := g.Op("Sigmoid", []string{g.Op("Mul", []string{hdn, g.Const([]int64{1}, []float32{1.702})}, nil)}, nil)
	return linear(g, r, g.Op("Mul", []string{hdn, gate}, nil), v.MLP, v.Width)
}
