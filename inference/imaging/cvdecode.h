// C interface to cv::imdecode with a caller-owned destination, which gocv
// v0.31 does not expose: the decoded pixels land in the Go-owned output
// instead of a Mat that would then be copied.
#ifndef MLSERVE_IMAGING_CVDECODE_H
#define MLSERVE_IMAGING_CVDECODE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// imaging_imdecode_rgb decodes len bytes of buf with cv::imdecode
// (IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION) into out, an 8-bit
// interleaved buffer of exactly w×h pixels, then swaps it from BGR to RGB
// in place. It returns 0, or -1 with a message when OpenCV fails, raises,
// or decodes another size (it then never writes past out).
int imaging_imdecode_rgb(const unsigned char *buf, size_t len, int w, int h, unsigned char *out, char *msg,
                         int msglen);

#ifdef __cplusplus
}
#endif

#endif
