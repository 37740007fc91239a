package pool

import (
	"context"
	"fmt"

	"github.com/mlserve/mlserve/inference/clip"
	"github.com/mlserve/mlserve/inference/face"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/inference/ocr"
)

// The methods below run single models outside /predict, for the bulk
// indexer and search, on the same cache and workers.

// EmbedImages runs a CLIP model's image encoder on decoded images, as one
// batch where the model allows it, through the same cache and workers as
// /predict. The bulk indexer and image search use it.
func (s *Service) EmbedImages(ctx context.Context, model string, imgs []*imaging.Image) ([][]float32, error) {
	if len(imgs) == 0 {
		return nil, nil
	}
	return withModel(ctx, s, "clip", "visual", model, func(ctx context.Context, v *clip.Visual) ([][]float32, error) {
		return v.EmbedBatch(ctx, imgs)
	})
}

// EmbedText runs a CLIP model's text encoder on a query, through the same
// cache and workers as /predict.
func (s *Service) EmbedText(ctx context.Context, model, text, language string) ([]float32, error) {
	return withModel(ctx, s, "clip", "textual", model, func(ctx context.Context, t *clip.Textual) ([]float32, error) {
		return t.Embed(ctx, text, language)
	})
}

// Faces detects the faces of a decoded image and embeds them, as a
// facial-recognition request with detection and recognition does.
func (s *Service) Faces(ctx context.Context, model string, img *imaging.Image, minScore float32) ([]face.Face, error) {
	det, err := withModel(ctx, s, "facial-recognition", "detection", model, func(ctx context.Context, d *face.Detector) (*face.Detections, error) {
		return d.Detect(ctx, img, minScore)
	})
	if err != nil {
		return nil, err
	}
	return withModel(ctx, s, "facial-recognition", "recognition", model, func(ctx context.Context, r *face.Recognizer) ([]face.Face, error) {
		return r.Recognize(ctx, img, det)
	})
}

// Text reads the text of a decoded image, as an OCR request with
// detection and recognition does.
func (s *Service) Text(ctx context.Context, model string, img *imaging.Image, det ocr.DetectOptions, minScore float32) (*ocr.Result, error) {
	boxes, err := withModel(ctx, s, "ocr", "detection", model, func(ctx context.Context, d *ocr.Detector) (*ocr.TextBoxes, error) {
		return d.Detect(ctx, img, det)
	})
	if err != nil {
		return nil, err
	}
	return withModel(ctx, s, "ocr", "recognition", model, func(ctx context.Context, r *ocr.Recognizer) (*ocr.Result, error) {
		return r.Recognize(ctx, img, boxes, minScore)
	})
}

// withModel acquires the model of task/typ and runs fn with it on a
// worker slot.
func withModel[M any, R any](ctx context.Context, s *Service, task, typ, model string, fn func(context.Context, M) (R, error)) (R, error) {
	var zero R
	key, _, err := s.resolve(Entry{Task: task, Type: typ, ModelName: model})
	if err != nil {
		return zero, err
	}
	h, err := s.cache.Acquire(ctx, key)
	if err != nil {
		return zero, err
	}
	defer h.Release()
	m, ok := h.Model.(M)
	if !ok {
		return zero, fmt.Errorf("%w: %s is not a %T", ErrWrongInput, key, zeroOf[M]())
	}
	var out R
	_, err = s.workers.Do(ctx, func(ctx context.Context) error {
		var err error
		out, err = fn(ctx, m)
		return err
	})
	return out, err
}

func zeroOf[M any]() (m M) { return m }
