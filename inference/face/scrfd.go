package face

import (
	"context"
	"fmt"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/onnx"
)

// SCRFD constants of insightface's RetinaFace class as Immich configures it.
const (
	scrfdInputSize = 640 // prepare(input_size=(640, 640)) when the model's size is dynamic
	scrfdMean      = 127.5
	scrfdStd       = 128.0
	scrfdNMS       = 0.4
)

// scrfdLayout is what insightface's _init_vars derives from the number of
// outputs.
type scrfdLayout struct {
	strides []int
	anchors int
	kps     bool
}

func layoutFor(outputs int) (scrfdLayout, bool) {
	switch outputs {
	case 6:
		return scrfdLayout{strides: []int{8, 16, 32}, anchors: 2}, true
	case 9:
		return scrfdLayout{strides: []int{8, 16, 32}, anchors: 2, kps: true}, true
	case 10:
		return scrfdLayout{strides: []int{8, 16, 32, 64, 128}, anchors: 1}, true
	case 15:
		return scrfdLayout{strides: []int{8, 16, 32, 64, 128}, anchors: 1, kps: true}, true
	}
	return scrfdLayout{}, false
}

// scrfd is the detector of Immich's face packs.
type scrfd struct {
	sess   *inference.Session
	layout scrfdLayout
	w, h   int // network input size
}

func newSCRFD(sess *inference.Session) (*scrfd, error) {
	in := sess.Inputs()
	if len(in) != 1 || in[0].Type != onnx.Float || len(in[0].Dims) != 4 {
		return nil, fmt.Errorf("%w: SCRFD wants one float32 NCHW input, model has %v", ErrUnsupportedModel, in)
	}
	if d := in[0].Dims[1]; !d.Dynamic() && d.Value != 3 {
		return nil, fmt.Errorf("%w: SCRFD input %v is not 3-channel", ErrUnsupportedModel, in[0])
	}
	layout, ok := layoutFor(len(sess.Outputs()))
	if !ok {
		return nil, fmt.Errorf("%w: SCRFD has 6, 9, 10 or 15 outputs, model has %d", ErrUnsupportedModel, len(sess.Outputs()))
	}
	// A model with a fixed input size keeps it (insightface ignores
	// prepare's input_size then); a dynamic one gets 640×640.
	s := &scrfd{sess: sess, layout: layout, w: scrfdInputSize, h: scrfdInputSize}
	if hd, wd := in[0].Dims[2], in[0].Dims[3]; !hd.Dynamic() && !wd.Dynamic() {
		s.w, s.h = int(wd.Value), int(hd.Value)
		if s.w%32 != 0 || s.h%32 != 0 || s.w > 4096 || s.h > 4096 {
			return nil, fmt.Errorf("%w: SCRFD input %dx%d is not a multiple of 32", ErrUnsupportedModel, s.w, s.h)
		}
	}
	return s, nil
}

func (s *scrfd) detect(ctx context.Context, run inference.RunFunc, img *imaging.Image, minScore float32) (*Detections, error) {
	lb := planLetterbox(img.W, img.H, s.w, s.h)
	if lb.empty() {
		return toDetections(nil, s.layout.kps), nil
	}
	canvas, err := lb.draw(img, s.w, s.h)
	if err != nil {
		return nil, err
	}
	blob := make([]float32, 3*s.w*s.h)
	planarBlob(blob, canvas, scrfdMean, scrfdStd)
	outs, err := run(ctx, s.sess, inference.F32(blob, 1, 3, int64(s.h), int64(s.w)))
	if err != nil {
		return nil, err
	}
	raw := make([][]float32, len(outs))
	for i, o := range outs {
		raw[i] = o.Float32
	}
	return scrfdPostprocess(raw, s.layout, s.w, s.h, lb.scale, minScore)
}

// scrfdPostprocess is insightface's RetinaFace.forward decoding plus the
// rest of detect(): threshold, merge strides, sort, scale back, NMS. outs
// are the model's outputs in model order (scores, boxes, keypoints per
// stride), each with or without a leading batch axis of 1.
func scrfdPostprocess(outs [][]float32, layout scrfdLayout, inW, inH int, detScale float64, thresh float32) (*Detections, error) {
	fmc := len(layout.strides)
	want := fmc * 2
	if layout.kps {
		want = fmc * 3
	}
	if len(outs) != want {
		return nil, fmt.Errorf("%w: %d outputs, want %d", ErrUnsupportedModel, len(outs), want)
	}
	var cands []candidate
	base := 0
	for idx, stride := range layout.strides {
		height, width := inH/stride, inW/stride
		k := height * width * layout.anchors
		scores, boxes := outs[idx], outs[idx+fmc]
		var kps []float32
		if layout.kps {
			kps = outs[idx+2*fmc]
		}
		if len(scores) != k || len(boxes) != 4*k || (layout.kps && len(kps) != 10*k) {
			return nil, fmt.Errorf("%w: stride %d outputs have %d/%d/%d values, want %d/%d/%d",
				ErrUnsupportedModel, stride, len(scores), len(boxes), len(kps), k, 4*k, 10*k)
		}
		st := float32(stride)
		for i := range k {
			// numpy: scores >= threshold, both float32.
			if !(scores[i] >= thresh) {
				continue
			}
			cell := i / layout.anchors
			// anchor centres (x·s, y·s), row-major, each repeated per anchor.
			cx := float32((cell % width) * stride)
			cy := float32((cell / width) * stride)
			b := boxes[4*i : 4*i+4]
			c := candidate{score: scores[i], index: base + i}
			// float32() keeps the compiler from fusing multiply and add
			// (numpy rounds the product first).
			c.box = [4]float32{cx - float32(b[0]*st), cy - float32(b[1]*st), cx + float32(b[2]*st), cy + float32(b[3]*st)}
			if layout.kps {
				p := kps[10*i : 10*i+10]
				for j := range 5 {
					c.kps[j] = [2]float32{cx + float32(p[2*j]*st), cy + float32(p[2*j+1]*st)}
				}
			}
			cands = append(cands, c)
		}
		base += k
	}
	sortByScore(cands)
	// numpy divides the float32 arrays by the Python float det_scale in
	// float32.
	ds := float32(detScale)
	for i := range cands {
		for k := range 4 {
			cands[i].box[k] /= ds
		}
		for j := range 5 {
			cands[i].kps[j][0] /= ds
			cands[i].kps[j][1] /= ds
		}
	}
	return toDetections(nmsPlusOne(cands, scrfdNMS), layout.kps), nil
}
