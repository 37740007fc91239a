package face

import (
	"context"
	"fmt"
	"image"
	"math"

	"gocv.io/x/gocv"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/onnx"
)

// landmarker runs a 68-point landmark model (iBUG 300-W order) such as
// faceplugin's fr_landmark.onnx: input [1,1,S,S] grey x/256 of the face's
// square crop, output 136 values, x and y relative to the crop. The steps
// follow faceplugin's fr_landmark.js (square box of the detection's height,
// shifted into the image, bilinear resize, grey) and fr_feature.js
// (convert68pts5pts).
type landmarker struct {
	sess *inference.Session
	size int
}

func newLandmarker(sess *inference.Session) (*landmarker, error) {
	in, out := sess.Inputs(), sess.Outputs()
	if len(in) != 1 || in[0].Type != onnx.Float || len(in[0].Dims) != 4 || len(out) != 1 {
		return nil, fmt.Errorf("%w: landmark model wants one float32 [1,1,S,S] input and one output, has %v -> %v", ErrUnsupportedModel, in, out)
	}
	d := in[0].Dims
	if d[1].Dynamic() || d[1].Value != 1 || d[2].Dynamic() || d[3].Dynamic() || d[2].Value != d[3].Value || d[2].Value > 1024 {
		return nil, fmt.Errorf("%w: landmark input %v is not a fixed grey square", ErrUnsupportedModel, in[0])
	}
	if d[0].Value > 1 {
		return nil, fmt.Errorf("%w: landmark input %v has a fixed batch above 1", ErrUnsupportedModel, in[0])
	}
	if od := out[0].Dims; len(od) > 0 && !od[len(od)-1].Dynamic() && od[len(od)-1].Value != 136 {
		return nil, fmt.Errorf("%w: landmark output %v is not 68 points", ErrUnsupportedModel, out[0])
	}
	return &landmarker{sess: sess, size: int(d[2].Value)}, nil
}

// cropBox is fr_detect.js's scaleResult followed by fr_landmark.js's
// alignLandmarkImage with scale 1: a square of the box's height centred on
// the box, clipped to the image, truncated to integers, then shifted to lie
// inside the image. It returns the crop rectangle and the origin and size
// the model's outputs are relative to; ok is false when nothing is left.
func cropBox(box [4]float32, w, h int) (rect image.Rectangle, x0, y0, bw, bh float64, ok bool) {
	x1, y1, x2, y2 := float64(box[0]), float64(box[1]), float64(box[2]), float64(box[3])
	side := y2 - y1
	cx, cy := (x1+x2)/2, (y1+y2)/2
	x1 = max(0, cx-side/2)
	y1 = max(0, cy-side/2)
	x2 = min(float64(w-1), cx+side/2)
	y2 = min(float64(h-1), cy+side/2)
	if !(x2-x1 >= 2 && y2-y1 >= 2) { // also false for NaN
		return rect, 0, 0, 0, 0, false
	}
	x0, y0 = math.Trunc(x1), math.Trunc(y1)
	bw, bh = math.Abs(math.Trunc(x2)-x0), math.Abs(math.Trunc(y2)-y0)
	// alignLandmarkImage: scale = min((h-1)/bh, (w-1)/bw, 1), then move
	// the box back inside the image.
	scale := min(float64(h-1)/bh, float64(w-1)/bw, 1)
	nw, nh := bw*scale, bh*scale
	ccx, ccy := x0+bw/2, y0+bh/2
	lx, ly, rx, ry := ccx-nw/2, ccy-nh/2, ccx+nw/2, ccy+nh/2
	if lx < 0 {
		rx -= lx
		lx = 0
	}
	if ly < 0 {
		ry -= ly
		ly = 0
	}
	if rx > float64(w-1) {
		lx -= rx - float64(w-1)
		rx = float64(w - 1)
	}
	if ry > float64(h-1) {
		ly -= ry - float64(h-1)
		ry = float64(h - 1)
	}
	rx0, ry0 := max(int(lx), 0), max(int(ly), 0)
	rw, rh := min(int(rx-lx), w-1), min(int(ry-ly), h-1)
	rect = image.Rect(rx0, ry0, min(rx0+rw, w), min(ry0+rh, h))
	if rect.Dx() < 2 || rect.Dy() < 2 {
		return rect, 0, 0, 0, 0, false
	}
	return rect, x0, y0, bw, bh, true
}

// fivePoints returns the five alignment points of the face in box, or
// ok false when the box leaves no crop.
func (l *landmarker) fivePoints(ctx context.Context, run inference.RunFunc, src gocv.Mat, box [4]float32) (pts [5][2]float32, ok bool, err error) {
	rect, x0, y0, bw, bh, ok := cropBox(box, src.Cols(), src.Rows())
	if !ok {
		return pts, false, nil
	}
	roi := src.Region(rect)
	defer roi.Close()
	small := gocv.NewMat()
	defer small.Close()
	gocv.Resize(roi, &small, image.Pt(l.size, l.size), 0, 0, gocv.InterpolationLinear)
	gray := gocv.NewMat()
	defer gray.Close()
	gocv.CvtColor(small, &gray, gocv.ColorRGBToGray)
	px, err := matBytes(gray, l.size, l.size, 1)
	if err != nil {
		return pts, false, err
	}
	in := make([]float32, len(px))
	for i, v := range px {
		in[i] = float32(v) / 256
	}
	outs, err := run(ctx, l.sess, inference.F32(in, 1, 1, int64(l.size), int64(l.size)))
	if err != nil {
		return pts, false, err
	}
	lm := outs[0].Float32
	if len(lm) != 136 {
		return pts, false, fmt.Errorf("%w: landmark model returned %d values, want 136", ErrUnsupportedModel, len(lm))
	}
	// The model's coordinates are relative to the box before the shift,
	// as fr_landmark.js maps them (its integer truncation is left out).
	at := func(i int) [2]float64 {
		return [2]float64{float64(lm[2*i])*bw + x0, float64(lm[2*i+1])*bh + y0}
	}
	return from68(at), true, nil
}

// from68 is fr_feature.js's convert68pts5pts on iBUG 68-point indices:
// eye centres from the four lid points of each eye (37, 38, 40, 41 and 43,
// 44, 46, 47), the nose tip (30), and each mouth corner as the mean of the
// outer and inner lip corner (48 and 60, 54 and 64).
func from68(at func(int) [2]float64) [5][2]float32 {
	mean := func(idx ...int) [2]float32 {
		var s [2]float64
		for _, i := range idx {
			p := at(i)
			s[0] += p[0]
			s[1] += p[1]
		}
		return [2]float32{float32(s[0] / float64(len(idx))), float32(s[1] / float64(len(idx)))}
	}
	return [5][2]float32{
		mean(37, 38, 40, 41),
		mean(43, 44, 46, 47),
		mean(30),
		mean(48, 60),
		mean(54, 64),
	}
}
