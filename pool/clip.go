package pool

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/mlserve/mlserve/inference/clip"
)

type textualOptions struct{ language string }

func (s *Service) clipHandlers() []*handler {
	return []*handler{
		{
			task: "clip", typ: "visual", needImage: true,
			options: func(map[string]json.RawMessage) (any, error) { return nil, nil },
			load: func(dir string, key Key) (Model, error) {
				return clip.LoadVisual(dir, s.sessions, clip.VisualOptions{}, s.logger)
			},
			run: func(ctx context.Context, m Model, in input, _ any, _ any) (any, error) {
				return m.(*clip.Visual).Embed(ctx, in.img)
			},
		},
		{
			task: "clip", typ: "textual",
			options: func(o map[string]json.RawMessage) (any, error) {
				lang, err := optString(o, "language", "")
				return textualOptions{language: lang}, err
			},
			load: func(dir string, key Key) (Model, error) {
				return clip.LoadTextual(dir, s.sessions, clip.TextualOptions{Name: key.Name}, s.logger)
			},
			run: func(ctx context.Context, m Model, in input, _ any, o any) (any, error) {
				if in.text == nil {
					return nil, fmt.Errorf("%w: clip/textual needs text", ErrWrongInput)
				}
				return m.(*clip.Textual).Embed(ctx, *in.text, o.(textualOptions).language)
			},
		},
	}
}
