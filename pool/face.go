package pool

import (
	"context"
	"encoding/json"

	"github.com/mlserve/mlserve/inference/face"
	"github.com/mlserve/mlserve/inference/imaging"
)

func (s *Service) faceHandlers() []*handler {
	return []*handler{
		{
			task: "facial-recognition", typ: "detection", needImage: true,
			options: func(o map[string]json.RawMessage) (any, error) {
				// Immich's default when the option is absent is 0.7.
				return optFloat(o, "minScore", 0.7, 0, 1)
			},
			load: func(sessions Sessions, dir string, key Key) (Model, error) {
				return face.LoadDetector(dir, sessions, face.DetectorOptions{}, s.logger)
			},
			run: func(ctx context.Context, x *exec, m *loaded, in *input, _ Result, o any) (Result, error) {
				return detectFaces(ctx, x, m, in.img, float32(o.(float64)))
			},
		},
		{
			task: "facial-recognition", typ: "recognition", needImage: true,
			dep:     &handlerKey{"facial-recognition", "detection"},
			options: func(map[string]json.RawMessage) (any, error) { return nil, nil },
			load: func(sessions Sessions, dir string, key Key) (Model, error) {
				return face.LoadRecognizer(dir, sessions, face.RecognizerOptions{MaxBatch: s.opts.MaxBatchFace}, s.logger)
			},
			engine: s.recognitionEngine,
			run: func(ctx context.Context, x *exec, m *loaded, in *input, dep Result, _ any) (Result, error) {
				faces, err := recognizeFaces(ctx, x, m, in.img, dep.(*FaceDetectionResult))
				if err != nil {
					return nil, err
				}
				return &FacesResult{Faces: faces}, nil
			},
		},
	}
}

// detectFaces runs a face detector: its pre- and post-processing on x's
// CPU slot, its model runs on the device's slots, one image at a time.
func detectFaces(ctx context.Context, x *exec, m *loaded, img *imaging.Image, minScore float32) (*FaceDetectionResult, error) {
	if err := x.cpu(ctx, &x.t.Preprocess); err != nil {
		return nil, err
	}
	r, backed := m.pick()
	defer m.unpick(r)
	m.noteBacklog(backed)
	det, err := r.model.(*face.Detector).DetectWith(ctx, x.runOn(m, r), img, minScore)
	if err != nil {
		return nil, err
	}
	return &FaceDetectionResult{Boxes: det.Boxes, Scores: det.Scores, Landmarks: det.Landmarks}, nil
}

// recognitionEngine batches face crops across requests: each item is a
// chunk of one image's aligned faces, at most MaxBatchFace (or the
// model's fixed batch), and so is each run.
func (s *Service) recognitionEngine(m *loaded) {
	rows := s.opts.MaxBatchFace
	if fb := m.model.(*face.Recognizer).FixedBatch(); fb > 0 {
		rows = fb
	}
	startBatcher(s, m, rows, func(model Model) runFunc[[]float32, [][]float32] {
		r := model.(*face.Recognizer)
		var buf []float32
		return func(ctx context.Context, ins [][]float32, n int) ([][][]float32, error) {
			in := ins[0]
			if len(ins) > 1 {
				buf = buf[:0]
				for _, x := range ins {
					buf = append(buf, x...)
				}
				in = buf
			}
			embs, err := r.EmbedRows(ctx, in, n)
			if err != nil {
				return nil, err
			}
			outs := make([][][]float32, len(ins))
			for i, x := range ins {
				k := len(x) / face.RowSize
				outs[i], embs = embs[:k:k], embs[k:]
			}
			return outs, nil
		}
	})
}

// recognizeFaces aligns the detected faces of img and embeds them, one
// chunk at a time: the next chunk is aligned while the previous one runs,
// and at most two chunks are in flight, so that memory stays bounded
// whatever the number of faces.
func recognizeFaces(ctx context.Context, x *exec, m *loaded, img *imaging.Image, d *FaceDetectionResult) ([]Face, error) {
	r := m.model.(*face.Recognizer)
	det := &face.Detections{Boxes: d.Boxes, Scores: d.Scores, Landmarks: d.Landmarks}
	n, err := r.Check(img, det)
	if err != nil || n == 0 {
		return []Face{}, err
	}
	b := m.batch.(*batcher[[]float32, [][]float32])
	chunk := b.opts.maxRows
	type pending struct {
		it   *item[[]float32, [][]float32]
		from int
	}
	faces := make([]Face, 0, n)
	var inflight []pending
	collect := func(resume bool) error {
		p := inflight[0]
		inflight = inflight[1:]
		embs, err := await(ctx, x, b, p.it, resume, &x.t.Preprocess)
		if err != nil {
			return err
		}
		for i, e := range embs {
			j := p.from + i
			faces = append(faces, Face{Box: det.Boxes[j], Embedding: e, Score: det.Scores[j]})
		}
		return nil
	}
	for from := 0; from < n; from += chunk {
		if err := x.cpu(ctx, &x.t.Preprocess); err != nil {
			return nil, err
		}
		count := min(chunk, n-from)
		rows := make([]float32, count*face.RowSize)
		if err := r.Prepare(img, det, from, from+count, rows); err != nil {
			return nil, err
		}
		it, err := submit(ctx, x, b, rows, count, 0)
		if err != nil {
			return nil, err
		}
		inflight = append(inflight, pending{it, from})
		if len(inflight) == 2 && from+count < n {
			if err := collect(true); err != nil {
				return nil, err
			}
		}
	}
	for len(inflight) > 0 {
		if err := collect(false); err != nil {
			return nil, err
		}
	}
	return faces, nil
}
