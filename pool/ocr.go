package pool

import (
	"context"
	"encoding/json"

	"github.com/mlserve/mlserve/inference/imaging"
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
			load: func(sessions Sessions, dir string, key Key) (Model, error) {
				return ocr.LoadDetector(dir, sessions, s.logger)
			},
			run: func(ctx context.Context, x *exec, m *loaded, in *input, _ Result, o any) (Result, error) {
				return detectText(ctx, x, m, in.img, o.(ocr.DetectOptions))
			},
		},
		{
			task: "ocr", typ: "recognition", needImage: true,
			dep: &handlerKey{"ocr", "detection"},
			options: func(o map[string]json.RawMessage) (any, error) {
				// Immich's ML-side default is 0.9; the server sends 0.8.
				return optFloat(o, "minScore", 0.9, 0, 1)
			},
			load: func(sessions Sessions, dir string, key Key) (Model, error) {
				return ocr.LoadRecognizer(dir, sessions, ocr.RecognizerOptions{MaxBatch: s.opts.MaxBatchOCR}, s.logger)
			},
			engine: s.textEngine,
			run: func(ctx context.Context, x *exec, m *loaded, in *input, dep Result, o any) (Result, error) {
				return recognizeText(ctx, x, m, in.img, dep.(*TextDetectionResult), float32(o.(float64)))
			},
		},
	}
}

// detectText runs a text detector: its pre- and post-processing on x's
// CPU slot, its model run on a device slot, one image at a time.
func detectText(ctx context.Context, x *exec, m *loaded, img *imaging.Image, o ocr.DetectOptions) (*TextDetectionResult, error) {
	if err := x.cpu(ctx, &x.t.Preprocess); err != nil {
		return nil, err
	}
	r, backed := m.pick()
	defer m.unpick(r)
	m.noteBacklog(backed)
	boxes, err := r.model.(*ocr.Detector).DetectWith(ctx, x.runOn(m, r), img, o)
	if err != nil {
		return nil, err
	}
	return &TextDetectionResult{Boxes: boxes.Boxes, Scores: boxes.Scores}, nil
}

// textEngine batches text lines across requests: each item is one chunk
// of a request's lines (MaxBatchOCR of them, sorted by aspect ratio as
// Immich batches them), and chunks of the same tensor width run together.
func (s *Service) textEngine(m *loaded) {
	rows := max(s.batchMax(m.Device()), 2*s.opts.MaxBatchOCR)
	startBatcher(s, m, rows, func(model Model) runFunc[*ocr.Lines, *ocr.LineScores] {
		r := model.(*ocr.Recognizer)
		var buf []float32
		return func(ctx context.Context, ins []*ocr.Lines, n int) ([]*ocr.LineScores, error) {
			data := ins[0].Data
			if len(ins) > 1 {
				buf = buf[:0]
				for _, l := range ins {
					buf = append(buf, l.Data...)
				}
				data = buf
			}
			out, err := r.RunLines(ctx, data, n, ins[0].Width)
			if err != nil {
				return nil, err
			}
			outs := make([]*ocr.LineScores, len(ins))
			per := out.T * out.C
			for i, l := range ins {
				k := l.Len() * per
				outs[i] = &ocr.LineScores{Data: out.Data[:k:k], T: out.T, C: out.C}
				out.Data = out.Data[k:]
			}
			return outs, nil
		}
	})
}

// recognizeText reads the detected text of img, one chunk of lines at a
// time: the next chunk is cropped while the previous one runs, at most two
// chunks are in flight.
func recognizeText(ctx context.Context, x *exec, m *loaded, img *imaging.Image, d *TextDetectionResult, minScore float32) (*OCRResult, error) {
	r := m.model.(*ocr.Recognizer)
	boxes := &ocr.TextBoxes{Boxes: d.Boxes, Scores: d.Scores}
	chunks, err := r.Plan(img, boxes)
	if err != nil {
		return nil, err
	}
	texts := make([]string, len(boxes.Boxes))
	scores := make([]float64, len(boxes.Boxes))
	b, _ := m.batch.(*batcher[*ocr.Lines, *ocr.LineScores])
	type pending struct {
		it    *item[*ocr.Lines, *ocr.LineScores]
		lines *ocr.Lines
	}
	var inflight []pending
	collect := func() error {
		p := inflight[0]
		inflight = inflight[1:]
		out, err := await(ctx, x, b, p.it, true, &x.t.Postprocess)
		if err != nil {
			return err
		}
		return r.DecodeLines(p.lines, out, texts, scores)
	}
	for i, chunk := range chunks {
		if err := x.cpu(ctx, &x.t.Preprocess); err != nil {
			return nil, err
		}
		lines, err := r.PrepareLines(img, boxes, chunk)
		if err != nil {
			return nil, err
		}
		it, err := submit(ctx, x, b, lines, lines.Len(), lines.Width)
		if err != nil {
			return nil, err
		}
		inflight = append(inflight, pending{it, lines})
		if len(inflight) == 2 && i+1 < len(chunks) {
			if err := collect(); err != nil {
				return nil, err
			}
		}
	}
	for len(inflight) > 0 {
		if err := collect(); err != nil {
			return nil, err
		}
	}
	res := ocr.Assemble(img, boxes, texts, scores, minScore)
	return &OCRResult{Box: res.Box, BoxScore: res.BoxScore, Text: res.Text, TextScore: res.TextScore}, nil
}
