package pool

import (
	"context"
	"fmt"

	"github.com/mlserve/mlserve/inference/clip"
	"github.com/mlserve/mlserve/inference/imaging"
)

// EmbedImages runs a CLIP model's image encoder on decoded images, as one
// batch where the model allows it, through the same cache and workers as
// /predict. The bulk indexer and image search use it.
func (s *Service) EmbedImages(ctx context.Context, model string, imgs []*imaging.Image) ([][]float32, error) {
	if len(imgs) == 0 {
		return nil, nil
	}
	return withModel(ctx, s, "visual", model, func(ctx context.Context, v *clip.Visual) ([][]float32, error) {
		return v.EmbedBatch(ctx, imgs)
	})
}

// EmbedText runs a CLIP model's text encoder on a query, through the same
// cache and workers as /predict.
func (s *Service) EmbedText(ctx context.Context, model, text, language string) ([]float32, error) {
	return withModel(ctx, s, "textual", model, func(ctx context.Context, t *clip.Textual) ([]float32, error) {
		return t.Embed(ctx, text, language)
	})
}

// withModel acquires a CLIP model of type typ and runs fn with it on a
// worker slot.
func withModel[M any, R any](ctx context.Context, s *Service, typ, model string, fn func(context.Context, M) (R, error)) (R, error) {
	var zero R
	key, _, err := s.resolve(Entry{Task: "clip", Type: typ, ModelName: model})
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
		return zero, fmt.Errorf("%w: %s is not a CLIP %s encoder", ErrWrongInput, key, typ)
	}
	var out R
	_, err = s.workers.Do(ctx, func(ctx context.Context) error {
		var err error
		out, err = fn(ctx, m)
		return err
	})
	return out, err
}
