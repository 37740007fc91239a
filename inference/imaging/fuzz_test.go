package imaging

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// One fuzz target per format, each seeded with small valid files of its
// format (from the PIL goldens, the format corpus of testdata/formats and
// the bomb generators, so nothing binary is committed for them), so that
// the fuzzer spends its time inside one decoder. Every target checks the same things: no input crashes a
// decoder, errors are the package's kinds, a decoded image is consistent,
// and the caps hold.

// fuzzSeeds adds the golden inputs whose names end with one of exts, and
// extra.
func fuzzSeeds(f *testing.F, exts []string, extra ...[]byte) {
	n := 0
	for _, dir := range []string{"decode", "edge", "formats"} {
		entries, err := os.ReadDir(filepath.Join("testdata", dir))
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range entries {
			name := e.Name()
			if strings.HasSuffix(name, ".rgb.png") || !hasSuffix(name, exts) {
				continue
			}
			data, err := os.ReadFile(filepath.Join("testdata", dir, name))
			if err != nil {
				f.Fatal(err)
			}
			if len(data) <= 8192 {
				f.Add(data)
				n++
			}
		}
	}
	for _, b := range extra {
		f.Add(b)
		n++
	}
	if n < 3 {
		f.Fatalf("only %d seeds for %v", n, exts)
	}
}

func hasSuffix(s string, exts []string) bool {
	for _, e := range exts {
		if strings.HasSuffix(s, e) {
			return true
		}
	}
	return false
}

// fuzzDecode is the shared check. A small cap keeps the fuzzer from
// spending its time on the huge allocations a mutated header asks for.
func fuzzDecode(t *testing.T, data []byte) {
	o := DecodeOptions{MaxPixels: 1 << 20}
	im, err := DecodeWith(data, o)
	if err != nil {
		if !errors.Is(err, ErrDecode) && !errors.Is(err, ErrEmpty) {
			t.Fatalf("error outside the package's kinds: %v", err)
		}
		return
	}
	if im.W <= 0 || im.H <= 0 || len(im.Pix) != im.W*im.H*3 {
		t.Fatalf("inconsistent image %d×%d, %d bytes", im.W, im.H, len(im.Pix))
	}
	if int64(im.W)*int64(im.H) > 1<<20 {
		t.Fatalf("decoded %d×%d over the %d-pixel cap", im.W, im.H, 1<<20)
	}
	h, err := ReadHeader(data)
	if err != nil || h.W != im.W || h.H != im.H {
		t.Fatalf("header %d×%d (%v), decoded %d×%d", h.W, h.H, err, im.W, im.H)
	}
	if h.DecodeBytes() > 6<<20 {
		t.Fatalf("decoded although the estimate, %d bytes, is over the budget", h.DecodeBytes())
	}
	// Decoding smaller (MLSERVE_PREPROCESS=fast) keeps the shorter side
	// and reports the full size.
	o.MinSide = max(1, min(h.W, h.H)/3)
	sm, sh, err := DecodeScaled(data, o)
	if err != nil {
		if !errors.Is(err, ErrDecode) && !errors.Is(err, ErrEmpty) {
			t.Fatalf("scaled: error outside the package's kinds: %v", err)
		}
		return
	}
	if sh.W != h.W || sh.H != h.H || sm.W > h.W || sm.H > h.H || min(sm.W, sm.H) < o.MinSide || len(sm.Pix) != sm.W*sm.H*3 {
		t.Fatalf("scaled: %d×%d (%d bytes) from %d×%d, min side %d", sm.W, sm.H, len(sm.Pix), sh.W, sh.H, o.MinSide)
	}
	if fw, fh := sm.FullSize(); fw != h.W || fh != h.H {
		t.Fatalf("scaled: full size %d×%d, header %d×%d", fw, fh, h.W, h.H)
	}
}

func FuzzDecodeJPEG(f *testing.F) {
	fuzzSeeds(f, []string{".jpg"}, bombJPEG(40, 24, 0), scanBombJPEG(24, 16, 3),
		[]byte{0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8, 0, 1, 0, 1, 4, 1, 0x11, 0})
	f.Fuzz(fuzzDecode)
}

func FuzzDecodePNG(f *testing.F) {
	fuzzSeeds(f, []string{".png"}, bombPNG(20, 12, false))
	f.Fuzz(fuzzDecode)
}

func FuzzDecodeGIF(f *testing.F) {
	fuzzSeeds(f, []string{".gif"}, bombGIF(30, 20))
	f.Fuzz(fuzzDecode)
}

func FuzzDecodeWebP(f *testing.F) {
	fuzzSeeds(f, []string{".webp"}, bombWebP(30, 20, false), bombWebP(17, 9, true))
	f.Fuzz(fuzzDecode)
}

func FuzzDecodeBMP(f *testing.F) {
	fuzzSeeds(f, []string{".bmp"}, bombBMP(30, 20))
	f.Fuzz(fuzzDecode)
}

// FuzzDecodeTIFF also checks that the decoder gives golang.org/x/image/tiff's
// pixels, or refuses what it refuses (see TestTIFFMatchesXImage).
func FuzzDecodeTIFF(f *testing.F) {
	extra := [][]byte{bombTIFF(30, 20, false)}
	for _, data := range tiffLayouts() {
		extra = append(extra, data)
	}
	fuzzSeeds(f, []string{".tiff"}, extra...)
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzDecode(t, data)
		checkTIFF(t, "input", data, 1<<20)
	})
}
