package pool

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/clip"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/inference/ocr"
)

// The methods below run models outside /predict, for the bulk indexer and
// search, through the same cache and engine: their images are
// preprocessed on the CPU workers (behind /predict requests) and their
// model runs join the same cross-request batches.

// EmbedImages runs a CLIP model's image encoder on decoded images and
// returns their embeddings in order. The images are preprocessed in
// parallel, each submitted as soon as it is ready, so that the first
// batch runs while the rest are still being resized.
func (s *Service) EmbedImages(ctx context.Context, model string, imgs []*imaging.Image) ([][]float32, error) {
	defer s.busy()()
	if len(imgs) == 0 {
		return nil, nil
	}
	m, release, err := s.acquireModel(ctx, "clip", "visual", model)
	if err != nil {
		return nil, err
	}
	defer release()
	v := m.model.(*clip.Visual)
	for i, img := range imgs {
		if err := v.Check(img); err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b := m.batch.(*batcher[[]float32, []float32])
	items := make([]*item[[]float32, []float32], len(imgs))
	errs := make([]error, len(imgs))
	var next sync.Mutex
	n := 0
	var wg sync.WaitGroup
	for range min(len(imgs), s.opts.Workers.Workers, runtime.NumCPU()) {
		wg.Go(func() {
			var t Timings
			x := s.newExec(&t, PriorityBackground)
			defer x.done()
			for {
				next.Lock()
				i := n
				n++
				next.Unlock()
				if i >= len(imgs) || ctx.Err() != nil {
					return
				}
				x.headFor(b)
				if errs[i] = x.cpu(ctx, &t.Preprocess); errs[i] != nil {
					cancel()
					return
				}
				in := v.Preprocess(imgs[i], nil)
				x.yield()
				if items[i], errs[i] = submit(ctx, x, b, in, 1, 0); errs[i] != nil {
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	out := make([][]float32, len(imgs))
	for i, it := range items {
		if it == nil {
			return nil, ctx.Err()
		}
		if out[i], err = b.await(ctx, it); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Decode decodes an image with the service's decoder: minSide as
// DecodeFunc's (see VisualMinSide), within the service's limits and
// preprocessing mode. It returns the image and the original's size.
func (s *Service) Decode(data []byte, minSide int) (*imaging.Image, int, int, error) {
	return s.opts.Decode(data, minSide)
}

// DecodeAhead is how many decoded photos a bulk indexer should hold at
// once for a CLIP model's image encoder (jobs.WorkerOptions.MaxImages),
// loading the model if needed. On the CPU it is one batch: the cores
// that would decode photos further ahead are the ones running the model,
// so the photos would only wait in memory and share the cores with it
// (IndexPipeline, exact: 89-97 ms of CPU per photo with 8 against
// 114-118 with 32, and less than half the allocations). On an
// accelerator it is two batches: the CPU prepares the next while the
// device runs one.
func (s *Service) DecodeAhead(ctx context.Context, model string) (int, error) {
	m, release, err := s.acquireModel(ctx, "clip", "visual", model)
	if err != nil {
		return 0, err
	}
	defer release()
	dev := m.Device()
	if gateOf(dev) == inference.CPU {
		return s.batchMax(dev), nil
	}
	return 2 * s.batchMax(dev), nil
}

// VisualMinSide is the shortest image side a CLIP model's image encoder
// needs: the minSide to decode with for it alone (loading the model if it
// is not loaded).
func (s *Service) VisualMinSide(ctx context.Context, model string) (int, error) {
	m, release, err := s.acquireModel(ctx, "clip", "visual", model)
	if err != nil {
		return 0, err
	}
	defer release()
	return m.model.(*clip.Visual).Size(), nil
}

// EmbedText runs a CLIP model's text encoder on a query.
func (s *Service) EmbedText(ctx context.Context, model, text, language string) ([]float32, error) {
	defer s.busy()()
	m, release, err := s.acquireModel(ctx, "clip", "textual", model)
	if err != nil {
		return nil, err
	}
	defer release()
	var t Timings
	x := s.newExec(&t, PriorityBackground)
	defer x.done()
	if err := x.cpu(ctx, &t.Preprocess); err != nil {
		return nil, err
	}
	return embedText(ctx, x, m, text, language)
}

// Faces detects the faces of a decoded image and embeds them, as a
// facial-recognition request with detection and recognition does.
func (s *Service) Faces(ctx context.Context, model string, img *imaging.Image, minScore float32) ([]Face, error) {
	defer s.busy()()
	ctx, det, rec, x, done, err := s.acquirePipeline(ctx, "facial-recognition", model)
	if err != nil {
		return nil, err
	}
	defer done()
	d, err := detectFaces(ctx, x, det, img, minScore)
	if err != nil {
		return nil, err
	}
	return recognizeFaces(ctx, x, rec, img, d)
}

// Text reads the text of a decoded image, as an OCR request with
// detection and recognition does.
func (s *Service) Text(ctx context.Context, model string, img *imaging.Image, o ocr.DetectOptions, minScore float32) (*OCRResult, error) {
	defer s.busy()()
	ctx, det, rec, x, done, err := s.acquirePipeline(ctx, "ocr", model)
	if err != nil {
		return nil, err
	}
	defer done()
	d, err := detectText(ctx, x, det, img, o)
	if err != nil {
		return nil, err
	}
	return recognizeText(ctx, x, rec, img, d, minScore)
}

// acquirePipeline acquires the detector and the recogniser of a task's
// model and an executor at background priority, for one image run through
// both; done releases all of them.
// The returned context ends with done, so that work still queued for the
// image is dropped when the caller returns early.
func (s *Service) acquirePipeline(ctx context.Context, task, model string) (_ context.Context, det, rec *loaded, x *exec, done func(), err error) {
	det, releaseDet, err := s.acquireModel(ctx, task, "detection", model)
	if err != nil {
		return nil, nil, nil, nil, nil, err
	}
	rec, releaseRec, err := s.acquireModel(ctx, task, "recognition", model)
	if err != nil {
		releaseDet()
		return nil, nil, nil, nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var t Timings
	x = s.newExec(&t, PriorityBackground)
	return ctx, det, rec, x, func() {
		x.done()
		cancel()
		releaseRec()
		releaseDet()
	}, nil
}

// acquireModel resolves and acquires the model of task/typ; release it
// when done.
func (s *Service) acquireModel(ctx context.Context, task, typ, model string) (*loaded, func(), error) {
	key, _, err := s.resolve(Entry{Task: task, Type: typ, ModelName: model})
	if err != nil {
		return nil, nil, err
	}
	h, err := s.cache.Acquire(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	return h.Model.(*loaded), h.Release, nil
}
