package imaging

/*
#include "resample_simd.h"
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// simdResample tells whether this CPU runs the AVX2 passes of
// resample_simd.c (x86-64 with AVX2); elsewhere the Go passes run. The
// two give the same bytes (TestResizeSIMDMatchesGo).
var simdResample = sync.OnceValue(func() bool { return C.mlserve_resample_simd() != 0 })

// simd tells whether r runs the AVX2 passes.
func (r *Resampler) simd() bool { return !r.noSIMD && simdResample() }

// simdTable builds the horizontal AVX2 pass's coefficient table from k:
// per output pixel, groups of four taps, each the 16 low bits (kl) then
// the high bits (kh) of the taps' coefficients as int16 pairs laid out for
// VPMADDWD (resample_simd.c), zero past the pixel's last tap.
func (a *axis) simdTable() {
	if a.simdReady {
		return
	}
	m := len(a.start)
	a.simdStride = (a.stride + 3) / 4 * 32
	a.simdGroups = grow(a.simdGroups, m)
	a.simdCoef = grow(a.simdCoef, m*a.simdStride)
	clear(a.simdCoef)
	a.simdReach = 0
	for o := range m {
		n := int(a.n[o])
		g := (n + 3) / 4
		a.simdGroups[o] = int32(g)
		// A group's 16-byte load at its first tap's pixel reads up to
		// 3·(start+4g)+4 bytes from the row's start.
		a.simdReach = max(a.simdReach, 3*(int(a.start[o])+4*g)+4)
		row := a.simdCoef[o*a.simdStride : (o+1)*a.simdStride]
		for j, k := range a.k[o*a.stride : o*a.stride+n] {
			kl, kh := int16(k&0x7fff), int16(k>>15)
			// Taps j, j+1 pair in the low 128-bit lane, j+2, j+3 in the
			// high one; each pair repeats for R, G, B and the unused lane.
			at := j/4*32 + j%4/2*8 + j%2
			for r := range 4 {
				row[at+2*r] = kl
				row[at+16+2*r] = kh
			}
		}
	}
	a.simdReady = true
}

// horizontalSIMD is horizontal with the AVX2 kernel. pad is scratch of at
// least r.h.simdReach bytes.
func (r *Resampler) horizontalSIMD(dst []byte, dstStride int, src []byte, srcStride, rows, width int, pad []byte) {
	a := &r.h
	if rows <= 0 || width <= 0 {
		return
	}
	if len(src) < (rows-1)*srcStride+a.in*3 || len(dst) < (rows-1)*dstStride+width*3 ||
		len(a.start) < width || len(pad) < a.simdReach {
		panic(fmt.Sprintf("imaging: horizontal pass out of bounds: %d rows of %d from %d bytes", rows, width, len(src)))
	}
	C.mlserve_resample_h((*C.uint8_t)(unsafe.Pointer(&src[0])), C.int64_t(len(src)), C.int64_t(srcStride),
		C.int64_t(rows), (*C.uint8_t)(unsafe.Pointer(&dst[0])), C.int64_t(dstStride), C.int64_t(width),
		(*C.int32_t)(unsafe.Pointer(&a.start[0])), (*C.int32_t)(unsafe.Pointer(&a.simdGroups[0])),
		(*C.int16_t)(unsafe.Pointer(&a.simdCoef[0])), C.int64_t(a.simdStride), C.int64_t(a.simdReach),
		(*C.uint8_t)(unsafe.Pointer(&pad[0])))
}

// verticalSIMD is vertical with the AVX2 kernel.
func (r *Resampler) verticalSIMD(dst []byte, dstStride int, src []byte, srcStride, srcY0, width, y0, y1 int) {
	a := &r.v
	if y1 <= y0 || width <= 0 {
		return
	}
	for y := y0; y < y1; y++ {
		if len(dst) < y*dstStride+width*3 || int(a.start[y]) < srcY0 ||
			len(src) < (int(a.start[y]+a.n[y])-srcY0-1)*srcStride+width*3 {
			panic(fmt.Sprintf("imaging: vertical pass out of bounds: row %d of %d from %d bytes", y, width, len(src)))
		}
	}
	C.mlserve_resample_v((*C.uint8_t)(unsafe.Pointer(&src[0])), C.int64_t(srcStride), C.int64_t(srcY0),
		(*C.uint8_t)(unsafe.Pointer(&dst[0])), C.int64_t(dstStride), C.int64_t(width*3), C.int64_t(y0), C.int64_t(y1),
		(*C.int32_t)(unsafe.Pointer(&a.start[0])), (*C.int32_t)(unsafe.Pointer(&a.n[0])),
		(*C.int32_t)(unsafe.Pointer(&a.k[0])), C.int64_t(a.stride))
}
