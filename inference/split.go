package inference

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/mlserve/mlserve/onnx"
)

// twin is the single-threaded copy of a CPU session opened with
// SplitBatch. It shares the session's weights (sharedWeights), so it
// costs about its own activations. A batch that splits (splits) runs as
// runs parts at once on it, one per intra-op thread of the session: the
// caller's goroutine runs one part and helpers, one per other thread,
// the rest.
type twin struct {
	s    *ort.DynamicAdvancedSession
	runs int
	work chan func()
	wg   sync.WaitGroup
}

// newTwin starts the twin's helpers: runs-1 goroutines on threads of
// their own, at the runtime's nice value like the session's pool threads.
func newTwin(s *ort.DynamicAdvancedSession, runs, nice int) *twin {
	t := &twin{s: s, runs: runs, work: make(chan func())}
	for range runs - 1 {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			if nice > 0 {
				// The priority cannot be raised again without
				// privileges: the thread ends with the goroutine.
				runtime.LockOSThread()
				_ = NiceThread(nice)
			}
			for f := range t.work {
				f()
			}
		}()
	}
	return t
}

// destroy stops the helpers and releases the session.
func (t *twin) destroy() error {
	close(t.work)
	t.wg.Wait()
	return t.s.Destroy()
}

// openSplit builds the CPU session of path with intra threads and its
// single-threaded twin, sharing the weights. It fails where the weights
// cannot be shared (the caller then opens a plain session).
func (r *Runtime) openSplit(d *Device, path string, info *onnx.Info, so SessionOptions, intra int) (_ *ortBackend, err error) {
	for _, v := range append(append([]onnx.ValueInfo{}, info.Inputs...), info.Outputs...) {
		if len(v.Dims) > 0 && !v.Dims[0].Dynamic() {
			return nil, fmt.Errorf("%s has a fixed batch (%s is %v)", path, v.Name, v.Dims)
		}
	}
	w, err := mapWeights(path)
	if err != nil {
		return nil, err
	}
	var wide, one *ort.DynamicAdvancedSession
	defer func() {
		if err != nil {
			if wide != nil {
				_ = wide.Destroy()
			}
			if one != nil {
				_ = one.Destroy()
			}
			_ = w.close()
		}
	}()
	build := func(threads int) (*ort.DynamicAdvancedSession, error) {
		opts, err := r.sessionOptions(d, so.CacheDir, threads)
		if err != nil {
			return nil, err
		}
		defer func() { _ = opts.Destroy() }()
		if err := w.add(opts); err != nil {
			return nil, err
		}
		return ort.NewDynamicAdvancedSessionWithPrepackedWeights(path, info.InputNames(), info.OutputNames(), opts, w.container)
	}
	if wide, err = build(intra); err != nil {
		return nil, err
	}
	if one, err = build(1); err != nil {
		return nil, err
	}
	w.drop()
	return &ortBackend{s: wide, api: r.api, arena: d.arena, weights: w, twin: newTwin(one, intra, r.opts.ThreadNice)}, nil
}

// batchRows is the rows of a batch whose every input has them on axis 0,
// or 0 when the inputs do not agree.
func batchRows(inputs []Tensor) int {
	n := -1
	for _, t := range inputs {
		if len(t.Shape) == 0 || (n >= 0 && t.Shape[0] != int64(n)) {
			return 0
		}
		n = int(t.Shape[0])
	}
	return max(n, 0)
}

// rows returns rows [from, to) of a tensor whose axis 0 is the batch.
func (t Tensor) rows(from, to int) Tensor {
	n := int(t.Shape[0])
	per := 0
	if n > 0 {
		per = t.dataLen() / n
	}
	a, b := from*per, to*per
	shape := append([]int64{int64(to - from)}, t.Shape[1:]...)
	switch {
	case t.Float32 != nil:
		return Tensor{Shape: shape, Float32: t.Float32[a:b:b]}
	case t.Int32 != nil:
		return Tensor{Shape: shape, Int32: t.Int32[a:b:b]}
	case t.Int64 != nil:
		return Tensor{Shape: shape, Int64: t.Int64[a:b:b]}
	}
	return Tensor{Shape: shape, Uint8: t.Uint8[a:b:b]}
}

// concatRows joins the parts' outputs along axis 0; each part's output
// must have its part's rows there and the same other dimensions.
func concatRows(parts []Tensor, rows []int) (Tensor, error) {
	first := parts[0]
	if len(first.Shape) == 0 {
		return Tensor{}, errors.New("a scalar output cannot be joined along the batch")
	}
	total := 0
	for i, p := range parts {
		if len(p.Shape) != len(first.Shape) || p.Shape[0] != int64(rows[i]) || p.Type() != first.Type() {
			return Tensor{}, fmt.Errorf("part %d has shape %v for %d rows (first part %v): the batch is not on axis 0", i, p.Shape, rows[i], first.Shape)
		}
		for k := 1; k < len(p.Shape); k++ {
			if p.Shape[k] != first.Shape[k] {
				return Tensor{}, fmt.Errorf("parts have shapes %v and %v", first.Shape, p.Shape)
			}
		}
		total += rows[i]
	}
	shape := append([]int64{int64(total)}, first.Shape[1:]...)
	switch first.Type() {
	case onnx.Float:
		return Tensor{Shape: shape, Float32: join(parts, func(t Tensor) []float32 { return t.Float32 })}, nil
	case onnx.Int32:
		return Tensor{Shape: shape, Int32: join(parts, func(t Tensor) []int32 { return t.Int32 })}, nil
	case onnx.Int64:
		return Tensor{Shape: shape, Int64: join(parts, func(t Tensor) []int64 { return t.Int64 })}, nil
	}
	return Tensor{Shape: shape, Uint8: join(parts, func(t Tensor) []uint8 { return t.Uint8 })}, nil
}

func join[T any](parts []Tensor, data func(Tensor) []T) []T {
	n := 0
	for _, p := range parts {
		n += len(data(p))
	}
	out := make([]T, 0, n)
	for _, p := range parts {
		out = append(out, data(p)...)
	}
	return out
}

// runSplit runs a batch of n rows as parts at once on the twin and joins
// their outputs. The caller holds s.mu for reading.
func (s *Session) runSplit(ctx context.Context, t *twin, dev *Device, inputs []Tensor, n int) ([]Tensor, error) {
	k := min(n, t.runs)
	rows := make([]int, k)
	for i := range rows {
		rows[i] = n / k
		if i < n%k {
			rows[i]++
		}
	}
	outs := make([][]Tensor, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	from := 0
	for i := range k {
		part := make([]Tensor, len(inputs))
		for j, in := range inputs {
			part[j] = in.rows(from, from+rows[i])
		}
		from += rows[i]
		run := func() {
			defer wg.Done()
			outs[i], errs[i] = s.runPart(ctx, t, dev, part)
		}
		wg.Add(1)
		if i == k-1 {
			run()
		} else {
			t.work <- run
		}
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err // the parts of a canceled run all say so: one is enough
		}
	}
	res := make([]Tensor, len(s.info.Outputs))
	for j := range res {
		parts := make([]Tensor, k)
		for i := range k {
			parts[i] = outs[i][j]
		}
		joined, err := concatRows(parts, rows)
		if err != nil {
			return nil, fmt.Errorf("output %s of %s: %w", s.info.Outputs[j].Name, s.path, err)
		}
		res[j] = joined
	}
	return res, nil
}

// runPart runs one part of a split batch on the twin.
func (s *Session) runPart(ctx context.Context, t *twin, dev *Device, inputs []Tensor) ([]Tensor, error) {
	return s.runWith(ctx, dev, inputs, runInfo{}, func(in, out []ort.Value, ro *ort.RunOptions, _ runInfo) error {
		return t.s.RunWithOptions(in, out, ro)
	})
}

// SplitRuns is how many single-threaded runs at once a large enough batch
// may run as (SessionOptions.SplitBatch), or 1 when batches run whole.
func (s *Session) SplitRuns() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if b, ok := s.backend.(*ortBackend); ok && b.twin != nil {
		return b.twin.runs
	}
	return 1
}

// splits tells whether a batch of n rows runs split into runs parts: when
// every part gets a row and the parts are even enough that at most about
// an eighth of the threads would wait at the end for the longest part
// (ceil(n/runs)·runs ≤ 9/8·n). Otherwise one run on every thread is the
// faster: a multi-threaded run loses less than that to its threads
// waiting for each other (8-20% measured on two cores), and a batch of
// fewer rows than threads would leave cores idle. On two cores every
// even batch splits, and odd ones from 9 rows; on eight, multiples of 8.
func splits(n, runs int) bool {
	if n < runs || runs < 2 {
		return false
	}
	parts := (n + runs - 1) / runs
	return 8*parts*runs <= 9*n
}
