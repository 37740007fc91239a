package face

import (
	"context"
	"fmt"
	"math"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/onnx"
)

// BlazeFace constants (MediaPipe's face detector as keijiro's
// BlazeFaceBarracuda decodes it).
const (
	blazeNMS = 0.3
	// blazeMouthHalf is half the mouth width in eye distances, from the
	// ArcFace template: (70.7299−41.5493)/2 / (73.5318−38.2946).
	blazeMouthHalf = 0.41404
)

// blazeLayer is one output pair: cells×cells anchors of `anchors` each.
type blazeLayer struct {
	scoreOut, boxOut int
	cells, anchors   int
}

// blazeface is MediaPipe BlazeFace: input [1,S,S,3] NHWC x/127.5−1,
// outputs per layer scores [1,N,1] (logits) and regressors [1,N,16] (box
// centre offset and size, then six keypoints: right eye, left eye, nose,
// mouth, right ear, left ear of the person, in input pixels relative to the
// anchor centre). Layers of 512 anchors are 16×16 cells × 2, of 384 are
// 8×8 × 6 (both the 128 front and the 256 back model).
type blazeface struct {
	sess      *inference.Session
	size      int
	layers    []blazeLayer
	landmarks *landmarker // optional: five points from the 68-point model instead
}

func newBlazeFace(sess *inference.Session, lm *landmarker) (*blazeface, error) {
	in := sess.Inputs()
	if len(in) != 1 || in[0].Type != onnx.Float || len(in[0].Dims) != 4 {
		return nil, fmt.Errorf("%w: BlazeFace wants one float32 NHWC input, model has %v", ErrUnsupportedModel, in)
	}
	d := in[0].Dims
	if d[1].Dynamic() || d[2].Dynamic() || d[1].Value != d[2].Value || d[3].Value != 3 || d[1].Value > 2048 {
		return nil, fmt.Errorf("%w: BlazeFace input %v is not [1,S,S,3]", ErrUnsupportedModel, in[0])
	}
	b := &blazeface{sess: sess, size: int(d[1].Value), landmarks: lm}
	rows := map[int64][2]int{} // anchors → score output, box output
	for i, o := range sess.Outputs() {
		if len(o.Dims) != 3 || o.Dims[1].Dynamic() {
			return nil, fmt.Errorf("%w: BlazeFace output %v is not [1,N,K]", ErrUnsupportedModel, o)
		}
		n := o.Dims[1].Value
		pair, ok := rows[n]
		if !ok {
			pair = [2]int{-1, -1}
		}
		switch o.Dims[2].Value {
		case 1:
			pair[0] = i
		case 16:
			pair[1] = i
		default:
			return nil, fmt.Errorf("%w: BlazeFace output %v is neither scores nor regressors", ErrUnsupportedModel, o)
		}
		rows[n] = pair
	}
	for _, n := range []int64{512, 384} {
		pair, ok := rows[n]
		if !ok || pair[0] < 0 || pair[1] < 0 {
			return nil, fmt.Errorf("%w: BlazeFace wants score and regressor outputs for 512 and 384 anchors, model has %v", ErrUnsupportedModel, sess.Outputs())
		}
		l := blazeLayer{scoreOut: pair[0], boxOut: pair[1], cells: 16, anchors: 2}
		if n == 384 {
			l.cells, l.anchors = 8, 6
		}
		b.layers = append(b.layers, l)
	}
	if len(rows) != 2 {
		return nil, fmt.Errorf("%w: BlazeFace has unexpected outputs %v", ErrUnsupportedModel, sess.Outputs())
	}
	return b, nil
}

func (b *blazeface) detect(ctx context.Context, run inference.RunFunc, img *imaging.Image, minScore float32) (*Detections, error) {
	// Letterboxed (top-left, black) like SCRFD, so faces keep their shape.
	lb := planLetterbox(img.W, img.H, b.size, b.size)
	if lb.empty() {
		return toDetections(nil, true), nil
	}
	canvas, err := lb.draw(img, b.size, b.size)
	if err != nil {
		return nil, err
	}
	in := make([]float32, len(canvas))
	for i, v := range canvas {
		in[i] = float32(v)/127.5 - 1
	}
	outs, err := run(ctx, b.sess, inference.F32(in, 1, int64(b.size), int64(b.size), 3))
	if err != nil {
		return nil, err
	}
	// Input pixels → image pixels.
	toImg := float32(1 / lb.scale)
	var cands []candidate
	index := 0
	for _, l := range b.layers {
		scores, regs := outs[l.scoreOut].Float32, outs[l.boxOut].Float32
		n := l.cells * l.cells * l.anchors
		if len(scores) != n || len(regs) != 16*n {
			return nil, fmt.Errorf("%w: BlazeFace layer returned %d scores and %d regressors, want %d", ErrUnsupportedModel, len(scores), len(regs), n)
		}
		step := float32(b.size) / float32(l.cells)
		for i := range n {
			logit := max(-100, min(100, float64(scores[i])))
			s := float32(1 / (1 + math.Exp(-logit)))
			if !(s >= minScore) {
				continue
			}
			cell := i / l.anchors
			ax := (float32(cell%l.cells) + 0.5) * step
			ay := (float32(cell/l.cells) + 0.5) * step
			r := regs[16*i : 16*i+16]
			cx, cy, w, h := ax+r[0], ay+r[1], r[2], r[3]
			c := candidate{score: s, index: index + i}
			c.box = [4]float32{(cx - w/2) * toImg, (cy - h/2) * toImg, (cx + w/2) * toImg, (cy + h/2) * toImg}
			var kp [4][2]float32 // right eye, left eye, nose, mouth centre (of the person)
			for k := range kp {
				kp[k] = [2]float32{(ax + r[4+2*k]) * toImg, (ay + r[5+2*k]) * toImg}
			}
			c.kps = fivePointsFromBlaze(kp)
			cands = append(cands, c)
		}
		index += n
	}
	sortByScore(cands)
	keep := nmsWeighted(cands, blazeNMS)
	if b.landmarks != nil {
		return withLandmarks(ctx, run, img, keep, b.landmarks)
	}
	return toDetections(keep, true), nil
}

// fivePointsFromBlaze maps BlazeFace's eyes, nose and mouth centre to the
// ArcFace order (image-left eye first: the person's right eye). The two
// mouth corners lie on the mouth centre along the eye line, as far apart
// as the template's.
func fivePointsFromBlaze(kp [4][2]float32) [5][2]float32 {
	ex, ey := kp[1][0]-kp[0][0], kp[1][1]-kp[0][1]
	mx, my := kp[3][0], kp[3][1]
	return [5][2]float32{
		kp[0], kp[1], kp[2],
		{mx - blazeMouthHalf*ex, my - blazeMouthHalf*ey},
		{mx + blazeMouthHalf*ex, my + blazeMouthHalf*ey},
	}
}
