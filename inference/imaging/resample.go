package imaging

import (
	"image"
	"math"
	"sync"
)

// Filter is a resampling filter of Pillow's Image.resize.
type Filter int

// Filters, with Pillow's definitions.
const (
	// Bicubic is PIL.Image.BICUBIC: cubic convolution with a = -0.5,
	// support 2, widened by the scale factor when shrinking (antialiasing).
	// CLIP preprocessing uses it.
	Bicubic Filter = iota + 1
	// Lanczos is PIL.Image.LANCZOS: windowed sinc with a = 3, widened when
	// shrinking. OCR detection uses it.
	Lanczos
)

func (f Filter) String() string {
	switch f {
	case Bicubic:
		return "bicubic"
	case Lanczos:
		return "lanczos"
	}
	return "unknown"
}

// support is the filter's radius at scale 1.
func (f Filter) support() float64 {
	if f == Lanczos {
		return 3
	}
	return 2
}

// eval is the filter kernel. The explicit float64 conversions round every
// product on its own, as the C code does on amd64: Go may otherwise fuse a
// multiply and an add into one FMA instruction (it does on arm64), which
// changes the last bit and, rarely, a fixed-point coefficient.
func (f Filter) eval(x float64) float64 {
	if f == Lanczos {
		if -3.0 <= x && x < 3.0 {
			return float64(sinc(x) * sinc(x/3))
		}
		return 0
	}
	const a = -0.5
	if x < 0 {
		x = -x
	}
	if x < 1 {
		return float64(float64(float64((a+2)*x)-(a+3))*x*x) + 1
	}
	if x < 2 {
		return float64(float64(float64(float64(x-5)*x)+8)*x-4) * a
	}
	return 0
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	x = float64(x * math.Pi)
	return math.Sin(x) / x
}

// Pillow's 8-bit resampling works in fixed point: coefficients are scaled
// by 2^22 and rounded, sums start at one half and are shifted back and
// clipped to 0..255 after each pass.
const (
	precisionBits = 32 - 8 - 2
	half          = 1 << (precisionBits - 1)
)

// axis is the table of one separable pass for output positions [o0, o1):
// for output o, the taps start at input index start[o-o0] and their
// fixed-point weights are k[(o-o0)*stride:][:n[o-o0]].
type axis struct {
	// key of the table: it is reused while these stay the same.
	in, out, o0, o1 int
	box             float64
	f               Filter

	stride int
	start  []int32
	n      []int32
	k      []int32

	// The AVX2 horizontal pass's form of k (simdTable), built on first
	// use after each compute.
	simdReady  bool
	simdStride int // int16 per output pixel
	simdReach  int // bytes a row's loads may read from its start
	simdGroups []int32
	simdCoef   []int16
}

// compute fills the table the way Pillow's precompute_coeffs and
// normalize_coeffs_8bpc do, for the box (0, box) of an input of in
// pixels mapped onto (0, out). box is in, or less for an image decoded
// smaller whose last pixel covers part of one (Image.Extent).
func (a *axis) compute(in int, box float64, out, o0, o1 int, f Filter) {
	if a.in == in && a.box == box && a.out == out && a.o0 == o0 && a.o1 == o1 && a.f == f && a.k != nil {
		return
	}
	a.in, a.box, a.out, a.o0, a.o1, a.f = in, box, out, o0, o1, f
	a.simdReady = false
	// Pillow receives the box as C floats: in1 - in0 is computed in single
	// precision (exact below 2^24, as are eighths below 2^21).
	scale := float64(float32(box)) / float64(out)
	filterscale := max(scale, 1)
	support := f.support() * filterscale
	a.stride = int(math.Ceil(support))*2 + 1
	m := o1 - o0
	a.start = grow(a.start, m)
	a.n = grow(a.n, m)
	a.k = grow(a.k, m*a.stride)
	w := make([]float64, a.stride)
	ss := 1.0 / filterscale
	for o := o0; o < o1; o++ {
		center := float64((float64(o) + 0.5) * scale)
		// C's (int) conversion truncates toward zero, as Go's does.
		xmin := int(center - support + 0.5)
		if xmin < 0 {
			xmin = 0
		}
		xmax := int(center + support + 0.5)
		if xmax > in {
			xmax = in
		}
		n := xmax - xmin
		ww := 0.0
		for x := 0; x < n; x++ {
			w[x] = f.eval(float64(float64(x+xmin)-center+0.5) * ss)
			ww += w[x]
		}
		row := a.k[(o-o0)*a.stride : (o-o0+1)*a.stride]
		for x := 0; x < n; x++ {
			v := w[x]
			if ww != 0 {
				v /= ww
			}
			if v < 0 {
				row[x] = int32(-0.5 + float64(v*(1<<precisionBits)))
			} else {
				row[x] = int32(0.5 + float64(v*(1<<precisionBits)))
			}
		}
		clear(row[n:])
		a.start[o-o0] = int32(xmin)
		a.n[o-o0] = int32(n)
	}
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// clamp8 is Pillow's clip8: the sum shifted back to 8 bits, clipped.
func clamp8(v int32) byte {
	v >>= precisionBits
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return byte(v)
}

// A Resampler resizes images as Pillow does and keeps its coefficient
// tables and scratch memory from one call to the next: a server resizing
// previews of the same size computes the tables once. It is not safe for
// concurrent use; keep one per worker or in a sync.Pool.
type Resampler struct {
	// Workers is how many goroutines share one resize, each taking a band
	// of rows; 0 or 1 resizes on the calling goroutine. It shortens one
	// resize on an idle machine; on a server whose cores are already busy
	// with inference it only moves CPU time around.
	Workers int

	// noSIMD runs the Go passes where the AVX2 ones would (tests).
	noSIMD bool

	h, v   axis
	tmp    []byte     // horizontal pass output
	packed [][]uint64 // horizontal pass input, two rows packed, per worker
	pads   [][]byte   // AVX2 horizontal pass: a padded last row, per worker
	acc    [][]int32  // vertical pass sums of one row, per worker
}

// Resize returns im resized to w×h with f, equal bit for bit to PIL's
// im.resize((w, h), f) on an RGB image. A non-positive w or h gives an empty
// image.
func Resize(im *Image, w, h int, f Filter) *Image {
	var r Resampler
	return r.ResizeRegion(nil, im, w, h, image.Rect(0, 0, w, h), f)
}

// ResizeRegion returns the part rect of Resize(im, w, h, f), as PIL's
// im.resize((w, h), f).crop(rect) does (parts of rect outside the resized
// image are black), computing only the pixels it returns. CLIP's
// shortest-side resize and centre crop is one call.
func ResizeRegion(im *Image, w, h int, rect image.Rectangle, f Filter) *Image {
	var r Resampler
	return r.ResizeRegion(nil, im, w, h, rect, f)
}

// ResizeRegion is the package's ResizeRegion writing into dst when dst has
// room (dst may be nil); it returns the image written.
//
// An image decoded smaller (DecodeScaled) stands for the full image: its
// Extent, not its last partial pixel, is mapped onto w×h, as PIL's resize
// with a box does, so that the output lines up with the full image's
// resize.
func (r *Resampler) ResizeRegion(dst, im *Image, w, h int, rect image.Rectangle, f Filter) *Image {
	rect = rect.Canon()
	dw, dh := rect.Dx(), rect.Dy()
	if dst == nil || cap(dst.Pix) < dw*dh*3 {
		dst = New(dw, dh)
	} else {
		dst.W, dst.H, dst.Pix = dw, dh, dst.Pix[:dw*dh*3]
	}
	if w <= 0 || h <= 0 || im == nil || im.W <= 0 || im.H <= 0 || dw == 0 || dh == 0 {
		clear(dst.Pix)
		return dst
	}
	if f != Lanczos {
		f = Bicubic
	}
	// The part of rect that lies on the resized image; the rest is black.
	in := rect.Intersect(image.Rect(0, 0, w, h))
	if in != rect {
		clear(dst.Pix)
	}
	if in.Empty() {
		return dst
	}
	out := dst.Pix[((in.Min.Y-rect.Min.Y)*dw+in.Min.X-rect.Min.X)*3:]
	outStride := dw * 3
	boxW, boxH := im.Extent()
	needH, needV := w != im.W || boxW != float64(im.W), h != im.H || boxH != float64(im.H)

	// Where the vertical pass reads: set by the branches below.
	src, srcStride := im.Pix, im.W*3
	var srcX0, srcY0 int
	if needV {
		r.v.compute(im.H, boxH, h, in.Min.Y, in.Max.Y, f)
	}
	if needH {
		r.h.compute(im.W, boxW, w, in.Min.X, in.Max.X, f)
		// Only the source rows the vertical pass reads go through the
		// horizontal pass, as in Pillow (ybox_first..ybox_last).
		y0, y1 := in.Min.Y, in.Max.Y
		if needV {
			last := len(r.v.start) - 1
			y0, y1 = int(r.v.start[0]), int(r.v.start[last]+r.v.n[last])
		}
		tw := in.Dx()
		if !needV {
			r.runHorizontal(out, outStride, src[y0*srcStride:], srcStride, y1-y0, tw)
			return dst
		}
		r.tmp = grow(r.tmp, tw*3*(y1-y0))
		r.runHorizontal(r.tmp, tw*3, src[y0*srcStride:], srcStride, y1-y0, tw)
		src, srcStride, srcX0, srcY0 = r.tmp, tw*3, 0, y0
	} else {
		srcX0 = in.Min.X
		if !needV { // same size: a copy of the region
			for y := in.Min.Y; y < in.Max.Y; y++ {
				copy(out[(y-in.Min.Y)*outStride:][:in.Dx()*3], src[y*srcStride+in.Min.X*3:])
			}
			return dst
		}
		srcY0 = 0
	}
	r.runVertical(out, outStride, src[srcX0*3:], srcStride, srcY0, in.Dx())
	return dst
}

// workers is how many bands n rows are split into.
func (r *Resampler) workers(n int) int { return max(min(r.Workers, n), 1) }

// runHorizontal runs the horizontal pass over rows rows, in bands on
// r.Workers goroutines when asked to, and returns when all are done.
func (r *Resampler) runHorizontal(dst []byte, dstStride int, src []byte, srcStride, rows, width int) {
	w := r.workers(rows)
	if r.simd() {
		r.h.simdTable()
		for len(r.pads) < w {
			r.pads = append(r.pads, nil)
		}
		for i := range w {
			r.pads[i] = grow(r.pads[i], r.h.simdReach)
		}
	} else {
		for len(r.packed) < w {
			r.packed = append(r.packed, nil)
		}
		for i := range w {
			r.packed[i] = grow(r.packed[i], srcStride)
		}
	}
	if w == 1 {
		r.horizontal(dst, dstStride, src, srcStride, rows, width, 0)
		return
	}
	var wg sync.WaitGroup
	for i := range w {
		lo, hi := rows*i/w, rows*(i+1)/w
		wg.Go(func() {
			r.horizontal(dst[lo*dstStride:], dstStride, src[lo*srcStride:], srcStride, hi-lo, width, i)
		})
	}
	wg.Wait()
}

// runVertical runs the vertical pass for every output row of r.v, in bands
// like runHorizontal.
func (r *Resampler) runVertical(dst []byte, dstStride int, src []byte, srcStride, srcY0, width int) {
	rows := len(r.v.start)
	w := r.workers(rows)
	if !r.simd() {
		for len(r.acc) < w {
			r.acc = append(r.acc, nil)
		}
		for i := range w {
			r.acc[i] = grow(r.acc[i], width*3)
		}
	}
	if w == 1 {
		r.vertical(dst, dstStride, src, srcStride, srcY0, width, 0, rows, 0)
		return
	}
	var wg sync.WaitGroup
	for i := range w {
		lo, hi := rows*i/w, rows*(i+1)/w
		wg.Go(func() { r.vertical(dst, dstStride, src, srcStride, srcY0, width, lo, hi, i) })
	}
	wg.Wait()
}

// horizontal runs the horizontal pass over rows rows of src into dst,
// producing width pixels per row from r.h, with the AVX2 kernel where
// the CPU has it (horizontalSIMD), else in Go as follows.
//
// Rows go two at a time, packed two channels per uint64 ("SIMD within a
// register"): lanes (R₀,G₀), (B₀,R₁), (G₁,B₁) of rows 0 and 1. One 64-bit
// multiply by a sign-extended weight then does two of Pillow's 32-bit
// multiply-adds, and three accumulators hold six sums, which stay in
// registers. The result is exact: each lane's true sum fits in an int32
// (Pillow's fixed point is chosen so that it does), so the low 32 bits of
// the 64-bit sum are the first lane's sum and what remains, shifted, the
// second's, whatever the carries between them.
func (r *Resampler) horizontal(dst []byte, dstStride int, src []byte, srcStride, rows, width, worker int) {
	if r.simd() {
		r.horizontalSIMD(dst, dstStride, src, srcStride, rows, width, r.pads[worker])
		return
	}
	a := &r.h
	packed := r.packed[worker]
	last := width - 1
	x0, x1 := int(a.start[0]), int(a.start[last]+a.n[last])
	for y := 0; y < rows; y += 2 {
		rowA := src[y*srcStride : y*srcStride+srcStride]
		outA := dst[y*dstStride : y*dstStride+width*3]
		rowB, outB := rowA, outA // an odd last row is paired with itself
		if y+1 < rows {
			rowB = src[(y+1)*srcStride : (y+1)*srcStride+srcStride]
			outB = dst[(y+1)*dstStride : (y+1)*dstStride+width*3]
		}
		packPair(packed, rowA, rowB, x0, x1)
		for x := 0; x < width; x++ {
			start, n := int(a.start[x]), int(a.n[x])
			k := a.k[x*a.stride : x*a.stride+n]
			p := packed[3*start : 3*(start+n)]
			var s0, s1, s2 uint64
			for j, w := range k {
				ww := uint64(int64(w))
				q := p[3*j : 3*j+3 : 3*j+3]
				s0 += q[0] * ww
				s1 += q[1] * ww
				s2 += q[2] * ww
			}
			r0, g0 := splitLanes(s0)
			b0, r1 := splitLanes(s1)
			g1, b1 := splitLanes(s2)
			o := outB[x*3 : x*3+3 : x*3+3]
			o[0], o[1], o[2] = clamp8(r1+half), clamp8(g1+half), clamp8(b1+half)
			o = outA[x*3 : x*3+3 : x*3+3]
			o[0], o[1], o[2] = clamp8(r0+half), clamp8(g0+half), clamp8(b0+half)
		}
	}
}

// packPair packs pixels [x0, x1) of two RGB rows for horizontal.
func packPair(dst []uint64, rowA, rowB []byte, x0, x1 int) {
	for i := x0; i < x1; i++ {
		a := rowA[3*i : 3*i+3 : 3*i+3]
		b := rowB[3*i : 3*i+3 : 3*i+3]
		o := dst[3*i : 3*i+3 : 3*i+3]
		o[0] = uint64(a[0]) | uint64(a[1])<<32
		o[1] = uint64(a[2]) | uint64(b[0])<<32
		o[2] = uint64(b[1]) | uint64(b[2])<<32
	}
}

// splitLanes recovers the two int32 sums packed in s.
func splitLanes(s uint64) (lo, hi int32) {
	lo = int32(uint32(s))
	hi = int32(int64(s-uint64(int64(lo))) >> 32)
	return lo, hi
}

// vertical runs the vertical pass for output rows [y0, y1) of the region
// (with the AVX2 kernel where the CPU has it):
// row y sums the source rows from r.v.start[y]-srcY0 on. Rows are
// accumulated whole, which is the same integer sum as Pillow's per-pixel
// loop in another order.
func (r *Resampler) vertical(dst []byte, dstStride int, src []byte, srcStride, srcY0, width, y0, y1, worker int) {
	if r.simd() {
		r.verticalSIMD(dst, dstStride, src, srcStride, srcY0, width, y0, y1)
		return
	}
	a := &r.v
	acc := r.acc[worker]
	n3 := width * 3
	acc = acc[:n3]
	for y := y0; y < y1; y++ {
		for i := range acc {
			acc[i] = half
		}
		start, n := int(a.start[y])-srcY0, int(a.n[y])
		k := a.k[y*a.stride : y*a.stride+n]
		for j, w := range k {
			row := src[(start+j)*srcStride:][:n3]
			acc := acc[:len(row)]
			for i, v := range row {
				acc[i] += int32(v) * w
			}
		}
		out := dst[y*dstStride:][:n3]
		for i, v := range acc {
			out[i] = clamp8(v)
		}
	}
}
