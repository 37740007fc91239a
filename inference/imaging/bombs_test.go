package imaging

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Decompression bombs and other small files with large pixel counts,
// written here rather than committed: a few bytes to a few megabytes that
// decode to any size the header asks for.

// bombGIF is a GIF whose logical screen is w×h, with one 1×1 frame.
func bombGIF(w, h int) []byte {
	b := []byte("GIF89a")
	b = binary.LittleEndian.AppendUint16(b, uint16(w))
	b = binary.LittleEndian.AppendUint16(b, uint16(h))
	b = append(b, 0x80, 0, 0, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60) // 2-colour table
	b = append(b, ',', 0, 0, 0, 0, 1, 0, 1, 0, 0)
	return append(b, 2, 2, 0x4C, 0x01, 0, ';') // LZW: clear, 1, end
}

func pngChunk(b []byte, typ string, data []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	start := len(b)
	b = append(b, typ...)
	b = append(b, data...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b[start:]))
}

// bombPNG is a w×h 8-bit RGB PNG of one colour. With headerOnly, the image
// data is a few bytes (enough for a header bomb).
func bombPNG(w, h int, headerOnly bool) []byte {
	b := []byte("\x89PNG\r\n\x1a\n")
	ihdr := binary.BigEndian.AppendUint32(nil, uint32(w))
	ihdr = binary.BigEndian.AppendUint32(ihdr, uint32(h))
	b = pngChunk(b, "IHDR", append(ihdr, 8, 2, 0, 0, 0))
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	row := make([]byte, 1+3*w)
	for y := 0; y < h && !headerOnly; y++ {
		_, _ = zw.Write(row)
	}
	zw.Close()
	b = pngChunk(b, "IDAT", z.Bytes())
	return pngChunk(b, "IEND", nil)
}

// jpegBits writes entropy-coded data MSB first, stuffing 0xFF bytes.
type jpegBits struct {
	b    []byte
	acc  uint32
	nacc uint
}

func (w *jpegBits) put(v uint32, n uint) {
	for i := int(n) - 1; i >= 0; i-- {
		w.acc = w.acc<<1 | (v>>uint(i))&1
		w.nacc++
		if w.nacc == 8 {
			w.b = append(w.b, byte(w.acc))
			if byte(w.acc) == 0xFF {
				w.b = append(w.b, 0)
			}
			w.acc, w.nacc = 0, 0
		}
	}
}

func (w *jpegBits) flush() []byte {
	for w.nacc != 0 {
		w.put(1, 1)
	}
	out := w.b
	w.b = nil
	return out
}

func jpegSeg(b []byte, m byte, data []byte) []byte {
	b = append(b, 0xFF, m)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)+2))
	return append(b, data...)
}

// The standard DC luminance table (ITU T.81 K.3): category 0 is "00".
var jpegDCBits = []byte{0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0}

// bombJPEG is a w×h 4:2:0 baseline JPEG of one colour: every block is DC
// difference 0 then EOB, 4 bytes per MCU with these tables (DC category 0
// "00" in both DC tables; EOB "1010" in the luma AC table and "00" in the
// chroma one). With n < 0 the data stops after -n bytes (a header bomb).
func bombJPEG(w, h, n int) []byte {
	b := []byte{0xFF, 0xD8}
	b = jpegSeg(b, 0xDB, append([]byte{0}, bytes.Repeat([]byte{1}, 64)...))
	b = jpegSeg(b, 0xC0, []byte{8, byte(h >> 8), byte(h), byte(w >> 8), byte(w), 3, 1, 0x22, 0, 2, 0x11, 0, 3, 0x11, 0})
	acBits := map[byte][]byte{
		0: {0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d},
		1: {0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77},
	}
	dht := func(class, id byte, bits []byte, eob int) []byte {
		total := 0
		for _, c := range bits {
			total += int(c)
		}
		vals := make([]byte, total)
		for i := range vals {
			vals[i] = byte(i + 1)
		}
		if eob >= 0 {
			vals[eob] = 0
			for i := range vals {
				if i != eob {
					vals[i] = byte(i + 2)
				}
			}
		} else {
			for i := range vals {
				vals[i] = byte(i)
			}
		}
		return append(append([]byte{class<<4 | id}, bits...), vals...)
	}
	b = jpegSeg(b, 0xC4, dht(0, 0, jpegDCBits, -1))
	b = jpegSeg(b, 0xC4, dht(0, 1, []byte{0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}, -1))
	b = jpegSeg(b, 0xC4, dht(1, 0, acBits[0], 3)) // 00, 01, 100, then 1010
	b = jpegSeg(b, 0xC4, dht(1, 1, acBits[1], 0)) // 00
	b = jpegSeg(b, 0xDA, []byte{3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0})
	mcus := ((w + 15) / 16) * ((h + 15) / 16)
	data := bytes.Repeat([]byte{0x28, 0xA2, 0x8A, 0x00}, mcus)
	if n < 0 {
		return append(b, data[:min(len(data), -n)]...)
	}
	b = append(b, data...)
	return append(b, 0xFF, 0xD9)
}

// scanBombJPEG is a w×h grey progressive JPEG: a DC scan, then scans AC
// scans that each cover every block with end-of-band runs (about 30 bytes
// a scan, whatever the size). libjpeg warns about the repeated progression
// and decodes each of them, as PIL does.
func scanBombJPEG(w, h, scans int) []byte {
	b := []byte{0xFF, 0xD8}
	b = jpegSeg(b, 0xDB, append([]byte{0}, bytes.Repeat([]byte{1}, 64)...))
	b = jpegSeg(b, 0xC2, []byte{8, byte(h >> 8), byte(h), byte(w >> 8), byte(w), 1, 1, 0x11, 0})
	dc := append(append([]byte{0x00}, jpegDCBits...), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
	b = jpegSeg(b, 0xC4, dc)
	// AC table: the 15 end-of-band run symbols 0x00..0xE0, 4 bits each.
	ac := []byte{0x10, 0, 0, 0, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	for r := range 15 {
		ac = append(ac, byte(r<<4))
	}
	b = jpegSeg(b, 0xC4, ac)
	blocks := ((w + 7) / 8) * ((h + 7) / 8)
	var bw jpegBits
	b = jpegSeg(b, 0xDA, []byte{1, 1, 0x00, 0, 0, 0})
	for range blocks {
		bw.put(0, 2)
	}
	b = append(b, bw.flush()...)
	for range scans {
		b = jpegSeg(b, 0xDA, []byte{1, 1, 0x00, 1, 63, 0})
		for left := blocks; left > 0; {
			run := min(left, 1<<15-1)
			r := 0
			for 1<<(r+1) <= run {
				r++
			}
			bw.put(uint32(r), 4)
			bw.put(uint32(run-1<<r), uint(r))
			left -= run
		}
		b = append(b, bw.flush()...)
	}
	return append(b, 0xFF, 0xD9)
}

// vp8lBits writes LSB first, as VP8L does.
type vp8lBits struct {
	b    []byte
	acc  uint64
	nacc uint
}

func (w *vp8lBits) put(v uint64, n uint) {
	w.acc |= v << w.nacc
	w.nacc += n
	for w.nacc >= 8 {
		w.b = append(w.b, byte(w.acc))
		w.acc >>= 8
		w.nacc -= 8
	}
}

// bombWebP is a lossless WebP of w×h pixels of one colour: every prefix
// code has a single symbol, so the pixels take no bits (32 bytes in all).
func bombWebP(w, h int, alpha bool) []byte {
	var bw vp8lBits
	bw.put(0x2f, 8)
	bw.put(uint64(w-1), 14)
	bw.put(uint64(h-1), 14)
	a := uint64(0)
	if alpha {
		a = 1
	}
	bw.put(a, 1)
	bw.put(0, 3) // version
	bw.put(0, 3) // no transform, no colour cache, no meta prefix codes
	for i, sym := range []uint64{0x40, 0x80, 0xC0, 0x7F, 0} {
		bw.put(1, 1) // simple code with one symbol
		bw.put(0, 1)
		if i == 4 {
			bw.put(0, 1)
			bw.put(sym, 1)
			continue
		}
		bw.put(1, 1)
		bw.put(sym, 8)
	}
	if bw.nacc > 0 {
		bw.put(0, 8-bw.nacc)
	}
	data := bw.b
	if len(data)%2 == 1 {
		data = append(data, 0)
	}
	b := append([]byte("RIFF"), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[4:], uint32(4+8+len(data)))
	b = append(b, "WEBPVP8L"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// bombTIFF is a w×h 8-bit RGB TIFF, one deflated strip of zeros (just a
// zlib header and end with headerOnly).
func bombTIFF(w, h int, headerOnly bool) []byte {
	if headerOnly {
		return bombTIFFStrip(w, h, 8, -1)
	}
	return bombTIFFStrip(w, h, 8, 3*w*h)
}

// bombTIFFStrip is a w×h RGB TIFF of bps-bit samples whose one deflated
// strip holds raw zero bytes (3×w×h×bps/8 for the pixels, more for a strip
// that inflates past them; just a zlib header and end when raw < 0).
func bombTIFFStrip(w, h, bps, raw int) []byte {
	strip := []byte{0x78, 0x9c, 0x03, 0x00}
	if raw >= 0 {
		var z bytes.Buffer
		zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
		_, _ = zw.Write(make([]byte, raw))
		zw.Close()
		strip = z.Bytes()
	}
	le := binary.LittleEndian
	b := append([]byte("II*\x00"), 8, 0, 0, 0)
	bpsOff := uint32(8 + 2 + 12*10 + 4)
	entries := [][4]uint32{ // tag, type, count, value
		{256, 4, 1, uint32(w)}, {257, 4, 1, uint32(h)}, {258, 3, 3, bpsOff}, {259, 3, 1, 8},
		{262, 3, 1, 2}, {273, 4, 1, bpsOff + 6}, {277, 3, 1, 3}, {278, 4, 1, uint32(h)},
		{279, 4, 1, uint32(len(strip))}, {284, 3, 1, 1},
	}
	b = le.AppendUint16(b, uint16(len(entries)))
	for _, e := range entries {
		b = le.AppendUint16(b, uint16(e[0]))
		b = le.AppendUint16(b, uint16(e[1]))
		b = le.AppendUint32(b, e[2])
		b = le.AppendUint32(b, e[3])
	}
	b = le.AppendUint32(b, 0)
	b = append(b, byte(bps), 0, byte(bps), 0, byte(bps), 0)
	return append(b, strip...)
}

// bombBMP is a w×h 8-bit RLE-compressed BMP of one colour: 2 bytes per
// 255 pixels.
func bombBMP(w, h int) []byte {
	var px []byte
	for range h {
		for x := 0; x < w; x += 255 {
			px = append(px, byte(min(255, w-x)), 1)
		}
		px = append(px, 0, 0)
	}
	px = append(px, 0, 1)
	le := binary.LittleEndian
	pal := make([]byte, 256*4)
	pal[4], pal[5], pal[6] = 0x30, 0x60, 0x90
	off := 14 + 40 + len(pal)
	b := []byte("BM")
	for _, v := range []uint32{uint32(off + len(px)), 0, uint32(off), 40, uint32(w), uint32(h)} {
		b = le.AppendUint32(b, v)
	}
	b = le.AppendUint16(b, 1)
	b = le.AppendUint16(b, 8)
	for _, v := range []uint32{1, uint32(len(px)), 2835, 2835, 256, 0} { // BI_RLE8
		b = le.AppendUint32(b, v)
	}
	return append(append(b, pal...), px...)
}

// procStatus reads a /proc/self/status field in bytes.
func procStatus(t testing.TB, key string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			f := strings.Fields(v)
			n, _ := strconv.ParseInt(f[0], 10, 64)
			return n << 10
		}
	}
	t.Skipf("no %s in /proc/self/status", key)
	return 0
}

// peakDecode decodes data and reports how long it took and how far the
// resident set rose above where it was (the kernel's high-water mark,
// reset first).
func peakDecode(t testing.TB, data []byte, o DecodeOptions) (*Image, time.Duration, int64, error) {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS: %v", err)
	}
	base := procStatus(t, "VmRSS")
	start := time.Now()
	im, err := DecodeWith(data, o)
	took := time.Since(start)
	return im, took, procStatus(t, "VmHWM") - base, err
}

// TestDecodeBombsRefusedFromHeader: files whose header asks for more than
// the default cap are refused before anything is allocated: a 35-byte GIF
// with a 10000² screen, JPEG, PNG, WebP, TIFF and BMP of 100 megapixels
// and more, each in microseconds and without memory growth.
func TestDecodeBombsRefusedFromHeader(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"gif 10000² screen", bombGIF(10000, 10000)},
		{"gif 65535² screen", bombGIF(65535, 65535)},
		{"gif frame 6000² on a 1×1 screen", func() []byte {
			b := bombGIF(1, 1)
			binary.LittleEndian.PutUint16(b[23:], 6000)
			binary.LittleEndian.PutUint16(b[25:], 6000)
			return b
		}()},
		{"jpeg 65500² header", bombJPEG(65500, 65500, -2000)},
		{"jpeg 10000² header", bombJPEG(10000, 10000, -2000)},
		{"png 100000² header", bombPNG(100000, 100000, true)},
		{"png 10000² header", bombPNG(10000, 10000, true)},
		{"webp 16383²", bombWebP(16383, 16383, false)},
		{"webp 10000²", bombWebP(10000, 10000, true)},
		{"tiff 100000² header", bombTIFF(100000, 100000, true)},
		{"bmp rle8 10000²", bombBMP(10000, 10000)},
	} {
		t.Run(c.name, func(t *testing.T) {
			im, took, grew, err := peakDecode(t, c.data, DecodeOptions{})
			if err == nil {
				t.Fatalf("decoded %d×%d", im.W, im.H)
			}
			if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrDecode) {
				t.Fatalf("error %v is not ErrTooLarge and ErrDecode", err)
			}
			t.Logf("%d bytes: %v in %v, peak RSS +%d MiB", len(c.data), err, took, grew>>20)
			if grew > 16<<20 {
				t.Errorf("refusing it raised the peak RSS by %d MiB", grew>>20)
			}
			if took > time.Second {
				t.Errorf("refusing it took %v", took)
			}
		})
	}
}

// TestDecodeBudget decodes bombs under a 4-megapixel cap: each format at
// 2000×2000 decodes (or is refused) as its estimated peak memory says, the
// resident set never rises much above that estimate (not checked under
// -race), and one pixel more than the cap is refused.
func TestDecodeBudget(t *testing.T) {
	const side = 2000
	o := DecodeOptions{MaxPixels: side * side} // MaxBytes: 24 MB
	// The decoders set up their tables on first use (about 10 MB).
	if _, err := Decode(bombPNG(64, 64, false)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		data []byte
		fits bool
	}{
		{"gif screen", bombGIF(side, side), true},
		{"jpeg", bombJPEG(side, side, 0), true},
		{"png", bombPNG(side, side, false), true},
		{"webp lossless", bombWebP(side, side, false), false}, // 7 bytes a pixel
		{"webp lossless 1500²", bombWebP(1500, 1500, false), true},
		{"webp lossless alpha 1400²", bombWebP(1400, 1400, true), true},              // 7 bytes a pixel
		{"tiff one strip", bombTIFF(side, side, false), true},                        // 3 + 3 bytes a pixel
		{"tiff 16-bit one strip", bombTIFFStrip(side, side, 16, 6*side*side), false}, // 3 + 6
		{"tiff 16-bit 1600²", bombTIFFStrip(1600, 1600, 16, 6*1600*1600), true},
		{"tiff strip inflating to 8 bytes a pixel", bombTIFFStrip(side, side, 8, 8*side*side), true},
		{"bmp rle8", bombBMP(side, side), true},
		{"jpeg progressive", scanBombJPEG(side, side, 5), true}, // 3 + 2 bytes a pixel
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := ReadHeader(c.data)
			if err != nil {
				t.Fatal(err)
			}
			im, took, grew, err := peakDecode(t, c.data, o)
			t.Logf("%d bytes, %d×%d: estimate %d MB, peak RSS +%d MB, %v, err %v", len(c.data), h.W, h.H, h.DecodeBytes()/1e6, grew/1e6, took, err)
			if !c.fits {
				if !errors.Is(err, ErrTooLarge) {
					t.Fatalf("error %v, want ErrTooLarge (estimate %d bytes over %d)", err, h.DecodeBytes(), 6*o.MaxPixels)
				}
				if grew > 8<<20 {
					t.Errorf("refusing it raised the peak RSS by %d MiB", grew>>20)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if im.W != h.W || im.H != h.H {
				t.Fatalf("%d×%d", im.W, im.H)
			}
			// Under -race the detector's shadow memory for what the Go
			// decoders write (the output, a TIFF strip) adds to the RSS.
			if lim := h.DecodeBytes() + 12<<20; grew > lim && !raceEnabled {
				t.Errorf("peak RSS +%d MB, over the %d MB estimate", grew/1e6, h.DecodeBytes()/1e6)
			}
		})
	}
	t.Run("one pixel over", func(t *testing.T) {
		if _, err := DecodeWith(bombPNG(side+1, side, true), o); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("error %v, want ErrTooLarge", err)
		}
	})
}

// TestJPEGScanLimits: progressive files may not make libjpeg pass over
// the image more than 64 times (counting at least 2048×2048 pixels), nor
// hold more than 500 scans, and may not
// need more coefficient memory than the byte budget leaves.
func TestJPEGScanLimits(t *testing.T) {
	if _, err := Decode(scanBombJPEG(64, 64, 20)); err != nil {
		t.Fatalf("20 scans: %v", err)
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"100 passes", scanBombJPEG(2048, 2048, 100), "more than 64 times"},
		{"600 scans", scanBombJPEG(8, 8, 600), "more than 500 scans"},
	} {
		_, err := Decode(c.data)
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(fmt.Sprint(err), c.want) {
			t.Errorf("%s: error %v, want ErrTooLarge saying %q", c.name, err, c.want)
		}
	}
	// A baseline file with several scans buffers its coefficients too;
	// libjpeg is held to what the output leaves of MaxBytes. Here the
	// progressive header asks for 2 bytes a pixel beside the 3 of the
	// output: refused at 4 bytes a pixel.
	p := scanBombJPEG(1000, 1000, 3)
	if _, err := DecodeWith(p, DecodeOptions{MaxPixels: 1_000_000, MaxBytes: 4_000_000}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("coefficient buffers over the budget: error %v, want ErrTooLarge", err)
	}
	if _, err := DecodeWith(p, DecodeOptions{MaxPixels: 1_000_000, MaxBytes: 6_000_000}); err != nil {
		t.Errorf("within the budget: %v", err)
	}
}

// BenchmarkDecodeAtCap decodes the largest bomb of each format that the
// default caps let through (32 MP, or fewer where the format's working
// memory reaches the 192 MB budget first), with the decoding time alone
// (decode-ms; ns/op also counts a garbage collection per decode) and the
// peak resident growth: the worst a small file can cost one request. Run
// with
// go test -run '^$' -bench DecodeAtCap -benchtime 3x ./inference/imaging/
func BenchmarkDecodeAtCap(b *testing.B) {
	const side = 5656 // 31.99 MP
	for _, c := range []struct {
		name string
		data func() []byte
	}{
		{"gif screen 32MP", func() []byte { return bombGIF(side, side) }},
		{"jpeg 32MP", func() []byte { return bombJPEG(side, side, 0) }},
		{"jpeg progressive 32MP 10 scans", func() []byte { return scanBombJPEG(side, side, 10) }},
		{"png 32MP", func() []byte { return bombPNG(side, side, false) }},
		{"bmp rle8 32MP", func() []byte { return bombBMP(side, side) }},
		{"webp lossless 25MP", func() []byte { return bombWebP(5000, 5000, false) }},
		{"tiff 32MP", func() []byte { return bombTIFF(side, side, false) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			data := c.data()
			var peak int64
			var decoding time.Duration
			for b.Loop() {
				_, took, grew, err := peakDecode(b, data, DecodeOptions{})
				if err != nil {
					b.Fatal(err)
				}
				peak = max(peak, grew)
				decoding += took
			}
			b.ReportMetric(float64(decoding.Milliseconds())/float64(b.N), "decode-ms")
			b.ReportMetric(float64(peak)/1e6, "peakMB")
			b.ReportMetric(float64(len(data)), "fileB")
		})
	}
}
