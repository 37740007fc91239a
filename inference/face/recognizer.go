package face

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/onnx"
)

// RecognizerOptions configure LoadRecognizer.
type RecognizerOptions struct {
	// MaxBatch caps how many faces go into one run
	// (MACHINE_LEARNING_MAX_BATCH_SIZE__FACIAL_RECOGNITION). 0 runs all
	// faces of a request in one batch when the model's batch dimension is
	// dynamic, as Immich does, up to AutoBatchLimit faces a run (a
	// pathological image with thousands of detections must not allocate
	// gigabytes at once; embeddings do not depend on batching). A model with
	// a fixed batch runs that many faces at a time whatever MaxBatch says:
	// model files are never rewritten.
	MaxBatch int
	// Session is passed to the session (providers, provider cache folder).
	Session inference.SessionOptions
}

// AutoBatchLimit is the most faces one run takes when MaxBatch is 0
// (150 KB of input each).
const AutoBatchLimit = 256

// Recognizer computes face embeddings from aligned crops. It is safe for
// concurrent use; Close must not be called while Recognize runs.
type Recognizer struct {
	sess       *inference.Session
	family     string
	mean, std  float64
	fixedBatch int // 0 when dynamic
	maxBatch   int
	logger     *slog.Logger
}

// LoadRecognizer loads the recognition model in dir
// (<cache>/facial-recognition/<name>/recognition): model.onnx, with the
// family or normalisation of an optional model.json (default: ArcFace as
// insightface runs it). The recognizer owns the session it gets from
// sessions and closes it in Close.
func LoadRecognizer(dir string, sessions Sessions, opts RecognizerOptions, logger *slog.Logger) (*Recognizer, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBatch < 0 {
		return nil, fmt.Errorf("%w: MaxBatch %d", ErrConfig, opts.MaxBatch)
	}
	cfg, err := readConfig(dir, false)
	if err != nil {
		return nil, err
	}
	sess, err := sessions.NewSession(filepath.Join(dir, ModelFile), opts.Session)
	if err != nil {
		return nil, fmt.Errorf("load %s recognizer from %s: %w", cfg.Family, dir, err)
	}
	r, err := newRecognizer(sess, cfg, opts.MaxBatch, logger)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("load %s recognizer from %s: %w", cfg.Family, dir, err), sess.Close())
	}
	logger.Debug("face recognizer loaded", "dir", dir, "family", cfg.Family, "mean", r.mean, "std", r.std,
		"fixed_batch", r.fixedBatch, "max_batch", r.maxBatch, "provider", sess.Provider())
	return r, nil
}

func newRecognizer(sess *inference.Session, cfg Config, maxBatch int, logger *slog.Logger) (*Recognizer, error) {
	in, out := sess.Inputs(), sess.Outputs()
	if len(in) != 1 || in[0].Type != onnx.Float || len(in[0].Dims) != 4 || len(out) < 1 {
		return nil, fmt.Errorf("%w: recognizer wants one float32 [N,3,112,112] input, model has %v", ErrUnsupportedModel, in)
	}
	d := in[0].Dims
	for i, want := range []int64{3, alignSize, alignSize} {
		if dd := d[i+1]; !dd.Dynamic() && dd.Value != want {
			return nil, fmt.Errorf("%w: recognizer input %v is not [N,3,112,112]", ErrUnsupportedModel, in[0])
		}
	}
	if od := out[0].Dims; len(od) != 2 || (!od[0].Dynamic() && !d[0].Dynamic() && od[0].Value != d[0].Value) {
		return nil, fmt.Errorf("%w: recognizer output %v is not [N,dim] for input %v", ErrUnsupportedModel, out[0], in[0])
	}
	r := &Recognizer{sess: sess, family: cfg.Family, maxBatch: maxBatch, logger: logger}
	if !d[0].Dynamic() {
		r.fixedBatch = int(d[0].Value)
		if r.fixedBatch > 1024 {
			return nil, fmt.Errorf("%w: recognizer batch %d", ErrUnsupportedModel, r.fixedBatch)
		}
	}
	switch {
	case cfg.Family == FamilyMobileFaceNet:
		// faceplugin's fr_feature.js: (x−127)/128.
		r.mean, r.std = 127, 128
	case isMXNet(sess.Info().Nodes):
		r.mean, r.std = 0, 1
	default:
		r.mean, r.std = 127.5, 127.5
	}
	if cfg.Mean != nil {
		r.mean = *cfg.Mean
	}
	if cfg.Std != nil {
		r.std = *cfg.Std
	}
	return r, nil
}

// isMXNet is insightface ArcFaceONNX's test for a model converted from
// MXNet, which normalises inside the graph: among the first eight nodes, one
// whose name starts with "Sub" or "_minus" and one with "Mul" or "_mul".
func isMXNet(nodes []onnx.NodeSummary) bool {
	var sub, mul bool
	for _, n := range nodes[:min(8, len(nodes))] {
		if strings.HasPrefix(n.Name, "Sub") || strings.HasPrefix(n.Name, "_minus") {
			sub = true
		}
		if strings.HasPrefix(n.Name, "Mul") || strings.HasPrefix(n.Name, "_mul") {
			mul = true
		}
	}
	return sub && mul
}

// RowSize is the number of float32 values of one face's model input
// (3×112×112, CHW).
const RowSize = 3 * alignSize * alignSize

// Recognize aligns every detected face of img and returns its embedding,
// in the detections' order. No detections give an empty slice without
// running the model.
func (r *Recognizer) Recognize(ctx context.Context, img *imaging.Image, det *Detections) ([]Face, error) {
	n, err := r.Check(img, det)
	if err != nil || n == 0 {
		return []Face{}, err
	}
	batch := r.fixedBatch
	if batch == 0 {
		batch = min(n, AutoBatchLimit)
		if r.maxBatch > 0 {
			batch = min(n, r.maxBatch)
		}
	}
	faces := make([]Face, 0, n)
	blob := make([]float32, batch*RowSize)
	for start := 0; start < n; start += batch {
		count := min(batch, n-start)
		if err := r.Prepare(img, det, start, start+count, blob[:count*RowSize]); err != nil {
			return nil, err
		}
		embs, err := r.EmbedRows(ctx, blob[:count*RowSize], count)
		if err != nil {
			return nil, err
		}
		faces = AppendFaces(faces, det, start, embs)
	}
	return faces, nil
}

// Check validates detections against img before any work and returns
// the number of faces.
func (r *Recognizer) Check(img *imaging.Image, det *Detections) (int, error) {
	n := det.Len()
	if n == 0 {
		return 0, nil
	}
	if len(det.Scores) != n {
		return 0, fmt.Errorf("%w: %d boxes, %d scores", ErrDetections, n, len(det.Scores))
	}
	if len(det.Landmarks) != n {
		return 0, fmt.Errorf("%w: %d boxes, %d landmark sets", ErrDetections, n, len(det.Landmarks))
	}
	if err := checkImage(img); err != nil {
		return 0, err
	}
	return n, nil
}

// FixedBatch is the model's fixed batch size, 0 when its batch dimension
// is dynamic. EmbedRows pads a smaller batch to it.
func (r *Recognizer) FixedBatch() int { return r.fixedBatch }

// Prepare aligns faces from..to-1 of det (after Check) and writes their
// model inputs into dst, RowSize values per face. It is the CPU half of
// Recognize; EmbedRows is the model half, and rows of any images may be
// run together.
func (r *Recognizer) Prepare(img *imaging.Image, det *Detections, from, to int, dst []float32) error {
	if from < 0 || to > det.Len() || from > to || len(dst) < (to-from)*RowSize {
		return fmt.Errorf("%w: faces %d..%d of %d into %d values", ErrDetections, from, to, det.Len(), len(dst))
	}
	src, err := img.Mat()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrImage, err)
	}
	defer src.Close()
	for i := range to - from {
		crop, err := alignCrop(src, det.Landmarks[from+i])
		if errors.Is(err, ErrAlignment) {
			// skimage returns a NaN matrix here and cv2.warpAffine
			// samples garbage; a black crop is the deterministic
			// equivalent, and one bad detection does not fail the
			// request.
			r.logger.Warn("face landmarks cannot be aligned; using a black crop", "face", from+i, "landmarks", det.Landmarks[from+i])
			crop, err = make([]byte, RowSize), nil
		}
		if err != nil {
			return fmt.Errorf("face %d: %w", from+i, err)
		}
		planarBlob(dst[i*RowSize:(i+1)*RowSize], crop, r.mean, r.std)
	}
	return nil
}

// EmbedRows runs n prepared faces (n×RowSize values) through the model and
// returns their embeddings. On a model with a fixed batch, n must not
// exceed it; the rows are padded with zeros.
func (r *Recognizer) EmbedRows(ctx context.Context, rows []float32, n int) ([][]float32, error) {
	if n <= 0 || len(rows) < n*RowSize {
		return nil, fmt.Errorf("%w: %d faces in %d values", ErrDetections, n, len(rows))
	}
	run := n
	in := rows[:n*RowSize]
	if r.fixedBatch > 0 {
		if n > r.fixedBatch {
			return nil, fmt.Errorf("%w: %d faces for a model of batch %d", ErrDetections, n, r.fixedBatch)
		}
		if n < r.fixedBatch {
			run = r.fixedBatch
			in = make([]float32, run*RowSize)
			copy(in, rows[:n*RowSize])
		}
	}
	outs, err := r.sess.Run(ctx, inference.F32(in, int64(run), 3, alignSize, alignSize))
	if err != nil {
		return nil, fmt.Errorf("face recognition: %w", err)
	}
	emb := outs[0]
	if len(emb.Shape) < 2 || emb.Shape[0] != int64(run) || len(emb.Float32) == 0 || len(emb.Float32)%run != 0 {
		return nil, fmt.Errorf("%w: recognizer returned shape %v for %d faces", ErrUnsupportedModel, emb.Shape, run)
	}
	dim := len(emb.Float32) / run
	res := make([][]float32, n)
	for i := range res {
		res[i] = emb.Float32[i*dim : (i+1)*dim : (i+1)*dim]
	}
	return res, nil
}

// AppendFaces appends the faces from, from+1, ... of det with embs, one
// embedding each, to faces.
func AppendFaces(faces []Face, det *Detections, from int, embs [][]float32) []Face {
	for i, e := range embs {
		j := from + i
		faces = append(faces, Face{Box: det.Boxes[j], Embedding: e, Score: det.Scores[j]})
	}
	return faces
}

// Family is the recognizer family ("arcface", "mobilefacenet").
func (r *Recognizer) Family() string { return r.family }

// Provider is the execution provider of the recognition model.
func (r *Recognizer) Provider() string { return r.sess.Provider() }

// Close releases the session.
func (r *Recognizer) Close() error { return r.sess.Close() }
