package imaging

/*
#cgo LDFLAGS: -ljpeg
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>

// libjpeg reports fatal errors through error_exit, whose default calls
// exit(); this one jumps back to the caller instead. Warnings (corrupt or
// truncated entropy data) are silenced and decoding goes on, as in OpenCV.
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

// mlserve_decode_jpeg decodes a JPEG of exactly w×h pixels into out, with
// libjpeg's default decompression parameters (ISLOW IDCT, fancy
// upsampling), as PIL does: RGB for 1- and 3-component files (grey is
// replicated), raw CMYK for 4-component ones (YCCK converted by libjpeg).
// channels is 3 or 4 and must match. It returns 0, or -1 with a message.
static int mlserve_decode_jpeg(const unsigned char *data, unsigned long len, int w, int h, int channels,
                               unsigned char *out, char *msg, int msglen) {
	struct jpeg_decompress_struct cinfo;
	mlserve_jpeg_err err;
	memset(&cinfo, 0, sizeof cinfo);
	cinfo.err = jpeg_std_error(&err.pub);
	err.pub.error_exit = mlserve_jpeg_error_exit;
	err.pub.output_message = mlserve_jpeg_silent;
	err.msg[0] = 0;
	if (setjmp(err.jump)) {
		jpeg_destroy_decompress(&cinfo);
		snprintf(msg, msglen, "%s", err.msg);
		return -1;
	}
	jpeg_create_decompress(&cinfo);
	jpeg_mem_src(&cinfo, data, len);
	jpeg_read_header(&cinfo, TRUE);
	int want = cinfo.num_components == 4 ? 4 : 3;
	if (want != channels || (int)cinfo.image_width != w || (int)cinfo.image_height != h) {
		jpeg_destroy_decompress(&cinfo);
		snprintf(msg, msglen, "header mismatch: %dx%d with %d components", cinfo.image_width,
		         cinfo.image_height, cinfo.num_components);
		return -1;
	}
	cinfo.out_color_space = channels == 4 ? JCS_CMYK : JCS_RGB;
	jpeg_start_decompress(&cinfo);
	if ((int)cinfo.output_width != w || (int)cinfo.output_height != h || cinfo.output_components != channels) {
		jpeg_destroy_decompress(&cinfo);
		snprintf(msg, msglen, "unexpected output layout");
		return -1;
	}
	size_t stride = (size_t)w * channels;
	while (cinfo.output_scanline < cinfo.output_height) {
		JSAMPROW rows[16];
		int n = 0;
		for (; n < 16 && cinfo.output_scanline + n < cinfo.output_height; n++)
			rows[n] = out + stride * (cinfo.output_scanline + n);
		if (jpeg_read_scanlines(&cinfo, rows, n) == 0)
			break; // suspended: cannot happen with a memory source
	}
	jpeg_finish_decompress(&cinfo);
	jpeg_destroy_decompress(&cinfo);
	return 0;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// decodeJPEG decodes a JPEG with libjpeg directly, the library PIL uses
// (and OpenCV, which reaches the same pixels but took twice as long here).
// The caller has read h from the file and checked the pixel cap: the
// output is allocated from it and libjpeg must agree.
//
// CMYK (and YCCK) files are converted as PIL does: PIL reads the samples as
// Adobe-inverted ("CMYK;I") whether or not the file has an Adobe marker,
// then applies cmyk2rgb. OpenCV divides by 256 where PIL divides by 255 and
// is off by one on most pixels.
func decodeJPEG(data []byte, h Header) (*Image, error) {
	channels := 3
	if h.jpegComponents == 4 {
		channels = 4
	}
	buf := make([]byte, h.W*h.H*channels)
	var msg [200]C.char
	rc := C.mlserve_decode_jpeg((*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)), C.int(h.W), C.int(h.H),
		C.int(channels), (*C.uchar)(unsafe.Pointer(&buf[0])), &msg[0], C.int(len(msg)))
	if rc != 0 {
		return nil, fmt.Errorf("%w: jpeg: %s", ErrDecode, C.GoString(&msg[0]))
	}
	if channels == 3 {
		return &Image{W: h.W, H: h.H, Pix: buf}, nil
	}
	im := New(h.W, h.H)
	cmykToRGB(im.Pix, buf)
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
