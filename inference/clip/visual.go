package clip

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/onnx"
)

// VisualOptions adjust LoadVisual.
type VisualOptions struct {
	// Session is passed to Sessions.NewSession. Its CacheDir defaults to
	// <dir>/visual, so that OpenVINO's cache lands in <dir>/visual/openvino
	// as Immich's does (the runtime appends "openvino").
	Session inference.SessionOptions
	// MaxBatch caps how many images EmbedBatch runs at once on a model
	// whose batch dimension is dynamic. Zero means 16.
	MaxBatch int
	// ResizeWorkers is how many goroutines share one image's resize
	// (imaging.Resampler.Workers). Zero or one resizes on the caller's
	// goroutine, which is what a busy server wants.
	ResizeWorkers int
}

// Visual is a loaded CLIP image encoder: Immich's preprocessing plus the
// ONNX session of visual/model.onnx. Its methods are safe for concurrent
// use.
type Visual struct {
	session      *inference.Session
	pre          *visualPreprocess
	dynamicBatch bool
	maxBatch     int
	dim          atomic.Int64 // 0 until known when the graph leaves it dynamic
	scratch      sync.Pool    // *visualScratch
	workers      int          // VisualOptions.ResizeWorkers
	logger       *slog.Logger
}

// LoadVisual loads the image encoder of the model folder dir
// (<cache>/clip/<name>): visual/preprocess_cfg.json and visual/model.onnx.
// The graph must take one float32 input [batch, 3, size, size] (fixed
// sides, if fixed, equal to the config's size) and return the embedding
// [batch, dim] first.
func LoadVisual(dir string, sessions Sessions, opts VisualOptions, logger *slog.Logger) (*Visual, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	visual := filepath.Join(dir, "visual")
	pre, err := visualReadPreprocess(filepath.Join(visual, "preprocess_cfg.json"))
	if err != nil {
		return nil, err
	}
	so := opts.Session
	if so.CacheDir == "" {
		so.CacheDir = visual
	}
	s, err := sessions.NewSession(filepath.Join(visual, "model.onnx"), so)
	if err != nil {
		return nil, err
	}
	v := &Visual{session: s, pre: pre, maxBatch: opts.MaxBatch, logger: logger}
	if v.maxBatch <= 0 {
		v.maxBatch = 16
	}
	if err := v.bind(); err != nil {
		_ = s.Close()
		return nil, err
	}
	v.workers = opts.ResizeWorkers
	v.scratch.New = func() any { return &visualScratch{} }
	logger.Debug("loaded CLIP visual model", "dir", dir, "size", pre.size, "mean", pre.mean, "std", pre.std,
		"dynamic_batch", v.dynamicBatch, "dim", v.dim.Load(), "provider", s.Provider())
	return v, nil
}

// bind checks the graph's interface against the preprocessing config.
func (v *Visual) bind() error {
	s := v.session
	in := s.Inputs()
	if len(in) != 1 {
		return fmt.Errorf("%w: %s: visual model has %d inputs, want 1 (image)", inference.ErrInput, s.Path(), len(in))
	}
	x := in[0]
	if x.Type != onnx.Float && x.Type != onnx.Undefined {
		return fmt.Errorf("%w: %s: input %s is %s, want float32", inference.ErrInput, s.Path(), x.Name, x.Type)
	}
	if x.Dims != nil {
		if len(x.Dims) != 4 {
			return fmt.Errorf("%w: %s: input %s has rank %d, want 4 (NCHW)", inference.ErrInput, s.Path(), x.Name, len(x.Dims))
		}
		for i, want := range []int{3, v.pre.size, v.pre.size} {
			if d := x.Dims[i+1]; !d.Dynamic() && int(d.Value) != want {
				return fmt.Errorf("%w: %s: input %s is %v, preprocess_cfg.json wants [N 3 %d %d]",
					inference.ErrInput, s.Path(), x.Name, x.Dims, v.pre.size, v.pre.size)
			}
		}
		v.dynamicBatch = x.Dims[0].Dynamic()
	}
	out := s.Outputs()
	if len(out) == 0 || (out[0].Type != onnx.Float && out[0].Type != onnx.Undefined) {
		return fmt.Errorf("%w: %s: visual model has no float32 output", inference.ErrInput, s.Path())
	}
	if d := out[0].Dims; len(d) >= 2 && !d[len(d)-1].Dynamic() {
		v.dim.Store(d[len(d)-1].Value)
	}
	return nil
}

// Size is the side of the square the model takes.
func (v *Visual) Size() int { return v.pre.size }

// Dim is the embedding size; 0 until the first embedding when the graph
// does not declare it.
func (v *Visual) Dim() int { return int(v.dim.Load()) }

// Provider is the execution provider the session runs on.
func (v *Visual) Provider() string { return v.session.Provider() }

// Close releases the session (after runs in progress).
func (v *Visual) Close() error { return v.session.Close() }

// SplitRuns is how many single-threaded runs at once a batch of several
// images may run as (inference.SessionOptions.SplitBatch), 1 when
// batches run whole.
func (v *Visual) SplitRuns() int { return v.session.SplitRuns() }

// Preprocess writes img's model input into dst (grown when it is too
// small) and returns it: 3×Size×Size float32 values, CHW, the exact values
// Immich computes with PIL and numpy (shortest side to Size with PIL's
// bicubic, centre crop, /255, (x-mean)/std). An empty image gives the
// tensor of a black one.
func (v *Visual) Preprocess(img *imaging.Image, dst []float32) []float32 {
	return v.PreprocessParallel(img, dst, v.workers)
}

// PreprocessParallel is Preprocess with the resize shared by workers
// goroutines (0 or 1: the caller's alone). It shortens one image's
// preprocessing when cores are idle; on a busy machine it only moves CPU
// time around. The result does not depend on workers.
func (v *Visual) PreprocessParallel(img *imaging.Image, dst []float32, workers int) []float32 {
	s := v.scratch.Get().(*visualScratch)
	defer v.scratch.Put(s)
	s.rs.Workers = workers
	return v.pre.preprocess(s, visualNonEmpty(img), dst)
}

func visualNonEmpty(img *imaging.Image) *imaging.Image {
	if img == nil || img.W <= 0 || img.H <= 0 || len(img.Pix) < img.W*img.H*3 {
		return imaging.New(1, 1)
	}
	return img
}

// Check tells whether img can be embedded (Embed's checks, for callers of
// Preprocess, which turns an empty image into a black one).
func (v *Visual) Check(img *imaging.Image) error { return visualCheck(img) }

func visualCheck(img *imaging.Image) error {
	if img == nil || img.W <= 0 || img.H <= 0 {
		return fmt.Errorf("clip: %w", imaging.ErrEmpty)
	}
	if len(img.Pix) != img.W*img.H*3 {
		return fmt.Errorf("%w: clip: image %d×%d has %d bytes", inference.ErrInput, img.W, img.H, len(img.Pix))
	}
	return nil
}

// Embed returns the embedding of one image (L2-normalised by the graph),
// as Immich's outputs[0][0].
func (v *Visual) Embed(ctx context.Context, img *imaging.Image) ([]float32, error) {
	if err := visualCheck(img); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", inference.ErrCanceled, err)
	}
	s := v.scratch.Get().(*visualScratch)
	defer v.scratch.Put(s)
	s.rs.Workers = v.workers
	s.in = v.pre.preprocess(s, img, s.in)
	out, err := v.run(ctx, s.in, 1)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// EmbedBatch returns the embeddings of imgs, in order. When the graph's
// batch dimension is dynamic the images go through the model together (up
// to MaxBatch at a time); otherwise one by one.
func (v *Visual) EmbedBatch(ctx context.Context, imgs []*imaging.Image) ([][]float32, error) {
	for i, img := range imgs {
		if err := visualCheck(img); err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
	}
	res := make([][]float32, 0, len(imgs))
	if !v.dynamicBatch {
		for _, img := range imgs {
			e, err := v.Embed(ctx, img)
			if err != nil {
				return nil, err
			}
			res = append(res, e)
		}
		return res, nil
	}
	per := 3 * v.pre.size * v.pre.size
	var buf []float32
	for start := 0; start < len(imgs); start += v.maxBatch {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: %w", inference.ErrCanceled, err)
		}
		chunk := imgs[start:min(start+v.maxBatch, len(imgs))]
		if buf == nil {
			buf = make([]float32, per*len(chunk))
		}
		buf = buf[:per*len(chunk)]
		for i, img := range chunk {
			v.Preprocess(img, buf[i*per:(i+1)*per])
		}
		out, err := v.run(ctx, buf, len(chunk))
		if err != nil {
			return nil, err
		}
		res = append(res, out...)
	}
	return res, nil
}

// DynamicBatch tells whether the graph's batch dimension is dynamic. When
// it is not, EmbedPrepared takes one image at a time.
func (v *Visual) DynamicBatch() bool { return v.dynamicBatch }

// InputSize is the number of float32 values of one image's model input
// (3×Size×Size), as Preprocess writes it.
func (v *Visual) InputSize() int { return 3 * v.pre.size * v.pre.size }

// EmbedPrepared runs n images preprocessed by Preprocess (n×InputSize
// values, one after the other) through the model and returns their
// embeddings. It is the model half of Embed: images of any requests may
// run together, and each embedding depends only on its own image.
func (v *Visual) EmbedPrepared(ctx context.Context, in []float32, n int) ([][]float32, error) {
	if n <= 0 || len(in) != n*v.InputSize() {
		return nil, fmt.Errorf("%w: clip: %d values for %d images of %d", inference.ErrInput, len(in), n, v.InputSize())
	}
	if n > 1 && !v.dynamicBatch {
		return nil, fmt.Errorf("%w: clip: %s takes one image at a time", inference.ErrInput, v.session.Path())
	}
	return v.run(ctx, in, n)
}

// run feeds n preprocessed images and splits the first output into n
// embeddings.
func (v *Visual) run(ctx context.Context, in []float32, n int) ([][]float32, error) {
	size := int64(v.pre.size)
	out, err := v.session.Run(ctx, inference.F32(in, int64(n), 3, size, size))
	if err != nil {
		return nil, err
	}
	emb := out[0]
	if emb.Float32 == nil || len(emb.Shape) < 2 || emb.Shape[0] != int64(n) || emb.Len() == 0 {
		return nil, fmt.Errorf("clip: %s: visual output is %v, want float32 [%d, dim]", v.session.Path(), emb.Shape, n)
	}
	dim := emb.Len() / n
	if old := v.dim.Swap(int64(dim)); old != 0 && old != int64(dim) {
		v.logger.Warn("visual embedding size changed", "model", v.session.Path(), "was", old, "now", dim)
	}
	res := make([][]float32, n)
	for i := range res {
		res[i] = emb.Float32[i*dim : (i+1)*dim : (i+1)*dim]
	}
	return res, nil
}
