package face

import (
	"context"
	"fmt"

	"gocv.io/x/gocv"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/onnx"
)

// UltraFace constants (Linzaer's Ultra-Light-Fast-Generic-Face-Detector, as
// faceplugin's fr_detect.js and the dependencies notes use it).
const (
	ultraMean = 127.0
	ultraStd  = 128.0
	ultraNMS  = 0.3
)

// ultraface is an UltraFace-type detector whose graph decodes its priors:
// input [1,3,H,W], outputs "scores" [1,N,2] (background, face) and "boxes"
// [1,N,4] (x1, y1, x2, y2 relative to the image). It has no keypoints; the
// five points come from the landmark model.
type ultraface struct {
	sess             *inference.Session
	w, h             int
	scoreOut, boxOut int
	landmarks        *landmarker
}

func newUltraFace(sess *inference.Session, lm *landmarker) (*ultraface, error) {
	if lm == nil {
		return nil, fmt.Errorf("%w: ultraface needs a landmark model", ErrConfig)
	}
	in := sess.Inputs()
	if len(in) != 1 || in[0].Type != onnx.Float || len(in[0].Dims) != 4 {
		return nil, fmt.Errorf("%w: UltraFace wants one float32 NCHW input, model has %v", ErrUnsupportedModel, in)
	}
	d := in[0].Dims
	if d[1].Dynamic() || d[1].Value != 3 || d[2].Dynamic() || d[3].Dynamic() || d[2].Value > 4096 || d[3].Value > 4096 {
		return nil, fmt.Errorf("%w: UltraFace input %v needs a fixed 3-channel size", ErrUnsupportedModel, in[0])
	}
	if !d[0].Dynamic() && d[0].Value != 1 {
		return nil, fmt.Errorf("%w: UltraFace input %v has batch %d", ErrUnsupportedModel, in[0], d[0].Value)
	}
	u := &ultraface{sess: sess, w: int(d[3].Value), h: int(d[2].Value), scoreOut: -1, boxOut: -1, landmarks: lm}
	outs := sess.Outputs()
	for i, o := range outs {
		switch o.Name {
		case "scores":
			u.scoreOut = i
		case "boxes":
			u.boxOut = i
		}
	}
	if u.scoreOut < 0 || u.boxOut < 0 {
		if len(outs) != 2 {
			return nil, fmt.Errorf("%w: UltraFace wants outputs scores and boxes, model has %v", ErrUnsupportedModel, outs)
		}
		u.scoreOut, u.boxOut = 0, 1
	}
	return u, nil
}

func (u *ultraface) detect(ctx context.Context, run inference.RunFunc, img *imaging.Image, minScore float32) (*Detections, error) {
	// Stretched to the input size, as fr_detect.js does (cv.resize,
	// bilinear).
	px, err := resizeRGB(img, u.w, u.h, gocv.InterpolationLinear)
	if err != nil {
		return nil, err
	}
	blob := make([]float32, 3*u.w*u.h)
	planarBlob(blob, px, ultraMean, ultraStd)
	outs, err := run(ctx, u.sess, inference.F32(blob, 1, 3, int64(u.h), int64(u.w)))
	if err != nil {
		return nil, err
	}
	scores, boxes := outs[u.scoreOut].Float32, outs[u.boxOut].Float32
	n := len(scores) / 2
	if len(scores) != 2*n || len(boxes) != 4*n {
		return nil, fmt.Errorf("%w: UltraFace returned %d scores and %d box values", ErrUnsupportedModel, len(scores), len(boxes))
	}
	fw, fh := float32(img.W), float32(img.H)
	var cands []candidate
	for i := range n {
		s := scores[2*i+1]
		if !(s >= minScore) {
			continue
		}
		b := boxes[4*i : 4*i+4]
		cands = append(cands, candidate{
			box:   [4]float32{b[0] * fw, b[1] * fh, b[2] * fw, b[3] * fh},
			score: s, index: i,
		})
	}
	sortByScore(cands)
	keep := nmsPlain(cands, ultraNMS)
	return withLandmarks(ctx, run, img, keep, u.landmarks)
}

// withLandmarks fills every kept candidate's five points from the landmark
// model and drops candidates whose box leaves no crop inside the image.
func withLandmarks(ctx context.Context, run inference.RunFunc, img *imaging.Image, keep []candidate, lm *landmarker) (*Detections, error) {
	if len(keep) == 0 {
		return toDetections(nil, true), nil
	}
	src, err := img.Mat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrImage, err)
	}
	defer src.Close()
	out := keep[:0]
	for _, c := range keep {
		pts, ok, err := lm.fivePoints(ctx, run, src, c.box)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		c.kps = pts
		out = append(out, c)
	}
	return toDetections(out, true), nil
}
