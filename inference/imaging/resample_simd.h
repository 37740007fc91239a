// Declarations of resample_simd.c for resample_simd.go.

#include <stdint.h>

// Pillow's fixed point (resample.go: precisionBits, half).
#define MLSERVE_RESAMPLE_PRECISION 22
#define MLSERVE_RESAMPLE_HALF (1 << (MLSERVE_RESAMPLE_PRECISION - 1))

// mlserve_resample_simd says whether the kernels below run here (1) or
// are empty (0: not x86-64, or no AVX2).
int mlserve_resample_simd(void);

void mlserve_resample_h(const uint8_t *src, int64_t src_len, int64_t src_stride, int64_t rows, uint8_t *dst,
                        int64_t dst_stride, int64_t width, const int32_t *start, const int32_t *groups,
                        const int16_t *coef, int64_t coef_stride, int64_t reach, uint8_t *pad);

void mlserve_resample_v(const uint8_t *src, int64_t src_stride, int64_t src_y0, uint8_t *dst, int64_t dst_stride,
                        int64_t width3, int64_t y0, int64_t y1, const int32_t *start, const int32_t *n,
                        const int32_t *k, int64_t k_stride);
