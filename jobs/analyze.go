package jobs

import (
	"context"

	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/inference/ocr"
	"github.com/mlserve/mlserve/pool"
	"github.com/mlserve/mlserve/search"
)

// FaceTexter runs the face and OCR pipelines (*pool.Service).
type FaceTexter interface {
	Faces(ctx context.Context, model string, img *imaging.Image, minScore float32) ([]pool.Face, error)
	Text(ctx context.Context, model string, img *imaging.Image, o ocr.DetectOptions, minScore float32) (*pool.OCRResult, error)
}

// AnalysisOptions are the thresholds of faces and OCR; zero values take
// Immich's defaults.
type AnalysisOptions struct {
	// FaceMinScore is the face detection threshold (default 0.7).
	FaceMinScore float32
	// OCRMinDetectionScore (default 0.5) and OCRMinRecognitionScore
	// (default 0.8, what Immich's server sends) are the OCR thresholds;
	// OCRMaxResolution caps the detector's input (default 736).
	OCRMinDetectionScore, OCRMinRecognitionScore float32
	OCRMaxResolution                             int
}

// EngineAnalyzer is the ImageAnalyzer of the inference pool: faces
// detected and embedded, text detected and read, as /predict does for
// Immich, turned into our schema's rows.
type EngineAnalyzer struct {
	Engine FaceTexter
	Opts   AnalysisOptions
}

var _ ImageAnalyzer = EngineAnalyzer{}

// Faces implements ImageAnalyzer.
func (a EngineAnalyzer) Faces(ctx context.Context, model string, img *imaging.Image) ([]search.Face, error) {
	min := a.Opts.FaceMinScore
	if min <= 0 {
		min = 0.7
	}
	fs, err := a.Engine.Faces(ctx, model, img, min)
	if err != nil {
		return nil, err
	}
	out := make([]search.Face, len(fs))
	for i, f := range fs {
		out[i] = search.FaceRow(img.W, img.H, f.Box, f.Score, f.Embedding)
	}
	return out, nil
}

// Text implements ImageAnalyzer.
func (a EngineAnalyzer) Text(ctx context.Context, model string, img *imaging.Image) ([]search.OCRBox, error) {
	o := ocr.DetectOptions{MinScore: a.Opts.OCRMinDetectionScore, MaxResolution: a.Opts.OCRMaxResolution, ScoreMode: "fast"}
	if o.MinScore <= 0 {
		o.MinScore = 0.5
	}
	if o.MaxResolution <= 0 {
		o.MaxResolution = 736
	}
	min := a.Opts.OCRMinRecognitionScore
	if min <= 0 {
		min = 0.8
	}
	res, err := a.Engine.Text(ctx, model, img, o, min)
	if err != nil {
		return nil, err
	}
	return search.OCRRows(res.Box, res.BoxScore, res.Text, res.TextScore)
}
