//go:build !customenv

package gocv

// This file is mlserve's, not upstream gocv's: it replaces gocv's cgo.go
// (`#cgo pkg-config: opencv4`, which links every OpenCV module and, through
// them, Qt, GStreamer, ffmpeg and GDAL) with the two modules this trimmed
// copy wraps. include/opencv2/opencv.hpp stands in for OpenCV's, so that
// only the core and imgproc headers are needed (libopencv-core-dev and
// libopencv-imgproc-dev on Debian and Ubuntu, under /usr/include/opencv4).
// For an OpenCV elsewhere, build with `-tags customenv` and set
// CGO_CPPFLAGS (this folder's include/ first) and CGO_LDFLAGS.

/*
#cgo CPPFLAGS: -I${SRCDIR}/include -I/usr/include/opencv4
#cgo CXXFLAGS: --std=c++11
#cgo LDFLAGS: -lopencv_imgproc -lopencv_core
*/
import "C"
