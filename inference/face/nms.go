package face

import (
	"math"
	"slices"
)

// candidate is one anchor's decoded detection before NMS.
type candidate struct {
	box   [4]float32 // x1, y1, x2, y2
	score float32
	kps   [5][2]float32
	index int // position in the concatenated anchor list, for ties
}

// sortByScore orders candidates by score, highest first. insightface uses
// numpy's argsort()[::-1] twice (once to order, once inside NMS); for equal
// scores numpy's order is unspecified, so ties go by anchor position, which
// is what two reversed stable sorts give.
func sortByScore(c []candidate) {
	slices.SortStableFunc(c, func(a, b candidate) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return a.index - b.index
	})
}

// nmsPlusOne is insightface's RetinaFace.nms on candidates sorted by score:
// greedy, areas and intersections with the "+1" pixel convention, a box is
// suppressed when its IoU with a kept box is > thresh. All arithmetic is
// float32, as numpy does it on the float32 detections.
func nmsPlusOne(c []candidate, thresh float32) []candidate {
	areas := make([]float32, len(c))
	for i, d := range c {
		areas[i] = (d.box[2] - d.box[0] + 1) * (d.box[3] - d.box[1] + 1)
	}
	suppressed := make([]bool, len(c))
	var keep []candidate
	for i := range c {
		if suppressed[i] {
			continue
		}
		keep = append(keep, c[i])
		a := c[i].box
		for j := i + 1; j < len(c); j++ {
			if suppressed[j] {
				continue
			}
			b := c[j].box
			w := max(0, min(a[2], b[2])-max(a[0], b[0])+1)
			h := max(0, min(a[3], b[3])-max(a[1], b[1])+1)
			inter := w * h
			ovr := inter / (areas[i] + areas[j] - inter)
			// numpy keeps where ovr <= thresh; NaN (degenerate boxes)
			// fails that test and is suppressed too.
			if !(ovr <= thresh) {
				suppressed[j] = true
			}
		}
	}
	return keep
}

// iou is the plain intersection over union (no "+1"), in float32.
func iou(a, b [4]float32) float32 {
	w := max(0, min(a[2], b[2])-max(a[0], b[0]))
	h := max(0, min(a[3], b[3])-max(a[1], b[1]))
	inter := w * h
	union := (a[2]-a[0])*(a[3]-a[1]) + (b[2]-b[0])*(b[3]-b[1]) - inter
	if !(union > 0) {
		return 0
	}
	return inter / union
}

// nmsPlain is greedy NMS on candidates sorted by score with the plain IoU;
// a box is suppressed when its IoU with a kept box is > thresh (UltraFace's
// hard_nms).
func nmsPlain(c []candidate, thresh float32) []candidate {
	suppressed := make([]bool, len(c))
	var keep []candidate
	for i := range c {
		if suppressed[i] {
			continue
		}
		keep = append(keep, c[i])
		for j := i + 1; j < len(c); j++ {
			if !suppressed[j] && iou(c[i].box, c[j].box) > thresh {
				suppressed[j] = true
			}
		}
	}
	return keep
}

// nmsWeighted is MediaPipe's weighted NMS on candidates sorted by score:
// the best remaining candidate absorbs every remaining one whose IoU with it
// is ≥ thresh; the result is their score-weighted mean box and keypoints,
// with the best score.
func nmsWeighted(c []candidate, thresh float32) []candidate {
	used := make([]bool, len(c))
	var out []candidate
	for i := range c {
		if used[i] {
			continue
		}
		used[i] = true
		var box [4]float64
		var kps [5][2]float64
		var total float64
		add := func(d candidate) {
			w := float64(d.score)
			for k := range 4 {
				box[k] += w * float64(d.box[k])
			}
			for p := range 5 {
				kps[p][0] += w * float64(d.kps[p][0])
				kps[p][1] += w * float64(d.kps[p][1])
			}
			total += w
		}
		add(c[i])
		for j := i + 1; j < len(c); j++ {
			if !used[j] && iou(c[i].box, c[j].box) >= thresh {
				used[j] = true
				add(c[j])
			}
		}
		merged := c[i]
		if total > 0 {
			for k := range 4 {
				merged.box[k] = float32(box[k] / total)
			}
			for p := range 5 {
				merged.kps[p] = [2]float32{float32(kps[p][0] / total), float32(kps[p][1] / total)}
			}
		}
		out = append(out, merged)
	}
	return out
}

// roundHalfEven is numpy's round() of a float32.
func roundHalfEven(v float32) float32 { return float32(math.RoundToEven(float64(v))) }

// toDetections turns kept candidates into Immich's output: rounded boxes,
// scores, unrounded landmarks (nil when withKps is false).
func toDetections(keep []candidate, withKps bool) *Detections {
	d := &Detections{
		Boxes:  make([][4]float32, len(keep)),
		Scores: make([]float32, len(keep)),
	}
	if withKps {
		d.Landmarks = make([][5][2]float32, len(keep))
	}
	for i, c := range keep {
		for k := range 4 {
			d.Boxes[i][k] = roundHalfEven(c.box[k])
		}
		d.Scores[i] = c.score
		if withKps {
			d.Landmarks[i] = c.kps
		}
	}
	return d
}
