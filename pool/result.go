package pool

// Result is the output of one task of a request: a *CLIPResult,
// *FaceDetectionResult, *FacesResult, *TextDetectionResult or *OCRResult.
// The API writes each in Immich's wire format.
type Result interface{ result() }

// CLIPResult is the embedding of an image or a text (clip/visual,
// clip/textual), L2-normalised by the model.
type CLIPResult struct {
	Embedding []float32
}

// FaceDetectionResult is what facial-recognition/detection alone returns:
// the detector's faces, best first. The slices have one entry per face.
type FaceDetectionResult struct {
	// Boxes are x1, y1, x2, y2 in pixels of the image, rounded half to
	// even as Immich returns them; not clipped.
	Boxes [][4]float32
	// Scores are the detector's confidences.
	Scores []float32
	// Landmarks are five points per face (eyes, nose, mouth corners).
	Landmarks [][5][2]float32
}

// Face is one recognised face.
type Face struct {
	Box       [4]float32 // x1, y1, x2, y2 in pixels, as in FaceDetectionResult
	Embedding []float32  // the model's output, not normalised
	Score     float32    // detection score
}

// FacesResult is facial-recognition with detection and recognition: each
// detected face with its embedding, in the detector's order.
type FacesResult struct {
	Faces []Face
}

// TextDetectionResult is what ocr/detection alone returns: text regions in
// pixels, corners top-left, top-right, bottom-right, bottom-left, in
// reading order.
type TextDetectionResult struct {
	Boxes  [][4][2]float32
	Scores []float32
}

// OCRResult is ocr with detection and recognition, in Immich's layout: per
// text kept, 8 box values (x1,y1,...,x4,y4 divided by the image's width
// and height), the detection score, the text and its recognition score.
type OCRResult struct {
	Box       []float32
	BoxScore  []float32
	Text      []string
	TextScore []float64
}

func (*CLIPResult) result()          {}
func (*FaceDetectionResult) result() {}
func (*FacesResult) result()         {}
func (*TextDetectionResult) result() {}
func (*OCRResult) result()           {}

// Output is one task's result in a response.
type Output struct {
	Task   string
	Result Result
}
