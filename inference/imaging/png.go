package imaging

/*
#cgo LDFLAGS: -lpng16
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <png.h>

enum { MLSERVE_PNG_FAILED = -1, MLSERVE_PNG_TRUNCATED = -2 };

// mlserve_png_src serves libpng the file as up to four pieces: the data,
// or, when the file ends inside the payload of an IDAT chunk, the data up
// to that chunk, a header with the length the payload has, the payload
// and 4 bytes standing for its checksum.
typedef struct {
	const unsigned char *seg[4];
	size_t len[4];
	int n, i;      // pieces, the current one
	size_t off;    // in the current piece
	int eof;       // libpng asked for more than the file holds
	unsigned char hdr[8], crc[4];
	char msg[128];
} mlserve_png_src;

static void mlserve_png_read(png_structp png, png_bytep out, size_t n) {
	mlserve_png_src *s = (mlserve_png_src *)png_get_io_ptr(png);
	while (n > 0) {
		if (s->i >= s->n) {
			s->eof = 1;
			png_error(png, "the file ends before the image data");
		}
		size_t k = s->len[s->i] - s->off;
		if (k > n)
			k = n;
		memcpy(out, s->seg[s->i] + s->off, k);
		out += k;
		n -= k;
		s->off += k;
		if (s->off == s->len[s->i]) {
			s->i++;
			s->off = 0;
		}
	}
}

static void mlserve_png_error(png_structp png, png_const_charp msg) {
	mlserve_png_src *s = (mlserve_png_src *)png_get_error_ptr(png);
	snprintf(s->msg, sizeof s->msg, "%s", msg);
	png_longjmp(png, 1);
}

static void mlserve_png_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

// Adam7: first column, column step, first row, row step of each pass.
static const int mlserve_adam7[7][4] = {{0, 8, 0, 8}, {4, 8, 0, 8}, {0, 4, 4, 8}, {2, 4, 0, 4},
                                        {0, 2, 2, 4}, {1, 2, 0, 2}, {0, 1, 1, 2}};

// mlserve_png_gray16_row clips the 16-bit grey samples of row y that pass
// (of an interlaced image; 0 for all pixels otherwise) holds into the RGB
// output, as PIL converts mode I to RGB.
static void mlserve_png_gray16_row(const unsigned char *row16, unsigned char *out, int w, int interlaced, int pass,
                                   int y) {
	int x0 = 0, dx = 1;
	if (interlaced) {
		const int *p = mlserve_adam7[pass];
		if (y < p[2] || (y - p[2]) % p[3] != 0)
			return; // not a row of this pass
		x0 = p[0];
		dx = p[1];
	}
	unsigned char *dst = out + (size_t)w * 3 * y;
	for (int x = x0; x < w; x += dx) {
		unsigned v = ((unsigned)row16[2 * x] << 8) | row16[2 * x + 1]; // PNG samples are big-endian
		unsigned char g = v > 255 ? 255 : (unsigned char)v;
		dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = g;
	}
}

// mlserve_decode_png decodes a PNG of exactly w×h pixels into out (w*h*3
// bytes, RGB) with the libpng transformations OpenCV 4.6's PNG decoder
// sets for IMREAD_COLOR: 16-bit samples stripped to their high byte,
// palettes and 1/2/4-bit grey expanded, grey replicated, alpha (and tRNS)
// dropped without compositing. With gray16 set (16-bit greyscale), samples
// are read at 16 bits and clipped to 255 row by row, as PIL converts mode I
// to RGB.
//
// It reads the file as PIL does, not as OpenCV did: it stops once it has
// every row (so it does not need what follows: the rest of the zlib
// stream, its checksum, the last chunk's checksum, IEND), it ignores the
// checksums of the IDAT chunks, and it reads the payload of an IDAT chunk
// the file ends in as far as it goes (cut, and idat_avail bytes of its
// payload, tell where; cut is 0 when the file does not end in one).
// It returns 0, or MLSERVE_PNG_TRUNCATED when the data ends before the
// last row, or MLSERVE_PNG_FAILED, with a message in msg.
static int mlserve_decode_png(const unsigned char *data, size_t len, size_t cut, size_t idat_avail, int w, int h,
                              int gray16, unsigned char *out, char *msg, int msglen) {
	mlserve_png_src src;
	memset(&src, 0, sizeof src);
	if (cut == 0) {
		src.seg[0] = data;
		src.len[0] = len;
		src.n = 1;
	} else {
		src.seg[0] = data;
		src.len[0] = cut;
		src.hdr[0] = idat_avail >> 24;
		src.hdr[1] = idat_avail >> 16;
		src.hdr[2] = idat_avail >> 8;
		src.hdr[3] = idat_avail;
		memcpy(src.hdr + 4, "IDAT", 4);
		src.seg[1] = src.hdr;
		src.len[1] = 8;
		src.seg[2] = data + cut + 8;
		src.len[2] = idat_avail;
		src.seg[3] = src.crc; // zeros: IDAT checksums are not checked
		src.len[3] = 4;
		src.n = 4;
	}
	png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, mlserve_png_error, mlserve_png_warning);
	if (!png) {
		snprintf(msg, msglen, "out of memory");
		return MLSERVE_PNG_FAILED;
	}
	png_infop info = png_create_info_struct(png);
	if (!info) {
		png_destroy_read_struct(&png, NULL, NULL);
		snprintf(msg, msglen, "out of memory");
		return MLSERVE_PNG_FAILED;
	}
	// Set after setjmp and read after a longjmp: volatile.
	unsigned char *volatile row16 = NULL;
	volatile int reading = 0, interlaced = 0, pass = 0, y = 0;
	if (setjmp(png_jmpbuf(png))) {
		// An error after the last row (in what libpng reads to finish the
		// image data) is none for PIL, which stops reading there.
		int done = reading && (interlaced ? png_get_current_pass_number(png) >= 7
		                                  : png_get_current_row_number(png) >= (png_uint_32)h);
		if (done && row16)
			mlserve_png_gray16_row(row16, out, w, interlaced, pass, y); // read, not yet stored
		png_destroy_read_struct(&png, &info, NULL);
		free(row16);
		if (done)
			return 0;
		snprintf(msg, msglen, "%s", src.msg);
		return src.eof ? MLSERVE_PNG_TRUNCATED : MLSERVE_PNG_FAILED;
	}
	png_set_read_fn(png, &src, mlserve_png_read);
	png_read_info(png, info);
	// PIL does not check the checksums of the image data (those of the
	// chunks before it, read above, are checked).
	png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_NO_CHANGE);
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
	interlaced = passes > 1;
	png_read_update_info(png, info);
	size_t rowbytes = png_get_rowbytes(png, info);
	size_t stride = (size_t)w * 3;
	if (gray16 ? rowbytes != (size_t)w * 2 : rowbytes != stride)
		png_error(png, "unexpected row layout");
	if (gray16) {
		row16 = malloc((size_t)w * 2);
		if (!row16)
			png_error(png, "out of memory");
	}
	reading = 1;
	// With interlace handling, each pass reads every row and fills in its
	// pixels of it (what png_read_image does, without an array of row
	// pointers); rows outside the pass are left alone.
	for (pass = 0; pass < passes; pass++)
		for (y = 0; y < h; y++) {
			if (!gray16) {
				png_read_row(png, out + stride * y, NULL);
				continue;
			}
			png_read_row(png, row16, NULL);
			mlserve_png_gray16_row(row16, out, w, interlaced, pass, y);
		}
	png_destroy_read_struct(&png, &info, NULL);
	free(row16);
	return 0;
}
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// decodePNG reads a PNG with libpng and OpenCV's transformations, which
// give PIL's RGB for every PNG layout, and with PIL's tolerance of the end
// of the file: a file cut inside the end of its zlib stream (the checksum,
// the last bits of the final block), or missing its IEND chunk, or whose
// IDAT checksums are wrong, decodes in PIL, which reads the image data
// until it has every row and ignores what follows. libpng as OpenCV used
// it wanted the stream and the chunks whole and refused such files; a
// file whose data ends before the last row is truncated for PIL too
// (ErrTruncated). See mlserve_decode_png. h comes from ReadHeader.
func decodePNG(data []byte, h Header) (*Image, error) {
	im := New(h.W, h.H)
	cut, avail := pngCut(data)
	var msg [160]C.char
	rc := C.mlserve_decode_png((*C.uchar)(unsafe.Pointer(&data[0])), C.size_t(len(data)), C.size_t(cut), C.size_t(avail),
		C.int(h.W), C.int(h.H), cBool(h.gray16),
		(*C.uchar)(unsafe.Pointer(&im.Pix[0])), &msg[0], C.int(len(msg)))
	switch rc {
	case 0:
		return im, nil
	case C.MLSERVE_PNG_TRUNCATED:
		return nil, fmt.Errorf("%w: %w: png: %s", ErrDecode, ErrTruncated, C.GoString(&msg[0]))
	}
	return nil, fmt.Errorf("%w: png: %s", ErrDecode, C.GoString(&msg[0]))
}

// pngCut walks the chunks to the end of the data and, when it ends inside
// the payload of an IDAT chunk, returns where that chunk starts and how
// many bytes of its payload are there; 0, 0 otherwise.
func pngCut(data []byte) (at, avail int) {
	for i := 8; i+8 <= len(data); {
		n := int64(binary.BigEndian.Uint32(data[i:]))
		if n > 1<<31-1 {
			return 0, 0 // libpng refuses it
		}
		if int64(i)+8+n > int64(len(data)) {
			if string(data[i+4:i+8]) != "IDAT" {
				return 0, 0
			}
			return i, len(data) - i - 8
		}
		i += 12 + int(n)
	}
	return 0, 0
}

func cBool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
