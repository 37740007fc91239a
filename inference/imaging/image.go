// Package imaging decodes images as Immich's machine-learning service does
// (PIL: RGB, alpha dropped, no EXIF rotation) and provides the resamplers
// each model family needs, bit-compatible with the reference where it
// matters: PIL's antialiased bicubic and Lanczos for CLIP and OCR detection,
// OpenCV's bilinear resize and affine warp (through gocv) for faces.
//
// An [Image] is 8-bit RGB, interleaved, in Go memory; it is decoded once per
// request and shared read-only by every model of the request.
//
// The format and size are read from the header first, so that oversized
// images are refused before any pixel memory exists: a cap on pixels and
// a cap on the memory decoding may hold, estimated per format and layout
// from the header ([DecodeOptions]). Truncated files are refused where PIL
// refuses them ([ErrTruncated]). No decoder uses OpenCV's imgcodecs
// module (which would link GDAL, OpenEXR and the rest of OpenCV's codec
// dependencies into the binary), and they write straight into the
// Go-owned output (TIFF excepted: golang.org/x/image/tiff decodes into an
// image of its own first). JPEGs are decoded with libjpeg(-turbo) directly, the library PIL
// uses, with PIL's settings (and PIL's CMYK→RGB formula for CMYK files,
// where OpenCV's differs); PNG (libpng) and WebP (libwebp) with the
// libraries and settings OpenCV's decoders used, which give PIL's pixels,
// and PIL's tolerance of a PNG's end; BMP and TIFF in Go (formats.go).
// 16-bit greyscale PNG and TIFF are clipped to 255 as PIL does, and GIF is
// a port of PIL's own LZW decoder, canvas rules and palette conversion.
//
// [DecodeScaled] may instead decode a JPEG smaller, with libjpeg's
// DCT-domain scaling, for a consumer that only needs a given shorter side
// (MLSERVE_PREPROCESS=fast); the image keeps its full size, which the
// resamplers map it onto.
//
// [Resize] is a port of the arithmetic of Pillow's ImagingResample (fixed
// point, separable, horizontal pass first): its output equals PIL's
// Image.resize bit for bit for the filters it offers. On x86-64 CPUs with
// AVX2 both passes run as C kernels (resample_simd.c) that compute the
// same integer sums with vector instructions, about five times faster
// than the Go passes, which run elsewhere and are the reference the
// kernels are tested and fuzzed against.
package imaging

import (
	"errors"
	"fmt"
	"image"

	"gocv.io/x/gocv"
)

// Errors returned by Decode.
var (
	// ErrDecode: the bytes are not an image this service can read.
	ErrDecode = errors.New("cannot decode image")
	// ErrEmpty: the image has zero width or height.
	ErrEmpty = errors.New("image has zero width or height")
	// ErrTooLarge: the image has more pixels than the decoder accepts; it is
	// refused from its header, before any pixel memory is allocated. Such
	// errors also match ErrDecode (the image cannot be decoded here), so
	// code that knows only ErrDecode still treats them as the client's.
	ErrTooLarge = errors.New("image too large")
	// ErrTruncated: the file ends before its image data does, where PIL
	// (with LOAD_TRUNCATED_IMAGES off, as in Immich) raises "image file is
	// truncated" rather than filling in the missing pixels. Such errors
	// also match ErrDecode.
	ErrTruncated = errors.New("image file is truncated")
)

// Image is an 8-bit RGB image, rows top to bottom, 3 bytes per pixel.
// Images are never modified after decoding.
type Image struct {
	W, H int
	Pix  []byte // len == W*H*3
	// Eighths, for an image that DecodeScaled decoded smaller, is the
	// scale in eighths (1..7) and FullW×FullH the file's full size; the
	// pixels cover the full image at that scale, each side rounded up,
	// so a last column or row may cover part of a pixel. Zero for an
	// image at full size.
	Eighths      int
	FullW, FullH int
}

// Extent is the full image's size in this image's pixels: W and H, or
// for an image decoded smaller FullW and FullH times Eighths/8 (up to a
// pixel less than W and H).
func (im *Image) Extent() (w, h float64) {
	if im.Eighths <= 0 || im.Eighths >= 8 || im.FullW <= 0 || im.FullH <= 0 {
		return float64(im.W), float64(im.H)
	}
	return float64(im.FullW) * float64(im.Eighths) / 8, float64(im.FullH) * float64(im.Eighths) / 8
}

// FullSize is the size of the image the file holds: W and H, or FullW
// and FullH for an image decoded smaller.
func (im *Image) FullSize() (w, h int) {
	if im.Eighths <= 0 || im.Eighths >= 8 || im.FullW <= 0 || im.FullH <= 0 {
		return im.W, im.H
	}
	return im.FullW, im.FullH
}

// New returns a black image of w×h pixels.
func New(w, h int) *Image {
	if w <= 0 || h <= 0 {
		return &Image{}
	}
	return &Image{W: w, H: h, Pix: make([]byte, w*h*3)}
}

// At returns the pixel at x, y.
func (im *Image) At(x, y int) (r, g, b uint8) {
	i := (y*im.W + x) * 3
	return im.Pix[i], im.Pix[i+1], im.Pix[i+2]
}

// Bounds is the image's rectangle, (0,0)-(W,H).
func (im *Image) Bounds() image.Rectangle { return image.Rect(0, 0, im.W, im.H) }

// Mat returns a gocv Mat of type CV_8UC3 that shares the image's memory
// (RGB order). The Mat must be closed and must not be written to.
func (im *Image) Mat() (gocv.Mat, error) {
	return gocv.NewMatFromBytes(im.H, im.W, gocv.MatTypeCV8UC3, im.Pix)
}

// BGRMat returns a new BGR copy of the image as OpenCV code expects
// (Immich's decode_cv2). The caller closes it.
func (im *Image) BGRMat() (gocv.Mat, error) {
	rgb, err := im.Mat()
	if err != nil {
		return gocv.Mat{}, err
	}
	defer rgb.Close()
	bgr := gocv.NewMat()
	gocv.CvtColor(rgb, &bgr, gocv.ColorBGRToRGB) // the same swap
	return bgr, nil
}

// FromMat copies an 8-bit BGR, BGRA or grayscale Mat into a new RGB Image.
func FromMat(m gocv.Mat) (*Image, error) {
	if m.Empty() || m.Rows() <= 0 || m.Cols() <= 0 {
		return nil, ErrEmpty
	}
	var code gocv.ColorConversionCode
	switch {
	case m.Type() == gocv.MatTypeCV8UC1:
		code = gocv.ColorGrayToBGR // gray is replicated: the same in RGB
	case m.Type() == gocv.MatTypeCV8UC3:
		code = gocv.ColorBGRToRGB
	case m.Type() == gocv.MatTypeCV8UC4:
		code = gocv.ColorRGBAToBGR // code 3, also BGRA to RGB
	default:
		return nil, fmt.Errorf("%w: unsupported pixel type %v with %d channels", ErrDecode, m.Type(), m.Channels())
	}
	im := New(m.Cols(), m.Rows())
	// The conversion writes straight into the Go-owned pixels: dst has the
	// size and type OpenCV would allocate, so OpenCV keeps its buffer.
	dst, err := im.Mat()
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	gocv.CvtColor(m, &dst, code)
	if p, err := dst.DataPtrUint8(); err != nil || len(p) != len(im.Pix) || &p[0] != &im.Pix[0] {
		return nil, fmt.Errorf("%w: OpenCV reallocated the destination", ErrDecode)
	}
	return im, nil
}
