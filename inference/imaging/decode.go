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

// DefaultMaxPixels is the pixel cap Decode applies: 32 megapixels (an RGB
// image that size takes 96 MB). It is far above what Immich sends (its
// previews are at most 2160 pixels on the long side, under 5 MP) and
// covers camera originals up to 32 MP for the bulk indexer; PIL's own
// decompression-bomb limits (89.5 MP warning, 179 MP error) are meant for
// one process decoding one file, not for a service with several requests
// in flight. Servers set their own cap from MLSERVE_MAX_IMAGE_PIXELS.
const DefaultMaxPixels = 32_000_000

// DefaultBytesPerPixel sets the default decoding budget: MaxBytes defaults
// to this many bytes for each pixel of MaxPixels, twice the RGB output. A
// baseline JPEG, a PNG, a GIF, a BMP, a lossy WebP or a TIFF of small
// strips needs 3 bytes per pixel and decodes up to the pixel cap; formats
// that need working memory on top (progressive or CMYK JPEG, lossless or
// transparent WebP, compressed TIFF in large strips of more than 3 bytes
// a pixel) are refused at fewer pixels.
const DefaultBytesPerPixel = 6

// DecodeOptions adjust DecodeWith.
type DecodeOptions struct {
	// MaxPixels refuses images with more pixels (width × height, read from
	// the header) with ErrTooLarge. Zero means DefaultMaxPixels.
	MaxPixels int
	// MaxBytes bounds the memory decoding one image may hold at its peak,
	// the RGB output included: images whose header says they would need
	// more are refused with ErrTooLarge before anything is allocated, and
	// libjpeg is held to what is left of it. Zero means
	// DefaultBytesPerPixel × MaxPixels.
	MaxBytes int64
	// MinSide > 0 lets DecodeScaled decode a JPEG smaller, with libjpeg's
	// DCT-domain scaling (by 1/8 to 7/8), at the smallest scale whose
	// width and height are both still at least MinSide. The pixels then
	// differ from PIL's. Other formats, and JPEGs that no scale shrinks
	// while keeping MinSide, decode at full size. MaxPixels applies to the
	// full size the header gives; MaxBytes to the decoding at the scale
	// chosen. DecodeWith ignores it.
	MinSide int
	// Buffers, if set, recycles pixel buffers given back with its Put
	// (JPEGs, whose decoder writes every byte of its output).
	Buffers *Buffers
}

func (o DecodeOptions) limits() (maxPixels, maxBytes int64) {
	maxPixels = int64(o.MaxPixels)
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	maxBytes = o.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultBytesPerPixel * maxPixels
	}
	return maxPixels, maxBytes
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
	// W and H are the size of the decoded image. For a GIF that is the
	// logical screen, enlarged to hold the first frame where it sticks
	// out, as PIL does.
	W, H int
	// How the pixels are stored, where it changes how they are decoded or
	// what decoding them costs.
	jpegComponents int   // JPEG: 1 grey, 3 colour, 4 CMYK/YCCK
	jpegCoefBytes  int64 // JPEG: whole-image coefficient buffers (progressive)
	gray16         bool  // PNG/TIFF: 16-bit greyscale (PIL mode I / I;16)
	webpLossless   bool
	webpAlpha      bool
	tiff           tiffInfo
	gif            *gifInfo
}

// Pixels is W × H.
func (h Header) Pixels() int64 { return int64(h.W) * int64(h.H) }

// DecodeBytes estimates the most memory decoding the image holds at once:
// the 3-byte RGB output plus the decoder's own buffers, as the libraries
// this package uses allocate them (libjpeg's coefficient arrays for
// progressive files, libwebp's 32-bit lossless pixels and alpha plane,
// the TIFF decoder's one compressed strip or tile). Input bytes and
// buffers of a few rows are not counted. PNG (libpng), BMP and GIF are
// decoded row by row into the output and need nothing more.
func (h Header) DecodeBytes() int64 { return h.decodeBytes(h.W, h.H) }

// decodeBytes is DecodeBytes for an output of w×ht pixels (a JPEG decoded
// smaller; its coefficient buffers stay those of the full image).
func (h Header) decodeBytes(w, ht int) int64 {
	px := int64(w) * int64(ht)
	n := 3 * px
	switch h.Format {
	case JPEG:
		if h.jpegComponents == 4 {
			n += 4 * px // raw CMYK before conversion
		}
		n += h.jpegCoefBytes
	case WebP:
		if h.webpLossless {
			n += 4 * px // libwebp decodes lossless images to 32-bit ARGB
		} else if h.webpAlpha {
			n += px // the alpha plane, decoded even for RGB output
		}
	case TIFF:
		n += h.tiff.decodeBytes()
	}
	return n
}

// Decode reads an encoded image (JPEG, PNG, WebP, GIF, BMP, TIFF) into RGB
// as Immich's decode_pil does: alpha dropped without compositing, grey,
// palette and CMYK converted as PIL converts them, and no EXIF orientation
// (Immich sends previews that are already upright). Images over
// DefaultMaxPixels, or whose decoding would hold more than
// DefaultBytesPerPixel bytes per pixel of that cap, are refused with
// ErrTooLarge; truncated files are refused with ErrTruncated where PIL
// refuses them.
func Decode(data []byte) (*Image, error) { return DecodeWith(data, DecodeOptions{}) }

// DecodeWith is Decode with options.
func DecodeWith(data []byte, o DecodeOptions) (*Image, error) {
	o.MinSide = 0
	im, _, err := DecodeScaled(data, o)
	return im, err
}

// DecodeScaled is DecodeWith that may decode a JPEG smaller
// (o.MinSide); it also returns the header, whose W and H are the
// original size.
func DecodeScaled(data []byte, o DecodeOptions) (*Image, Header, error) {
	h, err := ReadHeader(data)
	if err != nil {
		return nil, Header{}, err
	}
	maxPixels, maxBytes := o.limits()
	if h.Pixels() > maxPixels {
		return nil, h, fmt.Errorf("%w: %w: %d×%d %s is over %d pixels", ErrDecode, ErrTooLarge, h.W, h.H, h.Format, maxPixels)
	}
	w, ht, scale := h.W, h.H, 8
	if h.Format == JPEG {
		scale = jpegScale(h.W, h.H, o.MinSide)
		w, ht = jpegScaled(h.W, h.H, scale)
	}
	if need := h.decodeBytes(w, ht); need > maxBytes {
		return nil, h, fmt.Errorf("%w: %w: decoding this %d×%d %s needs about %d MB, over the %d MB limit",
			ErrDecode, ErrTooLarge, h.W, h.H, h.Format, need/1e6, maxBytes/1e6)
	}
	var im *Image
	switch h.Format {
	case JPEG:
		im, err = decodeJPEG(data, h, scale, maxBytes, o.Buffers)
	case GIF:
		im, err = decodeGIF(data, h)
	default:
		im, err = decodeOther(data, h)
	}
	if err != nil {
		return nil, h, err
	}
	if im.W != w || im.H != ht {
		// Only reachable if a header parser disagrees with the decoder; the
		// pixels are then not the ones the header promised.
		return nil, h, fmt.Errorf("%w: header says %d×%d, decoded %d×%d", ErrDecode, w, ht, im.W, im.H)
	}
	return im, h, nil
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
		if err == nil {
			h.webpLossless, h.webpAlpha = webpLayout(data)
		}
	case bytes.HasPrefix(data, []byte("BM")):
		h, err = bmpHeader(data)
	case bytes.HasPrefix(data, []byte("II*\x00")) || bytes.HasPrefix(data, []byte("MM\x00*")):
		h, err = configHeader(TIFF, data, tiff.DecodeConfig)
		if err == nil {
			h.tiff = tiffLayout(data, h.W, h.H)
		}
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
			seg := data[i+4 : i+2+n]
			h.H = int(binary.BigEndian.Uint16(seg[1:]))
			h.W = int(binary.BigEndian.Uint16(seg[3:]))
			h.jpegComponents = int(seg[5])
			// Progressive frames (SOF2, 6, 10, 14) are decoded through
			// coefficient buffers of the whole image.
			if m&3 == 2 {
				h.jpegCoefBytes = jpegCoefBytes(seg, h.W, h.H)
			}
			return h, nil
		}
		i += 2 + n
	}
	return h, fmt.Errorf("%w: jpeg: no frame header", ErrDecode)
}

// jpegCoefBytes is what libjpeg allocates for the coefficients of a
// progressive image: 64 16-bit values per 8×8 block of every component,
// each component's blocks padded to whole MCUs.
func jpegCoefBytes(sof []byte, w, h int) int64 {
	nc := int(sof[5])
	if len(sof) < 6+3*nc {
		return 0 // libjpeg refuses it
	}
	hmax, vmax := 1, 1
	for c := range nc {
		f := sof[6+3*c+1]
		hmax, vmax = max(hmax, int(f>>4)), max(vmax, int(f&15))
	}
	var n int64
	for c := range nc {
		f := sof[6+3*c+1]
		hs, vs := max(1, int(f>>4)), max(1, int(f&15))
		bw := (int64(w)*int64(hs) + int64(8*hmax) - 1) / int64(8*hmax)
		bh := (int64(h)*int64(vs) + int64(8*vmax) - 1) / int64(8*vmax)
		bw = (bw + int64(hs) - 1) / int64(hs) * int64(hs)
		bh = (bh + int64(vs) - 1) / int64(vs) * int64(vs)
		n += bw * bh * 128
	}
	return n
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
	// converting to RGB (OpenCV scaled it). Grey+alpha (type 4) PIL reads
	// with the high byte, as the other 16-bit layouts.
	h.gray16 = depth == 16 && colorType == 0
	return h, nil
}

func gifHeader(data []byte) (Header, error) {
	g, err := parseGIF(data)
	if err != nil {
		return Header{Format: GIF}, err
	}
	return Header{Format: GIF, W: g.canvasW, H: g.canvasH, gif: g}, nil
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
	// PIL opens 16-bit greyscale TIFFs as I;16 and clips them to 8 bits.
	return Header{Format: f, W: c.Width, H: c.Height, gray16: f == TIFF && c.ColorModel == color.Gray16Model}, nil
}

// webpLayout tells whether a WebP is lossless (VP8L) and has alpha, which
// decide the buffers libwebp allocates.
func webpLayout(data []byte) (lossless, alpha bool) {
	for i := 12; i+8 <= len(data); {
		size := int64(binary.LittleEndian.Uint32(data[i+4:]))
		body := data[i+8:]
		if int64(len(body)) > size {
			body = body[:size]
		}
		switch string(data[i : i+4]) {
		case "VP8X":
			alpha = len(body) > 0 && body[0]&0x10 != 0
		case "ALPH":
			alpha = true
		case "VP8L":
			// Signature byte, then 14+14 bits of size and the alpha bit.
			if len(body) >= 5 && binary.LittleEndian.Uint32(body[1:])>>28&1 == 1 {
				alpha = true
			}
			return true, alpha
		case "VP8 ":
			return false, alpha
		}
		next := int64(i) + 8 + size + size&1
		if next > int64(len(data)) {
			break
		}
		i = int(next)
	}
	return false, alpha
}
