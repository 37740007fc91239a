package ocr

import (
	"math"

	"github.com/mlserve/mlserve/inference/imaging"
)

// Text crops, as Immich's TextRecognizer.get_crop_img_list makes them: each
// quadrilateral is mapped onto an upright rectangle with PIL's PERSPECTIVE
// transform and BICUBIC resampling, and crops at least 1.5 times taller
// than wide are turned 90° counter-clockwise.

// cropSize is the crop's width and height: the longer of each pair of
// opposite sides, computed in float32 and truncated, as numpy does.
func cropSize(b quad) (w, h int) {
	w = int(int32(max(norm32(b[1], b[0]), norm32(b[2], b[3]))))
	h = int(int32(max(norm32(b[0], b[3]), norm32(b[1], b[2]))))
	return w, h
}

// perspectiveCoeffs returns PIL's eight PERSPECTIVE coefficients mapping
// output pixel (x, y) of a w×h rectangle to the quadrilateral b:
// u = (c0 x + c1 y + c2) / (c6 x + c7 y + 1), v likewise with c3..c5.
//
// Immich finds them as the SVD null vector of the 8×9 DLT matrix in
// float32; the exact solution of the same equations is computed here in
// float64 instead (Gaussian elimination with partial pivoting), then
// rounded to float32 as Immich hands float32 values to PIL. The float32
// SVD is itself only an approximation of this solution, and its own
// rounding noise depends on the LAPACK build, so it cannot be reproduced
// bit for bit.
func perspectiveCoeffs(b quad, w, h int) [8]float64 {
	src := [4][2]float64{{0, 0}, {float64(w), 0}, {float64(w), float64(h)}, {0, float64(h)}}
	var a [8][9]float64
	for i := range 4 {
		x, y := src[i][0], src[i][1]
		u, v := float64(b[i][0]), float64(b[i][1])
		a[2*i] = [9]float64{x, y, 1, 0, 0, 0, -u * x, -u * y, u}
		a[2*i+1] = [9]float64{0, 0, 0, x, y, 1, -v * x, -v * y, v}
	}
	for col := range 8 {
		p := col
		for r := col + 1; r < 8; r++ {
			if math.Abs(a[r][col]) > math.Abs(a[p][col]) {
				p = r
			}
		}
		a[col], a[p] = a[p], a[col]
		if a[col][col] == 0 {
			return [8]float64{} // degenerate quadrilateral
		}
		for r := col + 1; r < 8; r++ {
			f := a[r][col] / a[col][col]
			for k := col; k < 9; k++ {
				a[r][k] -= f * a[col][k]
			}
		}
	}
	var c [8]float64
	for r := 7; r >= 0; r-- {
		s := a[r][8]
		for k := r + 1; k < 8; k++ {
			s -= a[r][k] * c[k]
		}
		c[r] = s / a[r][r]
	}
	for i := range c {
		c[i] = float64(float32(c[i]))
	}
	return c
}

// pilFloor is Pillow's FLOOR macro: truncation, except below zero.
func pilFloor(v float64) int {
	if v < 0 {
		return int(math.Floor(v))
	}
	return int(v)
}

// warpPerspective samples im at the PERSPECTIVE mapping c for every pixel
// of a w×h output, as Pillow's ImagingGenericTransform with its
// bicubic_filter32RGB: pixel centres at +0.5, a cubic with a = -1 over the
// 4×4 neighbourhood (edges clamped, missing rows repeated), values
// truncated to 8 bits, and black where the source point falls outside the
// image. Products are converted explicitly so that no platform fuses them
// into FMA instructions, which Pillow's x86-64 builds do not use.
func warpPerspective(im *imaging.Image, c [8]float64, w, h int) *imaging.Image {
	out := &imaging.Image{W: w, H: h, Pix: make([]byte, w*h*3)}
	fw, fh := float64(im.W), float64(im.H)
	for y := range h {
		yin := float64(y) + 0.5
		for x := range w {
			xin := float64(x) + 0.5
			den := float64(c[6]*xin) + float64(c[7]*yin) + 1
			xs := (float64(c[0]*xin) + float64(c[1]*yin) + c[2]) / den
			ys := (float64(c[3]*xin) + float64(c[4]*yin) + c[5]) / den
			if !(xs >= 0 && xs < fw && ys >= 0 && ys < fh) { // also NaN
				continue
			}
			bicubicRGB(im, xs, ys, out.Pix[(y*w+x)*3:(y*w+x)*3+3])
		}
	}
	return out
}

// cubic is Pillow's BICUBIC macro.
func cubic(v1, v2, v3, v4, d float64) float64 {
	p1 := v2
	p2 := -v1 + v3
	p3 := float64(2*(v1-v2)) + v3 - v4
	p4 := -v1 + v2 - v3 + v4
	return p1 + float64(d*(p2+float64(d*(p3+float64(d*p4)))))
}

func bicubicRGB(im *imaging.Image, xin, yin float64, dst []byte) {
	xin -= 0.5
	yin -= 0.5
	x, y := pilFloor(xin), pilFloor(yin)
	dx, dy := xin-float64(x), yin-float64(y)
	x--
	y--
	var xs [4]int
	for i := range xs {
		xs[i] = max(0, min(x+i, im.W-1)) * 3
	}
	row := func(yy int) []byte { return im.Pix[yy*im.W*3 : (yy+1)*im.W*3] }
	for b := range 3 {
		line := func(r []byte) float64 {
			return cubic(float64(r[xs[0]+b]), float64(r[xs[1]+b]), float64(r[xs[2]+b]), float64(r[xs[3]+b]), dx)
		}
		v1 := line(row(max(0, min(y, im.H-1))))
		v2 := v1
		if y+1 >= 0 && y+1 < im.H {
			v2 = line(row(y + 1))
		}
		v3 := v2
		if y+2 >= 0 && y+2 < im.H {
			v3 = line(row(y + 2))
		}
		v4 := v3
		if y+3 >= 0 && y+3 < im.H {
			v4 = line(row(y + 3))
		}
		v := cubic(v1, v2, v3, v4, dy)
		switch {
		case v <= 0:
			dst[b] = 0
		case v >= 255:
			dst[b] = 255
		default:
			dst[b] = byte(v)
		}
	}
}

// rotateCCW turns an image 90° counter-clockwise (PIL's ROTATE_90): the
// last column becomes the first row.
func rotateCCW(im *imaging.Image) *imaging.Image {
	out := &imaging.Image{W: im.H, H: im.W, Pix: make([]byte, len(im.Pix))}
	for y := range im.H {
		for x := range im.W {
			s := (y*im.W + x) * 3
			d := ((im.W-1-x)*out.W + y) * 3
			copy(out.Pix[d:d+3], im.Pix[s:s+3])
		}
	}
	return out
}

// cropText cuts the quadrilateral out of im as Immich does; nil when the
// quadrilateral has no area.
func cropText(im *imaging.Image, b quad) *imaging.Image {
	w, h := cropSize(b)
	if w <= 0 || h <= 0 {
		return nil
	}
	c := perspectiveCoeffs(b, w, h)
	if c == ([8]float64{}) {
		return nil
	}
	out := warpPerspective(im, c, w, h)
	if float64(h)*1.0/float64(w) >= 1.5 {
		out = rotateCCW(out)
	}
	return out
}
