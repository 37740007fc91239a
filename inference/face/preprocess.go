package face

import (
	"fmt"
	"image"

	"gocv.io/x/gocv"

	"github.com/mlserve/mlserve/inference/imaging"
)

// letterbox is insightface's RetinaFace.detect resize: the image keeps its
// aspect ratio, fills the canvas's width or height, and sits at the
// top-left of a black canvas.
type letterbox struct {
	newW, newH int
	// scale is det_scale = new_h / h, computed in float64 as Python does.
	scale float64
}

// planLetterbox computes the resized size exactly as insightface does
// (int() truncation of float64 products).
func planLetterbox(w, h, canvasW, canvasH int) letterbox {
	imRatio := float64(h) / float64(w)
	modelRatio := float64(canvasH) / float64(canvasW)
	var lb letterbox
	if imRatio > modelRatio {
		lb.newH = canvasH
		lb.newW = int(float64(lb.newH) / imRatio)
	} else {
		lb.newW = canvasW
		lb.newH = int(float64(lb.newW) * imRatio)
	}
	lb.scale = float64(lb.newH) / float64(h)
	return lb
}

// empty reports whether the image shrinks to nothing (e.g. 10000×10 into
// 640×640: 0 rows). Python would fail on it; no face can be there, so the
// detectors return no faces.
func (lb letterbox) empty() bool { return lb.newW <= 0 || lb.newH <= 0 }

// draw resizes img (bilinear, as cv2.resize's default) into the top-left
// corner of a black canvasW×canvasH RGB canvas and returns the canvas
// bytes.
func (lb letterbox) draw(img *imaging.Image, canvasW, canvasH int) ([]byte, error) {
	canvas := make([]byte, canvasW*canvasH*3)
	if lb.empty() {
		return canvas, nil
	}
	resized, err := resizeRGB(img, lb.newW, lb.newH, gocv.InterpolationLinear)
	if err != nil {
		return nil, err
	}
	row := lb.newW * 3
	for y := 0; y < lb.newH; y++ {
		copy(canvas[y*canvasW*3:y*canvasW*3+row], resized[y*row:(y+1)*row])
	}
	return canvas, nil
}

// resizeRGB resizes an RGB image to w×h with OpenCV and returns the bytes
// (w*h*3). Same size is a copy, as cv2.resize does.
func resizeRGB(img *imaging.Image, w, h int, interp gocv.InterpolationFlags) ([]byte, error) {
	src, err := img.Mat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrImage, err)
	}
	defer src.Close()
	if w == img.W && h == img.H {
		return append([]byte(nil), img.Pix...), nil
	}
	dst := gocv.NewMat()
	defer dst.Close()
	gocv.Resize(src, &dst, image.Pt(w, h), 0, 0, interp)
	return matBytes(dst, w, h, 3)
}

// matBytes copies a continuous 8-bit Mat of the expected size.
func matBytes(m gocv.Mat, w, h, ch int) ([]byte, error) {
	if m.Empty() || m.Cols() != w || m.Rows() != h || m.Channels() != ch {
		return nil, fmt.Errorf("opencv returned a %dx%dx%d image, want %dx%dx%d", m.Cols(), m.Rows(), m.Channels(), w, h, ch)
	}
	b, err := m.DataPtrUint8()
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), b...), nil
}

// planarBlob writes interleaved RGB pixels into dst as planar NCHW float32,
// (float32(v) − mean) · (1/std): the arithmetic of cv2.dnn.blobFromImage
// with scalefactor 1/std (subtract the mean, then scale, in float32).
// dst must hold 3·len(rgb)/3 values.
func planarBlob(dst []float32, rgb []byte, mean, std float64) {
	n := len(rgb) / 3
	m := float32(mean)
	s := float32(1 / std)
	r, g, b := dst[:n], dst[n:2*n], dst[2*n:3*n]
	for i := range n {
		r[i] = (float32(rgb[3*i]) - m) * s
		g[i] = (float32(rgb[3*i+1]) - m) * s
		b[i] = (float32(rgb[3*i+2]) - m) * s
	}
}
