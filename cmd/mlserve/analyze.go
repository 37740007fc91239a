package main

import (
	"errors"

	"github.com/spf13/pflag"

	"github.com/mlserve/mlserve/jobs"
	"github.com/mlserve/mlserve/models"
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

// analysis is the thresholds of the flags.
func (t *taskFlags) analysis() jobs.AnalysisOptions {
	return jobs.AnalysisOptions{
		FaceMinScore:         float32(t.faceMinScore),
		OCRMinDetectionScore: float32(t.ocrDetScore), OCRMinRecognitionScore: float32(t.ocrRecScore),
		OCRMaxResolution: t.ocrMaxResolution,
	}
}
