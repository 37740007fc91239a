package imaging

/*
#cgo LDFLAGS: -lpng16
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <png.h>

typedef struct {
	const unsigned char *data;
	size_t len, off;
	char msg[128];
} mlserve_png_src;

static void mlserve_png_read(png_structp png, png_bytep out, size_t n) {
	mlserve_png_src *s = (mlserve_png_src *)png_get_io_ptr(png);
	if (n > s->len - s->off)
		png_error(png, "truncated data");
	memcpy(out, s->data + s->off, n);
	s->off += n;
}

static void mlserve_png_error(png_structp png, png_const_charp msg) {
	mlserve_png_src *s = (mlserve_png_src *)png_get_error_ptr(png);
	snprintf(s->msg, sizeof s->msg, "%s", msg);
	png_longjmp(png, 1);
}

static void mlserve_png_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

// mlserve_decode_png decodes a PNG of exactly w×h pixels into out (w*h*3
// bytes, RGB) with the libpng transformations OpenCV 4.6's PNG decoder
// sets for IMREAD_COLOR: 16-bit samples stripped to their high byte,
// palettes and 1/2/4-bit grey expanded, grey replicated, alpha (and tRNS)
// dropped without compositing. With gray16 set (16-bit greyscale, OpenCV's
// IMREAD_ANYDEPTH path), samples are read at 16 bits and clipped to 255,
// as PIL converts mode I to RGB. It reads to the end of the file as OpenCV
// does (png_read_end), so a file cut after its image data is an error.
// It returns 0, or -1 with a message in msg.
static int mlserve_decode_png(const unsigned char *data, size_t len, int w, int h, int gray16,
                              unsigned char *out, char *msg, int msglen) {
	mlserve_png_src src = {data, len, 0, {0}};
	png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, mlserve_png_error, mlserve_png_warning);
	if (!png) {
		snprintf(msg, msglen, "out of memory");
		return -1;
	}
	png_infop info = png_create_info_struct(png);
	png_infop end = png_create_info_struct(png);
	unsigned char *volatile row16 = NULL;
	if (!info || !end) {
		png_destroy_read_struct(&png, &info, &end);
		snprintf(msg, msglen, "out of memory");
		return -1;
	}
	if (setjmp(png_jmpbuf(png))) {
		png_destroy_read_struct(&png, &info, &end);
		free(row16);
		snprintf(msg, msglen, "%s", src.msg);
		return -1;
	}
	png_set_read_fn(png, &src, mlserve_png_read);
	png_read_info(png, info);
	png_uint_32 pw, ph;
	int depth, ctype, interlace;
	png_get_IHDR(png, info, &pw, &ph, &depth, &ctype, &interlace, NULL, NULL);
	if ((int)pw != w || (int)ph != h) {
		png_error(png, "header size changed");
	}
	int color = (ctype & PNG_COLOR_MASK_COLOR) != 0;
	gray16 = gray16 && !color && depth == 16;
	if (depth == 16 && !gray16)
		png_set_strip_16(png);
	png_set_strip_alpha(png);
	if (ctype == PNG_COLOR_TYPE_PALETTE)
		png_set_palette_to_rgb(png);
	if (!color && depth < 8)
		png_set_expand_gray_1_2_4_to_8(png);
	if (!color && !gray16)
		png_set_gray_to_rgb(png);
	int passes = png_set_interlace_handling(png);
	png_read_update_info(png, info);
	size_t rowbytes = png_get_rowbytes(png, info);
	size_t stride = (size_t)w * 3;
	if (gray16 ? rowbytes != (size_t)w * 2 : rowbytes != stride)
		png_error(png, "unexpected row layout");
	if (!gray16) {
		// Each pass fills its pixels of the rows in place (what
		// png_read_image does, without an array of row pointers).
		for (int p = 0; p < passes; p++)
			for (int y = 0; y < h; y++)
				png_read_row(png, out + stride * y, NULL);
	} else {
		// 16-bit grey: the whole image at 16 bits (interlaced rows are
		// completed pass by pass), then clipped into out.
		row16 = malloc((size_t)w * 2 * h);
		if (!row16)
			png_error(png, "out of memory");
		for (int p = 0; p < passes; p++)
			for (int y = 0; y < h; y++)
				png_read_row(png, row16 + (size_t)w * 2 * y, NULL);
		for (size_t i = 0; i < (size_t)w * h; i++) {
			unsigned v = ((unsigned)row16[2 * i] << 8) | row16[2 * i + 1]; // PNG samples are big-endian
			unsigned char g = v > 255 ? 255 : (unsigned char)v;
			out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = g;
		}
	}
	png_read_end(png, end);
	png_destroy_read_struct(&png, &info, &end);
	free(row16);
	return 0;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// decodePNG reads a PNG as the OpenCV path did (libpng with OpenCV's
// transformations), which gives PIL's RGB for every PNG layout: see
// mlserve_decode_png. h comes from ReadHeader.
func decodePNG(data []byte, h Header) (*Image, error) {
	im := New(h.W, h.H)
	var msg [160]C.char
	rc := C.mlserve_decode_png((*C.uchar)(unsafe.Pointer(&data[0])), C.size_t(len(data)),
		C.int(h.W), C.int(h.H), cBool(h.gray16),
		(*C.uchar)(unsafe.Pointer(&im.Pix[0])), &msg[0], C.int(len(msg)))
	if rc != 0 {
		return nil, fmt.Errorf("%w: png: %s", ErrDecode, C.GoString(&msg[0]))
	}
	return im, nil
}

func cBool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
