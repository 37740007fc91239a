// Package imaging decodes images as Immich's machine-learning service does
// (PIL: RGB, alpha dropped, no EXIF rotation) and provides the resamplers
// each model family needs, bit-compatible with the reference where it
// matters: PIL's antialiased bicubic and Lanczos for CLIP and OCR detection,
// OpenCV's bilinear resize and affine warp (through gocv) for faces.
//
// An [Image] is 8-bit RGB, interleaved, in Go memory; it is decoded once per
// request and shared read-only by every model of the request.
package imaging

import (
	"errors"
	"fmt"

	"gocv.io/x/gocv"
)

// Errors returned by Decode.
var (
	// ErrDecode: the bytes are not an image this service can read.
	ErrDecode = errors.New("cannot decode image")
	// ErrEmpty: the image has zero width or height.
	ErrEmpty = errors.New("image has zero width or height")
)

// Image is an 8-bit RGB image, rows top to bottom, 3 bytes per pixel.
// Images are never modified after decoding.
type Image struct {
	W, H int
	Pix  []byte // len == W*H*3
}

// At returns the pixel at x, y.
func (im *Image) At(x, y int) (r, g, b uint8) {
	i := (y*im.W + x) * 3
	return im.Pix[i], im.Pix[i+1], im.Pix[i+2]
}

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

// FromMat copies an 8-bit BGR or grayscale Mat into a new RGB Image.
func FromMat(m gocv.Mat) (*Image, error) {
	if m.Empty() {
		return nil, ErrEmpty
	}
	rgb := gocv.NewMat()
	defer rgb.Close()
	switch m.Channels() {
	case 1:
		gocv.CvtColor(m, &rgb, gocv.ColorGrayToBGR) // gray is replicated: the same in RGB
	case 3:
		gocv.CvtColor(m, &rgb, gocv.ColorBGRToRGB)
	case 4:
		gocv.CvtColor(m, &rgb, gocv.ColorRGBAToBGR) // code 3, also BGRA to RGB
	default:
		return nil, fmt.Errorf("%w: %d channels", ErrDecode, m.Channels())
	}
	if rgb.Type() != gocv.MatTypeCV8UC3 {
		return nil, fmt.Errorf("%w: unsupported pixel depth", ErrDecode)
	}
	b, err := rgb.DataPtrUint8()
	if err != nil {
		return nil, err
	}
	return &Image{W: rgb.Cols(), H: rgb.Rows(), Pix: append([]byte(nil), b...)}, nil
}

// Decode reads an encoded image (JPEG, PNG, WebP, and what else OpenCV
// reads) into RGB, without applying EXIF orientation: Immich sends
// previews that are already upright.
func Decode(data []byte) (*Image, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: no data", ErrDecode)
	}
	m, err := gocv.IMDecode(data, gocv.IMReadColor|gocv.IMReadIgnoreOrientation)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecode, err)
	}
	defer m.Close()
	if m.Empty() {
		return nil, ErrDecode
	}
	return FromMat(m)
}
