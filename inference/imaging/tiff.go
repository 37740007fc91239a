package imaging

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/image/ccitt"
	"golang.org/x/image/tiff/lzw"
)

// TIFF tags and values decodeTIFF reads.
const (
	tiffBitsPerSample   = 258
	tiffCompression     = 259
	tiffPhotometric     = 262
	tiffFillOrder       = 266
	tiffStripOffsets    = 273
	tiffRowsPerStrip    = 278
	tiffStripByteCounts = 279
	tiffPredictor       = 317
	tiffColorMap        = 320
	tiffTileWidth       = 322
	tiffTileLength      = 323
	tiffTileOffsets     = 324
	tiffTileByteCounts  = 325
	tiffExtraSamples    = 338

	tiffNone, tiffG3, tiffG4, tiffLZW, tiffDeflate, tiffPackBits, tiffDeflateOld = 1, 3, 4, 5, 8, 32773, 32946
)

// tiffInfo is the first IFD of a TIFF as far as decoding it needs: what
// golang.org/x/image/tiff's header reader (ReadHeader's gate: grey 1, 8
// and 16-bit, palette, RGB and RGBA 8 and 16-bit) has accepted, read again
// here because decodeTIFF reads the strips itself.
type tiffInfo struct {
	order   binary.ByteOrder
	entries map[uint16][]byte // the 12-byte entries of the tags above

	bps, samples int
	// Tag values with x/image/tiff's defaults (0 when absent), and the two
	// that the PIL fixups of decodeTIFF read as the entry holds them (-1
	// when absent).
	photometric, compression, predictor, extra, fillOrder int64
	photometricTag, compressionTag                        int64
	tiled                                                 bool
	blockW, blockH                                        int64 // a strip is W × RowsPerStrip
}

// tiffLayout reads the first IFD of data (a TIFF of w×h pixels that
// x/image/tiff's DecodeConfig accepted) for tiffInfo.
func tiffLayout(data []byte, w, h int) tiffInfo {
	t := tiffInfo{order: binary.LittleEndian, entries: map[uint16][]byte{}, bps: 1, samples: 1,
		photometricTag: -1, compressionTag: -1, blockW: int64(w), blockH: int64(h)}
	if len(data) < 8 {
		return t
	}
	if data[0] == 'M' {
		t.order = binary.BigEndian
	}
	off := int64(t.order.Uint32(data[4:]))
	if off+2 > int64(len(data)) {
		return t
	}
	n := int64(t.order.Uint16(data[off:]))
	for k := range n {
		p := off + 2 + 12*k
		if p+12 > int64(len(data)) {
			break
		}
		e := data[p : p+12]
		switch tag := t.order.Uint16(e); tag {
		case tiffBitsPerSample, tiffCompression, tiffPhotometric, tiffFillOrder, tiffStripOffsets, tiffRowsPerStrip,
			tiffStripByteCounts, tiffPredictor, tiffColorMap, tiffTileWidth, tiffTileLength, tiffTileOffsets,
			tiffTileByteCounts, tiffExtraSamples:
			t.entries[tag] = e
		}
	}
	first := func(tag uint16) int64 {
		v, _ := t.value(data, tag, 0)
		return v
	}
	if e := t.entries[tiffBitsPerSample]; e != nil { // else 1, the TIFF default
		t.samples = int(min(t.order.Uint32(e[4:]), 16))
		t.bps = int(first(tiffBitsPerSample))
	}
	t.photometric, t.compression = first(tiffPhotometric), first(tiffCompression)
	t.photometricTag, t.compressionTag = t.inline(tiffPhotometric), t.inline(tiffCompression)
	t.predictor, t.extra, t.fillOrder = first(tiffPredictor), first(tiffExtraSamples), first(tiffFillOrder)
	if tw := first(tiffTileWidth); tw != 0 {
		t.tiled, t.blockW, t.blockH = true, tw, first(tiffTileLength)
	} else if rows := first(tiffRowsPerStrip); rows > 0 && rows < int64(h) {
		t.blockH = rows
	}
	return t
}

// value returns value k of tag's entry (BYTE, SHORT or LONG), inline or at
// the offset the entry holds; 0, false when there is none.
func (t *tiffInfo) value(data []byte, tag uint16, k int64) (int64, bool) {
	e := t.entries[tag]
	if e == nil {
		return 0, false
	}
	var size int64
	switch t.order.Uint16(e[2:]) {
	case 1:
		size = 1
	case 3:
		size = 2
	case 4:
		size = 4
	default:
		return 0, false
	}
	count := int64(t.order.Uint32(e[4:]))
	if k < 0 || k >= count || count > (1<<31-1)/size { // x/image/tiff refuses such entries
		return 0, false
	}
	var p []byte
	if size*count > 4 {
		at := int64(t.order.Uint32(e[8:])) + size*k
		if at+size > int64(len(data)) {
			return 0, false
		}
		p = data[at:]
	} else {
		p = e[8+size*k:]
	}
	switch size {
	case 1:
		return int64(p[0]), true
	case 2:
		return int64(t.order.Uint16(p)), true
	}
	return int64(t.order.Uint32(p)), true
}

// inline returns the value in tag's entry itself, whatever its count
// says, as the PIL fixups of decodeTIFF were proven with; -1 when absent.
func (t *tiffInfo) inline(tag uint16) int64 {
	e := t.entries[tag]
	if e == nil {
		return -1
	}
	switch t.order.Uint16(e[2:]) {
	case 1:
		return int64(e[8])
	case 3:
		return int64(t.order.Uint16(e[8:]))
	case 4:
		return int64(t.order.Uint32(e[8:]))
	}
	return -1
}

// rowBytes is the size of a stored row of n pixels.
func (t *tiffInfo) rowBytes(n int64) int64 { return (n*int64(t.samples)*int64(t.bps) + 7) / 8 }

// buffered tells whether decodeTIFF copies a block before converting it:
// when it is compressed or predicted (it reads an uncompressed block
// where it is in the file).
func (t *tiffInfo) buffered() bool { return t.compression > tiffNone || t.predictor == 2 }

// decodeBytes is what decodeTIFF holds beside the RGB output: the buffer
// of one strip or tile as stored, when it needs one.
func (t tiffInfo) decodeBytes() int64 {
	if !t.buffered() || t.blockW <= 0 || t.blockH <= 0 || t.blockW > 1<<31 || t.blockH > 1<<31 {
		return 0 // refused by decodeTIFF before it allocates
	}
	return t.rowBytes(t.blockW) * t.blockH
}

// decodeTIFF reads a TIFF strip by strip (or tile by tile) into RGB as
// golang.org/x/image/tiff reads it (uncompressed, LZW, Deflate, PackBits,
// CCITT G3/G4 with its readers; the horizontal predictor; the same checks
// of the layout and of each block's data), then as PIL converts it:
// 16-bit samples by their high byte, 16-bit grey clipped to 255 (mode
// I;16), unassociated alpha dropped, associated alpha un-premultiplied
// first (PIL's RGBa). JPEG-compressed TIFFs are refused. Two readings of
// x/image/tiff are undone to give libtiff's (PIL's and OpenCV's) pixels:
// it inverts 16-bit WhiteIsZero samples, which PIL reads as stored, and
// reads CCITT-coded BlackIsZero images inverted. Unlike x/image/tiff, it
// holds no image of its own: each block goes straight into the output,
// and only a compressed or predicted block is buffered (one at a time).
// TestTIFFMatchesXImage and FuzzDecodeTIFF compare the two.
func decodeTIFF(data []byte, h Header) (*Image, error) {
	im, err := h.tiff.decode(data, h.W, h.H)
	if err != nil {
		return nil, fmt.Errorf("%w: tiff: %w", ErrDecode, err)
	}
	return im, nil
}

func (t *tiffInfo) decode(data []byte, w, h int) (*Image, error) {
	conv, err := t.converter(data)
	if err != nil {
		return nil, err
	}
	W, H := int64(w), int64(h)
	bw, bh := t.blockW, t.blockH
	across, down := int64(1), (H+bh-1)/max(bh, 1)
	offTag, countTag := uint16(tiffStripOffsets), uint16(tiffStripByteCounts)
	if t.tiled {
		// x/image/tiff's limits on tile sizes.
		if bw < 8 || bh < 8 {
			return nil, errors.New("tile size is too small")
		}
		if (bw-W > 16 || bh-H > 16) && (bw > 1024 || bh > 1024) {
			return nil, errors.New("tile size exceeds image size")
		}
		across, down = (W+bw-1)/bw, (H+bh-1)/bh
		offTag, countTag = tiffTileOffsets, tiffTileByteCounts
	}
	if n := across * down; !t.has(data, offTag, n) || !t.has(data, countTag, n) {
		return nil, errors.New("inconsistent header")
	}
	if t.predictor == 2 && t.bps == 1 {
		return nil, errors.New("horizontal predictor with 1 bit per sample")
	}
	var buf []byte
	if t.buffered() {
		buf = make([]byte, t.decodeBytes())
	}
	// x/image/tiff copies whole rows of 8-bit RGBA, padding included.
	wholeRows := t.photometric == 2 && t.samples == 4 && t.bps == 8
	im := New(w, h)
	r := &tiffReaders{}
	for i := range across {
		for j := range down {
			blkW, blkH := bw, bh
			if !t.tiled && j == down-1 && H%bh != 0 {
				blkH = H % bh
			}
			k := j*across + i
			off, _ := t.value(data, offTag, k)
			n, _ := t.value(data, countTag, k)
			x0, y0 := i*bw, j*bh
			cols, rows := min(blkW, W-x0), min(blkH, H-y0) // inside the image
			block, err := t.block(data, buf, r, off, n, blkW, blkH)
			if err != nil {
				return nil, err
			}
			rb := t.rowBytes(blkW)
			need := rb*(rows-1) + t.rowBytes(cols)
			if wholeRows {
				need = rb * rows
			}
			if int64(len(block)) < need {
				return nil, fmt.Errorf("%w: a block holds %d bytes of %d", ErrTruncated, len(block), need)
			}
			for y := range rows {
				at := ((y0+y)*W + x0) * 3
				if err := conv(im.Pix[at:at+cols*3], block[y*rb:]); err != nil {
					return nil, err
				}
			}
		}
	}
	return im, nil
}

// has tells whether tag has at least n values, all in the file.
func (t *tiffInfo) has(data []byte, tag uint16, n int64) bool {
	if n <= 0 {
		return true
	}
	_, ok := t.value(data, tag, n-1)
	return ok
}

// tiffReaders keeps the decompressors that can be reset for the next
// block.
type tiffReaders struct {
	zlib io.ReadCloser
}

// block returns a strip or tile of blkW×blkH pixels as stored: the file's
// bytes when they are uncompressed and not predicted, else decompressed
// (and unpredicted) into buf. As x/image/tiff, it reads a compressed block
// to its end, up to 8 bytes a pixel, and refuses it when that fails; a
// block shorter than its pixels is refused by the caller.
func (t *tiffInfo) block(data, buf []byte, rs *tiffReaders, off, n, blkW, blkH int64) ([]byte, error) {
	lim := t.blockW * t.blockH * 8 // of a whole block, the last strip's too
	if off > int64(len(data)) || n > int64(len(data))-off {
		if t.compression <= tiffNone {
			return nil, fmt.Errorf("%w: a block of %d bytes at %d is past the end of the file", ErrTruncated, n, off)
		}
		off = min(off, int64(len(data))) // a section reader stops at the end of the file too
		n = int64(len(data)) - off
	}
	src := data[off : off+n]
	var r io.Reader
	switch t.compression {
	case 0, tiffNone:
		if n > lim {
			return nil, errors.New("block data size too large")
		}
		if buf == nil {
			return src, nil
		}
		r = bytes.NewReader(src)
	case tiffG3, tiffG4:
		sf := ccitt.Group3
		if t.compression == tiffG4 {
			sf = ccitt.Group4
		}
		order := ccitt.MSB
		if t.fillOrder == 2 {
			order = ccitt.LSB
		}
		r = ccitt.NewReader(bytes.NewReader(src), order, sf, int(blkW), int(blkH), &ccitt.Options{Invert: t.photometric == 0})
	case tiffLZW:
		lr := lzw.NewReader(bytes.NewReader(src), lzw.MSB, 8)
		defer lr.Close()
		r = lr
	case tiffDeflate, tiffDeflateOld:
		var err error
		if rs.zlib == nil {
			rs.zlib, err = zlib.NewReader(bytes.NewReader(src))
		} else {
			err = rs.zlib.(zlib.Resetter).Reset(bytes.NewReader(src), nil)
		}
		if err != nil {
			return nil, err
		}
		r = rs.zlib
	case tiffPackBits:
		r = &packBits{r: bytes.NewReader(src)}
	default:
		return nil, fmt.Errorf("unsupported compression %d", t.compression)
	}
	got := 0
	var err error
	for got < len(buf) && err == nil {
		var k int
		k, err = r.Read(buf[got:])
		got += k
	}
	if err == nil {
		// The rest of the block, as far as x/image/tiff reads it: up to
		// lim bytes, and one more for PackBits, which it then refuses.
		left := lim - int64(got)
		if t.compression == tiffPackBits {
			left++
		}
		var rest int64
		rest, err = io.Copy(io.Discard, io.LimitReader(r, left))
		if err == nil && int64(got)+rest > lim {
			err = errors.New("PackBits: decompressed data too large")
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	block := buf[:got]
	if t.predictor == 2 {
		t.unpredict(block, blkW, blkH)
	}
	return block, nil
}

// unpredict undoes the horizontal predictor on the whole rows of block.
func (t *tiffInfo) unpredict(block []byte, blkW, blkH int64) {
	n := t.samples * t.bps / 8 // bytes of a pixel
	rb := t.rowBytes(blkW)
	for y := range blkH {
		if (y+1)*rb > int64(len(block)) {
			return // too short: refused by the caller
		}
		row := block[y*rb : (y+1)*rb]
		switch t.bps {
		case 8:
			for i := n; i < len(row); i++ {
				row[i] += row[i-n]
			}
		case 16:
			for i := n; i+2 <= len(row); i += 2 {
				t.order.PutUint16(row[i:], t.order.Uint16(row[i:])+t.order.Uint16(row[i-n:]))
			}
		}
	}
}

// converter returns the function that writes the RGB pixels of dst (3
// bytes each) from a stored row src, as x/image/tiff decodes the layout
// and PIL converts it (see decodeTIFF).
func (t *tiffInfo) converter(data []byte) (func(dst, src []byte) error, error) {
	bo := t.order
	grey, rgb := t.photometric == 0 || t.photometric == 1, t.photometric == 2
	switch {
	case rgb && t.samples == 3 && t.bps == 8:
		return func(dst, src []byte) error {
			copy(dst, src[:len(dst)])
			return nil
		}, nil
	case rgb && t.samples == 3 && t.bps == 16:
		return func(dst, src []byte) error {
			for i := range dst {
				dst[i] = byte(bo.Uint16(src[2*i:]) >> 8)
			}
			return nil
		}, nil
	case rgb && t.samples == 4 && (t.bps == 8 || t.bps == 16) && (t.extra == 1 || t.extra == 2):
		size := t.bps / 8 // bytes a sample: only the high byte is used
		hi := 0
		if size == 2 && bo == binary.LittleEndian {
			hi = 1
		}
		premultiplied := t.extra == 1
		return func(dst, src []byte) error {
			for x := 0; 3*x < len(dst); x++ {
				p := src[4*size*x+hi:]
				r, g, b, a := p[0], p[size], p[2*size], p[3*size]
				if premultiplied && a != 255 {
					r, g, b = unpremultiply(r, a), unpremultiply(g, a), unpremultiply(b, a)
				}
				dst[3*x], dst[3*x+1], dst[3*x+2] = r, g, b
			}
			return nil
		}, nil
	case grey && t.samples == 1 && t.bps == 16:
		// x/image/tiff inverts WhiteIsZero (and an absent tag); PIL reads
		// the samples of a WhiteIsZero file as stored.
		var inv uint16
		if t.photometric == 0 && t.photometricTag != 0 {
			inv = 0xFFFF
		}
		return func(dst, src []byte) error {
			for x := 0; 3*x < len(dst); x++ {
				g := byte(min(bo.Uint16(src[2*x:])^inv, 255))
				dst[3*x], dst[3*x+1], dst[3*x+2] = g, g, g
			}
			return nil
		}, nil
	case grey && t.samples == 1 && (t.bps == 1 || t.bps == 8):
		var inv byte // x/image/tiff's inversion of WhiteIsZero, then libtiff's reading of CCITT
		if t.photometric == 0 {
			inv = 0xFF
		}
		if (t.compressionTag == tiffG3 || t.compressionTag == tiffG4) && t.photometricTag == 1 {
			inv ^= 0xFF
		}
		if t.bps == 8 {
			return func(dst, src []byte) error {
				for x := 0; 3*x < len(dst); x++ {
					g := src[x] ^ inv
					dst[3*x], dst[3*x+1], dst[3*x+2] = g, g, g
				}
				return nil
			}, nil
		}
		return func(dst, src []byte) error {
			for x := 0; 3*x < len(dst); x++ {
				var g byte
				if src[x/8]>>(7-x%8)&1 == 1 {
					g = 0xFF
				}
				g ^= inv
				dst[3*x], dst[3*x+1], dst[3*x+2] = g, g, g
			}
			return nil
		}, nil
	case t.photometric == 3 && t.samples == 1 && (t.bps == 1 || t.bps == 8 || t.bps == 16):
		pal, n, err := t.palette(data)
		if err != nil {
			return nil, err
		}
		bps := t.bps
		return func(dst, src []byte) error {
			for x := 0; 3*x < len(dst); x++ {
				var i int
				switch bps {
				case 1:
					i = int(src[x/8] >> (7 - x%8) & 1)
				case 8:
					i = int(src[x])
				default: // x/image/tiff keeps the low byte of a 16-bit index
					i = int(src[2*x+1])
				}
				if i >= n {
					return errors.New("invalid color index")
				}
				copy(dst[3*x:3*x+3], pal[i][:])
			}
			return nil
		}, nil
	}
	return nil, fmt.Errorf("unsupported layout: photometric %d, %d samples of %d bits", t.photometric, t.samples, t.bps)
}

// palette reads the ColorMap as x/image/tiff does (16-bit red, green and
// blue tables of up to 256 entries), with PIL's high bytes, and returns
// how many entries it has.
func (t *tiffInfo) palette(data []byte) (*[256][3]byte, int, error) {
	e := t.entries[tiffColorMap]
	if e == nil {
		return nil, 0, errors.New("no colour map")
	}
	count := int64(min(t.order.Uint32(e[4:]), 3*256+1))
	n := count / 3
	if count%3 != 0 || n == 0 || n > 256 || !t.has(data, tiffColorMap, count) {
		return nil, 0, errors.New("bad ColorMap")
	}
	var pal [256][3]byte
	for i := range n {
		for c := range int64(3) {
			v, _ := t.value(data, tiffColorMap, i+c*n)
			pal[i][c] = byte(uint16(v) >> 8)
		}
	}
	return &pal, int(n), nil
}

// packBits decodes PackBits (TIFF 6.0, section 9) as x/image/tiff does: a
// run cut short is an error, the end of the data between runs is the end.
type packBits struct {
	r   *bytes.Reader
	out [128]byte
	n   int // bytes of out not yet returned
	at  int
}

func (p *packBits) Read(b []byte) (int, error) {
	for p.n == 0 {
		c, err := p.r.ReadByte()
		if err != nil {
			return 0, io.EOF
		}
		switch code := int(int8(c)); {
		case code >= 0:
			if _, err := io.ReadFull(p.r, p.out[:code+1]); err != nil {
				return 0, io.ErrUnexpectedEOF
			}
			p.n, p.at = code+1, 0
		case code == -128: // no-op
		default:
			v, err := p.r.ReadByte()
			if err != nil {
				return 0, io.ErrUnexpectedEOF
			}
			for j := range 1 - code {
				p.out[j] = v
			}
			p.n, p.at = 1-code, 0
		}
	}
	k := copy(b, p.out[p.at:p.at+p.n])
	p.at += k
	p.n -= k
	return k, nil
}

func unpremultiply(c, a byte) byte {
	if a == 0 {
		return 0
	}
	return byte(min(int(c)*255/int(a), 255))
}
