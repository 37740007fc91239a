package modelgen

import (
	"math"

	"github.com/mlserve/mlserve/onnx"
)

// CLIPVisual describes a small image encoder with the signature of Immich's
// CLIP visual models: input "image" float32 [batch,3,Size,Size], output
// "embedding" float32 [batch,Dim], L2-normalised as Immich's exports are.
//
// It is a strided convolution to a 7×7 grid of 8 channels, tanh, and a
// projection: every pixel, channel and position counts.
type CLIPVisual struct {
	Size int    // input side, e.g. 224
	Dim  int    // embedding size, e.g. 512
	Seed uint64 // weights
}

// Model builds the graph.
func (c CLIPVisual) Model() onnx.Model {
	r := rng(c.Seed + 1)
	g := onnx.NewGraph("clip_visual")
	img := g.Input("image", onnx.Float, onnx.D("batch", 3, c.Size, c.Size))
	k := c.Size / 7
	const ch = 8
	w := g.Const([]int64{ch, 3, int64(k), int64(k)}, normal(r, ch*3*k*k, 1/math.Sqrt(float64(3*k*k))))
	b := g.Const([]int64{ch}, normal(r, ch, 0.1))
	conv := g.Op("Conv", []string{img, w, b}, onnx.Attrs{
		"kernel_shape": []int64{int64(k), int64(k)},
		"strides":      []int64{int64(k), int64(k)},
	})
	grid := c.Size / k
	flat := g.Op("Reshape", []string{g.Op("Tanh", []string{conv}, nil), g.ConstI64(-1, int64(ch*grid*grid))}, nil)
	emb := l2Normalize(g, linear(g, r, flat, ch*grid*grid, c.Dim))
	g.Output("embedding", emb, onnx.Float, onnx.D("batch", c.Dim))
	return onnx.Model{Graph: g, Producer: "mlserve-modelgen"}
}

// CLIPTextual describes a small text encoder with the signature of Immich's
// CLIP textual models: input "text" int32 [batch,Context] (OpenCLIP), or
// "input_ids" and "attention_mask" int32 [batch,Context] (M-CLIP); output
// "embedding" float32 [batch,Dim], L2-normalised.
//
// Token embeddings are weighted by position and summed (masked mean for
// M-CLIP), so every token id and its position count. An id outside the
// vocabulary makes the run fail, as it would with the real model.
type CLIPTextual struct {
	Context int // sequence length, 77 for OpenAI CLIP, 64 for SigLIP
	Vocab   int // vocabulary size, 49408 for OpenAI CLIP
	Dim     int // embedding size
	MCLIP   bool
	Seed    uint64
}

// Model builds the graph.
func (c CLIPTextual) Model() onnx.Model {
	const width = 32
	r := rng(c.Seed + 2)
	g := onnx.NewGraph("clip_textual")
	idsName := "text"
	if c.MCLIP {
		idsName = "input_ids"
	}
	ids := g.Input(idsName, onnx.Int32, onnx.D("batch", c.Context))
	var mask string
	if c.MCLIP {
		mask = g.Input("attention_mask", onnx.Int32, onnx.D("batch", c.Context))
	}
	table := g.Const([]int64{int64(c.Vocab), width}, normal(r, c.Vocab*width, 1))
	tok := g.Op("Gather", []string{table, g.Op("Cast", []string{ids}, onnx.Attrs{"to": int(onnx.Int64)})}, onnx.Attrs{"axis": 0})
	pos := g.Const([]int64{int64(c.Context), width}, normal(r, c.Context*width, 1))
	x := g.Op("Mul", []string{tok, pos}, nil) // [N,L,W]
	var pooled string
	if c.MCLIP {
		m := g.Op("Unsqueeze", []string{g.Op("Cast", []string{mask}, onnx.Attrs{"to": int(onnx.Float)}), g.ConstI64(2)}, nil)
		sum := g.Op("ReduceSum", []string{g.Op("Mul", []string{x, m}, nil), g.ConstI64(1)}, onnx.Attrs{"keepdims": 0})
		cnt := g.Op("ReduceSum", []string{m, g.ConstI64(1)}, onnx.Attrs{"keepdims": 0})
		cnt = g.Op("Max", []string{cnt, g.Const([]int64{1}, []float32{1})}, nil)
		pooled = g.Op("Div", []string{sum, cnt}, nil)
	} else {
		pooled = g.Op("ReduceSum", []string{x, g.ConstI64(1)}, onnx.Attrs{"keepdims": 0})
		pooled = g.Op("Mul", []string{pooled, g.Const([]int64{1}, []float32{float32(1 / math.Sqrt(float64(c.Context)))})}, nil)
	}
	emb := l2Normalize(g, linear(g, r, g.Op("Tanh", []string{pooled}, nil), width, c.Dim))
	g.Output("embedding", emb, onnx.Float, onnx.D("batch", c.Dim))
	return onnx.Model{Graph: g, Producer: "mlserve-modelgen"}
}
