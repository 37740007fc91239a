package main

import (
	"context"
	"fmt"

	"github.com/mlserve/mlserve/models"
)

// modelRef names one model of one task and type.
type modelRef struct {
	task models.Task
	typ  models.Type
	name string
}

// load loads the CLIP model (its text tower with textual, else its image
// tower) and the face and OCR models that tasks name, downloading what is
// missing: a command knows its models work before it touches the
// database.
func (c *clipModels) load(ctx context.Context, textual bool, tasks taskFlags) error {
	typ := models.TypeVisual
	if textual {
		typ = models.TypeTextual
	}
	want := []modelRef{{models.TaskCLIP, typ, c.name}}
	if tasks.faces != "" {
		want = append(want, modelRef{models.TaskFacialRecognition, models.TypeDetection, tasks.faces},
			modelRef{models.TaskFacialRecognition, models.TypeRecognition, tasks.faces})
	}
	if tasks.ocr != "" {
		want = append(want, modelRef{models.TaskOCR, models.TypeDetection, tasks.ocr},
			modelRef{models.TaskOCR, models.TypeRecognition, tasks.ocr})
	}
	for _, w := range want {
		if err := c.svc.Preload(ctx, string(w.task), string(w.typ), []string{w.name}); err != nil {
			return fmt.Errorf("model %s (%s/%s): %w", w.name, w.task, w.typ, err)
		}
	}
	return nil
}
