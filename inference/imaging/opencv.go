package imaging

/*
#cgo !windows pkg-config: opencv4
#cgo CXXFLAGS: --std=c++11
#include <stdlib.h>
#include "cvdecode.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"gocv.io/x/gocv"
)

// decodeOpenCV decodes what OpenCV decodes as PIL does: PNG other than
// 16-bit grey, WebP, BMP and 8-bit TIFF. IMREAD_COLOR drops alpha without
// compositing, expands palettes and grey, and takes the high byte of
// 16-bit colour samples, exactly as PIL's RGB conversion does. OpenCV
// writes into the output directly, so the image is held once.
func decodeOpenCV(data []byte, h Header) (*Image, error) {
	im := New(h.W, h.H)
	if len(im.Pix) == 0 {
		return nil, ErrEmpty
	}
	var msg [512]C.char
	rc := C.imaging_imdecode_rgb((*C.uchar)(unsafe.Pointer(&data[0])), C.size_t(len(data)), C.int(h.W), C.int(h.H),
		(*C.uchar)(unsafe.Pointer(&im.Pix[0])), &msg[0], C.int(len(msg)))
	if rc != 0 {
		return nil, fmt.Errorf("%w: %s: %s", ErrDecode, h.Format, C.GoString(&msg[0]))
	}
	return im, nil
}

// decodeGray16 reads a 16-bit greyscale image as PIL converts its mode I
// (PNG) or I;16 (TIFF) to RGB: each sample clipped to 255, not scaled.
func decodeGray16(data []byte) (*Image, error) {
	m, err := gocv.IMDecode(data, gocv.IMReadAnyDepth|gocv.IMReadIgnoreOrientation)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecode, err)
	}
	defer m.Close()
	if m.Empty() {
		return nil, ErrDecode
	}
	if m.Type() != gocv.MatTypeCV16UC1 {
		return FromMat(m)
	}
	src, err := m.DataPtrUint16()
	if err != nil || len(src) != m.Rows()*m.Cols() {
		return nil, fmt.Errorf("%w: 16-bit grey: unexpected layout", ErrDecode)
	}
	im := New(m.Cols(), m.Rows())
	for i, v := range src {
		g := byte(min(v, 255))
		p := im.Pix[i*3 : i*3+3 : i*3+3]
		p[0], p[1], p[2] = g, g, g
	}
	return im, nil
}
