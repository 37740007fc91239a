package modelgen

import (
	"math"

	"github.com/mlserve/mlserve/onnx"
)

// SCRFD output names and order of insightface's det_10g.onnx (buffalo_l's
// detection/model.onnx): scores of strides 8, 16, 32, then boxes, then
// keypoints. The real model declares them 2-D without a batch axis,
// ((640/s)²·2, 1|4|10), and its input "input.1" as [1, 3, "?", "?"].
var SCRFDOutputs = []string{"448", "471", "494", "451", "474", "497", "454", "477", "500"}

// scrfdTemplate is the ArcFace alignment template (insightface arcface_dst)
// relative to its centre, in units of the template's side (112).
var scrfdTemplate = [5][2]float64{
	{38.2946, 51.6963}, {73.5318, 51.5014}, {56.0252, 71.7366}, {41.5493, 92.3655}, {70.7299, 92.2041},
}

// SCRFD describes a face "detector" with exactly buffalo_l's SCRFD
// signature (input "input.1" float32 [1,3,?,?], the nine outputs of
// [SCRFDOutputs] with det_10g's shapes at 640×640) that really detects
// something: bright squares on a dark background.
//
// For each stride s (8, 16, 32) it compares the mean brightness inside a
// window of side 4s centred on each anchor centre (x·s, y·s) with the
// brightness of the ring around it (up to side 8s): z = 12·(inner − 3·ring)
// − 6. A bright square of side 4s centred on an anchor scores sigmoid(6) ≈
// 0.9975 on that stride's first anchor; larger, smaller or off-centre
// squares score less (a square of side 3s: 0.68), and a uniform image
// scores ≈ 0. The second anchor of each cell scores
// sigmoid(z−1) and has a box 5% larger. Box distances are 2·√inner (in
// strides), so a centred square of side a < 4s gets a box of side a;
// keypoints are the ArcFace template laid over that box. So a test can put
// squares where it wants faces and check where the boxes land.
type SCRFD struct {
	// BatchedOutputs adds a leading batch axis of 1 to every output, as
	// SCRFD models exported with insightface's newer script do
	// ([1,12800,1] ...).
	BatchedOutputs bool
}

// Model builds the graph.
func (c SCRFD) Model() onnx.Model {
	g := onnx.NewGraph("scrfd")
	x := g.Input("input.1", onnx.Float, onnx.D(1, 3, "?", "?"))
	// Brightness in [0,1] from the (x−127.5)/128 blob; padding counts as
	// black.
	v := g.Op("ReduceMean", []string{x}, onnx.Attrs{"axes": []int64{1}, "keepdims": 1})
	v = g.Op("Add", []string{g.Op("Mul", []string{v, g.Const([]int64{1}, []float32{128.0 / 255})}, nil), g.Const([]int64{1}, []float32{127.5 / 255})}, nil)

	var scores, boxes, kps [3]string
	for i, s := range []int64{8, 16, 32} {
		// Means over s×s blocks aligned on the anchor grid, then over 4×4
		// and 8×8 blocks: the window of anchor i is [i·s−2s, i·s+2s) (inner)
		// and [i·s−4s, i·s+4s) (outer); padding counts as black.
		blocks := g.Op("AveragePool", []string{v}, onnx.Attrs{"kernel_shape": []int64{s, s}, "strides": []int64{s, s}})
		pool := func(k int64) string {
			h := k / 2
			return g.Op("AveragePool", []string{blocks}, onnx.Attrs{
				"kernel_shape":      []int64{k, k},
				"pads":              []int64{h, h, h - 1, h - 1},
				"count_include_pad": 1,
			})
		}
		inner := pool(4)
		outer := pool(8)
		// ring = (outer·64s² − inner·16s²) / 48s² = (4·outer − inner)/3
		ring := g.Op("Div", []string{
			g.Op("Sub", []string{g.Op("Mul", []string{outer, g.Const([]int64{1}, []float32{4})}, nil), inner}, nil),
			g.Const([]int64{1}, []float32{3}),
		}, nil)
		// z = 12·(inner − 3·ring) − 6: the ring must be dark all round, so
		// the corner of a larger square does not pass for a small one.
		z := g.Op("Sub", []string{
			g.Op("Mul", []string{g.Op("Sub", []string{inner, g.Op("Mul", []string{ring, g.Const([]int64{1}, []float32{3})}, nil)}, nil), g.Const([]int64{1}, []float32{12})}, nil),
			g.Const([]int64{1}, []float32{6}),
		}, nil)
		col := func(t string) string { return g.Op("Reshape", []string{t, g.ConstI64(-1, 1)}, nil) } // [K,1]
		zc := col(z)
		both := g.Op("Concat", []string{zc, g.Op("Sub", []string{zc, g.Const([]int64{1}, []float32{1})}, nil)}, onnx.Attrs{"axis": 1})
		scores[i] = g.Op("Reshape", []string{g.Op("Sigmoid", []string{both}, nil), g.ConstI64(-1, 1)}, nil)

		size := col(g.Op("Sqrt", []string{g.Op("Relu", []string{inner}, nil)}, nil)) // [K,1], 1 for a perfect square
		dist := make([]float32, 8)
		for k := range dist {
			dist[k] = 2
			if k >= 4 {
				dist[k] = 2.1
			}
		}
		boxes[i] = g.Op("Reshape", []string{g.Op("Mul", []string{size, g.Const([]int64{1, 8}, dist)}, nil), g.ConstI64(-1, 4)}, nil)

		off := make([]float32, 20)
		for a := range 2 {
			for p, pt := range scrfdTemplate {
				// The template's box (side 112) maps onto the detected box
				// (side 4 strides).
				off[a*10+2*p] = float32((pt[0] - 56) / 112 * 4)
				off[a*10+2*p+1] = float32((pt[1] - 56) / 112 * 4)
			}
		}
		kps[i] = g.Op("Reshape", []string{g.Op("Mul", []string{size, g.Const([]int64{1, 20}, off)}, nil), g.ConstI64(-1, 10)}, nil)
	}
	all := append(append(scores[:], boxes[:]...), kps[:]...)
	widths := []int{1, 1, 1, 4, 4, 4, 10, 10, 10}
	for i, t := range all {
		n := 2 * (640 / (8 << (i % 3))) * (640 / (8 << (i % 3)))
		dims := onnx.D(n, widths[i])
		if c.BatchedOutputs {
			t = g.Op("Unsqueeze", []string{t, g.ConstI64(0)}, nil)
			dims = onnx.D(1, n, widths[i])
		}
		g.Output(SCRFDOutputs[i], t, onnx.Float, dims)
	}
	return onnx.Model{Graph: g, Producer: "mlserve-modelgen"}
}

// ArcFace describes a recognition model with the signature of Immich's
// ArcFace models: input "input.1" float32 [N,3,112,112], output "683"
// float32 [N,Dim] (w600k_r50's output name; consumers read names from the
// model). Embeddings are not normalised, as the real ones are not.
//
// The graph is a strided convolution to a 7×7 grid, tanh and a projection
// scaled to a norm of a few units: every pixel, channel and position counts.
type ArcFace struct {
	// Batch is the first input dimension: 0 makes it dynamic ("batch", as
	// Immich rewrites it), 1 makes it fixed as in the original files.
	Batch int
	// MXNet makes the graph start with nodes named like an MXNet-converted
	// model ("_minusscalar0" Sub, "_mulscalar0" Mul) that normalise raw
	// 0..255 pixels in the graph, (x−127.5)/127.5. Fed raw pixels, it
	// returns what the plain graph with the same Seed returns for the
	// normalised blob.
	MXNet bool
	Dim   int // embedding size, 512 when 0
	Seed  uint64
}

// Model builds the graph.
func (c ArcFace) Model() onnx.Model {
	dim := c.Dim
	if dim == 0 {
		dim = 512
	}
	r := rng(c.Seed + 3)
	g := onnx.NewGraph("arcface")
	var batch any = "batch"
	if c.Batch > 0 {
		batch = c.Batch
	}
	x := g.Input("input.1", onnx.Float, onnx.D(batch, 3, 112, 112))
	if c.MXNet {
		x = g.NamedOp("_minusscalar0", "Sub", []string{x, g.Const([]int64{1}, []float32{127.5})}, nil)
		x = g.NamedOp("_mulscalar0", "Mul", []string{x, g.Const([]int64{1}, []float32{float32(1 / 127.5)})}, nil)
	}
	const k, ch = 16, 8
	w := g.Const([]int64{ch, 3, k, k}, normal(r, ch*3*k*k, 1/math.Sqrt(float64(3*k*k))))
	b := g.Const([]int64{ch}, normal(r, ch, 0.1))
	conv := g.Op("Conv", []string{x, w, b}, onnx.Attrs{"kernel_shape": []int64{k, k}, "strides": []int64{k, k}})
	flat := g.Op("Reshape", []string{g.Op("Tanh", []string{conv}, nil), g.ConstI64(-1, ch*7*7)}, nil)
	emb := g.Op("Mul", []string{linear(g, r, flat, ch*7*7, dim), g.Const([]int64{1}, []float32{0.5})}, nil)
	g.Output("683", emb, onnx.Float, onnx.D(batch, dim))
	return onnx.Model{Graph: g, Producer: "mlserve-modelgen"}
}
