package imaging

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"io"

	"golang.org/x/image/tiff"
	"golang.org/x/image/webp"
)

// DefaultMaxPixels is the pixel cap Decode applies: 100 megapixels, a little
// above PIL's decompression-bomb warning (89.5 MP). An RGB image that size
// takes 300 MB.
const DefaultMaxPixels = 100_000_000

// DecodeOptions adjust DecodeWith.
type DecodeOptions struct {
	// MaxPixels refuses images with more pixels (width × height, read from
	// the header) with ErrTooLarge. Zero means DefaultMaxPixels.
	MaxPixels int
}

// Format is an encoded image format that Decode accepts.
type Format string

// Formats Decode accepts.
const (
	JPEG Format = "jpeg"
	PNG  Format = "png"
	WebP Format = "webp"
	GIF  Format = "gif"
	BMP  Format = "bmp"
	TIFF Format = "tiff"
)

// Header is what an encoded image's header tells before any decoding.
type Header struct {
	Format Format
	W, H   int
	// How the pixels are stored, where it changes how they are decoded.
	jpegComponents int  // JPEG: 1 grey, 3 colour, 4 CMYK/YCCK
	gray16         bool // PNG/TIFF: 16-bit greyscale (PIL mode I / I;16)
}

// Decode reads an encoded image (JPEG, PNG, WebP, GIF, BMP, TIFF) into RGB
// as Immich's decode_pil does: alpha dropped without compositing, grey,
// palette and CMYK converted as PIL converts them, and no EXIF orientation
// (Immich sends previews that are already upright). Images over
// DefaultMaxPixels are refused with ErrTooLarge.
func Decode(data []byte) (*Image, error) { return DecodeWith(data, DecodeOptions{}) }

// DecodeWith is Decode with options.
func DecodeWith(data []byte, o DecodeOptions) (*Image, error) {
	h, err := ReadHeader(data)
	if err != nil {
		return nil, err
	}
	maxPixels := o.MaxPixels
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	if int64(h.W)*int64(h.H) > int64(maxPixels) {
		return nil, fmt.Errorf("%w: %w: %d×%d %s is over %d pixels", ErrDecode, ErrTooLarge, h.W, h.H, h.Format, maxPixels)
	}
	var im *Image
	switch {
	case h.Format == JPEG:
		im, err = decodeJPEG(data, h)
	case h.Format == GIF:
		im, err = decodeGIF(data)
	default:
		im, err = decodeOther(data, h)
	}
	if err != nil {
		return nil, err
	}
	if im.W != h.W || im.H != h.H {
		// Only reachable if a header parser disagrees with the decoder; the
		// pixels are then not the ones the header promised.
		return nil, fmt.Errorf("%w: header says %d×%d, decoded %d×%d", ErrDecode, h.W, h.H, im.W, im.H)
	}
	return im, nil
}

// ReadHeader reads the format and size of an encoded image without decoding
// its pixels. It returns ErrDecode for data that is not a supported format
// and ErrEmpty for a zero width or height.
func ReadHeader(data []byte) (Header, error) {
	if len(data) == 0 {
		return Header{}, fmt.Errorf("%w: %w: no data", ErrDecode, ErrEmpty)
	}
	var (
		h   Header
		err error
	)
	switch {
	case bytes.HasPrefix(data, []byte{0xFF, 0xD8, 0xFF}):
		h, err = jpegHeader(data)
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		h, err = pngHeader(data)
	case bytes.HasPrefix(data, []byte("GIF87a")) || bytes.HasPrefix(data, []byte("GIF89a")):
		h, err = gifHeader(data)
	case len(data) >= 12 && bytes.Equal(data[:4], []byte("RIFF")) && bytes.Equal(data[8:12], []byte("WEBP")):
		h, err = configHeader(WebP, data, webp.DecodeConfig)
	case bytes.HasPrefix(data, []byte("BM")):
		h, err = bmpHeader(data)
	case bytes.HasPrefix(data, []byte("II*\x00")) || bytes.HasPrefix(data, []byte("MM\x00*")):
		h, err = configHeader(TIFF, data, tiff.DecodeConfig)
		// PIL opens 16-bit greyscale TIFFs as I;16 and clips them to 8 bits.
		h.gray16 = err == nil && h.gray16
	default:
		return Header{}, fmt.Errorf("%w: unknown format", ErrDecode)
	}
	if err != nil {
		return Header{}, err
	}
	if h.W <= 0 || h.H <= 0 {
		return Header{}, fmt.Errorf("%w: %s is %d×%d", ErrEmpty, h.Format, h.W, h.H)
	}
	return h, nil
}

// jpegHeader walks the markers up to the first start-of-frame.
func jpegHeader(data []byte) (Header, error) {
	h := Header{Format: JPEG}
	i := 2
	for i+4 <= len(data) {
		if data[i] != 0xFF {
			return h, fmt.Errorf("%w: jpeg: bad marker at %d", ErrDecode, i)
		}
		m := data[i+1]
		if m == 0xFF { // fill byte
			i++
			continue
		}
		if m == 0x01 || (m >= 0xD0 && m <= 0xD8) { // markers without a length
			i += 2
			continue
		}
		if m == 0xD9 || m == 0xDA {
			return h, fmt.Errorf("%w: jpeg: no frame header", ErrDecode)
		}
		n := int(binary.BigEndian.Uint16(data[i+2:]))
		if n < 2 || i+2+n > len(data) {
			return h, fmt.Errorf("%w: jpeg: truncated segment", ErrDecode)
		}
		// SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
		if m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC {
			if n < 8 {
				return h, fmt.Errorf("%w: jpeg: short frame header", ErrDecode)
			}
			seg := data[i+4:]
			h.H = int(binary.BigEndian.Uint16(seg[1:]))
			h.W = int(binary.BigEndian.Uint16(seg[3:]))
			h.jpegComponents = int(seg[5])
			return h, nil
		}
		i += 2 + n
	}
	return h, fmt.Errorf("%w: jpeg: no frame header", ErrDecode)
}

func pngHeader(data []byte) (Header, error) {
	h := Header{Format: PNG}
	if len(data) < 8+8+13 || !bytes.Equal(data[12:16], []byte("IHDR")) {
		return h, fmt.Errorf("%w: png: no IHDR", ErrDecode)
	}
	ihdr := data[16:]
	w, ht := binary.BigEndian.Uint32(ihdr), binary.BigEndian.Uint32(ihdr[4:])
	if w > 1<<31-1 || ht > 1<<31-1 {
		return h, fmt.Errorf("%w: %w: png: %d×%d", ErrDecode, ErrTooLarge, w, ht)
	}
	h.W, h.H = int(w), int(ht)
	depth, colorType := ihdr[8], ihdr[9]
	// PIL opens 16-bit grey as mode I and clips it to 0..255 when
	// converting to RGB; OpenCV scales it. Grey+alpha (type 4) PIL reads
	// with the high byte, as OpenCV does.
	h.gray16 = depth == 16 && colorType == 0
	return h, nil
}

func gifHeader(data []byte) (Header, error) {
	h := Header{Format: GIF}
	if len(data) < 10 {
		return h, fmt.Errorf("%w: gif: truncated header", ErrDecode)
	}
	h.W = int(binary.LittleEndian.Uint16(data[6:]))
	h.H = int(binary.LittleEndian.Uint16(data[8:]))
	return h, nil
}

func bmpHeader(data []byte) (Header, error) {
	h := Header{Format: BMP}
	if len(data) < 26 {
		return h, fmt.Errorf("%w: bmp: truncated header", ErrDecode)
	}
	switch binary.LittleEndian.Uint32(data[14:]) { // DIB header size
	case 12: // OS/2 BITMAPCOREHEADER: 16-bit sizes
		h.W = int(binary.LittleEndian.Uint16(data[18:]))
		h.H = int(binary.LittleEndian.Uint16(data[20:]))
	default:
		h.W = int(int32(binary.LittleEndian.Uint32(data[18:])))
		ht := int(int32(binary.LittleEndian.Uint32(data[22:])))
		if ht < 0 { // top-down
			ht = -ht
		}
		h.H = ht
	}
	return h, nil
}

func configHeader(f Format, data []byte, decodeConfig func(r io.Reader) (image.Config, error)) (Header, error) {
	c, err := decodeConfig(bytes.NewReader(data))
	if err != nil {
		return Header{Format: f}, fmt.Errorf("%w: %s: %w", ErrDecode, f, err)
	}
	return Header{Format: f, W: c.Width, H: c.Height, gray16: c.ColorModel == color.Gray16Model}, nil
}
