package imaging

/*
#cgo LDFLAGS: -ljpeg
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>

// libjpeg reports fatal errors through error_exit, whose default calls
// exit(); this one jumps back to the caller instead. Warnings (a truncated
// file, for one) are silenced: the decoder then fills the rest, as OpenCV's
// JPEG path does.
typedef struct {
	struct jpeg_error_mgr pub;
	jmp_buf jump;
	char msg[JMSG_LENGTH_MAX];
} mlserve_jpeg_err;

static void mlserve_jpeg_error_exit(j_common_ptr c) {
	mlserve_jpeg_err *e = (mlserve_jpeg_err *)c->err;
	(*c->err->format_message)(c, e->msg);
	longjmp(e->jump, 1);
}

static void mlserve_jpeg_silent(j_common_ptr c) { (void)c; }

// mlserve_decode_cmyk decodes a 4-component JPEG to the CMYK samples libjpeg
// produces (YCCK is converted by libjpeg, as for PIL). It returns 0 and a
// malloc'ed w*h*4 buffer, or -1 and a message.
static int mlserve_decode_cmyk(const unsigned char *data, unsigned long len, long long max_pixels,
                               unsigned char **out, int *w, int *h, char *msg, int msglen) {
	struct jpeg_decompress_struct cinfo;
	mlserve_jpeg_err err;
	unsigned char *volatile buf = NULL;
	memset(&cinfo, 0, sizeof cinfo);
	cinfo.err = jpeg_std_error(&err.pub);
	err.pub.error_exit = mlserve_jpeg_error_exit;
	err.pub.output_message = mlserve_jpeg_silent;
	err.msg[0] = 0;
	if (setjmp(err.jump)) {
		jpeg_destroy_decompress(&cinfo);
		free(buf);
		snprintf(msg, msglen, "%s", err.msg);
		return -1;
	}
	jpeg_create_decompress(&cinfo);
	jpeg_mem_src(&cinfo, data, len);
	jpeg_read_header(&cinfo, TRUE);
	if (cinfo.num_components != 4) {
		jpeg_destroy_decompress(&cinfo);
		snprintf(msg, msglen, "not a 4-component JPEG");
		return -1;
	}
	if ((long long)cinfo.image_width * (long long)cinfo.image_height > max_pixels) {
		jpeg_destroy_decompress(&cinfo);
		snprintf(msg, msglen, "too large");
		return -2;
	}
	cinfo.out_color_space = JCS_CMYK;
	jpeg_start_decompress(&cinfo);
	size_t stride = (size_t)cinfo.output_width * 4;
	buf = malloc(stride * cinfo.output_height);
	if (buf == NULL) {
		jpeg_destroy_decompress(&cinfo);
		snprintf(msg, msglen, "out of memory");
		return -1;
	}
	while (cinfo.output_scanline < cinfo.output_height) {
		JSAMPROW row = buf + stride * cinfo.output_scanline;
		jpeg_read_scanlines(&cinfo, &row, 1);
	}
	*w = cinfo.output_width;
	*h = cinfo.output_height;
	jpeg_finish_decompress(&cinfo);
	jpeg_destroy_decompress(&cinfo);
	*out = buf;
	return 0;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// decodeCMYKJPEG decodes a CMYK (or YCCK) JPEG as PIL does. PIL reads the
// samples as Adobe-inverted ("CMYK;I") whether or not the file has an Adobe
// marker, then converts with
//
//	R = clip(255-K' - (C'·(255-K') / 255, rounded))   with C' = 255-C etc.
//
// OpenCV divides by 256 instead and so is off by one on most pixels, which
// is why this path reads the samples from libjpeg itself (the same library
// and IDCT as PIL's).
func decodeCMYKJPEG(data []byte, maxPixels int) (*Image, error) {
	var (
		out  *C.uchar
		w, h C.int
		msg  [200]C.char
	)
	rc := C.mlserve_decode_cmyk((*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)), C.longlong(maxPixels),
		&out, &w, &h, &msg[0], C.int(len(msg)))
	switch rc {
	case 0:
	case -2:
		return nil, fmt.Errorf("%w: CMYK JPEG", ErrTooLarge)
	default:
		return nil, fmt.Errorf("%w: CMYK JPEG: %s", ErrDecode, C.GoString(&msg[0]))
	}
	defer C.free(unsafe.Pointer(out))
	if w <= 0 || h <= 0 {
		return nil, ErrEmpty
	}
	src := unsafe.Slice((*byte)(unsafe.Pointer(out)), int(w)*int(h)*4)
	im := New(int(w), int(h))
	cmykToRGB(im.Pix, src)
	return im, nil
}

// cmykToRGB converts raw libjpeg CMYK samples (Adobe-inverted, as PIL
// assumes) to RGB with PIL's cmyk2rgb.
func cmykToRGB(dst, src []byte) {
	for i, j := 0, 0; j+4 <= len(src) && i+3 <= len(dst); i, j = i+3, j+4 {
		// After PIL's inversion, nk = 255 - K' = K (raw) and C' = 255 - C.
		k := int(src[j+3])
		dst[i] = clip8(k - mulDiv255(255-int(src[j]), k))
		dst[i+1] = clip8(k - mulDiv255(255-int(src[j+1]), k))
		dst[i+2] = clip8(k - mulDiv255(255-int(src[j+2]), k))
	}
}

// mulDiv255 is PIL's MULDIV255: a·b/255 rounded, in integers.
func mulDiv255(a, b int) int {
	t := a*b + 128
	return ((t >> 8) + t) >> 8
}

func clip8(v int) byte {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return byte(v)
}
