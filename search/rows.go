package search

import "fmt"

// The functions below turn what the face and OCR pipelines return (in
// Immich's layout, as /predict answers) into the rows of our schema.

// FaceRow is the row of one recognised face: box is x1, y1, x2, y2 in
// pixels of the w×h image the detector saw; embedding has 512 values.
// The slice is kept, not copied.
func FaceRow(w, h int, box [4]float32, score float32, embedding []float32) Face {
	return Face{
		ImageWidth: w, ImageHeight: h,
		X1: box[0], Y1: box[1], X2: box[2], Y2: box[3],
		Score: score, Embedding: embedding,
	}
}

// OCRRows turns an OCR result in Immich's layout into rows: per line kept,
// 8 box values in box (x1,y1 … x4,y4, normalised to 0..1), its detection
// score in boxScore, its text and its recognition score. Lengths that do
// not line up are ErrInvalid. An empty result gives an empty, non-nil
// slice (the task ran and found no text).
func OCRRows(box, boxScore []float32, text []string, textScore []float64) ([]OCRBox, error) {
	n := len(text)
	if len(box) != 8*n || len(boxScore) != n || len(textScore) != n {
		return nil, fmt.Errorf("%w: OCR result with %d texts, %d box values, %d box scores and %d text scores",
			ErrInvalid, n, len(box), len(boxScore), len(textScore))
	}
	rows := make([]OCRBox, n)
	for i := range rows {
		copy(rows[i].Box[:], box[8*i:8*i+8])
		rows[i].BoxScore = boxScore[i]
		rows[i].Text = text[i]
		rows[i].TextScore = float32(textScore[i])
	}
	return rows, nil
}
