package imaging

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"

	"golang.org/x/image/tiff"
)

// decodeTIFF reads a TIFF with golang.org/x/image/tiff (the reader
// ReadHeader already gates TIFFs with: grey 1/8/16-bit, palette, RGB and
// RGBA 8/16-bit; uncompressed, LZW, Deflate, PackBits, CCITT) and converts
// it to RGB as PIL does: 16-bit samples by their high byte, 16-bit grey
// clipped to 255 (mode I;16), unassociated alpha dropped, associated alpha
// un-premultiplied first (PIL's RGBa). JPEG-compressed TIFFs are refused.
// Two readings of x/image/tiff are undone to give libtiff's (PIL's and
// OpenCV's) pixels: it inverts 16-bit WhiteIsZero samples, which PIL reads
// as stored, and reads CCITT-coded BlackIsZero images inverted.
func decodeTIFF(data []byte, h Header) (*Image, error) {
	m, err := tiff.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: tiff: %w", ErrDecode, err)
	}
	b := m.Bounds()
	if b.Dx() != h.W || b.Dy() != h.H {
		return nil, fmt.Errorf("%w: tiff: header says %d×%d, decoded %d×%d", ErrDecode, h.W, h.H, b.Dx(), b.Dy())
	}
	compression, photometric := tiffTags(data)
	im := New(h.W, h.H)
	switch m := m.(type) {
	case *image.Gray:
		var inv byte // XOR mask
		if (compression == 3 || compression == 4) && photometric == 1 {
			inv = 0xFF
		}
		for y := 0; y < h.H; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+h.W]
			dst := im.Pix[y*h.W*3 : (y+1)*h.W*3]
			for x, g := range row {
				g ^= inv
				dst[3*x], dst[3*x+1], dst[3*x+2] = g, g, g
			}
		}
	case *image.Gray16:
		var inv uint16
		if photometric == 0 {
			inv = 0xFFFF
		}
		for y := 0; y < h.H; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+2*h.W]
			dst := im.Pix[y*h.W*3 : (y+1)*h.W*3]
			for x := 0; x < h.W; x++ {
				g := byte(min((uint16(row[2*x])<<8|uint16(row[2*x+1]))^inv, 255))
				dst[3*x], dst[3*x+1], dst[3*x+2] = g, g, g
			}
		}
	case *image.Paletted:
		var pal [256][3]byte
		for i, c := range m.Palette {
			if i == len(pal) {
				break
			}
			r, g, b, _ := c.RGBA() // color.RGBA64 from the 16-bit colormap: opaque
			pal[i] = [3]byte{byte(r >> 8), byte(g >> 8), byte(b >> 8)}
		}
		for y := 0; y < h.H; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+h.W]
			dst := im.Pix[y*h.W*3 : (y+1)*h.W*3]
			for x, i := range row {
				copy(dst[3*x:3*x+3], pal[i][:])
			}
		}
	case *image.RGBA: // RGB, or RGBA with associated alpha
		rgbFrom4(im, m.Pix, m.Stride, 1, true)
	case *image.NRGBA: // unassociated alpha
		rgbFrom4(im, m.Pix, m.Stride, 1, false)
	case *image.RGBA64:
		rgbFrom4(im, m.Pix, m.Stride, 2, true)
	case *image.NRGBA64:
		rgbFrom4(im, m.Pix, m.Stride, 2, false)
	default:
		return nil, fmt.Errorf("%w: tiff: unexpected pixel layout %T", ErrDecode, m)
	}
	return im, nil
}

// rgbFrom4 converts 4-sample pixels of size bytes per sample (big-endian
// when 2: only the high byte is used) into im. premultiplied undoes
// associated alpha as PIL's RGBa unpacker does: a colour with alpha 0
// becomes black, alpha 255 is kept, others are c*255/a clipped to 255.
func rgbFrom4(im *Image, pix []byte, stride, size int, premultiplied bool) {
	for y := 0; y < im.H; y++ {
		row := pix[y*stride : y*stride+4*size*im.W]
		dst := im.Pix[y*im.W*3 : (y+1)*im.W*3]
		for x := 0; x < im.W; x++ {
			p := row[4*size*x:]
			r, g, b, a := p[0], p[size], p[2*size], p[3*size]
			if premultiplied && a != 255 {
				r, g, b = unpremultiply(r, a), unpremultiply(g, a), unpremultiply(b, a)
			}
			dst[3*x], dst[3*x+1], dst[3*x+2] = r, g, b
		}
	}
}

func unpremultiply(c, a byte) byte {
	if a == 0 {
		return 0
	}
	return byte(min(int(c)*255/int(a), 255))
}

// tiffTags reads Compression and PhotometricInterpretation from the first
// IFD of a TIFF that golang.org/x/image/tiff has already parsed; -1 when
// absent.
func tiffTags(data []byte) (compression, photometric int) {
	compression, photometric = -1, -1
	var bo binary.ByteOrder = binary.LittleEndian
	if data[0] == 'M' {
		bo = binary.BigEndian
	}
	off := int64(bo.Uint32(data[4:]))
	if off+2 > int64(len(data)) {
		return
	}
	n := int64(bo.Uint16(data[off:]))
	for i := int64(0); i < n; i++ {
		e := off + 2 + 12*i
		if e+12 > int64(len(data)) {
			return
		}
		tag, typ := bo.Uint16(data[e:]), bo.Uint16(data[e+2:])
		var v int
		switch typ {
		case 3: // SHORT
			v = int(bo.Uint16(data[e+8:]))
		case 4: // LONG
			v = int(bo.Uint32(data[e+8:]))
		default:
			continue
		}
		switch tag {
		case 259:
			compression = v
		case 262:
			photometric = v
		}
	}
	return
}
