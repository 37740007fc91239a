package pool

import (
	"context"
	"encoding/json"

	"github.com/mlserve/mlserve/inference/face"
)

func (s *Service) faceHandlers() []*handler {
	return []*handler{
		{
			task: "facial-recognition", typ: "detection", needImage: true,
			options: func(o map[string]json.RawMessage) (any, error) {
				// Immich's default when the option is absent is 0.7.
				return optFloat(o, "minScore", 0.7, 0, 1)
			},
			load: func(dir string, key Key) (Model, error) {
				return face.LoadDetector(dir, s.sessions, face.DetectorOptions{}, s.logger)
			},
			run: func(ctx context.Context, m Model, in input, _ any, o any) (any, error) {
				return m.(*face.Detector).Detect(ctx, in.img, float32(o.(float64)))
			},
		},
		{
			task: "facial-recognition", typ: "recognition", needImage: true,
			dep:     &handlerKey{"facial-recognition", "detection"},
			options: func(map[string]json.RawMessage) (any, error) { return nil, nil },
			load: func(dir string, key Key) (Model, error) {
				return face.LoadRecognizer(dir, s.sessions, face.RecognizerOptions{MaxBatch: s.opts.MaxBatchFace}, s.logger)
			},
			run: func(ctx context.Context, m Model, in input, dep any, _ any) (any, error) {
				return m.(*face.Recognizer).Recognize(ctx, in.img, dep.(*face.Detections))
			},
		},
	}
}
