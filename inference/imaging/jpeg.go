package imaging

/*
#cgo LDFLAGS: -ljpeg
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>
#include <jerror.h>

// libjpeg reports fatal errors through error_exit, whose default calls
// exit(); this one jumps back to the caller instead. Warnings (corrupt
// entropy data, extraneous bytes) are silenced and decoding goes on, as
// in PIL, except the one the memory source gives when the data ends
// before the image does: PIL then raises "image file is truncated".
typedef struct {
	struct jpeg_error_mgr pub;
	jmp_buf jump;
	char msg[JMSG_LENGTH_MAX];
	int status; // MLSERVE_JPEG_*
} mlserve_jpeg_err;

enum { MLSERVE_JPEG_FAILED = -1, MLSERVE_JPEG_TRUNCATED = -2, MLSERVE_JPEG_TOO_LARGE = -3, MLSERVE_JPEG_SCANS = -4 };

static void mlserve_jpeg_error_exit(j_common_ptr c) {
	mlserve_jpeg_err *e = (mlserve_jpeg_err *)c->err;
	(*c->err->format_message)(c, e->msg);
	if (e->status == 0)
		e->status = c->err->msg_code == JERR_NO_BACKING_STORE ? MLSERVE_JPEG_TOO_LARGE : MLSERVE_JPEG_FAILED;
	longjmp(e->jump, 1);
}

static void mlserve_jpeg_emit(j_common_ptr c, int level) {
	mlserve_jpeg_err *e = (mlserve_jpeg_err *)c->err;
	if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) {
		e->status = MLSERVE_JPEG_TRUNCATED;
		snprintf(e->msg, sizeof e->msg, "premature end of data");
		longjmp(e->jump, 1);
	}
}

// A progress monitor that bounds the work of multi-scan files: each scan
// of a progressive file is a pass over the blocks of its components, so a
// small file with many scans (or many scans over a large image) would cost
// unbounded time. It counts the scans and the blocks they cover.
typedef struct {
	struct jpeg_progress_mgr pub;
	int max_scans;
	double max_passes;
	int scan;          // the last scan counted
	double blocks;     // blocks of all components: one full pass
	double work;       // blocks of all scans so far
} mlserve_jpeg_progress;

static void mlserve_jpeg_monitor(j_common_ptr c) {
	mlserve_jpeg_progress *p = (mlserve_jpeg_progress *)c->progress;
	j_decompress_ptr d = (j_decompress_ptr)c;
	if (d->input_scan_number == p->scan || d->input_scan_number <= 0 || d->comp_info == NULL)
		return;
	p->scan = d->input_scan_number;
	if (p->blocks == 0)
		for (int i = 0; i < d->num_components; i++)
			p->blocks += (double)d->comp_info[i].width_in_blocks * d->comp_info[i].height_in_blocks;
	for (int i = 0; i < d->comps_in_scan && i < MAX_COMPS_IN_SCAN; i++)
		p->work += (double)d->cur_comp_info[i]->width_in_blocks * d->cur_comp_info[i]->height_in_blocks;
	mlserve_jpeg_err *e = (mlserve_jpeg_err *)c->err;
	if (p->scan > p->max_scans) {
		e->status = MLSERVE_JPEG_SCANS;
		snprintf(e->msg, sizeof e->msg, "more than %d scans", p->max_scans);
		longjmp(e->jump, 1);
	}
	// Small images may take more passes: their scans cost little each, and
	// the scan count bounds them.
	if (p->work > p->max_passes * (p->blocks > 65536 ? p->blocks : 65536)) {
		e->status = MLSERVE_JPEG_SCANS;
		snprintf(e->msg, sizeof e->msg, "its scans pass over the image more than %g times", p->max_passes);
		longjmp(e->jump, 1);
	}
}

// mlserve_decode_jpeg decodes a JPEG of exactly w×h pixels into out, with
// libjpeg's default decompression parameters (ISLOW IDCT, fancy
// upsampling), as PIL does: RGB for 1- and 3-component files (grey is
// replicated), raw CMYK for 4-component ones (YCCK converted by libjpeg).
// channels is 3 or 4 and must match. scale_num (1..8) scales the output
// by scale_num/8 in the DCT domain; the output, ow×oh, must be what
// libjpeg computes for it (8: the full size). libjpeg may allocate at most
// max_memory bytes for its whole-image buffers, and read at most
// max_scans scans covering at most max_passes times the image's blocks.
// It returns 0, or one of MLSERVE_JPEG_* with a message.
static int mlserve_decode_jpeg(const unsigned char *data, unsigned long len, int w, int h, int channels,
                               int scale_num, int ow, int oh, unsigned char *out, long max_memory, int max_scans, double max_passes,
                               char *msg, int msglen) {
	struct jpeg_decompress_struct cinfo;
	mlserve_jpeg_err err;
	mlserve_jpeg_progress progress;
	memset(&cinfo, 0, sizeof cinfo);
	cinfo.err = jpeg_std_error(&err.pub);
	err.pub.error_exit = mlserve_jpeg_error_exit;
	err.pub.emit_message = mlserve_jpeg_emit;
	err.msg[0] = 0;
	err.status = 0;
	if (setjmp(err.jump)) {
		jpeg_destroy_decompress(&cinfo);
		snprintf(msg, msglen, "%s", err.msg);
		return err.status ? err.status : MLSERVE_JPEG_FAILED;
	}
	jpeg_create_decompress(&cinfo);
	cinfo.mem->max_memory_to_use = max_memory > 0 ? max_memory : 1;
	memset(&progress, 0, sizeof progress);
	progress.pub.progress_monitor = mlserve_jpeg_monitor;
	progress.max_scans = max_scans;
	progress.max_passes = max_passes;
	cinfo.progress = &progress.pub;
	jpeg_mem_src(&cinfo, data, len);
	jpeg_read_header(&cinfo, TRUE);
	int want = cinfo.num_components == 4 ? 4 : 3;
	if (want != channels || (int)cinfo.image_width != w || (int)cinfo.image_height != h) {
		jpeg_destroy_decompress(&cinfo);
		snprintf(msg, msglen, "header mismatch: %dx%d with %d components", cinfo.image_width,
		         cinfo.image_height, cinfo.num_components);
		return MLSERVE_JPEG_FAILED;
	}
	cinfo.out_color_space = channels == 4 ? JCS_CMYK : JCS_RGB;
	if (scale_num != 8) {
		cinfo.scale_num = scale_num;
		cinfo.scale_denom = 8;
	}
	jpeg_start_decompress(&cinfo);
	if ((int)cinfo.output_width != ow || (int)cinfo.output_height != oh || cinfo.output_components != channels) {
		jpeg_destroy_decompress(&cinfo);
		snprintf(msg, msglen, "unexpected output layout");
		return MLSERVE_JPEG_FAILED;
	}
	size_t stride = (size_t)ow * channels;
	while (cinfo.output_scanline < cinfo.output_height) {
		JSAMPROW rows[16];
		int n = 0;
		for (; n < 16 && cinfo.output_scanline + n < cinfo.output_height; n++)
			rows[n] = out + stride * (cinfo.output_scanline + n);
		if (jpeg_read_scanlines(&cinfo, rows, n) == 0)
			break; // suspended: cannot happen with a memory source
	}
	if (cinfo.output_scanline < cinfo.output_height) {
		// Rows left unwritten would show a recycled buffer's old pixels.
		snprintf(msg, msglen, "decoder stopped at row %u of %u", cinfo.output_scanline, cinfo.output_height);
		jpeg_destroy_decompress(&cinfo);
		return MLSERVE_JPEG_FAILED;
	}
	// PIL finishes decompression too, which reads up to the EOI marker: a
	// file that ends before it is truncated (reported by mlserve_jpeg_emit).
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

// Bounds on the work of a multi-scan JPEG. Encoders write one scan, or
// about ten for a progressive file (libjpeg's script) in a few passes over
// the image's blocks; every scan of a progressive file costs a pass over
// the blocks of its components, so a file of a few kilobytes could
// otherwise keep a worker busy for minutes. libjpeg-turbo recommends at
// most 500 scans for untrusted input (TJPARAM_SCANLIMIT). PIL has no
// limit; files over these are refused.
const (
	jpegMaxScans  = 500
	jpegMaxPasses = 64
)

// decodeJPEG decodes a JPEG with libjpeg directly, the library PIL uses
// (and OpenCV, which reaches the same pixels but took twice as long here).
// The caller has read h from the file and checked the caps: the output is
// allocated from it and libjpeg must agree, and libjpeg's own buffers may
// take what the output leaves of maxBytes. scale (1..8) decodes at
// scale/8 of the size in the DCT domain (jpegScaled gives the size); 8 is
// the full size, PIL's pixels.
//
// CMYK (and YCCK) files are converted as PIL does: PIL reads the samples as
// Adobe-inverted ("CMYK;I") whether or not the file has an Adobe marker,
// then applies cmyk2rgb. OpenCV divides by 256 where PIL divides by 255 and
// is off by one on most pixels.
func decodeJPEG(data []byte, h Header, scale int, maxBytes int64, bufs *Buffers) (*Image, error) {
	channels := 3
	if h.jpegComponents == 4 {
		channels = 4
	}
	ow, oh := jpegScaled(h.W, h.H, scale)
	buf := bufs.get(ow * oh * channels) // libjpeg writes every byte, or fails
	libjpeg := maxBytes - int64(len(buf))
	if channels == 4 {
		libjpeg -= int64(ow * oh * 3)
	}
	var msg [200]C.char
	rc := C.mlserve_decode_jpeg((*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)), C.int(h.W), C.int(h.H),
		C.int(channels), C.int(scale), C.int(ow), C.int(oh), (*C.uchar)(unsafe.Pointer(&buf[0])), C.long(max(libjpeg, 1)),
		C.int(jpegMaxScans), C.double(jpegMaxPasses), &msg[0], C.int(len(msg)))
	var err error
	switch rc {
	case 0:
	case C.MLSERVE_JPEG_TRUNCATED:
		err = fmt.Errorf("%w: %w: jpeg: %s", ErrDecode, ErrTruncated, C.GoString(&msg[0]))
	case C.MLSERVE_JPEG_SCANS:
		err = fmt.Errorf("%w: %w: jpeg: %s", ErrDecode, ErrTooLarge, C.GoString(&msg[0]))
	case C.MLSERVE_JPEG_TOO_LARGE:
		err = fmt.Errorf("%w: %w: jpeg: decoding needs more than the %d MB limit", ErrDecode, ErrTooLarge, maxBytes/1e6)
	default:
		err = fmt.Errorf("%w: jpeg: %s", ErrDecode, C.GoString(&msg[0]))
	}
	if err != nil {
		bufs.put(buf)
		return nil, err
	}
	var im *Image
	if channels == 3 {
		im = &Image{W: ow, H: oh, Pix: buf}
	} else {
		im = New(ow, oh)
		cmykToRGB(im.Pix, buf)
		bufs.put(buf)
	}
	if scale < 8 {
		im.Eighths, im.FullW, im.FullH = scale, h.W, h.H
	}
	return im, nil
}

// jpegScaled is the size libjpeg decodes a w×h JPEG to at scale/8
// (jpeg_calc_output_dimensions: each side scaled and rounded up).
func jpegScaled(w, h, scale int) (int, int) {
	return (w*scale + 7) / 8, (h*scale + 7) / 8
}

// jpegScale is the smallest scale (in eighths) at which a w×h JPEG
// decodes with both sides at least minSide; 8 (the full size) when
// minSide is 0 or no smaller scale has it.
func jpegScale(w, h, minSide int) int {
	if minSide <= 0 {
		return 8
	}
	for s := 1; s < 8; s++ {
		if sw, sh := jpegScaled(w, h, s); min(sw, sh) >= minSide {
			return s
		}
	}
	return 8
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
