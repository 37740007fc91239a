package ocr

/*
#cgo LDFLAGS: -lm
#include <math.h>
*/
import "C"

import "math"

// This file reproduces the polygon offset that RapidOCR's unclip step gets
// from pyclipper (Clipper 6.4.2's ClipperOffset with JT_ROUND and
// ET_CLOSEDPOLYGON, miter limit 2, arc tolerance 0.25) for the one case
// used here: a single closed polygon grown by a positive distance. Clipper
// works on integer coordinates and rounds every generated vertex, so the
// same arithmetic, in the same order, is needed to get the same vertices;
// the trigonometric functions come from the C library for the same reason
// (Go's math package may differ from glibc in the last bit).
//
// Clipper finishes with a union of the generated polygon, which only
// removes duplicate and collinear vertices of this (simple) polygon: it
// does not change its convex hull, which is all that minAreaRect reads
// afterwards, so it is not reproduced.

const (
	clipperArcTolerance = 0.25
	clipperTolerance    = 1.0e-20
)

// clipperRound is Clipper's Round: half away from zero, then truncation.
func clipperRound(v float64) int32 {
	if v < 0 {
		return int32(int64(v - 0.5))
	}
	return int32(int64(v + 0.5))
}

// clipperArea is Clipper's Area (positive for its "outer" orientation).
func clipperArea(p []point) float64 {
	if len(p) < 3 {
		return 0
	}
	var a float64
	j := len(p) - 1
	for i := range p {
		a += float64((float64(p[j].X) + float64(p[i].X)) * (float64(p[j].Y) - float64(p[i].Y)))
		j = i
	}
	return -a * 0.5
}

type dpoint struct{ X, Y float64 }

func unitNormal(a, b point) dpoint {
	if a == b {
		return dpoint{}
	}
	dx := float64(b.X - a.X)
	dy := float64(b.Y - a.Y)
	f := 1 * 1.0 / math.Sqrt(float64(dx*dx)+float64(dy*dy))
	dx *= f
	dy *= f
	return dpoint{dy, -dx}
}

// offsetPolygon grows the closed polygon path by delta with round joins
// and returns the generated vertices (nil for a degenerate path).
func offsetPolygon(path []point, delta float64) []point {
	// Strip repeated vertices, as ClipperOffset.AddPath does.
	high := len(path) - 1
	if high < 0 {
		return nil
	}
	for high > 0 && path[0] == path[high] {
		high--
	}
	src := make([]point, 1, high+1)
	src[0] = path[0]
	for i := 1; i <= high; i++ {
		if src[len(src)-1] != path[i] {
			src = append(src, path[i])
		}
	}
	if len(src) < 3 {
		return nil
	}
	// FixOrientations: with a single path, it is the lowest one.
	if clipperArea(src) < 0 {
		for i, j := 0, len(src)-1; i < j; i, j = i+1, j-1 {
			src[i], src[j] = src[j], src[i]
		}
	}
	if delta > -clipperTolerance && delta < clipperTolerance {
		return src
	}

	absDelta := math.Abs(delta)
	y := clipperArcTolerance
	if clipperArcTolerance > absDelta*clipperArcTolerance {
		y = absDelta * clipperArcTolerance
	}
	steps := math.Pi / float64(C.acos(C.double(1-y/absDelta)))
	if steps > absDelta*math.Pi {
		steps = absDelta * math.Pi
	}
	const twoPi = math.Pi * 2
	o := offsetter{
		src:         src,
		delta:       delta,
		sin:         float64(C.sin(C.double(twoPi / steps))),
		cos:         float64(C.cos(C.double(twoPi / steps))),
		stepsPerRad: steps / twoPi,
	}
	if delta < 0 {
		o.sin = -o.sin
	}
	n := len(src)
	o.normals = make([]dpoint, n)
	for j := 0; j < n-1; j++ {
		o.normals[j] = unitNormal(src[j], src[j+1])
	}
	o.normals[n-1] = unitNormal(src[n-1], src[0])
	o.dst = make([]point, 0, 4*n+int(steps)+8)
	k := n - 1
	for j := range n {
		o.offsetPoint(j, &k)
	}
	return o.dst
}

type offsetter struct {
	src                   []point
	normals               []dpoint
	dst                   []point
	delta, sin, cos, sinA float64
	stepsPerRad           float64
}

func (o *offsetter) at(j int, nx, ny float64) point {
	return point{
		clipperRound(float64(o.src[j].X) + float64(nx*o.delta)),
		clipperRound(float64(o.src[j].Y) + float64(ny*o.delta)),
	}
}

func (o *offsetter) offsetPoint(j int, k *int) {
	nk, nj := o.normals[*k], o.normals[j]
	o.sinA = float64(nk.X*nj.Y) - float64(nj.X*nk.Y)
	if math.Abs(o.sinA*o.delta) < 1.0 {
		cosA := float64(nk.X*nj.X) + float64(nj.Y*nk.Y)
		if cosA > 0 { // the edges are almost parallel: one vertex does
			o.dst = append(o.dst, o.at(j, nk.X, nk.Y))
			return
		}
	} else if o.sinA > 1.0 {
		o.sinA = 1.0
	} else if o.sinA < -1.0 {
		o.sinA = -1.0
	}
	if o.sinA*o.delta < 0 { // concave vertex
		o.dst = append(o.dst, o.at(j, nk.X, nk.Y), o.src[j], o.at(j, nj.X, nj.Y))
	} else {
		o.round(j, *k)
	}
	*k = j
}

// round appends the arc of a round join, stepping a rotation from the
// previous edge's normal to the next one's.
func (o *offsetter) round(j, k int) {
	nk, nj := o.normals[k], o.normals[j]
	a := float64(C.atan2(C.double(o.sinA), C.double(float64(nk.X*nj.X)+float64(nk.Y*nj.Y))))
	steps := max(int(clipperRound(o.stepsPerRad*math.Abs(a))), 1)
	x, y := nk.X, nk.Y
	for range steps {
		o.dst = append(o.dst, o.at(j, x, y))
		x2 := x
		x = float64(x*o.cos) - float64(o.sin*y)
		y = float64(x2*o.sin) + float64(y*o.cos)
	}
	o.dst = append(o.dst, o.at(j, nj.X, nj.Y))
}
