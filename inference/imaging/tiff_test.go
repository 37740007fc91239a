package imaging

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/image/tiff"
)

// The TIFF decoder reads strips itself, to hold no image beside the
// output; before, golang.org/x/image/tiff decoded the whole file and the
// image was converted as PIL converts it (testdata/formats proves that
// path against PIL). xImageTIFF is that former path, kept here as the
// reference the decoder must equal: same pixels, and an error where it
// errs.

// xImageTIFF decodes with golang.org/x/image/tiff, then converts as PIL
// does, undoing two readings of x/image/tiff (see decodeTIFF).
func xImageTIFF(data []byte, h Header) (*Image, error) {
	m, err := tiff.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: tiff: %w", ErrDecode, err)
	}
	b := m.Bounds()
	if b.Dx() != h.W || b.Dy() != h.H {
		return nil, fmt.Errorf("%w: tiff: header says %d×%d, decoded %d×%d", ErrDecode, h.W, h.H, b.Dx(), b.Dy())
	}
	compression, photometric := xImageTIFFTags(data)
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
		xImageRGBFrom4(im, m.Pix, m.Stride, 1, true)
	case *image.NRGBA: // unassociated alpha
		xImageRGBFrom4(im, m.Pix, m.Stride, 1, false)
	case *image.RGBA64:
		xImageRGBFrom4(im, m.Pix, m.Stride, 2, true)
	case *image.NRGBA64:
		xImageRGBFrom4(im, m.Pix, m.Stride, 2, false)
	default:
		return nil, fmt.Errorf("%w: tiff: unexpected pixel layout %T", ErrDecode, m)
	}
	return im, nil
}

// rgbFrom4 converts 4-sample pixels of size bytes per sample (big-endian
// when 2: only the high byte is used) into im. premultiplied undoes
// associated alpha as PIL's RGBa unpacker does: a colour with alpha 0
// becomes black, alpha 255 is kept, others are c*255/a clipped to 255.
func xImageRGBFrom4(im *Image, pix []byte, stride, size int, premultiplied bool) {
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

// xImageTIFFTags reads Compression and PhotometricInterpretation from the first
// IFD of a TIFF that golang.org/x/image/tiff has already parsed; -1 when
// absent. The former path read them only when typed SHORT or LONG, and
// x/image/tiff (and libtiff) read a BYTE too: so does the decoder now, and
// so does this reference.
func xImageTIFFTags(data []byte) (compression, photometric int) {
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
		case 1: // BYTE
			v = int(data[e+8])
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

// tiffSpec describes a TIFF for makeTIFF.
type tiffSpec struct {
	w, h, spp, bps int
	photometric    int // -1: no tag
	extra          int // ExtraSamples; 0: no tag
	compression    int // 1, 8 (Deflate), 32773 (PackBits); 0: no tag
	predictor      bool
	rowsPerStrip   int // 0: one strip
	tile           int // side of square tiles; 0: strips
	bigEndian      bool
	colormap       bool // a 16-bit colour map of 1<<bps entries
}

// makeTIFF writes a TIFF of random samples (indices into the colour map
// for palettes).
func makeTIFF(s tiffSpec, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	var bo interface {
		binary.ByteOrder
		binary.AppendByteOrder
	} = binary.LittleEndian
	head := []byte("II*\x00")
	if s.bigEndian {
		bo, head = binary.BigEndian, []byte("MM\x00*")
	}
	bw, bh := s.w, s.h
	if s.rowsPerStrip > 0 {
		bh = s.rowsPerStrip
	}
	if s.tile > 0 {
		bw, bh = s.tile, s.tile
	}
	rowBytes := (bw*s.spp*s.bps + 7) / 8
	across, down := (s.w+bw-1)/bw, (s.h+bh-1)/bh
	var blocks [][]byte
	for j := range down {
		for range across {
			rows := bh
			if s.tile == 0 && j == down-1 && s.h%bh != 0 {
				rows = s.h % bh
			}
			raw := make([]byte, rowBytes*rows)
			for k := range raw {
				raw[k] = byte(rng.IntN(256))
			}
			if s.predictor { // horizontal differencing, what the reader undoes
				n := s.spp * s.bps / 8
				for y := range rows {
					row := raw[y*rowBytes : (y+1)*rowBytes]
					for k := len(row) - 2 + (2 - s.bps/8); k >= n; k -= s.bps / 8 {
						if s.bps == 16 {
							bo.PutUint16(row[k:], bo.Uint16(row[k:])-bo.Uint16(row[k-n:]))
						} else {
							row[k] -= row[k-n]
						}
					}
				}
			}
			switch s.compression {
			case 8:
				var z bytes.Buffer
				zw := zlib.NewWriter(&z)
				_, _ = zw.Write(raw)
				zw.Close()
				raw = z.Bytes()
			case 32773:
				raw = packBitsEncode(raw)
			}
			blocks = append(blocks, raw)
		}
	}
	type entry struct {
		tag, typ uint16
		vals     []uint32
	}
	var es []entry
	add := func(tag, typ uint16, vals ...uint32) { es = append(es, entry{tag, typ, vals}) }
	add(256, 4, uint32(s.w))
	add(257, 4, uint32(s.h))
	var bpsv []uint32
	for range s.spp {
		bpsv = append(bpsv, uint32(s.bps))
	}
	add(258, 3, bpsv...)
	if s.compression != 0 {
		add(259, 3, uint32(s.compression))
	}
	if s.photometric >= 0 {
		add(262, 3, uint32(s.photometric))
	}
	offsets := make([]uint32, len(blocks)) // filled in below
	counts := make([]uint32, len(blocks))
	for k, b := range blocks {
		counts[k] = uint32(len(b))
	}
	if s.tile == 0 {
		add(273, 4, offsets...)
	}
	add(277, 3, uint32(s.spp))
	if s.tile == 0 {
		add(278, 4, uint32(bh))
		add(279, 4, counts...)
	}
	if s.predictor {
		add(317, 3, 2)
	}
	if s.colormap {
		var cm []uint32
		for range 3 * (1 << s.bps) {
			cm = append(cm, uint32(rng.IntN(65536)))
		}
		add(320, 3, cm...)
	}
	if s.tile > 0 {
		add(322, 4, uint32(bw))
		add(323, 4, uint32(bh))
		add(324, 4, offsets...)
		add(325, 4, counts...)
	}
	if s.extra > 0 {
		add(338, 3, uint32(s.extra))
	}
	// Header, IFD, then the values that do not fit in their entries, then
	// the blocks.
	size := func(e entry) int { return len(e.vals) * map[uint16]int{3: 2, 4: 4}[e.typ] }
	at := 8 + 2 + 12*len(es) + 4
	valueAt := map[int]int{}
	for k, e := range es {
		if size(e) > 4 {
			valueAt[k] = at
			at += size(e)
		}
	}
	for k, b := range blocks {
		offsets[k] = uint32(at)
		at += len(b)
	}
	out := append(head, 0, 0, 0, 0)
	bo.PutUint32(out[4:], 8)
	out = bo.AppendUint16(out, uint16(len(es)))
	put := func(b []byte, typ uint16, v uint32) []byte {
		if typ == 3 {
			return bo.AppendUint16(b, uint16(v))
		}
		return bo.AppendUint32(b, v)
	}
	for k, e := range es {
		out = bo.AppendUint16(out, e.tag)
		out = bo.AppendUint16(out, e.typ)
		out = bo.AppendUint32(out, uint32(len(e.vals)))
		if p, ok := valueAt[k]; ok {
			out = bo.AppendUint32(out, uint32(p))
			continue
		}
		var v []byte
		for _, x := range e.vals {
			v = put(v, e.typ, x)
		}
		out = append(out, append(v, make([]byte, 4-len(v))...)...)
	}
	out = bo.AppendUint32(out, 0)
	for k, e := range es {
		if _, ok := valueAt[k]; ok {
			for _, x := range e.vals {
				out = put(out, e.typ, x)
			}
		}
	}
	for _, b := range blocks {
		out = append(out, b...)
	}
	return out
}

// packBitsEncode writes runs of equal bytes as repeats, the rest as
// literals.
func packBitsEncode(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); {
		n := 1
		for i+n < len(b) && n < 128 && b[i+n] == b[i] {
			n++
		}
		if n >= 2 {
			out = append(out, byte(int8(1-n)), b[i])
			i += n
			continue
		}
		n = 1
		for i+n < len(b) && n < 128 && (i+n+1 >= len(b) || b[i+n] != b[i+n+1]) {
			n++
		}
		out = append(out, byte(n-1))
		out = append(out, b[i:i+n]...)
		i += n
	}
	return out
}

// tiffLayouts is a TIFF of every layout the decoder handles in ways the
// format corpus does not show (tiles, strips of several rows, the
// predictor, big-endian files, PackBits and Deflate at every depth).
func tiffLayouts() map[string][]byte {
	out := map[string][]byte{}
	n := 0
	for _, s := range []tiffSpec{
		{w: 37, h: 23, spp: 3, bps: 8, photometric: 2, compression: 1, rowsPerStrip: 5},
		{w: 37, h: 23, spp: 3, bps: 8, photometric: 2, compression: 8, predictor: true, rowsPerStrip: 4},
		{w: 37, h: 23, spp: 3, bps: 16, photometric: 2, compression: 8, predictor: true, bigEndian: true},
		{w: 37, h: 23, spp: 3, bps: 16, photometric: 2, compression: 1, predictor: true},
		{w: 37, h: 23, spp: 4, bps: 8, photometric: 2, extra: 1, compression: 32773, rowsPerStrip: 7},
		{w: 37, h: 23, spp: 4, bps: 16, photometric: 2, extra: 2, compression: 1, bigEndian: true},
		{w: 37, h: 23, spp: 4, bps: 16, photometric: 2, extra: 1, compression: 8, bigEndian: true},
		{w: 50, h: 40, spp: 3, bps: 8, photometric: 2, compression: 8, tile: 16},
		{w: 50, h: 40, spp: 4, bps: 8, photometric: 2, extra: 1, compression: 1, tile: 16},
		{w: 50, h: 40, spp: 1, bps: 16, photometric: 1, compression: 8, tile: 32, predictor: true, bigEndian: true},
		{w: 37, h: 23, spp: 1, bps: 8, photometric: 0, compression: 32773},
		{w: 37, h: 23, spp: 1, bps: 8, photometric: -1, compression: 0},
		{w: 37, h: 23, spp: 1, bps: 16, photometric: -1, compression: 1, rowsPerStrip: 3},
		{w: 37, h: 23, spp: 1, bps: 16, photometric: 0, compression: 1, bigEndian: true},
		{w: 37, h: 23, spp: 1, bps: 1, photometric: 1, compression: 8, rowsPerStrip: 6},
		{w: 37, h: 23, spp: 1, bps: 1, photometric: 0, compression: 1},
		{w: 37, h: 23, spp: 1, bps: 8, photometric: 3, compression: 8, colormap: true, predictor: true},
		{w: 37, h: 23, spp: 1, bps: 1, photometric: 3, compression: 1, colormap: true, tile: 16},
		{w: 37, h: 23, spp: 1, bps: 16, photometric: 3, compression: 1, colormap: false},
	} {
		n++
		name := fmt.Sprintf("%02d_%dx%d_%dx%d_p%d_c%d", n, s.w, s.h, s.spp, s.bps, s.photometric, s.compression)
		if s.photometric == 3 && !s.colormap {
			name += "_refused" // a palette without its colour map
		}
		out[name] = makeTIFF(s, uint64(n))
	}
	return out
}

// checkTIFF decodes data with decodeTIFF and with xImageTIFF and fails
// unless both refuse it or both give the same pixels. It returns whether
// they decoded it.
func checkTIFF(t *testing.T, name string, data []byte, maxPixels int64) bool {
	t.Helper()
	h, err := ReadHeader(data)
	if err != nil || h.Format != TIFF || h.Pixels() > maxPixels {
		return false // refused before either decoder runs
	}
	got, gerr := decodeTIFF(data, h)
	want, werr := xImageTIFF(data, h)
	switch {
	case gerr != nil && werr != nil:
		if !errors.Is(gerr, ErrDecode) {
			t.Errorf("%s: error %v is not ErrDecode", name, gerr)
		}
		return false
	case gerr != nil:
		t.Errorf("%s: %v; x/image/tiff decodes it", name, gerr)
	case werr != nil:
		t.Errorf("%s: decoded; x/image/tiff refuses it: %v", name, werr)
	case !bytes.Equal(got.Pix, want.Pix):
		t.Errorf("%s: pixels differ from x/image/tiff's", name)
	}
	return gerr == nil
}

// TestTIFFMatchesXImage: the corpus TIFFs and tiffLayouts, whole and cut
// short, decode to x/image/tiff's pixels or are refused as it refuses
// them.
func TestTIFFMatchesXImage(t *testing.T) {
	files := tiffLayouts()
	for _, dir := range []string{"decode", "edge", "formats"} {
		names, _ := filepath.Glob(filepath.Join("testdata", dir, "*.tiff"))
		for _, p := range names {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			files[strings.TrimPrefix(p, "testdata/")] = data
		}
	}
	if len(files) < 35 {
		t.Fatalf("only %d files", len(files))
	}
	decoded := 0
	for name, data := range files {
		if checkTIFF(t, name, data, 1<<22) {
			decoded++
		} else if !strings.Contains(name, "jpeg") && !strings.HasSuffix(name, "_refused") {
			t.Errorf("%s: refused", name)
		}
		for _, n := range []int{len(data) - 1, len(data) - 40, len(data) * 3 / 4, len(data) / 2} {
			if n > 8 {
				checkTIFF(t, fmt.Sprintf("%s[:%d]", name, n), data[:n], 1<<22)
			}
		}
	}
	t.Logf("%d files decoded the same, their cuts decoded or refused the same", decoded)
}

// TestTIFFLayoutsDecode: each synthetic layout decodes through Decode to
// pixels that are not all one value (so that the comparison above means
// something).
func TestTIFFLayoutsDecode(t *testing.T) {
	for name, data := range tiffLayouts() {
		im, err := Decode(data)
		if strings.HasSuffix(name, "_refused") {
			if err == nil {
				t.Errorf("%s: decoded", name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if bytes.Count(im.Pix, im.Pix[:1]) == len(im.Pix) {
			t.Errorf("%s: every sample is %d", name, im.Pix[0])
		}
	}
}
