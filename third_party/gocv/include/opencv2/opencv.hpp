// mlserve: gocv's headers include <opencv2/opencv.hpp>, which pulls in the
// header of every module OpenCV was built with (opencv_modules.hpp), so the
// build would need every module's -dev package. This stand-in, found first
// through cgo.go's include path, includes only the two modules this copy of
// gocv wraps: the build needs libopencv-core-dev and libopencv-imgproc-dev.
#ifndef MLSERVE_OPENCV_HPP
#define MLSERVE_OPENCV_HPP
#include "opencv2/core.hpp"
#include "opencv2/imgproc.hpp"
#endif
