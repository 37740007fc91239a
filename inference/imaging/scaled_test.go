package imaging

import (
	"bytes"
	"errors"
	"image"
	stdpng "image/png"
	"math"
	"testing"

	"github.com/mlserve/mlserve/inference/imaging/imagingtest"
)

// texture is a w×h RGB image with detail at every scale.
func texture(w, h int) *Image {
	im := New(w, h)
	for y := range h {
		for x := range w {
			i := (y*w + x) * 3
			im.Pix[i] = byte(x*7 + y*3)
			im.Pix[i+1] = byte((x / 5) * (y / 7))
			im.Pix[i+2] = byte(x ^ y)
		}
	}
	return im
}

// smooth is a w×h RGB image of slow waves, which every scale keeps.
func smooth(w, h int) *Image {
	im := New(w, h)
	for y := range h {
		for x := range w {
			i := (y*w + x) * 3
			im.Pix[i] = byte(128 + 100*math.Sin(float64(x)/15)*math.Cos(float64(y)/11))
			im.Pix[i+1] = byte(x * 255 / w)
			im.Pix[i+2] = byte(128 + 90*math.Sin(float64(x+y)/23))
		}
	}
	return im
}

func jpegOf(t testing.TB, im *Image) []byte {
	t.Helper()
	data, err := imagingtest.JPEG(im.Pix, im.W, im.H, 3, 85)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestJPEGScale(t *testing.T) {
	for _, c := range []struct{ w, h, min, scale int }{
		{2160, 1440, 224, 2}, // 540×360
		{1798, 1440, 224, 2}, // 450×360
		{1440, 2160, 224, 2},
		{1440, 1440, 180, 1}, // 180×180: exactly the minimum
		{1440, 1440, 181, 2},
		{300, 200, 224, 8},  // already smaller: full size
		{300, 250, 224, 8},  // 7/8 gives 219: full size
		{1000, 257, 224, 7}, // 875×225
		{640, 480, 0, 8},    // no minimum: full size
	} {
		if got := jpegScale(c.w, c.h, c.min); got != c.scale {
			t.Errorf("jpegScale(%d, %d, %d) = %d, want %d", c.w, c.h, c.min, got, c.scale)
		}
	}
	if w, h := jpegScaled(1798, 1441, 2); w != 450 || h != 361 {
		t.Errorf("jpegScaled(1798, 1441, 2) = %d×%d, want 450×361 (rounded up)", w, h)
	}
}

func TestDecodeScaled(t *testing.T) {
	src := smooth(461, 333)
	data := jpegOf(t, src)
	full, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	// MinSide 0, and DecodeWith whatever MinSide says: the full image, as
	// PIL decodes it.
	for _, o := range []DecodeOptions{{}, {MinSide: 0}} {
		im, h, err := DecodeScaled(data, o)
		if err != nil || im.W != 461 || im.H != 333 || h.W != 461 || h.H != 333 || im.Eighths != 0 || !bytes.Equal(im.Pix, full.Pix) {
			t.Fatalf("DecodeScaled(%+v): %v, %d×%d", o, err, im.W, im.H)
		}
	}
	if im, err := DecodeWith(data, DecodeOptions{MinSide: 50}); err != nil || im.W != 461 || !bytes.Equal(im.Pix, full.Pix) {
		t.Fatalf("DecodeWith ignores MinSide: %v", err)
	}
	for _, c := range []struct{ min, eighths int }{
		{100, 3}, // 172.875×124.875 in 173×125; 2/8 is 116×84
		{41, 1},  // 57.625×41.625 in 58×42
		{200, 5}, // 288.125×208.125 in 289×209
	} {
		if got := jpegScale(461, 333, c.min); got != c.eighths {
			t.Fatalf("MinSide %d: scale %d/8, want %d/8", c.min, got, c.eighths)
		}
		want := jpegScale(461, 333, c.min)
		ww, wh := jpegScaled(461, 333, want)
		im, h, err := DecodeScaled(data, DecodeOptions{MinSide: c.min})
		if err != nil {
			t.Fatal(err)
		}
		if h.W != 461 || h.H != 333 || im.W != ww || im.H != wh || min(im.W, im.H) < c.min || im.Eighths != want ||
			im.FullW != 461 || im.FullH != 333 || len(im.Pix) != ww*wh*3 {
			t.Fatalf("MinSide %d: %d×%d, eighths %d, full %d×%d; want %d×%d at %d/8", c.min, im.W, im.H, im.Eighths, im.FullW, im.FullH, ww, wh, want)
		}
		if fw, fh := im.FullSize(); fw != 461 || fh != 333 {
			t.Fatalf("FullSize %d×%d", fw, fh)
		}
		if ew, eh := im.Extent(); ew != 461*float64(want)/8 || eh != 333*float64(want)/8 {
			t.Fatalf("Extent %g×%g", ew, eh)
		}
		// The scaled decode resembles the full image resized (within
		// what a box-like 1/8 DCT and a bicubic filter leave apart; a
		// shifted row or a swapped channel is tens of levels).
		ref := Resize(full, im.W, im.H, Bicubic)
		d := meanAbsDiff(ref.Pix, im.Pix)
		t.Logf("MinSide %d: %d×%d at %d/8, mean difference %.1f from the full image resized", c.min, im.W, im.H, want, d)
		if d > 8 {
			t.Errorf("MinSide %d: mean difference %.1f from the full image resized", c.min, d)
		}
	}
	// Other formats decode at full size.
	var png bytes.Buffer
	rgba := image.NewRGBA(image.Rect(0, 0, src.W, src.H))
	for i := 0; i < src.W*src.H; i++ {
		copy(rgba.Pix[4*i:], src.Pix[3*i:3*i+3])
		rgba.Pix[4*i+3] = 255
	}
	if err := stdpng.Encode(&png, rgba); err != nil {
		t.Fatal(err)
	}
	if im, _, err := DecodeScaled(png.Bytes(), DecodeOptions{MinSide: 50}); err != nil || im.W != 461 || im.Eighths != 0 {
		t.Fatalf("PNG: %v", err)
	}
}

func meanAbsDiff(a, b []byte) float64 {
	var s float64
	for i := range a {
		d := int(a[i]) - int(b[i])
		s += float64(max(d, -d))
	}
	return s / float64(len(a))
}

// The pixel cap applies to the file's full size; the memory budget to
// what is decoded.
func TestDecodeScaledCaps(t *testing.T) {
	data := jpegOf(t, texture(800, 600))
	if _, _, err := DecodeScaled(data, DecodeOptions{MaxPixels: 400_000, MinSide: 100}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the pixel cap at full size, under it scaled: %v", err)
	}
	// 3 bytes a pixel of 800×600 is 1.44 MB; at 2/8, 200×150, 90 kB.
	o := DecodeOptions{MaxPixels: 1_000_000, MaxBytes: 1_000_000}
	if _, err := DecodeWith(data, o); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("full size over the budget: %v", err)
	}
	o.MinSide = 150
	if im, _, err := DecodeScaled(data, o); err != nil || im.W != 200 || im.H != 150 {
		t.Fatalf("scaled under the budget: %v", err)
	}
	// Truncated files are refused at any scale, as at full size.
	if _, _, err := DecodeScaled(data[:len(data)/2], o); !errors.Is(err, ErrTruncated) {
		t.Fatalf("truncated: %v", err)
	}
}

// An image decoded smaller is resized as the full image it stands for:
// its extent, not its partial last pixel, maps onto the output.
func TestResizeScaledExtent(t *testing.T) {
	src := texture(120, 90)
	// A scale whose extent is whole: the same as the plain image.
	scaled := &Image{W: 60, H: 45, Pix: Resize(src, 60, 45, Bicubic).Pix, Eighths: 4, FullW: 120, FullH: 90}
	plain := &Image{W: 60, H: 45, Pix: scaled.Pix}
	rect := image.Rect(3, 2, 33, 22)
	if a, b := ResizeRegion(scaled, 40, 30, rect, Bicubic), ResizeRegion(plain, 40, 30, rect, Bicubic); !bytes.Equal(a.Pix, b.Pix) {
		t.Fatal("whole extent: differs from the plain image")
	}
	// A partial last pixel: 121×91 at 4/8 is 60.5×45.5 in 61×46 pixels.
	// A horizontal ramp keeps its slope: output x samples the full image
	// at (x+0.5)·121/out.
	ramp := New(61, 46)
	for y := range 46 {
		for x := range 61 {
			for c := range 3 {
				ramp.Pix[(y*61+x)*3+c] = byte(4 * x)
			}
		}
	}
	ramp.Eighths, ramp.FullW, ramp.FullH = 4, 121, 91
	out := Resize(ramp, 121, 91, Bicubic)
	for _, x := range []int{20, 60, 100} {
		// Source coordinate in the scaled image: (x+0.5)·60.5/121 - 0.5.
		want := 4*(float64(x)+0.5)*0.5 - 4*0.5
		got := float64(out.Pix[(45*121+x)*3])
		if got < want-1.5 || got > want+1.5 {
			t.Errorf("x=%d: %v, want about %.1f", x, got, want)
		}
	}
	if out.W != 121 || out.H != 91 {
		t.Fatalf("%d×%d", out.W, out.H)
	}
}
