// AVX2 kernels of the two resampling passes (resample.go). They compute
// Pillow's 8-bit fixed-point sums exactly: the same integer products and
// sums as the Go passes, in another order, with additions modulo 2^32
// (Pillow's sums fit in an int32, so the wrapped sum is the true one).
// On other architectures, or a CPU without AVX2, mlserve_resample_simd
// says 0 and the Go passes run.

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "resample_simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

int mlserve_resample_simd(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2");
}

// The horizontal pass, four taps a step: a 16-byte load at the first tap's
// pixel, broadcast to both 128-bit lanes, is shuffled to 16-bit pairs
// (R_j, R_j+1), (G_j, G_j+1), (B_j, B_j+1), (0, 0) in the low lane and the
// same for taps j+2, j+3 in the high lane. Each 22-bit coefficient k is
// split as kh·2^15 + kl with 0 ≤ kl < 2^15, so that both halves are int16
// and VPMADDWD multiplies and pair-adds them exactly; the two sums are
// joined as (sum_h << 15) + sum_l at the end. The coefficient table holds,
// per output pixel and group of four taps, the kl vector then the kh
// vector (32 int16), zero past the pixel's last tap.
__attribute__((target("avx2"))) void mlserve_resample_h(const uint8_t *src, int64_t src_len, int64_t src_stride,
                                                        int64_t rows, uint8_t *dst, int64_t dst_stride, int64_t width,
                                                        const int32_t *start, const int32_t *groups,
                                                        const int16_t *coef, int64_t coef_stride, int64_t reach,
                                                        uint8_t *pad) {
	const __m256i shuf = _mm256_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1, //
	                                      6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1);
	const __m128i half = _mm_set1_epi32(MLSERVE_RESAMPLE_HALF);
	for (int64_t y = 0; y < rows; y++) {
		const uint8_t *row = src + y * src_stride;
		// Loads reach past the row's last pixel (with zero coefficients):
		// into the next row, or, at the end of the buffer, into a copy.
		if (y * src_stride + reach > src_len) {
			int64_t n = src_len - y * src_stride;
			memcpy(pad, row, (size_t)n);
			memset(pad + n, 0, (size_t)(reach - n));
			row = pad;
		}
		uint8_t *out = dst + y * dst_stride;
		for (int64_t x = 0; x < width; x++) {
			const uint8_t *p = row + 3 * (int64_t)start[x];
			const int16_t *c = coef + x * coef_stride;
			__m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
			for (int32_t g = 0; g < groups[x]; g++, p += 12, c += 32) {
				__m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
				v = _mm256_shuffle_epi8(v, shuf);
				lo = _mm256_add_epi32(lo, _mm256_madd_epi16(v, _mm256_loadu_si256((const __m256i *)c)));
				hi = _mm256_add_epi32(hi, _mm256_madd_epi16(v, _mm256_loadu_si256((const __m256i *)(c + 16))));
			}
			__m256i sum = _mm256_add_epi32(_mm256_slli_epi32(hi, 15), lo);
			__m128i s = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
			s = _mm_srai_epi32(_mm_add_epi32(s, half), MLSERVE_RESAMPLE_PRECISION);
			s = _mm_packus_epi16(_mm_packs_epi32(s, s), s);
			uint32_t px = (uint32_t)_mm_cvtsi128_si32(s);
			out[3 * x] = (uint8_t)px;
			out[3 * x + 1] = (uint8_t)(px >> 8);
			out[3 * x + 2] = (uint8_t)(px >> 16);
		}
	}
}

// vstep adds eight products of one source row to acc.
#define MLSERVE_VSTEP(acc, p, k)                                                                         \
	acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p))), k))

// The vertical pass: for each output row, 32 samples at a time, the
// weighted sum of the source rows in eight-lane int32 accumulators.
__attribute__((target("avx2"))) void mlserve_resample_v(const uint8_t *src, int64_t src_stride, int64_t src_y0,
                                                        uint8_t *dst, int64_t dst_stride, int64_t width3, int64_t y0,
                                                        int64_t y1, const int32_t *start, const int32_t *n,
                                                        const int32_t *k, int64_t k_stride) {
	const __m256i half = _mm256_set1_epi32(MLSERVE_RESAMPLE_HALF);
	const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
	for (int64_t y = y0; y < y1; y++) {
		const uint8_t *base = src + ((int64_t)start[y] - src_y0) * src_stride;
		const int32_t *ky = k + y * k_stride;
		int32_t taps = n[y];
		uint8_t *out = dst + y * dst_stride;
		int64_t i = 0;
		for (; i + 32 <= width3; i += 32) {
			__m256i a0 = half, a1 = half, a2 = half, a3 = half;
			const uint8_t *p = base + i;
			for (int32_t j = 0; j < taps; j++, p += src_stride) {
				__m256i kv = _mm256_set1_epi32(ky[j]);
				MLSERVE_VSTEP(a0, p, kv);
				MLSERVE_VSTEP(a1, p + 8, kv);
				MLSERVE_VSTEP(a2, p + 16, kv);
				MLSERVE_VSTEP(a3, p + 24, kv);
			}
			a0 = _mm256_srai_epi32(a0, MLSERVE_RESAMPLE_PRECISION);
			a1 = _mm256_srai_epi32(a1, MLSERVE_RESAMPLE_PRECISION);
			a2 = _mm256_srai_epi32(a2, MLSERVE_RESAMPLE_PRECISION);
			a3 = _mm256_srai_epi32(a3, MLSERVE_RESAMPLE_PRECISION);
			// The packs work within 128-bit lanes; the permutation puts
			// the 32 bytes back in order.
			__m256i b = _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
			_mm256_storeu_si256((__m256i *)(out + i), _mm256_permutevar8x32_epi32(b, order));
		}
		for (; i < width3; i++) {
			int32_t s = MLSERVE_RESAMPLE_HALF;
			const uint8_t *p = base + i;
			for (int32_t j = 0; j < taps; j++, p += src_stride)
				s = (int32_t)((uint32_t)s + (uint32_t)(*p) * (uint32_t)ky[j]);
			s >>= MLSERVE_RESAMPLE_PRECISION;
			out[i] = (uint8_t)(s < 0 ? 0 : s > 255 ? 255 : s);
		}
	}
}

#else

int mlserve_resample_simd(void) { return 0; }

void mlserve_resample_h(const uint8_t *src, int64_t src_len, int64_t src_stride, int64_t rows, uint8_t *dst,
                        int64_t dst_stride, int64_t width, const int32_t *start, const int32_t *groups,
                        const int16_t *coef, int64_t coef_stride, int64_t reach, uint8_t *pad) {}

void mlserve_resample_v(const uint8_t *src, int64_t src_stride, int64_t src_y0, uint8_t *dst, int64_t dst_stride,
                        int64_t width3, int64_t y0, int64_t y1, const int32_t *start, const int32_t *n,
                        const int32_t *k, int64_t k_stride) {}

#endif
