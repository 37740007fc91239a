package pool

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/clip"
)

type textualOptions struct{ language string }

// tokens are one text's ids and attention mask.
type tokens struct{ ids, mask []int32 }

func (s *Service) clipHandlers() []*handler {
	return []*handler{
		{
			task: "clip", typ: "visual", needImage: true,
			options: func(map[string]json.RawMessage) (any, error) { return nil, nil },
			sub:     "visual",
			load: func(sessions Sessions, dir string, key Key) (Model, error) {
				return clip.LoadVisual(dir, sessions, clip.VisualOptions{Session: inference.SessionOptions{SplitBatch: !s.opts.Batch.NoSplit}}, s.logger)
			},
			engine:  s.visualEngine,
			minSide: func(m Model) int { return m.(*clip.Visual).Size() },
			run: func(ctx context.Context, x *exec, m *loaded, in *input, _ Result, _ any) (Result, error) {
				v := m.model.(*clip.Visual)
				if err := v.Check(in.img); err != nil {
					return nil, err
				}
				if err := x.cpu(ctx, &x.t.Preprocess); err != nil {
					return nil, err
				}
				t := v.PreprocessParallel(in.img, nil, x.spareCores())
				s.dropImage(in)
				embs, err := embedImages(ctx, x, m, [][]float32{t})
				if err != nil {
					return nil, err
				}
				return &CLIPResult{Embedding: embs[0]}, nil
			},
		},
		{
			task: "clip", typ: "textual",
			options: func(o map[string]json.RawMessage) (any, error) {
				lang, err := optString(o, "language", "")
				return textualOptions{language: lang}, err
			},
			sub: "textual",
			load: func(sessions Sessions, dir string, key Key) (Model, error) {
				return clip.LoadTextual(dir, sessions, clip.TextualOptions{Name: key.Name}, s.logger)
			},
			engine: s.textualEngine,
			run: func(ctx context.Context, x *exec, m *loaded, in *input, _ Result, o any) (Result, error) {
				if in.text == nil {
					return nil, fmt.Errorf("%w: clip/textual needs text", ErrWrongInput)
				}
				if err := x.cpu(ctx, &x.t.Preprocess); err != nil {
					return nil, err
				}
				emb, err := embedText(ctx, x, m, *in.text, o.(textualOptions).language)
				if err != nil {
					return nil, err
				}
				return &CLIPResult{Embedding: emb}, nil
			},
		},
	}
}

// visualEngine batches images across requests: each item is one
// preprocessed image.
func (s *Service) visualEngine(m *loaded) {
	rows := 1
	if m.model.(*clip.Visual).DynamicBatch() {
		rows = s.batchMax(m.Device())
	}
	startBatcher(s, m, rows, func(model Model) runFunc[[]float32, []float32] {
		v := model.(*clip.Visual)
		var buf []float32
		return func(ctx context.Context, ins [][]float32, n int) ([][]float32, error) {
			in := ins[0]
			if len(ins) > 1 {
				buf = buf[:0]
				for _, x := range ins {
					buf = append(buf, x...)
				}
				in = buf
			}
			embs, err := v.EmbedPrepared(ctx, in, n)
			if len(ins) > 1 && cap(buf) > 2*v.InputSize()*DefaultBatchMaxCPU {
				buf = nil // do not keep an accelerator-sized batch around
			}
			return embs, err
		}
	})
}

// embedImages runs preprocessed images through m's batcher, one item
// each, and returns their embeddings in order. x holds a CPU slot on
// entry; it is given up while the images wait.
func embedImages(ctx context.Context, x *exec, m *loaded, ins [][]float32) ([][]float32, error) {
	b := m.batch.(*batcher[[]float32, []float32])
	items := make([]*item[[]float32, []float32], len(ins))
	for i, in := range ins {
		it, err := submit(ctx, x, b, in, 1, 0)
		if err != nil {
			return nil, err
		}
		items[i] = it
	}
	out := make([][]float32, len(ins))
	for i, it := range items {
		e, err := await(ctx, x, b, it, false, nil)
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

// textualEngine batches texts across requests: each item is one text's
// tokens.
func (s *Service) textualEngine(m *loaded) {
	rows := 1
	if m.model.(*clip.Textual).DynamicBatch() {
		rows = s.batchMax(m.Device())
	}
	startBatcher(s, m, rows, func(model Model) runFunc[tokens, []float32] {
		t := model.(*clip.Textual)
		return func(ctx context.Context, ins []tokens, n int) ([][]float32, error) {
			if len(ins) == 1 {
				return t.EmbedTokens(ctx, ins[0].ids, ins[0].mask, 1)
			}
			var ids, mask []int32
			for _, in := range ins {
				ids = append(ids, in.ids...)
				mask = append(mask, in.mask...)
			}
			return t.EmbedTokens(ctx, ids, mask, n)
		}
	})
}

// embedText tokenizes a text on x's CPU slot and embeds it through m's
// batcher.
func embedText(ctx context.Context, x *exec, m *loaded, text, language string) ([]float32, error) {
	t := m.model.(*clip.Textual)
	ids, mask, err := t.Tokenize(text, language)
	if err != nil {
		return nil, err
	}
	b := m.batch.(*batcher[tokens, []float32])
	it, err := submit(ctx, x, b, tokens{ids, mask}, 1, 0)
	if err != nil {
		return nil, err
	}
	return await(ctx, x, b, it, false, nil)
}
