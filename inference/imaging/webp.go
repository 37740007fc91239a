package imaging

/*
#cgo LDFLAGS: -lwebp
#include <webp/decode.h>
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// decodeWebP reads a still WebP with libwebp, the library both PIL and
// OpenCV decode with, into RGB: lossy images with libwebp's default fancy
// chroma upsampling, alpha dropped without compositing (libwebp's RGB
// output is the colour of its RGBA output). Animated files are refused,
// as OpenCV 4.6 refused them. h comes from ReadHeader.
func decodeWebP(data []byte, h Header) (*Image, error) {
	src := (*C.uint8_t)(unsafe.Pointer(&data[0]))
	var w, ht C.int
	if C.WebPGetInfo(src, C.size_t(len(data)), &w, &ht) == 0 {
		return nil, fmt.Errorf("%w: webp: invalid header", ErrDecode)
	}
	if int(w) != h.W || int(ht) != h.H {
		return nil, fmt.Errorf("%w: webp: header says %d×%d, bitstream %d×%d", ErrDecode, h.W, h.H, int(w), int(ht))
	}
	im := New(h.W, h.H)
	out := C.WebPDecodeRGBInto(src, C.size_t(len(data)),
		(*C.uint8_t)(unsafe.Pointer(&im.Pix[0])), C.size_t(len(im.Pix)), C.int(h.W*3))
	if out == nil {
		return nil, fmt.Errorf("%w: webp: cannot decode (damaged, truncated or animated)", ErrDecode)
	}
	return im, nil
}
