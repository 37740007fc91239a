package ocr

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/mlserve/mlserve/inference/imaging"
)

func readRGB(t testing.TB, path string) *imaging.Image {
	t.Helper()
	src := readPNG(t, path)
	b := src.Bounds()
	im := &imaging.Image{W: b.Dx(), H: b.Dy(), Pix: make([]byte, b.Dx()*b.Dy()*3)}
	for y := range im.H {
		for x := range im.W {
			r, g, bl, _ := src.At(b.Min.X+x, b.Min.Y+y).RGBA()
			i := (y*im.W + x) * 3
			im.Pix[i], im.Pix[i+1], im.Pix[i+2] = byte(r>>8), byte(g>>8), byte(bl>>8)
		}
	}
	return im
}

type cropCase struct {
	Quad    [4][2]float32
	Coeffs  [8]float64
	W, H    int
	Rotated bool
	PNG     string
}

func maxDiff(a, b *imaging.Image) (int, float64) {
	worst, sum := 0, 0
	for i := range a.Pix {
		d := int(a.Pix[i]) - int(b.Pix[i])
		if d < 0 {
			d = -d
		}
		worst = max(worst, d)
		sum += d
	}
	return worst, float64(sum) / float64(len(a.Pix))
}

// TestWarpPerspectiveMatchesPIL feeds Immich's own (float32 SVD)
// coefficients to the sampler: the result must equal PIL's byte for byte.
func TestWarpPerspectiveMatchesPIL(t *testing.T) {
	var cases []cropCase
	readJSON(t, "crop_golden.json", &cases)
	src := readRGB(t, filepath.Join("testdata", "crop_src.png"))
	for i, c := range cases {
		want := readRGB(t, filepath.Join("testdata", "crops", c.PNG))
		got := warpPerspective(src, c.Coeffs, c.W, c.H)
		if c.Rotated {
			got = rotateCCW(got)
		}
		if got.W != want.W || got.H != want.H {
			t.Fatalf("case %d: %dx%d, want %dx%d", i, got.W, got.H, want.W, want.H)
		}
		if d, _ := maxDiff(got, want); d != 0 {
			t.Errorf("case %d: differs from PIL by up to %d", i, d)
		}
	}
}

// TestCropMatchesImmich runs the whole crop with our exact homography.
// Immich's float32 SVD only approximates it, so a sample that lands on an
// integer boundary may truncate the other way: the crops must agree within
// 1/255 and the mappings within 0.01 px.
func TestCropMatchesImmich(t *testing.T) {
	var cases []cropCase
	readJSON(t, "crop_golden.json", &cases)
	src := readRGB(t, filepath.Join("testdata", "crop_src.png"))
	for i, c := range cases {
		w, h := cropSize(c.Quad)
		if w != c.W || h != c.H {
			t.Fatalf("case %d: size %dx%d, want %dx%d", i, w, h, c.W, c.H)
		}
		coeffs := perspectiveCoeffs(c.Quad, w, h)
		// Compare where the mappings send the output corners.
		worstPos := 0.0
		for _, p := range [][2]float64{{0.5, 0.5}, {float64(w) - 0.5, 0.5}, {float64(w) - 0.5, float64(h) - 0.5}, {0.5, float64(h) - 0.5}} {
			u1, v1 := mapPoint(coeffs, p[0], p[1])
			u2, v2 := mapPoint(c.Coeffs, p[0], p[1])
			worstPos = max(worstPos, math.Hypot(u1-u2, v1-v2))
		}
		got := cropText(src, c.Quad)
		want := readRGB(t, filepath.Join("testdata", "crops", c.PNG))
		worst, mean := maxDiff(got, want)
		t.Logf("case %d (%dx%d): mapping differs by %.2g px; pixels by up to %d, mean %.3f", i, w, h, worstPos, worst, mean)
		if worstPos > 1e-2 {
			t.Errorf("case %d: homography differs from Immich's by %g px", i, worstPos)
		}
		if worst > 1 {
			t.Errorf("case %d: pixels differ by up to %d/255", i, worst)
		}
	}
}

func mapPoint(c [8]float64, x, y float64) (float64, float64) {
	d := c[6]*x + c[7]*y + 1
	return (c[0]*x + c[1]*y + c[2]) / d, (c[3]*x + c[4]*y + c[5]) / d
}
