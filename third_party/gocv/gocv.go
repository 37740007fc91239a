// Package gocv is a wrapper around the OpenCV 4.x computer vision library.
// It provides a Go language interface to the latest version of OpenCV.
//
// OpenCV (Open Source Computer Vision Library: http://opencv.org) is an
// open-source BSD-licensed library that includes several hundreds of
// computer vision algorithms.
//
// For further details, please see:
// http://docs.opencv.org/master/d1/dfb/intro.html
//
package gocv // import "gocv.io/x/gocv"
