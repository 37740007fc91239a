package ocr

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"slices"

	"gocv.io/x/gocv"
)

// DB post-processing, as RapidOCR's DBPostProcess with the parameters
// Immich gives it (thresh 0.3, max_candidates 1000, unclip_ratio 1.6,
// use_dilation True), followed by RapidOCR's filter_det_res. Each step
// keeps the reference's arithmetic types: the probability map and the box
// corners are float32, scores are float64 (cv2.mean), and coordinates are
// truncated or rounded exactly where the reference does it.

const (
	dbThresh        = float32(0.3)
	dbMaxCandidates = 1000
	dbUnclipRatio   = 1.6
	dbMinSize       = 3
)

// probMap is the detector's output for one image: H rows of W float32
// probabilities.
type probMap struct {
	W, H int
	P    []float32
}

// dbParams are the per-request knobs of the post-processing.
type dbParams struct {
	boxThresh float64 // minScore: boxes whose score is below are dropped
	slowScore bool    // score over the contour instead of the rectangle
}

// quad is a box as four float32 corners.
type quad [4][2]float32

// dbBoxes finds text boxes in the probability map and scales them to a
// destW×destH image. Boxes come in contour order (unsorted) with their
// scores.
func dbBoxes(m probMap, p dbParams, destW, destH int) ([]quad, []float64, error) {
	mask := dilatedMask(m)
	bin, err := gocv.NewMatFromBytes(m.H, m.W, gocv.MatTypeCV8U, mask)
	if err != nil {
		return nil, nil, fmt.Errorf("bitmap: %w", err)
	}
	contours := gocv.FindContours(bin, gocv.RetrievalList, gocv.ChainApproxSimple)
	bin.Close()
	defer contours.Close()

	n := min(contours.Size(), dbMaxCandidates)
	var boxes []quad
	var scores []float64
	for i := range n {
		contour := contourPoints(contours.At(i))
		r, err := minAreaRect(contour)
		if err != nil {
			return nil, nil, err
		}
		if min(r.W, r.H) < dbMinSize {
			continue
		}
		box := miniBox(r)
		var score float64
		if p.slowScore {
			score, err = scorePolygon(m, contour)
		} else {
			score, err = scoreBox(m, box)
		}
		if err != nil {
			return nil, nil, err
		}
		if p.boxThresh > score {
			continue
		}
		grown := unclip(box)
		r, err = minAreaRect(grown)
		if err != nil {
			return nil, nil, err
		}
		if min(r.W, r.H) < dbMinSize+2 {
			continue
		}
		box = miniBox(r)
		var scaled quad
		for k := range 4 {
			scaled[k][0] = scaleCoord(box[k][0], m.W, destW)
			scaled[k][1] = scaleCoord(box[k][1], m.H, destH)
		}
		boxes = append(boxes, scaled)
		scores = append(scores, score)
	}
	return filterBoxes(boxes, scores, destW, destH)
}

// dilatedMask binarises the map (p > 0.3) and dilates it with a 2×2 kernel
// of ones anchored at its bottom-right cell, as cv2.dilate does: a pixel
// is set when it or its left, upper or upper-left neighbour is. The values
// are 0 or 255 (findContours only tells zero from non-zero).
func dilatedMask(m probMap) []byte {
	bin := make([]bool, len(m.P))
	for i, v := range m.P {
		bin[i] = v > dbThresh
	}
	out := make([]byte, len(m.P))
	for y := range m.H {
		row := y * m.W
		for x := range m.W {
			on := bin[row+x] ||
				(x > 0 && bin[row+x-1]) ||
				(y > 0 && bin[row-m.W+x]) ||
				(x > 0 && y > 0 && bin[row-m.W+x-1])
			if on {
				out[row+x] = 255
			}
		}
	}
	return out
}

func contourPoints(pv gocv.PointVector) []point {
	n := pv.Size()
	pts := make([]point, n)
	for i := range n {
		p := pv.At(i)
		pts[i] = point{int32(p.X), int32(p.Y)}
	}
	return pts
}

// miniBox is RapidOCR's get_mini_boxes: the rectangle's corners sorted by
// x (stable), then the left pair and the right pair each split by y, in
// the order top-left, top-right, bottom-right, bottom-left.
func miniBox(r rotRect) quad {
	pts := r.Corners
	slices.SortStableFunc(pts[:], func(a, b [2]float32) int {
		switch {
		case a[0] < b[0]:
			return -1
		case a[0] > b[0]:
			return 1
		}
		return 0
	})
	i1, i4 := 1, 0
	if pts[1][1] > pts[0][1] {
		i1, i4 = 0, 1
	}
	i2, i3 := 3, 2
	if pts[3][1] > pts[2][1] {
		i2, i3 = 2, 3
	}
	return quad{pts[i1], pts[i2], pts[i3], pts[i4]}
}

func clampInt(v, lo, hi int) int { return max(lo, min(v, hi)) }

// scoreBox is box_score_fast: the mean probability inside the box, over
// the box's bounding rectangle, with the mask drawn by cv2.fillPoly from
// the corners truncated to integers.
func scoreBox(m probMap, box quad) (float64, error) {
	minX, maxX := box[0][0], box[0][0]
	minY, maxY := box[0][1], box[0][1]
	for _, c := range box[1:] {
		minX, maxX = min(minX, c[0]), max(maxX, c[0])
		minY, maxY = min(minY, c[1]), max(maxY, c[1])
	}
	xmin := clampInt(int(math.Floor(float64(minX))), 0, m.W-1)
	xmax := clampInt(int(math.Ceil(float64(maxX))), 0, m.W-1)
	ymin := clampInt(int(math.Floor(float64(minY))), 0, m.H-1)
	ymax := clampInt(int(math.Ceil(float64(maxY))), 0, m.H-1)
	poly := make([]image.Point, 4)
	for k, c := range box {
		// float32(c - xmin), then truncation towards zero, as
		// numpy's in-place subtraction and astype(np.int32) do.
		poly[k] = image.Pt(int(float32(float64(c[0])-float64(xmin))), int(float32(float64(c[1])-float64(ymin))))
	}
	return maskedMean(m, xmin, ymin, xmax, ymax, poly)
}

// scorePolygon is box_score_slow: the mean probability inside the contour.
func scorePolygon(m probMap, contour []point) (float64, error) {
	minX, maxX := contour[0].X, contour[0].X
	minY, maxY := contour[0].Y, contour[0].Y
	for _, c := range contour[1:] {
		minX, maxX = min(minX, c.X), max(maxX, c.X)
		minY, maxY = min(minY, c.Y), max(maxY, c.Y)
	}
	xmin := clampInt(int(minX), 0, m.W-1)
	xmax := clampInt(int(maxX), 0, m.W-1)
	ymin := clampInt(int(minY), 0, m.H-1)
	ymax := clampInt(int(maxY), 0, m.H-1)
	poly := make([]image.Point, len(contour))
	for k, c := range contour {
		poly[k] = image.Pt(int(c.X)-xmin, int(c.Y)-ymin)
	}
	return maskedMean(m, xmin, ymin, xmax, ymax, poly)
}

// maskedMean fills poly (relative to xmin, ymin) into a mask of the
// rectangle's size and averages the map under it as cv2.mean does: a
// float64 sum in row order, times the reciprocal of the count.
func maskedMean(m probMap, xmin, ymin, xmax, ymax int, poly []image.Point) (float64, error) {
	w, h := xmax-xmin+1, ymax-ymin+1
	mask := gocv.NewMatWithSize(h, w, gocv.MatTypeCV8U)
	defer mask.Close()
	mask.SetTo(gocv.NewScalar(0, 0, 0, 0))
	pv := gocv.NewPointsVectorFromPoints([][]image.Point{poly})
	gocv.FillPoly(&mask, pv, color.RGBA{B: 1})
	pv.Close()
	mb, err := mask.DataPtrUint8()
	if err != nil {
		return 0, err
	}
	var sum float64
	n := 0
	for y := range h {
		row := m.P[(ymin+y)*m.W+xmin : (ymin+y)*m.W+xmin+w]
		mrow := mb[y*w : (y+1)*w]
		for x, v := range row {
			if mrow[x] != 0 {
				sum += float64(v)
				n++
			}
		}
	}
	if n == 0 {
		return 0, nil
	}
	return sum * (1.0 / float64(n)), nil
}

// unclip grows the box by area×1.6/perimeter with Clipper's round offset.
// The polygon's area and length are computed as shapely (GEOS) does, and
// the corners are truncated to integers, as pyclipper converts them.
func unclip(box quad) []point {
	var xs, ys [5]float64
	for k := range 5 {
		xs[k], ys[k] = float64(box[k%4][0]), float64(box[k%4][1])
	}
	// GEOS Area::ofRing over the closed ring.
	var area float64
	x0 := xs[0]
	for i := 1; i < 4; i++ {
		area += float64((xs[i] - x0) * (ys[i-1] - ys[i+1]))
	}
	area = math.Abs(area / 2.0)
	var length float64
	for i := 1; i < 5; i++ {
		dx, dy := xs[i]-xs[i-1], ys[i]-ys[i-1]
		length += math.Sqrt(float64(dx*dx) + float64(dy*dy))
	}
	distance := area * dbUnclipRatio / length
	path := make([]point, 4)
	for k, c := range box {
		path[k] = point{int32(c[0]), int32(c[1])}
	}
	return offsetPolygon(path, distance)
}

// scaleCoord maps a map coordinate to the destination image:
// clip(round(v / size * dest), 0, dest) in float32, half to even.
func scaleCoord(v float32, size, dest int) float32 {
	s := v / float32(size) * float32(dest)
	r := float32(math.RoundToEven(float64(s)))
	return float32(int32(max(0, min(r, float32(dest)))))
}

// filterBoxes is RapidOCR's filter_det_res: corners ordered clockwise
// from the top-left, clipped to the image, and boxes no more than 3 pixels
// wide or high dropped.
func filterBoxes(boxes []quad, scores []float64, w, h int) ([]quad, []float64, error) {
	var outB []quad
	var outS []float64
	for i, b := range boxes {
		b = orderClockwise(b)
		for k := range 4 {
			b[k][0] = float32(int(min(max(b[k][0], 0), float32(w-1))))
			b[k][1] = float32(int(min(max(b[k][1], 0), float32(h-1))))
		}
		rw := int(norm32(b[0], b[1]))
		rh := int(norm32(b[0], b[3]))
		if rw <= 3 || rh <= 3 {
			continue
		}
		outB = append(outB, b)
		outS = append(outS, scores[i])
	}
	return outB, outS, nil
}

// norm32 is np.linalg.norm of the difference of two float32 points,
// computed in float32.
func norm32(a, b [2]float32) float32 {
	dx, dy := a[0]-b[0], a[1]-b[1]
	s := float32(dx*dx) + float32(dy*dy)
	return float32(math.Sqrt(float64(s)))
}

// orderClockwise is RapidOCR's order_points_clockwise: the two left-most
// corners (stable sort by x) become top-left and bottom-left by y, the
// two right-most top-right and bottom-right.
func orderClockwise(b quad) quad {
	pts := b
	byX := func(a, b [2]float32) int { return cmpF32(a[0], b[0]) }
	byY := func(a, b [2]float32) int { return cmpF32(a[1], b[1]) }
	slices.SortStableFunc(pts[:], byX)
	left, right := pts[:2], pts[2:]
	slices.SortStableFunc(left, byY)
	slices.SortStableFunc(right, byY)
	return quad{left[0], right[0], right[1], left[1]}
}

func cmpF32(a, b float32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readingOrder sorts boxes as the reference's sorted_boxes describes:
// a stable sort by the top-left corner's y; a new line starts wherever
// that y grows by 10 pixels or more from the previous box; then boxes are
// ordered by line, and by top-left x within a line (stable).
func readingOrder(boxes []quad) []int {
	idx := make([]int, len(boxes))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmpF32(boxes[a][0][1], boxes[b][0][1]) })
	line := make([]int, len(boxes))
	for k := 1; k < len(idx); k++ {
		line[idx[k]] = line[idx[k-1]]
		if boxes[idx[k]][0][1]-boxes[idx[k-1]][0][1] >= 10 {
			line[idx[k]]++
		}
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		if line[a] != line[b] {
			return line[a] - line[b]
		}
		return cmpF32(boxes[a][0][0], boxes[b][0][0])
	})
	return idx
}
