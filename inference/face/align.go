package face

import (
	"fmt"
	"image"
	"image/color"
	"math"

	"gocv.io/x/gocv"
)

// ArcFaceTemplate is insightface's arcface_dst: where the five landmarks
// land in a 112×112 aligned crop. The values are float32 in insightface.
var ArcFaceTemplate = [5][2]float32{
	{38.2946, 51.6963}, {73.5318, 51.5014}, {56.0252, 71.7366}, {41.5493, 92.3655}, {70.7299, 92.2041},
}

// alignSize is the side of an aligned crop (norm_crop's image_size).
const alignSize = 112

// Similarity estimates the 2-D similarity transform (rotation, uniform
// scale, translation) that maps src onto dst in the least-squares sense, as
// skimage's SimilarityTransform.estimate does (Umeyama 1991 with scale),
// and returns its first two rows [a −b tx; b a ty].
//
// In two dimensions Umeyama's SVD solution has a closed form: with
// A = Σ dstᵢ·srcᵢᵀ/n over the centred points, the best rotation is the
// direction of (A₀₀+A₁₁, A₁₀−A₀₁), and the sum of singular values with
// Umeyama's sign correction is the length of that vector. skimage
// computes in the points' precision (float32 for insightface) with an SVD;
// this is float64 and agrees to about 1e-6. ok is false where skimage
// returns NaN: all points coincide (A has rank 0) or a value is not finite.
func Similarity(src, dst [5][2]float32) (m [2][3]float64, ok bool) {
	var sm, dm [2]float64
	for i := range 5 {
		for k := range 2 {
			if !isFinite(src[i][k]) || !isFinite(dst[i][k]) {
				return m, false
			}
			sm[k] += float64(src[i][k])
			dm[k] += float64(dst[i][k])
		}
	}
	sm[0], sm[1], dm[0], dm[1] = sm[0]/5, sm[1]/5, dm[0]/5, dm[1]/5
	var a [2][2]float64
	var srcVar float64
	for i := range 5 {
		s := [2]float64{float64(src[i][0]) - sm[0], float64(src[i][1]) - sm[1]}
		d := [2]float64{float64(dst[i][0]) - dm[0], float64(dst[i][1]) - dm[1]}
		for r := range 2 {
			for c := range 2 {
				a[r][c] += d[r] * s[c] / 5
			}
		}
		srcVar += (s[0]*s[0] + s[1]*s[1]) / 5
	}
	p := a[0][0] + a[1][1]
	q := a[1][0] - a[0][1]
	n := math.Hypot(p, q)
	if !(n > 0) || !(srcVar > 0) || math.IsInf(n, 0) {
		return m, false
	}
	cos, sin := p/n, q/n
	scale := n / srcVar
	ra, rb := scale*cos, scale*sin
	m[0] = [3]float64{ra, -rb, dm[0] - (ra*sm[0] - rb*sm[1])}
	m[1] = [3]float64{rb, ra, dm[1] - (rb*sm[0] + ra*sm[1])}
	for _, row := range m {
		for _, v := range row {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return m, false
			}
		}
	}
	return m, true
}

func isFinite(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }

// warpAffine is cv2.warpAffine(src, M, (size, size), borderValue=0.0):
// bilinear, constant black border. It returns size·size·channels bytes.
func warpAffine(src gocv.Mat, m [2][3]float64, size int) ([]byte, error) {
	mm := gocv.NewMatWithSize(2, 3, gocv.MatTypeCV64F)
	defer mm.Close()
	for r := range 2 {
		for c := range 3 {
			mm.SetDoubleAt(r, c, m[r][c])
		}
	}
	dst := gocv.NewMat()
	defer dst.Close()
	gocv.WarpAffineWithParams(src, &dst, mm, image.Pt(size, size), gocv.InterpolationLinear, gocv.BorderConstant, color.RGBA{})
	return matBytes(dst, size, size, src.Channels())
}

// alignCrop is insightface's norm_crop(img, landmark): the 112×112 RGB
// crop that puts the five landmarks on the ArcFace template.
func alignCrop(src gocv.Mat, lmk [5][2]float32) ([]byte, error) {
	m, ok := Similarity(lmk, ArcFaceTemplate)
	if !ok {
		return nil, fmt.Errorf("%w: %v", ErrAlignment, lmk)
	}
	return warpAffine(src, m, alignSize)
}
