package main

import (
	"context"
	"errors"

	"github.com/spf13/pflag"

	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/inference/ocr"
	"github.com/mlserve/mlserve/jobs"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
	"github.com/mlserve/mlserve/search"
)

// taskFlags pick the tasks besides CLIP that index and worker run: faces
// and OCR, into our own schema.
type taskFlags struct {
	faces, ocr       string
	faceMinScore     float64
	ocrDetScore      float64
	ocrRecScore      float64
	ocrMaxResolution int
}

func (t *taskFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&t.faces, "faces", "", "also detect and embed faces with this model (e.g. buffalo_l); not with --immich")
	fs.StringVar(&t.ocr, "ocr", "", "also read text with this OCR model (e.g. PP-OCRv5_mobile); not with --immich")
	fs.Float64Var(&t.faceMinScore, "face-min-score", 0.7, "face detection threshold (Immich's default)")
	fs.Float64Var(&t.ocrDetScore, "ocr-min-detection-score", 0.5, "OCR detection threshold (Immich's default)")
	fs.Float64Var(&t.ocrRecScore, "ocr-min-recognition-score", 0.8, "OCR recognition threshold (Immich's default)")
	fs.IntVar(&t.ocrMaxResolution, "ocr-max-resolution", 736, "OCR detection cap on the shorter side (Immich's default)")
}

// check validates the flags and returns the cleaned model names.
func (t *taskFlags) check(immich bool) error {
	if t.faces == "" && t.ocr == "" {
		return nil
	}
	if immich {
		return errors.New("--faces and --ocr write our own schema; Immich's face and OCR jobs own its tables")
	}
	var err error
	if t.faces != "" {
		if t.faces, err = models.CleanName(t.faces); err != nil {
			return err
		}
		if _, err = models.Lookup(models.TaskFacialRecognition, models.TypeDetection, t.faces); err != nil {
			return err
		}
	}
	if t.ocr != "" {
		if t.ocr, err = models.CleanName(t.ocr); err != nil {
			return err
		}
		if _, err = models.Lookup(models.TaskOCR, models.TypeDetection, t.ocr); err != nil {
			return err
		}
	}
	return nil
}

// analyzer runs the chosen face and OCR models on the service's pool; nil
// when neither is chosen.
func (t *taskFlags) analyzer(svc *pool.Service) jobs.ImageAnalyzer {
	if t.faces == "" && t.ocr == "" {
		return nil
	}
	return &analyzer{svc: svc, flags: *t}
}

// sink adds the face and OCR model names to a store sink.
func (t *taskFlags) sink(s jobs.Sink) jobs.Sink {
	if ss, ok := s.(jobs.StoreSink); ok {
		ss.FaceModel, ss.OCRModel = t.faces, t.ocr
		return ss
	}
	return s
}

type analyzer struct {
	svc   *pool.Service
	flags taskFlags
}

// Analyze implements jobs.ImageAnalyzer.
func (a *analyzer) Analyze(ctx context.Context, img *imaging.Image) ([]search.Face, []search.OCRBox, error) {
	var faces []search.Face
	var boxes []search.OCRBox
	if a.flags.faces != "" {
		fs, err := a.svc.Faces(ctx, a.flags.faces, img, float32(a.flags.faceMinScore))
		if err != nil {
			return nil, nil, err
		}
		faces = make([]search.Face, len(fs))
		for i, f := range fs {
			faces[i] = search.Face{
				ImageWidth: img.W, ImageHeight: img.H,
				X1: f.Box[0], Y1: f.Box[1], X2: f.Box[2], Y2: f.Box[3],
				Score: f.Score, Embedding: f.Embedding,
			}
		}
	}
	if a.flags.ocr != "" {
		res, err := a.svc.Text(ctx, a.flags.ocr, img, ocr.DetectOptions{
			MinScore: float32(a.flags.ocrDetScore), MaxResolution: a.flags.ocrMaxResolution, ScoreMode: "fast",
		}, float32(a.flags.ocrRecScore))
		if err != nil {
			return nil, nil, err
		}
		boxes = make([]search.OCRBox, len(res.Text))
		for i := range res.Text {
			var b [8]float32
			copy(b[:], res.Box[8*i:8*i+8])
			boxes[i] = search.OCRBox{Box: b, BoxScore: res.BoxScore[i], Text: res.Text[i], TextScore: float32(res.TextScore[i])}
		}
	}
	return faces, boxes, nil
}
