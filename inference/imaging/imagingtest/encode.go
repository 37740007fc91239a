// Package imagingtest encodes test images as OpenCV's imencode did before
// mlserve stopped linking OpenCV's imgcodecs module: JPEG with libjpeg and
// WebP with libwebp, the libraries imencode called, with its defaults.
// Only tests and mlserve bench (which makes preview-size photos) import it;
// the service never encodes images.
package imagingtest

/*
#cgo LDFLAGS: -ljpeg -lwebp
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>
#include <webp/encode.h>

typedef struct {
	struct jpeg_error_mgr pub;
	jmp_buf jump;
	char msg[JMSG_LENGTH_MAX];
} mlserve_jpeg_enc_err;

static void mlserve_jpeg_enc_exit(j_common_ptr c) {
	mlserve_jpeg_enc_err *e = (mlserve_jpeg_enc_err *)c->err;
	(*c->err->format_message)(c, e->msg);
	longjmp(e->jump, 1);
}

// mlserve_encode_jpeg encodes w×h pixels of channels (1: grey, 3: RGB)
// samples with libjpeg's defaults at quality (baseline, 4:2:0 chroma for
// colour), as OpenCV 4.6's JPEG encoder does. On success *out holds a
// malloc'ed buffer the caller frees.
static int mlserve_encode_jpeg(const unsigned char *pix, int w, int h, int channels, int quality,
                               unsigned char **out, unsigned long *outlen, char *msg, int msglen) {
	struct jpeg_compress_struct cinfo;
	mlserve_jpeg_enc_err err;
	unsigned char *volatile buf = NULL;
	unsigned long len = 0;
	memset(&cinfo, 0, sizeof cinfo);
	cinfo.err = jpeg_std_error(&err.pub);
	err.pub.error_exit = mlserve_jpeg_enc_exit;
	if (setjmp(err.jump)) {
		jpeg_destroy_compress(&cinfo);
		free(buf);
		snprintf(msg, msglen, "%s", err.msg);
		return -1;
	}
	jpeg_create_compress(&cinfo);
	jpeg_mem_dest(&cinfo, (unsigned char **)&buf, &len);
	cinfo.image_width = w;
	cinfo.image_height = h;
	cinfo.input_components = channels;
	cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
	jpeg_set_defaults(&cinfo);
	jpeg_set_quality(&cinfo, quality, TRUE);
	jpeg_start_compress(&cinfo, TRUE);
	while (cinfo.next_scanline < cinfo.image_height) {
		JSAMPROW row = (JSAMPROW)(pix + (size_t)cinfo.next_scanline * w * channels);
		jpeg_write_scanlines(&cinfo, &row, 1);
	}
	jpeg_finish_compress(&cinfo);
	jpeg_destroy_compress(&cinfo);
	*out = buf;
	*outlen = len;
	return 0;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// JPEG encodes 8-bit pixels, rows top to bottom, with channels 1 (grey)
// or 3 (RGB), at quality 1..100. OpenCV's imencode used quality 95 unless
// told otherwise.
func JPEG(pix []byte, w, h, channels, quality int) ([]byte, error) {
	if err := check(pix, w, h, channels); err != nil {
		return nil, err
	}
	if quality < 1 || quality > 100 {
		return nil, fmt.Errorf("imagingtest: JPEG quality %d", quality)
	}
	var out *C.uchar
	var n C.ulong
	var msg [200]C.char
	if C.mlserve_encode_jpeg((*C.uchar)(unsafe.Pointer(&pix[0])), C.int(w), C.int(h), C.int(channels), C.int(quality),
		&out, &n, &msg[0], C.int(len(msg))) != 0 {
		return nil, fmt.Errorf("imagingtest: JPEG: %s", C.GoString(&msg[0]))
	}
	defer C.free(unsafe.Pointer(out))
	return C.GoBytes(unsafe.Pointer(out), C.int(n)), nil
}

// WebP encodes RGB pixels as a lossy WebP at quality 1..100 with libwebp's
// simple API, as OpenCV's imencode(".webp") did (quality 100 by default).
func WebP(pix []byte, w, h, quality int) ([]byte, error) {
	if err := check(pix, w, h, 3); err != nil {
		return nil, err
	}
	var out *C.uint8_t
	n := C.WebPEncodeRGB((*C.uint8_t)(unsafe.Pointer(&pix[0])), C.int(w), C.int(h), C.int(w*3), C.float(quality), &out)
	if n == 0 {
		return nil, errors.New("imagingtest: WebP encoding failed")
	}
	defer C.WebPFree(unsafe.Pointer(out))
	return C.GoBytes(unsafe.Pointer(out), C.int(n)), nil
}

func check(pix []byte, w, h, channels int) error {
	if w <= 0 || h <= 0 || len(pix) != w*h*channels {
		return fmt.Errorf("imagingtest: %d bytes for %d×%d×%d", len(pix), w, h, channels)
	}
	return nil
}
