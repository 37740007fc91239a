package pool

import (
	"context"

	"github.com/mlserve/mlserve/inference/imaging"
)

// EmbedImageData decodes an encoded image (JPEG, PNG, WebP…) as /predict
// does, within the service's decoding caps, and returns its CLIP image
// embedding: what a search by example image needs, whether it comes from
// the HTTP API or the command line. Decoding errors wrap imaging's
// sentinels (ErrDecode, ErrEmpty, ErrTooLarge).
func (s *Service) EmbedImageData(ctx context.Context, model string, data []byte) ([]float32, error) {
	img, _, _, err := s.opts.Decode(data, 0)
	if err != nil {
		return nil, err
	}
	out, err := s.EmbedImages(ctx, model, []*imaging.Image{img})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}
