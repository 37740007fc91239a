package imaging

import (
	"encoding/binary"
	"fmt"
)

// BMP compression values.
const (
	bmpRGB       = 0
	bmpRLE8      = 1
	bmpRLE4      = 2
	bmpBitfields = 3
)

// bmpDecoder holds what decodeBMP reads from the headers.
type bmpDecoder struct {
	data      []byte
	w, h      int
	topDown   bool
	bpp, comp int
	pal       [256][3]byte // RGB
	layout    [3]int       // byte offsets of R, G, B in a 32-bit pixel
	r16       uint         // 16-bit: shift of red (green's is always 5)
	gBits     uint         // 16-bit: 5 or 6 bits of green
	off       int          // pixel data
}

// decodeBMP reads a Windows or OS/2 bitmap into RGB as OpenCV 4.6 read it
// (rows of 1, 4, 8, 16, 24 and 32 bits, RLE8 and RLE4, bottom-up or
// top-down, headers of 12 and 36+ bytes), except where PIL, Immich's
// reference, reads it differently: 16-bit samples are scaled to 0..255
// (v*255/31, v*255/63; OpenCV shifts them), bitfield masks of V4/V5
// headers are read from the header and 32-bit masks are honoured in PIL's
// layouts (others are refused), 24-bit BGR bitfields are accepted, and
// palette indices past the file's palette take PIL's grey ramp (i, i, i).
// RLE4 deltas move down as well as right and an early end-of-bitmap fills
// the rest with colour 0, as in RLE8 (OpenCV ignored the vertical delta
// and read past the end marker). Truncated pixel data is an error
// (ErrTruncated), except for the padding of the last row, which PIL does
// not read either.
func decodeBMP(data []byte, h Header) (*Image, error) {
	d := &bmpDecoder{data: data}
	if err := d.readHeader(); err != nil {
		return nil, fmt.Errorf("%w: bmp: %w", ErrDecode, err)
	}
	if d.w != h.W || d.h != h.H {
		return nil, fmt.Errorf("%w: bmp: header says %d×%d, decoder %d×%d", ErrDecode, h.W, h.H, d.w, d.h)
	}
	im := New(d.w, d.h)
	var err error
	switch d.comp {
	case bmpRLE8, bmpRLE4:
		err = d.readRLE(im)
	default:
		err = d.readRows(im)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: bmp: %w", ErrDecode, err)
	}
	return im, nil
}

func le16(b []byte) int    { return int(binary.LittleEndian.Uint16(b)) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

func (d *bmpDecoder) readHeader() error {
	b := d.data
	if len(b) < 18 {
		return fmt.Errorf("truncated header")
	}
	off := le32(b[10:])
	size := le32(b[14:])
	palAt, entry, colors := 0, 4, 0
	switch {
	case size == 12: // OS/2 BITMAPCOREHEADER
		if len(b) < 26 {
			return fmt.Errorf("truncated header")
		}
		d.w, d.h = le16(b[18:]), le16(b[20:])
		d.bpp = le16(b[24:])
		d.comp = bmpRGB
		switch d.bpp {
		case 1, 4, 8, 24, 32:
		default:
			return fmt.Errorf("unsupported %d bits per pixel", d.bpp)
		}
		palAt, entry, colors = 26, 3, 1<<min(d.bpp, 8)
		d.layout = [3]int{2, 1, 0} // BGR(X)
	case size >= 36 && size < 1<<16:
		if len(b) < 14+40 {
			return fmt.Errorf("truncated header")
		}
		d.w = int(int32(le32(b[18:])))
		ht := int(int32(le32(b[22:])))
		d.topDown = ht < 0
		d.h = max(ht, -ht)
		d.bpp = le16(b[28:])
		d.comp = int(le32(b[30:]))
		clrUsed := le32(b[46:])
		palAt = 14 + int(size)
		if d.bpp <= 8 {
			if clrUsed > 65536 {
				return fmt.Errorf("palette of %d colours", clrUsed)
			}
			colors = int(clrUsed)
			if colors == 0 {
				colors = 1 << d.bpp
			}
		}
		if err := d.checkCompression(size, palAt); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported header size %d", size)
	}
	if d.w <= 0 || d.h <= 0 {
		return fmt.Errorf("%d×%d", d.w, d.h)
	}
	if d.bpp <= 8 {
		// PIL's palette starts as a grey ramp; the file's colours replace
		// its first entries.
		for i := range d.pal {
			d.pal[i] = [3]byte{byte(i), byte(i), byte(i)}
		}
		n := min(colors, 256)
		if palAt+n*entry > len(b) {
			return fmt.Errorf("truncated palette")
		}
		for i := 0; i < n; i++ {
			p := b[palAt+i*entry:]
			d.pal[i] = [3]byte{p[2], p[1], p[0]}
		}
	}
	if int64(off) >= int64(len(b)) {
		return fmt.Errorf("pixel data offset %d past the end (%d bytes)", off, len(b))
	}
	d.off = int(off)
	return nil
}

// checkCompression validates the depth/compression pair of a Windows
// header and reads the bitfield masks.
func (d *bmpDecoder) checkCompression(size uint32, palAt int) error {
	switch {
	case d.comp == bmpRGB:
		switch d.bpp {
		case 1, 4, 8, 24, 32:
		case 16:
			d.r16, d.gBits = 10, 5
		default:
			return fmt.Errorf("unsupported %d bits per pixel", d.bpp)
		}
		d.layout = [3]int{2, 1, 0} // BGR(X)
		return nil
	case d.comp == bmpRLE8 && d.bpp == 8, d.comp == bmpRLE4 && d.bpp == 4:
		return nil
	case d.comp != bmpBitfields:
		return fmt.Errorf("compression %d with %d bits per pixel is not supported", d.comp, d.bpp)
	}
	// Masks: inside headers of 52 bytes and more (alpha from 56), after a
	// 40-byte header.
	at := palAt
	if size >= 52 {
		at = 14 + 40
	}
	n := 12
	if size >= 56 {
		n = 16 // and alpha
	}
	if at+n > len(d.data) {
		return fmt.Errorf("truncated bitfield masks")
	}
	r, g, b := le32(d.data[at:]), le32(d.data[at+4:]), le32(d.data[at+8:])
	var a uint32
	if n == 16 {
		a = le32(d.data[at+12:])
	}
	switch d.bpp {
	case 16:
		switch [3]uint32{r, g, b} {
		case [3]uint32{0x7C00, 0x3E0, 0x1F}:
			d.r16, d.gBits = 10, 5
		case [3]uint32{0xF800, 0x7E0, 0x1F}:
			d.r16, d.gBits = 11, 6
		default:
			return fmt.Errorf("unsupported 16-bit masks %#x %#x %#x", r, g, b)
		}
	case 24:
		if [3]uint32{r, g, b} != [3]uint32{0xFF0000, 0xFF00, 0xFF} {
			return fmt.Errorf("unsupported 24-bit masks %#x %#x %#x", r, g, b)
		}
		d.layout = [3]int{2, 1, 0}
	case 32:
		switch [4]uint32{r, g, b, a} {
		case [4]uint32{0xFF0000, 0xFF00, 0xFF, 0}, [4]uint32{0xFF0000, 0xFF00, 0xFF, 0xFF000000}, [4]uint32{}:
			d.layout = [3]int{2, 1, 0} // BGRX, BGRA
		case [4]uint32{0xFF000000, 0xFF0000, 0xFF00, 0}, [4]uint32{0xFF000000, 0xFF0000, 0xFF00, 0xFF}:
			d.layout = [3]int{3, 2, 1} // XBGR, ABGR
		case [4]uint32{0xFF, 0xFF00, 0xFF0000, 0xFF000000}:
			d.layout = [3]int{0, 1, 2} // RGBA
		default:
			return fmt.Errorf("unsupported 32-bit masks %#x %#x %#x %#x", r, g, b, a)
		}
	default:
		return fmt.Errorf("bitfields with %d bits per pixel", d.bpp)
	}
	return nil
}

// row returns the destination of stored row y (0 = first in the file).
func (d *bmpDecoder) row(im *Image, y int) []byte {
	if !d.topDown {
		y = d.h - 1 - y
	}
	return im.Pix[y*d.w*3 : (y+1)*d.w*3]
}

// readRows reads uncompressed rows. Each is padded to 4 bytes, but PIL
// reads the padding only between rows: a file that ends after the last
// row's pixels, without its padding, decodes (OpenCV refused it).
func (d *bmpDecoder) readRows(im *Image) error {
	stride := (d.w*d.bpp + 31) / 32 * 4
	last := (d.w*d.bpp + 7) / 8 // the last row without its padding
	if int64(stride)*int64(d.h-1)+int64(last) > int64(len(d.data)-d.off) {
		return fmt.Errorf("%w: pixel data: %d rows of %d bytes do not fit in %d", ErrTruncated, d.h, stride, len(d.data)-d.off)
	}
	for y := 0; y < d.h; y++ {
		src := d.data[d.off+y*stride : min(d.off+(y+1)*stride, len(d.data))]
		dst := d.row(im, y)
		switch d.bpp {
		case 1, 4, 8:
			per := 8 / d.bpp
			mask := byte(1<<d.bpp - 1)
			for x := 0; x < d.w; x++ {
				shift := uint(8 - d.bpp*(x%per+1))
				copy(dst[3*x:3*x+3], d.pal[src[x/per]>>shift&mask][:])
			}
		case 16:
			gMax := uint16(1)<<d.gBits - 1
			for x := 0; x < d.w; x++ {
				v := uint16(src[2*x]) | uint16(src[2*x+1])<<8
				dst[3*x] = byte(int(v>>d.r16&31) * 255 / 31)
				dst[3*x+1] = byte(int(v>>5&gMax) * 255 / int(gMax))
				dst[3*x+2] = byte(int(v&31) * 255 / 31)
			}
		case 24, 32:
			n := d.bpp / 8
			r, g, b := d.layout[0], d.layout[1], d.layout[2]
			for x := 0; x < d.w; x++ {
				p := src[n*x : n*x+n]
				dst[3*x], dst[3*x+1], dst[3*x+2] = p[r], p[g], p[b]
			}
		}
	}
	return nil
}

// readRLE decodes RLE8 and RLE4 as OpenCV's BmpDecoder did. Runs that
// overflow their row are an error; an encoded RLE8 run that ends a row
// moves to the next row by itself, and an end-of-line right after it is
// then ignored; end-of-line, delta and end-of-bitmap fill the pixels they
// skip with palette colour 0.
func (d *bmpDecoder) readRLE(im *Image) error {
	src := d.data[d.off:]
	i := 0
	x, y := 0, 0
	var dst []byte
	if d.h > 0 {
		dst = d.row(im, 0)
	}
	put := func(c [3]byte) {
		copy(dst[3*x:3*x+3], c[:])
		x++
	}
	// fill writes n pixels of colour 0 from the cursor, row after row, and
	// moves to the next row when it reaches the end of one.
	fill := func(n int) {
		for {
			k := min(n, d.w-x)
			for j := 0; j < k; j++ {
				put(d.pal[0])
			}
			n -= k
			if x >= d.w {
				x = 0
				y++
				if y >= d.h {
					return
				}
				dst = d.row(im, y)
			}
			if n <= 0 {
				return
			}
		}
	}
	rle4 := d.comp == bmpRLE4
	lineEnded := false // an encoded RLE8 run has just moved to the next row
	for y < d.h {
		if i+2 > len(src) {
			return fmt.Errorf("%w: RLE data ends at row %d of %d", ErrTruncated, y, d.h)
		}
		n, code := int(src[i]), int(src[i+1])
		i += 2
		switch {
		case n > 0: // encoded run
			if x+n > d.w {
				return fmt.Errorf("RLE run of %d past the end of row %d", n, y)
			}
			if rle4 {
				c := [2][3]byte{d.pal[code>>4], d.pal[code&15]}
				for j := 0; j < n; j++ {
					put(c[j&1])
				}
				lineEnded = false
				continue
			}
			for j := 0; j < n; j++ {
				put(d.pal[code])
			}
			lineEnded = false
			if x == d.w {
				fill(0) // wraps to the next row
				lineEnded = true
			}
		case code > 2: // absolute run of code pixels, padded to 16 bits
			if x+code > d.w {
				return fmt.Errorf("RLE run of %d past the end of row %d", code, y)
			}
			size := (code + 1) &^ 1
			if rle4 {
				size = ((code+1)>>1 + 1) &^ 1
			}
			if i+size > len(src) {
				return fmt.Errorf("%w: RLE data ends in an absolute run", ErrTruncated)
			}
			for j := 0; j < code; j++ {
				if rle4 {
					put(d.pal[src[i+j/2]>>(4*(1-j&1))&15])
				} else {
					put(d.pal[src[i+j]])
				}
			}
			i += size
			lineEnded = false
		case code == 0: // end of line
			if !lineEnded || x != 0 {
				fill(d.w - x)
			}
			lineEnded = false
		case code == 1: // end of bitmap
			fill(d.w - x + (d.h-y-1)*d.w)
			return nil
		default: // delta: right dx, down dy
			if i+2 > len(src) {
				return fmt.Errorf("%w: RLE data ends in a delta", ErrTruncated)
			}
			dx, dy := int(src[i]), int(src[i+1])
			i += 2
			fill(dx + dy*d.w)
			lineEnded = false
		}
	}
	return nil
}
