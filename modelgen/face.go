package modelgen

import (
	"math"
	"math/rand/v2"

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

// cnn is a helper for convolutional graphs with random weights.
type cnn struct {
	g *onnx.Graph
	r *rand.Rand
}

// conv is a k×k convolution with bias (batch norm folded in), "same"
// padding, He-initialised and scaled by gain.
func (c cnn) conv(x string, cin, cout, k, stride int, gain float64) string {
	w := c.g.Const([]int64{int64(cout), int64(cin), int64(k), int64(k)}, normal(c.r, cout*cin*k*k, gain*math.Sqrt(2/float64(cin*k*k))))
	b := c.g.Const([]int64{int64(cout)}, normal(c.r, cout, 0.01))
	p := int64(k / 2)
	return c.g.Op("Conv", []string{x, w, b}, onnx.Attrs{
		"kernel_shape": []int64{int64(k), int64(k)}, "strides": []int64{int64(stride), int64(stride)}, "pads": []int64{p, p, p, p},
	})
}

// affine is a batch norm that cannot be folded into a convolution
// (per-channel scale and shift).
func (c cnn) affine(x string, ch int, dims int) string {
	shape := []int64{1, int64(ch), 1, 1}
	if dims == 2 {
		shape = []int64{1, int64(ch)}
	}
	scale := make([]float32, ch)
	for i := range scale {
		scale[i] = 1 + float32(c.r.NormFloat64()*0.05)
	}
	x = c.g.Op("Mul", []string{x, c.g.Const(shape, scale)}, nil)
	return c.g.Op("Add", []string{x, c.g.Const(shape, normal(c.r, ch, 0.01))}, nil)
}

func (c cnn) prelu(x string, ch int) string {
	slope := make([]float32, ch)
	for i := range slope {
		slope[i] = 0.25
	}
	return c.g.Op("PRelu", []string{x, c.g.Const([]int64{int64(ch), 1, 1}, slope)}, nil)
}

func (c cnn) relu(x string) string { return c.g.Op("Relu", []string{x}, nil) }

// ArcFaceR50 describes insightface's IResNet-50, the architecture of
// buffalo_l's recognition model (w600k_r50.onnx), with random weights and
// Immich's signature: input "input.1" [N,3,112,112], output "683" [N,512].
// It has the real model's layers and cost (43.6 M parameters, about 6.3 G
// multiply-adds per face; batch norms folded where the export folds them),
// for benchmarks of what recognition costs per face on a machine.
type ArcFaceR50 struct {
	Batch int // 0: dynamic ("batch")
	Seed  uint64
}

// Model builds the graph (about 175 MB of weights).
func (a ArcFaceR50) Model() onnx.Model {
	g := onnx.NewGraph("iresnet50")
	c := cnn{g, rng(a.Seed + 50)}
	var batch any = "batch"
	if a.Batch > 0 {
		batch = a.Batch
	}
	x := g.Input("input.1", onnx.Float, onnx.D(batch, 3, 112, 112))
	x = c.prelu(c.conv(x, 3, 64, 3, 1, 1), 64)
	cin := 64
	for stage, blocks := range []int{3, 4, 14, 3} {
		planes := 64 << stage
		for b := range blocks {
			stride := 1
			if b == 0 {
				stride = 2
			}
			// IBasicBlock: BN, conv3×3, BN, PReLU, conv3×3 (stride), BN,
			// plus the (downsampled) input.
			y := c.affine(x, cin, 4)
			y = c.prelu(c.conv(y, cin, planes, 3, 1, 1), planes)
			y = c.conv(y, planes, planes, 3, stride, 0.2)
			short := x
			if stride != 1 || cin != planes {
				short = c.conv(x, cin, planes, 1, stride, 1)
			}
			x = g.Op("Add", []string{y, short}, nil)
			cin = planes
		}
	}
	x = c.affine(x, 512, 4)
	x = g.Op("Flatten", []string{x}, onnx.Attrs{"axis": 1})
	x = linear(g, c.r, x, 512*7*7, 512)
	x = c.affine(x, 512, 2)
	g.Output("683", x, onnx.Float, onnx.D(batch, 512))
	return onnx.Model{Graph: g, Producer: "mlserve-modelgen"}
}

// SCRFD10G describes a detector shaped like insightface's SCRFD-10GF with
// keypoints (buffalo_l's det_10g.onnx), with random weights and buffalo_l's
// signature ([SCRFDOutputs], input "input.1" [1,3,?,?]): a ResNet-v1e
// backbone of basic blocks (3, 4, 2, 3 blocks of 56, 88, 88, 224
// channels), a PAFPN neck of 56 channels on strides 8/16/32, and per
// stride three 3×3 convolutions of 80 channels with classification (2
// anchors), box (8) and keypoint (20) convolutions. Normalisation layers are
// left out (they fold into the convolutions or cost little). It has about
// the real model's cost (≈10 G multiply-adds at 640×640), for benchmarks.
type SCRFD10G struct{ Seed uint64 }

// Model builds the graph.
func (s SCRFD10G) Model() onnx.Model {
	g := onnx.NewGraph("scrfd_10g")
	c := cnn{g, rng(s.Seed + 10)}
	x := g.Input("input.1", onnx.Float, onnx.D(1, 3, "?", "?"))
	// Deep stem (v1c/d/e): three 3×3 convolutions, the first with stride 2,
	// then a 3×3 max pool with stride 2.
	x = c.relu(c.conv(x, 3, 28, 3, 2, 1))
	x = c.relu(c.conv(x, 28, 28, 3, 1, 1))
	x = c.relu(c.conv(x, 28, 56, 3, 1, 1))
	x = g.Op("MaxPool", []string{x}, onnx.Attrs{"kernel_shape": []int64{3, 3}, "strides": []int64{2, 2}, "pads": []int64{1, 1, 1, 1}})
	cin := 56
	var feats []string
	planes := []int{56, 88, 88, 224}
	for stage, blocks := range []int{3, 4, 2, 3} {
		for b := range blocks {
			stride := 1
			if b == 0 && stage > 0 {
				stride = 2
			}
			y := c.relu(c.conv(x, cin, planes[stage], 3, stride, 1))
			y = c.conv(y, planes[stage], planes[stage], 3, 1, 0.2)
			short := x
			if stride != 1 || cin != planes[stage] {
				if stride != 1 { // v1e: average pool, then 1×1
					short = g.Op("AveragePool", []string{short}, onnx.Attrs{"kernel_shape": []int64{2, 2}, "strides": []int64{2, 2}, "ceil_mode": 1})
				}
				short = c.conv(short, cin, planes[stage], 1, 1, 1)
			}
			x = c.relu(g.Op("Add", []string{y, short}, nil))
			cin = planes[stage]
		}
		if stage > 0 {
			feats = append(feats, x)
		}
	}
	// PAFPN from stride 8: laterals, top-down, 3×3, bottom-up, 3×3.
	const ch = 56
	lat := make([]string, 3)
	for i, f := range feats {
		lat[i] = c.conv(f, planes[i+1], ch, 1, 1, 1)
	}
	up := g.Const([]int64{4}, []float32{1, 1, 2, 2})
	for i := 2; i > 0; i-- {
		lat[i-1] = g.Op("Add", []string{lat[i-1], g.Op("Resize", []string{lat[i], "", up}, onnx.Attrs{"mode": "nearest"})}, nil)
	}
	for i := range lat {
		lat[i] = c.conv(lat[i], ch, ch, 3, 1, 1)
	}
	for i := 0; i < 2; i++ {
		lat[i+1] = g.Op("Add", []string{lat[i+1], c.conv(lat[i], ch, ch, 3, 2, 1)}, nil)
	}
	outs := make([]string, 9)
	for i, f := range lat {
		f = c.relu(c.conv(f, ch, 80, 3, 1, 1))
		f = c.relu(c.conv(f, 80, 80, 3, 1, 1))
		f = c.relu(c.conv(f, 80, 80, 3, 1, 1))
		flat := func(t string, width int64) string { // [1,2·w,H,W] → [H·W·2, w]
			t = g.Op("Transpose", []string{t}, onnx.Attrs{"perm": []int64{0, 2, 3, 1}})
			return g.Op("Reshape", []string{t, g.ConstI64(-1, width)}, nil)
		}
		// A background prior, as trained detectors have: random features
		// should not make faces everywhere.
		logit := g.Op("Sub", []string{flat(c.conv(f, 80, 2, 3, 1, 0.1), 1), g.Const([]int64{1}, []float32{6})}, nil)
		outs[i] = g.Op("Sigmoid", []string{logit}, nil)
		outs[3+i] = g.Op("Relu", []string{flat(c.conv(f, 80, 8, 3, 1, 0.1), 4)}, nil)
		outs[6+i] = flat(c.conv(f, 80, 20, 3, 1, 0.1), 10)
	}
	widths := []int{1, 1, 1, 4, 4, 4, 10, 10, 10}
	for i, t := range outs {
		n := 2 * (640 / (8 << (i % 3))) * (640 / (8 << (i % 3)))
		g.Output(SCRFDOutputs[i], t, onnx.Float, onnx.D(n, widths[i]))
	}
	return onnx.Model{Graph: g, Producer: "mlserve-modelgen"}
}
