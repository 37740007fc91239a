package pool

import (
	"context"
	"encoding/json"

	"github.com/mlserve/mlserve/inference/ocr"
)

func (s *Service) ocrHandlers() []*handler {
	return []*handler{
		{
			task: "ocr", typ: "detection", needImage: true,
			options: func(o map[string]json.RawMessage) (any, error) {
				var d ocr.DetectOptions
				min, err := optFloat(o, "minScore", 0.5, 0, 1)
				if err != nil {
					return nil, err
				}
				// Immich accepts any value of at least 1; the detector's
				// input is capped at 4000 pixels on its long side anyway.
				res, err := optInt(o, "maxResolution", 736, 1, ocr.DetectMaxSide)
				if err != nil {
					return nil, err
				}
				mode, err := optString(o, "scoreMode", "fast", "fast", "slow")
				if err != nil {
					return nil, err
				}
				d.MinScore, d.MaxResolution, d.ScoreMode = float32(min), res, mode
				return d, nil
			},
			load: func(dir string, key Key) (Model, error) {
				return ocr.LoadDetector(dir, s.sessions, s.logger)
			},
			run: func(ctx context.Context, m Model, in input, _ any, o any) (any, error) {
				return m.(*ocr.Detector).Detect(ctx, in.img, o.(ocr.DetectOptions))
			},
		},
		{
			task: "ocr", typ: "recognition", needImage: true,
			dep: &handlerKey{"ocr", "detection"},
			options: func(o map[string]json.RawMessage) (any, error) {
				// Immich's ML-side default is 0.9; the server sends 0.8.
				return optFloat(o, "minScore", 0.9, 0, 1)
			},
			load: func(dir string, key Key) (Model, error) {
				return ocr.LoadRecognizer(dir, s.sessions, ocr.RecognizerOptions{MaxBatch: s.opts.MaxBatchOCR}, s.logger)
			},
			run: func(ctx context.Context, m Model, in input, dep any, o any) (any, error) {
				return m.(*ocr.Recognizer).Recognize(ctx, in.img, dep.(*ocr.TextBoxes), float32(o.(float64)))
			},
		},
	}
}
