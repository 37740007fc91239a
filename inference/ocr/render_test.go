package ocr

import (
	"image"
	"image/color"
	"image/draw"
	"math"
	"math/rand/v2"
	"testing"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"

	"github.com/mlserve/mlserve/inference/imaging"
)

// Test images are rendered here with the Go fonts, so that the expected
// text and where its ink lies are known exactly.

type line struct {
	text string
	x, y int     // baseline origin
	size float64 // pixels per em
	bold bool
	ink  color.RGBA
}

func face(t testing.TB, size float64, bold bool) font.Face {
	t.Helper()
	data := goregular.TTF
	if bold {
		data = gobold.TTF
	}
	f, err := opentype.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := opentype.NewFace(f, &opentype.FaceOptions{Size: size, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		t.Fatal(err)
	}
	return fc
}

// ink is where a rendered line's ink is: its pixels (alpha > 96) and
// their bounding rectangle.
type ink struct {
	pixels []image.Point
	bounds image.Rectangle
}

// render draws lines onto bg and returns the image and each line's ink.
func render(t testing.TB, bg *image.RGBA, lines []line) (*image.RGBA, []ink) {
	t.Helper()
	inks := make([]ink, len(lines))
	for i, l := range lines {
		mask := image.NewAlpha(bg.Bounds())
		d := font.Drawer{Dst: mask, Src: image.Opaque, Face: face(t, l.size, l.bold), Dot: fixed.P(l.x, l.y)}
		d.DrawString(l.text)
		inks[i] = inkOf(mask)
		draw.DrawMask(bg, bg.Bounds(), image.NewUniform(l.ink), image.Point{}, mask, image.Point{}, draw.Over)
	}
	return bg, inks
}

func inkOf(m *image.Alpha) ink {
	var k ink
	b := m.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if m.Pix[(y-b.Min.Y)*m.Stride+x-b.Min.X] > 96 {
				k.pixels = append(k.pixels, image.Pt(x, y))
				k.bounds = k.bounds.Union(image.Rect(x, y, x+1, y+1))
			}
		}
	}
	return k
}

func plain(w, h int, c color.RGBA) *image.RGBA {
	im := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(im, im.Bounds(), image.NewUniform(c), image.Point{}, draw.Src)
	return im
}

// photoLike is a smooth colour gradient with soft blobs and pixel noise.
func photoLike(w, h int, seed uint64) *image.RGBA {
	r := rand.New(rand.NewPCG(seed, 1))
	im := image.NewRGBA(image.Rect(0, 0, w, h))
	type blob struct{ x, y, r2, dr, dg, db float64 }
	blobs := make([]blob, 6)
	for i := range blobs {
		rad := 40 + r.Float64()*120
		blobs[i] = blob{r.Float64() * float64(w), r.Float64() * float64(h), rad * rad, r.Float64()*80 - 40, r.Float64()*80 - 40, r.Float64()*80 - 40}
	}
	for y := range h {
		for x := range w {
			fr := 150 + 60*float64(x)/float64(w)
			fg := 170 - 40*float64(y)/float64(h)
			fb := 140 + 50*float64(x+y)/float64(w+h)
			for _, b := range blobs {
				d := ((float64(x)-b.x)*(float64(x)-b.x) + (float64(y)-b.y)*(float64(y)-b.y)) / b.r2
				if d < 1 {
					k := 1 - d
					fr, fg, fb = fr+b.dr*k, fg+b.dg*k, fb+b.db*k
				}
			}
			n := r.NormFloat64() * 12
			im.SetRGBA(x, y, color.RGBA{clamp(fr + n), clamp(fg + n), clamp(fb + n), 255})
		}
	}
	return im
}

func clamp(v float64) uint8 { return uint8(max(0, min(255, v+0.5))) }

// toImage converts to the package's RGB image.
func toImage(src *image.RGBA) *imaging.Image {
	b := src.Bounds()
	im := &imaging.Image{W: b.Dx(), H: b.Dy(), Pix: make([]byte, b.Dx()*b.Dy()*3)}
	for y := range im.H {
		for x := range im.W {
			s := src.PixOffset(b.Min.X+x, b.Min.Y+y)
			copy(im.Pix[(y*im.W+x)*3:], src.Pix[s:s+3])
		}
	}
	return im
}

// rotateCW turns an image 90° clockwise: text then reads top to bottom.
func rotateCW(src *image.RGBA) *image.RGBA {
	b := src.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dy(), b.Dx()))
	for y := range b.Dy() {
		for x := range b.Dx() {
			out.SetRGBA(b.Dy()-1-y, x, src.RGBAAt(b.Min.X+x, b.Min.Y+y))
		}
	}
	return out
}

// rotateInkCW maps ink of an image h pixels high through rotateCW.
func rotateInkCW(k ink, h int) ink {
	var out ink
	for _, p := range k.pixels {
		q := image.Pt(h-1-p.Y, p.X)
		out.pixels = append(out.pixels, q)
		out.bounds = out.bounds.Union(image.Rect(q.X, q.Y, q.X+1, q.Y+1))
	}
	return out
}

// containsInk reports whether the quadrilateral covers the centre of
// every ink pixel, allowing tol pixels, and returns the first one outside.
func containsInk(q [4][2]float32, k ink, tol float64) (image.Point, bool) {
	for _, p := range k.pixels {
		if !inQuad(q, [2]float64{float64(p.X) + 0.5, float64(p.Y) + 0.5}, tol) {
			return p, false
		}
	}
	return image.Point{}, true
}

// inQuad tests p against the four edges of a clockwise (in image
// coordinates) quadrilateral, tol pixels outside allowed.
func inQuad(q [4][2]float32, p [2]float64, tol float64) bool {
	for i := range 4 {
		a, b := q[i], q[(i+1)%4]
		ex, ey := float64(b[0]-a[0]), float64(b[1]-a[1])
		l := ex*ex + ey*ey
		if l == 0 {
			continue
		}
		// Signed distance to the edge; inside is the right-hand side in
		// image coordinates (y down), where the cross product is positive.
		cross := (ex*(p[1]-float64(a[1])) - ey*(p[0]-float64(a[0]))) / math.Sqrt(l)
		if cross < -tol {
			return false
		}
	}
	return true
}
