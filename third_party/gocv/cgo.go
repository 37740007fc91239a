//go:build !customenv

package gocv

// This file is mlserve's, not upstream gocv's: it replaces gocv's cgo.go
// (`#cgo pkg-config: opencv4`, which links every OpenCV module and, through
// them, Qt, GStreamer, ffmpeg and GDAL) with the two modules this trimmed
// copy wraps. Debian and Ubuntu install the OpenCV 4 headers under
// /usr/include/opencv4. For an OpenCV elsewhere, build with
// `-tags customenv` and set CGO_CPPFLAGS and CGO_LDFLAGS, as with upstream.

/*
#cgo CPPFLAGS: -I/usr/include/opencv4
#cgo CXXFLAGS: --std=c++11
#cgo LDFLAGS: -lopencv_imgproc -lopencv_core
*/
import "C"
