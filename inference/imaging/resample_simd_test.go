package imaging

import (
	"image"
	"math/rand/v2"
	"testing"
)

// resizeBoth resizes src with the AVX2 passes and with the Go passes and
// fails when they differ.
func resizeBoth(t testing.TB, src *Image, w, h int, rect image.Rectangle, f Filter, workers int) {
	t.Helper()
	simd := Resampler{Workers: workers}
	ref := Resampler{Workers: workers, noSIMD: true}
	got := simd.ResizeRegion(nil, src, w, h, rect, f)
	want := ref.ResizeRegion(nil, src, w, h, rect, f)
	if got.W != want.W || got.H != want.H || sum256(got.Pix) != sum256(want.Pix) {
		d, n := maxDiff(got, want)
		t.Fatalf("%d×%d (extent %v) → %d×%d %v region %v, %d workers: AVX2 differs from Go by up to %d in %d values",
			src.W, src.H, extent(src), w, h, f, rect, workers, d, n)
	}
}

func extent(im *Image) [2]float64 {
	w, h := im.Extent()
	return [2]float64{w, h}
}

// edgeImage has pixels of 0 and 255 only, in random runs: the filters'
// negative lobes then push sums past 0..255, and every clamp is taken.
func edgeImage(r *rand.Rand, w, h int) *Image {
	im := New(w, h)
	v := byte(0)
	for i := range im.Pix {
		if r.IntN(3) == 0 {
			v = 255 - v
		}
		im.Pix[i] = v
	}
	return im
}

// TestResizeSIMDMatchesGo: the AVX2 passes give the Go passes' bytes (the
// Go passes are checked against PIL in TestResizeMatchesPIL) for random
// sizes, shrinking and enlarging by up to 60 times, both filters, regions,
// images decoded smaller, bands on several goroutines, and sums that
// clamp.
func TestResizeSIMDMatchesGo(t *testing.T) {
	if !simdResample() {
		t.Skip("this CPU has no AVX2: the Go passes are the only ones")
	}
	r := rand.New(rand.NewPCG(11, 12))
	for i := range 600 {
		sw, sh := 1+r.IntN(300), 1+r.IntN(300)
		if i%10 == 0 {
			sw = 1 + r.IntN(2000)
		}
		src := randomImage(r, sw, sh)
		if i%3 == 0 {
			src = edgeImage(r, sw, sh)
		}
		if i%7 == 0 && sw > 8 && sh > 8 {
			// Decoded at e/8 of a full size: the extent is not the size.
			e := 1 + r.IntN(7)
			src.Eighths, src.FullW, src.FullH = e, sw*8/e-r.IntN(8/e), sh*8/e-r.IntN(8/e)
		}
		w, h := 1+r.IntN(240), 1+r.IntN(240)
		switch i % 5 {
		case 1:
			w = src.W
		case 2:
			h = src.H
		}
		f := Bicubic
		if r.IntN(2) == 0 {
			f = Lanczos
		}
		rect := image.Rect(0, 0, w, h)
		if i%2 == 0 {
			x0, y0 := r.IntN(w+10)-5, r.IntN(h+10)-5
			rect = image.Rect(x0, y0, x0+1+r.IntN(w+5), y0+1+r.IntN(h+5))
		}
		resizeBoth(t, src, w, h, rect, f, i%3)
	}
}

// TestResizeSIMDPreview: the CLIP resize of a preview-size photo, whose
// rows are long enough for every load of the AVX2 horizontal pass, and
// its last row, whose loads are served from a padded copy.
func TestResizeSIMDPreview(t *testing.T) {
	if !simdResample() {
		t.Skip("this CPU has no AVX2")
	}
	src := benchPreview(t)
	resizeBoth(t, src, 298, 224, image.Rect(37, 0, 261, 224), Bicubic, 0)
	resizeBoth(t, src, 298, 224, image.Rect(0, 0, 298, 224), Lanczos, 2)
	resizeBoth(t, src, 640, 480, image.Rect(0, 0, 640, 480), Bicubic, 1) // OCR, face sizes
	resizeBoth(t, src, 2000, 1500, image.Rect(0, 1400, 2000, 1500), Bicubic, 0)
}

// FuzzResizeSIMD compares the AVX2 and Go passes on sizes and pixels the
// fuzzer picks.
func FuzzResizeSIMD(f *testing.F) {
	f.Add(uint16(33), uint16(17), uint16(9), uint16(40), false, uint64(1))
	f.Add(uint16(1), uint16(1), uint16(3), uint16(2), true, uint64(2))
	f.Add(uint16(900), uint16(5), uint16(7), uint16(5), false, uint64(3))
	f.Fuzz(func(t *testing.T, sw, sh, w, h uint16, lanczos bool, seed uint64) {
		if !simdResample() {
			t.Skip("no AVX2")
		}
		sw, sh, w, h = 1+sw%1024, 1+sh%256, 1+w%512, 1+h%256
		r := rand.New(rand.NewPCG(seed, 1))
		src := randomImage(r, int(sw), int(sh))
		if seed%2 == 0 {
			src = edgeImage(r, int(sw), int(sh))
		}
		filter := Bicubic
		if lanczos {
			filter = Lanczos
		}
		resizeBoth(t, src, int(w), int(h), image.Rect(0, 0, int(w), int(h)), filter, int(seed%3))
	})
}
