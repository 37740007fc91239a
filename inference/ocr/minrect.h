// C interface to OpenCV's minAreaRect and RotatedRect::points, which gocv
// v0.31 only exposes with integer results.
#ifndef MLSERVE_OCR_MINRECT_H
#define MLSERVE_OCR_MINRECT_H

#ifdef __cplusplus
extern "C" {
#endif

// ocr_min_area_rect computes cv::minAreaRect of n integer points (x0, y0,
// x1, y1, ...). out receives, as float32: the rectangle's width and height,
// then the four corners of cv::boxPoints (x, y pairs), 10 values. It
// returns 0, or -1 when OpenCV raised an exception.
int ocr_min_area_rect(const int *xy, int n, float *out);

#ifdef __cplusplus
}
#endif

#endif
