package modelgen

import (
	"strings"

	"github.com/mlserve/mlserve/onnx"
)

// PP-OCR signatures, as read with onnx.Inspect from the real PP-OCRv4 files
// (ch_PP-OCRv4_det_infer.onnx, ch_PP-OCRv4_rec_infer.onnx; Paddle2ONNX
// names every dynamic dimension p2o.DynamicDimension.N).
const (
	PPOCRInput           = "x"
	PPOCRDetectionOutput = "sigmoid_0.tmp_0"
	PPOCRRecognitionOut  = "softmax_11.tmp_0"
	// PPOCRCharacterKey is the metadata entry holding the recognition
	// dictionary, one entry per line, as in RapidOCR's PP-OCRv5 exports.
	PPOCRCharacterKey = "character"
)

// PPOCRDetection describes a graph with the signature of a PP-OCR DB text
// detector: input "x" float32 [N,3,H,W] (H, W dynamic), output
// "sigmoid_0.tmp_0" float32 [N,1,H,W], a probability map.
//
// It marks dark ink on a light background, so that tests can place "text"
// and expect boxes there: a 5×5 box filter over the channels weighted
// 0.5, 0.3, 0.2 (B, G, R in Immich's BGR input order, so a channel swap
// shows), then sigmoid(6·(1 − v)). With Immich's normalisation
// ((x−0.5)/127.5), black gives about 0.998 and white about 0.0025.
type PPOCRDetection struct{}

// Model builds the graph.
func (PPOCRDetection) Model() onnx.Model {
	g := onnx.NewGraph("ppocr_det")
	x := g.Input(PPOCRInput, onnx.Float, onnx.D("p2o.DynamicDimension.0", 3, "p2o.DynamicDimension.1", "p2o.DynamicDimension.2"))
	const k = 5
	w := make([]float32, 3*k*k)
	for c, cw := range []float32{0.5, 0.3, 0.2} {
		for i := range k * k {
			w[c*k*k+i] = cw / (k * k)
		}
	}
	conv := g.Op("Conv", []string{x, g.Const([]int64{1, 3, k, k}, w)}, onnx.Attrs{
		"kernel_shape": []int64{k, k},
		"pads":         []int64{k / 2, k / 2, k / 2, k / 2},
	})
	v := g.Op("Sub", []string{g.Const([]int64{1}, []float32{1}), conv}, nil)
	v = g.Op("Mul", []string{v, g.Const([]int64{1}, []float32{6})}, nil)
	g.Output(PPOCRDetectionOutput, g.Op("Sigmoid", []string{v}, nil), onnx.Float,
		onnx.D("p2o.DynamicDimension.3", 1, "p2o.DynamicDimension.4", "p2o.DynamicDimension.5"))
	return onnx.Model{Graph: g, Producer: "mlserve-modelgen"}
}

// PPOCRRecognition describes a graph with the signature of a PP-OCR CTC
// text recogniser: input "x" float32 [N,3,48,W] (W dynamic), output
// "softmax_11.tmp_0" float32 [N,W/8,C] where C = len(Dictionary)+2 (blank
// first, space last), softmax over C. The dictionary goes into the
// "character" metadata, newline-separated, unless OmitDictionary is set
// (the PP-OCRv4 files keep theirs in a separate text file).
//
// Each 48×8 column strip is averaged per channel and projected to the
// classes with fixed random weights from Seed.
type PPOCRRecognition struct {
	Dictionary     []string // nil: the digits and a–z
	OmitDictionary bool
	Seed           uint64
}

// Classes is the number of output classes.
func (p PPOCRRecognition) Classes() int { return len(p.dict()) + 2 }

func (p PPOCRRecognition) dict() []string {
	if p.Dictionary != nil {
		return p.Dictionary
	}
	d := make([]string, 0, 36)
	for c := '0'; c <= '9'; c++ {
		d = append(d, string(c))
	}
	for c := 'a'; c <= 'z'; c++ {
		d = append(d, string(c))
	}
	return d
}

// Model builds the graph.
func (p PPOCRRecognition) Model() onnx.Model {
	r := rng(p.Seed + 5)
	classes := p.Classes()
	g := onnx.NewGraph("ppocr_rec")
	x := g.Input(PPOCRInput, onnx.Float, onnx.D("p2o.DynamicDimension.0", 3, 48, "p2o.DynamicDimension.1"))
	pooled := g.Op("AveragePool", []string{x}, onnx.Attrs{
		"kernel_shape": []int64{48, 8},
		"strides":      []int64{48, 8},
	}) // [N,3,1,W/8]
	seq := g.Op("Transpose", []string{g.Op("Squeeze", []string{pooled, g.ConstI64(2)}, nil)}, onnx.Attrs{"perm": []int64{0, 2, 1}}) // [N,T,3]
	w := g.Const([]int64{3, int64(classes)}, normal(r, 3*classes, 3))
	b := g.Const([]int64{int64(classes)}, normal(r, classes, 1))
	logits := g.Op("Add", []string{g.Op("MatMul", []string{seq, w}, nil), b}, nil)
	g.Output(PPOCRRecognitionOut, g.Op("Softmax", []string{logits}, onnx.Attrs{"axis": -1}), onnx.Float,
		onnx.D("p2o.DynamicDimension.2", "p2o.DynamicDimension.3", classes))
	m := onnx.Model{Graph: g, Producer: "mlserve-modelgen", Metadata: map[string]string{}}
	if !p.OmitDictionary {
		m.Metadata[PPOCRCharacterKey] = strings.Join(p.dict(), "\n")
	}
	return m
}
