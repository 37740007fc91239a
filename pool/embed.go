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
	key, _, err := s.resolve(Entry{Task: "clip", Type: "visual", ModelName: model})
	if err != nil {
		return nil, err
	}
	h, err := s.cache.Acquire(ctx, key)
	if err != nil {
		return nil, err
	}
	defer h.Release()
	v, ok := h.Model.(*clip.Visual)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a CLIP image encoder", ErrWrongInput, key)
	}
	var out [][]float32
	_, err = s.workers.Do(ctx, func(ctx context.Context) error {
		var err error
		out, err = v.EmbedBatch(ctx, imgs)
		return err
	})
	return out, err
}

// EmbedText runs a CLIP model's text encoder on a query, through the same
// cache and workers as /predict.
func (s *Service) EmbedText(ctx context.Context, model, text, language string) ([]float32, error) {
	key, _, err := s.resolve(Entry{Task: "clip", Type: "textual", ModelName: model})
	if err != nil {
		return nil, err
	}
	h, err := s.cache.Acquire(ctx, key)
	if err != nil {
		return nil, err
	}
	defer h.Release()
	t, ok := h.Model.(*clip.Textual)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a CLIP text encoder", ErrWrongInput, key)
	}
	var out []float32
	_, err = s.workers.Do(ctx, func(ctx context.Context) error {
		var err error
		out, err = t.Embed(ctx, text, language)
		return err
	})
	return out, err
}
