package imaging

import "fmt"

// decodeOther decodes the formats other than JPEG and GIF without OpenCV's
// imgcodecs module, which would link GDAL, OpenEXR, libtiff and the rest
// of OpenCV's codec dependencies into the binary: PNG with libpng and
// WebP with libwebp (the libraries PIL and OpenCV use, with OpenCV's
// settings, so the pixels are the same), BMP in Go, TIFF in Go with
// golang.org/x/image/tiff's readers, strip by strip. testdata/formats and
// TestDecodeFormats hold the proof against PIL and the former OpenCV
// path, and list where those two disagree and which one the decoders
// follow; testdata/truncated.json holds PIL's rules for cut files.
func decodeOther(data []byte, h Header) (*Image, error) {
	switch h.Format {
	case PNG:
		return decodePNG(data, h)
	case WebP:
		return decodeWebP(data, h)
	case BMP:
		return decodeBMP(data, h)
	case TIFF:
		return decodeTIFF(data, h)
	}
	return nil, fmt.Errorf("%w: no decoder for %q", ErrDecode, h.Format)
}
