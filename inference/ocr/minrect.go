package ocr

// The flags match third_party/gocv/cgo.go: OpenCV's core and imgproc by
// name, not `pkg-config opencv4`, whose .pc file ships only with
// libopencv-dev (every module); setup.sh installs the two -dev packages.
// With -tags customenv, CGO_CPPFLAGS and CGO_LDFLAGS say where OpenCV is.

/*
#cgo !customenv CPPFLAGS: -I/usr/include/opencv4
#cgo CXXFLAGS: --std=c++11
#cgo !customenv LDFLAGS: -lopencv_imgproc -lopencv_core
#include <stdlib.h>
#include "minrect.h"
*/
import "C"

import (
	"errors"
	"unsafe"
)

var errMinAreaRect = errors.New("minAreaRect failed")

// point is an integer pixel position, as contours and Clipper produce.
type point struct{ X, Y int32 }

// rotRect is what RapidOCR reads from cv2.minAreaRect and cv2.boxPoints:
// the size and the four corners, in OpenCV's float32 arithmetic.
type rotRect struct {
	W, H    float32
	Corners [4][2]float32
}

// minAreaRect runs OpenCV's own minAreaRect and boxPoints. gocv v0.31
// rounds both to integers, and the exact float32 values matter here:
// RapidOCR truncates the corners to integers before unclipping and before
// filling the score mask, so a port of the rotating-calipers code that is
// off in the last bit would move boxes by a pixel.
func minAreaRect(pts []point) (rotRect, error) {
	if len(pts) == 0 {
		return rotRect{}, nil
	}
	var out [10]C.float
	rc := C.ocr_min_area_rect((*C.int)(unsafe.Pointer(&pts[0])), C.int(len(pts)), &out[0])
	if rc != 0 {
		return rotRect{}, errMinAreaRect
	}
	r := rotRect{W: float32(out[0]), H: float32(out[1])}
	for i := range 4 {
		r.Corners[i] = [2]float32{float32(out[2+2*i]), float32(out[3+2*i])}
	}
	return r, nil
}
