package main

import (
	"context"
	"fmt"

	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
)

// modelRef names one model of one task and type.
type modelRef struct {
	task models.Task
	typ  models.Type
	name string
}

// preload loads the CLIP model clip (its text tower with textual, else its
// image tower) and the face and OCR models that tasks name on svc,
// downloading what is missing: a command knows its models work before it
// touches the database.
func preload(ctx context.Context, svc *pool.Service, clip string, textual bool, tasks taskFlags) error {
	name, err := models.CleanName(clip)
	if err != nil {
		return err
	}
	typ := models.TypeVisual
	if textual {
		typ = models.TypeTextual
	}
	want := []modelRef{{models.TaskCLIP, typ, name}}
	if tasks.faces != "" {
		want = append(want, modelRef{models.TaskFacialRecognition, models.TypeDetection, tasks.faces},
			modelRef{models.TaskFacialRecognition, models.TypeRecognition, tasks.faces})
	}
	if tasks.ocr != "" {
		want = append(want, modelRef{models.TaskOCR, models.TypeDetection, tasks.ocr},
			modelRef{models.TaskOCR, models.TypeRecognition, tasks.ocr})
	}
	for _, w := range want {
		if err := svc.Preload(ctx, string(w.task), string(w.typ), []string{w.name}); err != nil {
			return fmt.Errorf("model %s (%s/%s): %w", w.name, w.task, w.typ, err)
		}
	}
	return nil
}
