#ifndef _OPENCV3_VERSION_H_
#define _OPENCV3_VERSION_H_

#ifdef __cplusplus
#include <opencv2/opencv.hpp>
extern "C" {
#endif

#include "core.h"

const char* openCVVersion();

#ifdef __cplusplus
}
#endif

#endif //_OPENCV3_VERSION_H_
