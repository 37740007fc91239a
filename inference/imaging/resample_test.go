package imaging

import (
	"fmt"
	"image"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"gocv.io/x/gocv"

	"github.com/mlserve/mlserve/inference/imaging/imagingtest"
	"github.com/mlserve/mlserve/internal/testenv"
)

// TestResizeMatchesPIL compares Resize with PIL's Image.resize over the
// sizes scripts/golden_clip.py recorded: up, down, mixed, one axis, 1×1.
func TestResizeMatchesPIL(t *testing.T) {
	var golden struct {
		Pillow string
		Cases  []struct {
			Src, Filter string
			W, H        int
			Sha256      string
		}
	}
	dir := filepath.Join("testdata", "resize")
	readJSON(t, filepath.Join(dir, "resize.json"), &golden)
	srcs := map[string]*Image{}
	filters := map[string]Filter{"bicubic": Bicubic, "lanczos": Lanczos}
	for _, c := range golden.Cases {
		src := srcs[c.Src]
		if src == nil {
			src = readRGBPNG(t, filepath.Join(dir, c.Src))
			srcs[c.Src] = src
		}
		t.Run(fmt.Sprintf("%s/%s/%dx%d", c.Src, c.Filter, c.W, c.H), func(t *testing.T) {
			got := Resize(src, c.W, c.H, filters[c.Filter])
			if got.W != c.W || got.H != c.H {
				t.Fatalf("size %d×%d", got.W, got.H)
			}
			if sum256(got.Pix) != c.Sha256 {
				t.Fatalf("differs from PIL %s", golden.Pillow)
			}
		})
	}
	if len(golden.Cases) < 200 {
		t.Fatalf("only %d resize cases", len(golden.Cases))
	}
}

func randomImage(r *rand.Rand, w, h int) *Image {
	im := New(w, h)
	for i := range im.Pix {
		im.Pix[i] = byte(r.IntN(256))
	}
	return im
}

// cropRef is PIL's Image.crop written pixel by pixel, to check Crop.
func cropRef(im *Image, rect image.Rectangle) *Image {
	out := New(rect.Dx(), rect.Dy())
	for y := rect.Min.Y; y < rect.Max.Y; y++ {
		for x := rect.Min.X; x < rect.Max.X; x++ {
			if x >= 0 && y >= 0 && x < im.W && y < im.H {
				copy(out.Pix[((y-rect.Min.Y)*out.W+x-rect.Min.X)*3:][:3], im.Pix[(y*im.W+x)*3:])
			}
		}
	}
	return out
}

// TestResizeRegionIsCropOfResize: computing only a region gives the same
// pixels as resizing everything and cropping, for every kind of region,
// and a reused Resampler gives the same as a fresh one.
func TestResizeRegionIsCropOfResize(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var reused Resampler
	var dst *Image
	for i := 0; i < 300; i++ {
		src := randomImage(r, 1+r.IntN(60), 1+r.IntN(60))
		w, h := 1+r.IntN(90), 1+r.IntN(90)
		if r.IntN(4) == 0 {
			w = src.W
		}
		if r.IntN(4) == 0 {
			h = src.H
		}
		f := Bicubic
		if r.IntN(2) == 0 {
			f = Lanczos
		}
		x0, y0 := r.IntN(w+10)-5, r.IntN(h+10)-5
		rect := image.Rect(x0, y0, x0+1+r.IntN(w+5), y0+1+r.IntN(h+5))
		full := Resize(src, w, h, f)
		want := cropRef(full, rect)
		if c := Crop(full, rect); sum256(c.Pix) != sum256(want.Pix) {
			t.Fatalf("%d: Crop(%v) of %d×%d differs from PIL's crop", i, rect, w, h)
		}
		got := ResizeRegion(src, w, h, rect, f)
		if got.W != want.W || got.H != want.H || sum256(got.Pix) != sum256(want.Pix) {
			d, n := maxDiff(got, want)
			t.Fatalf("%d: %d×%d → %d×%d %v region %v: differs by up to %d in %d values", i, src.W, src.H, w, h, f, rect, d, n)
		}
		reused.Workers = i % 4 // serial and in bands
		dst = reused.ResizeRegion(dst, src, w, h, rect, f)
		if sum256(dst.Pix) != sum256(want.Pix) {
			t.Fatalf("%d: reused Resampler with %d workers differs", i, reused.Workers)
		}
	}
}

func TestCenterCrop(t *testing.T) {
	src := randomImage(rand.New(rand.NewPCG(7, 8)), 7, 4)
	for _, tc := range []struct {
		w, h, size int
		want       image.Rectangle
	}{
		{298, 224, 224, image.Rect(37, 0, 261, 224)},
		{7, 4, 3, image.Rect(2, 0, 5, 3)},   // int(3.5-1.5), int(2-1.5)
		{3, 3, 4, image.Rect(0, 0, 4, 4)},   // int(-0.5) is 0: Python truncates toward zero
		{2, 2, 5, image.Rect(-1, -1, 4, 4)}, // int(-1.5) is -1
	} {
		if got := CenterRect(tc.w, tc.h, tc.size); got != tc.want {
			t.Errorf("CenterRect(%d, %d, %d) = %v, want %v", tc.w, tc.h, tc.size, got, tc.want)
		}
	}
	c := CenterCrop(src, 9)
	if sum256(c.Pix) != sum256(cropRef(src, CenterRect(7, 4, 9)).Pix) {
		t.Error("CenterCrop larger than the image")
	}
	if c := CenterCrop(nil, 2); c.W != 2 || len(c.Pix) != 12 {
		t.Error("CenterCrop(nil)")
	}
}

func TestResizeDegenerate(t *testing.T) {
	src := randomImage(rand.New(rand.NewPCG(3, 4)), 5, 4)
	for _, tc := range []struct {
		name string
		im   *Image
		w, h int
	}{
		{"zero width", src, 0, 3},
		{"negative height", src, 3, -1},
		{"nil image", nil, 3, 3},
		{"empty image", &Image{}, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := Resize(tc.im, tc.w, tc.h, Bicubic)
			if len(out.Pix) != out.W*out.H*3 {
				t.Fatalf("inconsistent result %d×%d, %d bytes", out.W, out.H, len(out.Pix))
			}
		})
	}
	if same := Resize(src, 5, 4, Lanczos); sum256(same.Pix) != sum256(src.Pix) || &same.Pix[0] == &src.Pix[0] {
		t.Fatal("same-size resize must be a copy")
	}
}

// TestResizeAllocs: with a warm Resampler and a destination, resizing
// allocates nothing.
func TestResizeAllocs(t *testing.T) {
	src := randomImage(rand.New(rand.NewPCG(5, 6)), 320, 240)
	var r Resampler
	dst := New(224, 224)
	rect := image.Rect(37, 0, 261, 224)
	r.ResizeRegion(dst, src, 298, 224, rect, Bicubic)
	if n := testing.AllocsPerRun(20, func() { r.ResizeRegion(dst, src, 298, 224, rect, Bicubic) }); n != 0 {
		t.Errorf("warm ResizeRegion: %v allocations, want 0", n)
	}
	// The one-shot function: the result, the Resampler's tables and scratch.
	if n := testing.AllocsPerRun(5, func() { Resize(src, 100, 80, Bicubic) }); n > 16 {
		t.Errorf("Resize: %v allocations, want at most 16", n)
	}
}

// The benchmark input is a 1440×1080 preview (Immich's default preview
// size) resized for CLIP ViT-B/32: shortest side to 224 (298×224), centre
// 224×224 kept. gocv's INTER_CUBIC and INTER_AREA are measured on the same
// image for comparison (they do not match PIL: INTER_CUBIC does not
// antialias).
func benchPreview(b testing.TB) *Image {
	data, err := os.ReadFile(testenv.TestData(b, "photos/sample1.jpg"))
	if err != nil {
		b.Fatal(err)
	}
	im, err := Decode(data)
	if err != nil {
		b.Fatal(err)
	}
	return Resize(im, 1440, 1080, Bicubic)
}

func BenchmarkResizeCLIP(b *testing.B) {
	src := benchPreview(b)
	rect := image.Rect(37, 0, 261, 224)
	b.Run("pil-bicubic/full-298x224", func(b *testing.B) {
		var r Resampler
		var dst *Image
		b.ReportAllocs()
		for b.Loop() {
			dst = r.ResizeRegion(dst, src, 298, 224, image.Rect(0, 0, 298, 224), Bicubic)
		}
	})
	b.Run("pil-bicubic/region-224x224", func(b *testing.B) {
		var r Resampler
		var dst *Image
		b.ReportAllocs()
		for b.Loop() {
			dst = r.ResizeRegion(dst, src, 298, 224, rect, Bicubic)
		}
	})
	b.Run("pil-bicubic/region-224x224-2-workers", func(b *testing.B) {
		r := Resampler{Workers: 2}
		var dst *Image
		for b.Loop() {
			dst = r.ResizeRegion(dst, src, 298, 224, rect, Bicubic)
		}
	})
	b.Run("pil-bicubic/one-shot", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ResizeRegion(src, 298, 224, rect, Bicubic)
		}
	})
	b.Run("pil-lanczos/full-298x224", func(b *testing.B) {
		var r Resampler
		var dst *Image
		for b.Loop() {
			dst = r.ResizeRegion(dst, src, 298, 224, image.Rect(0, 0, 298, 224), Lanczos)
		}
	})
	for _, cv := range []struct {
		name string
		flag gocv.InterpolationFlags
	}{{"gocv-cubic", gocv.InterpolationCubic}, {"gocv-area", gocv.InterpolationArea}} {
		b.Run(cv.name+"/full-298x224", func(b *testing.B) {
			m, err := src.Mat()
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			dst := gocv.NewMat()
			defer dst.Close()
			for b.Loop() {
				gocv.Resize(m, &dst, image.Pt(298, 224), 0, 0, cv.flag)
			}
		})
	}
}

func BenchmarkDecodePreview(b *testing.B) {
	src := benchPreview(b)
	jpg, err := imagingtest.JPEG(src.Pix, src.W, src.H, 3, 80)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(jpg)))
	for b.Loop() {
		if _, err := Decode(jpg); err != nil {
			b.Fatal(err)
		}
	}
}
