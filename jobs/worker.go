package jobs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/search"
)

// ImageEmbedder computes CLIP image embeddings for a batch (the CLIP
// visual model, through the inference pool). out[i] belongs to imgs[i].
type ImageEmbedder interface {
	EmbedImages(ctx context.Context, imgs []*imaging.Image) ([][]float32, error)
}

// EmbedFunc adapts a batch function, such as (*clip.Visual).EmbedBatch,
// to ImageEmbedder.
type EmbedFunc func(ctx context.Context, imgs []*imaging.Image) ([][]float32, error)

// EmbedImages implements ImageEmbedder.
func (f EmbedFunc) EmbedImages(ctx context.Context, imgs []*imaging.Image) ([][]float32, error) {
	return f(ctx, imgs)
}

// Result is what a worker computed for one item.
type Result struct {
	Item Item
	// Hash is the SHA-256 of the bytes that were embedded; Size their
	// length.
	Hash []byte
	Size int64
	// Embedding is the CLIP image embedding.
	Embedding []float32
	// Faces and OCR are the face and text results when the worker has an
	// Analyzer that runs those tasks (nil: not run).
	Faces []search.Face
	OCR   []search.OCRBox
}

// ImageAnalyzer runs the face and OCR pipelines on one decoded image
// (through the inference pool). A task it does not run returns nil; one
// that ran and found nothing returns an empty, non-nil slice.
type ImageAnalyzer interface {
	Analyze(ctx context.Context, img *imaging.Image) ([]search.Face, []search.OCRBox, error)
}

// Sink stores a batch of results, all or nothing, idempotently.
type Sink interface {
	Write(ctx context.Context, rs []Result) error
}

// WorkerOptions configure a Worker.
type WorkerOptions struct {
	// Model is the CLIP model the worker runs; items for another model are
	// refused (dead-lettered).
	Model string
	// BatchSize is how many items are read, embedded and written together
	// (default 16).
	BatchSize int
	// DecodeWorkers bounds the files read and decoded at once (default
	// GOMAXPROCS).
	DecodeWorkers int
	// ShutdownTimeout is how long a batch in flight may run on after the
	// worker's context ends; then its items are handed back (default 30s).
	ShutdownTimeout time.Duration
	// Heartbeat is how often the items of a batch in flight are extended
	// (default 20s; keep it well under the queue's visibility timeout).
	Heartbeat time.Duration
	// Backoff is the first wait after a database or queue error; it
	// doubles up to MaxBackoff (defaults 200ms and 10s).
	Backoff, MaxBackoff time.Duration
	// IsTransient tells outages (wait and retry the batch, attempts
	// unchanged) from item errors (charged to the item); default IsOutage.
	// It applies to inference and to database writes.
	IsTransient func(error) bool
	// Paths maps an item's path to where this host reads it (an Immich
	// library or a shared folder mounted elsewhere); no rules: as is.
	Paths search.PathMap
	// ReadFile and Decode read and decode an image (defaults os.ReadFile
	// and imaging.Decode).
	ReadFile func(path string) ([]byte, error)
	Decode   func([]byte) (*imaging.Image, error)
	// Analyzer, when set, also runs faces and OCR on every image (our own
	// schema only: Immich's own jobs own its face and OCR tables).
	Analyzer ImageAnalyzer

	// hook, for tests, is called at each stage of a batch.
	hook func(stage string, ds []Delivery)
}

// Stats are a worker's counters since it started. Durations add up the
// time spent in each stage, over all batches.
type Stats struct {
	Batches, Items      int64
	Done, Retried, Dead int64
	Read, Decode, Infer time.Duration
	Write, Ack          time.Duration
}

// Worker embeds the items of a queue and writes them to a sink. Run may be
// called from several goroutines at once; they share the counters.
type Worker struct {
	q      Queue
	emb    ImageEmbedder
	sink   Sink
	opts   WorkerOptions
	logger *slog.Logger

	batches, items, done, retried, dead  atomic.Int64
	tRead, tDecode, tInfer, tWrite, tAck atomic.Int64 // nanoseconds
}

// NewWorker returns a worker.
func NewWorker(q Queue, emb ImageEmbedder, sink Sink, opts WorkerOptions, logger *slog.Logger) *Worker {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 16
	}
	if opts.DecodeWorkers <= 0 {
		opts.DecodeWorkers = runtime.GOMAXPROCS(0)
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 20 * time.Second
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 200 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 10 * time.Second
	}
	if opts.IsTransient == nil {
		opts.IsTransient = IsOutage
	}
	if opts.ReadFile == nil {
		opts.ReadFile = os.ReadFile
	}
	if opts.Decode == nil {
		opts.Decode = imaging.Decode
	}
	return &Worker{q: q, emb: emb, sink: sink, opts: opts, logger: logger}
}

// Stats returns the counters.
func (w *Worker) Stats() Stats {
	return Stats{
		Batches: w.batches.Load(), Items: w.items.Load(),
		Done: w.done.Load(), Retried: w.retried.Load(), Dead: w.dead.Load(),
		Read: time.Duration(w.tRead.Load()), Decode: time.Duration(w.tDecode.Load()),
		Infer: time.Duration(w.tInfer.Load()), Write: time.Duration(w.tWrite.Load()),
		Ack: time.Duration(w.tAck.Load()),
	}
}

// Run processes batches until ctx ends (then the batch in flight gets
// ShutdownTimeout to finish, or is handed back) or the queue is drained.
// Queue and database outages are waited out, not returned.
func (w *Worker) Run(ctx context.Context) error {
	// Work continues past ctx for ShutdownTimeout; this goroutine is the
	// clock, and Run waits for it.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	finished := make(chan struct{})
	var clock sync.WaitGroup
	clock.Go(func() {
		select {
		case <-finished:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(w.opts.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-finished:
		case <-t.C:
			cancelWork()
		}
	})
	defer clock.Wait()
	defer close(finished)

	wait := w.opts.Backoff
	for ctx.Err() == nil {
		start := time.Now()
		ds, err := w.q.Read(ctx, w.opts.BatchSize)
		w.tRead.Add(int64(time.Since(start)))
		if errors.Is(err, ErrDrained) {
			return nil
		}
		if errors.Is(err, ErrDeadLetterFull) {
			return err
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			w.logger.Warn("queue unavailable; retrying", "err", err, "in", wait)
			sleep(ctx, wait)
			wait = min(2*wait, w.opts.MaxBackoff)
			continue
		}
		wait = w.opts.Backoff
		if len(ds) == 0 {
			continue
		}
		if err := w.process(work, ds); err != nil {
			return err
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (w *Worker) hook(stage string, ds []Delivery) {
	if w.opts.hook != nil {
		w.opts.hook(stage, ds)
	}
}

// slot is one delivery's way through a batch.
type slot struct {
	d         Delivery
	img       *imaging.Image
	hash      []byte
	size      int64
	emb       []float32
	faces     []search.Face
	ocr       []search.OCRBox
	err       error
	permanent bool
}

func (s *slot) fail(err error, permanent bool) {
	s.err, s.permanent = err, permanent || errors.Is(err, ErrPermanent)
}

// process runs one batch: decode, embed, write, then acknowledge. ctx is
// the work context: it ends only ShutdownTimeout after the worker's. It
// returns an error only when the worker must stop (ErrDeadLetterFull).
func (w *Worker) process(ctx context.Context, ds []Delivery) error {
	w.batches.Add(1)
	w.items.Add(int64(len(ds)))
	w.hook("read", ds)

	beat, stopBeat := context.WithCancel(ctx)
	var beats sync.WaitGroup
	beats.Go(func() { w.heartbeat(beat, ds) })
	defer beats.Wait()
	defer stopBeat()

	slots := make([]*slot, len(ds))
	for i, d := range ds {
		slots[i] = &slot{d: d}
	}
	start := time.Now()
	w.decode(ctx, slots)
	w.tDecode.Add(int64(time.Since(start)))
	w.hook("decoded", ds)
	if ctx.Err() != nil {
		w.release(slots)
		return nil
	}

	start = time.Now()
	w.embed(ctx, slots)
	w.analyze(ctx, slots)
	w.tInfer.Add(int64(time.Since(start)))
	w.hook("embedded", ds)
	if ctx.Err() != nil {
		w.release(slots)
		return nil
	}

	start = time.Now()
	committed := w.write(ctx, slots)
	w.tWrite.Add(int64(time.Since(start)))
	if !committed {
		w.release(slots)
		return nil
	}
	w.hook("written", ds)

	start = time.Now()
	err := w.settle(ctx, slots)
	w.tAck.Add(int64(time.Since(start)))
	w.hook("acked", ds)
	return err
}

// heartbeat extends the batch's items until ctx ends.
func (w *Worker) heartbeat(ctx context.Context, ds []Delivery) {
	t := time.NewTicker(w.opts.Heartbeat)
	defer t.Stop()
	lost := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			err := w.q.Extend(ctx, ds)
			switch {
			case err == nil || ctx.Err() != nil:
			case errors.Is(err, ErrLost):
				if !lost {
					w.logger.Warn("another worker took over items of this batch (this one stalled past the visibility timeout); they may be processed twice, which is harmless", "err", err)
				}
				lost = true
			default:
				w.logger.Warn("cannot extend items in flight", "err", err)
			}
		}
	}
}

// decode reads and decodes the batch's files, in parallel.
func (w *Worker) decode(ctx context.Context, slots []*slot) {
	var g errgroup.Group
	g.SetLimit(w.opts.DecodeWorkers)
	for _, s := range slots {
		g.Go(func() error {
			if ctx.Err() != nil {
				return nil
			}
			it := s.d.Item
			if w.opts.Model != "" && it.Model != "" && it.Model != w.opts.Model {
				s.fail(fmt.Errorf("%w: item is for model %s, this worker runs %s", ErrPermanent, it.Model, w.opts.Model), true)
				return nil
			}
			local, err := w.opts.Paths.Map(it.Path)
			if err != nil {
				s.fail(err, true)
				return nil
			}
			data, err := w.opts.ReadFile(local)
			if err != nil {
				// A file that is gone will not come back by retrying;
				// other read errors (a mount away, permissions) might.
				s.fail(fmt.Errorf("read %s: %w", local, err), errors.Is(err, fs.ErrNotExist))
				return nil
			}
			h := sha256.Sum256(data)
			s.hash, s.size = h[:], int64(len(data))
			img, err := w.opts.Decode(data)
			if err != nil {
				s.fail(fmt.Errorf("decode %s: %w", local, err), true)
				return nil
			}
			s.img = img
			return nil
		})
	}
	_ = g.Wait()
}

// embed runs the batch through the model. An outage (the pool is full,
// the model does not load, ...) is waited out with the items held, without
// charging them an attempt. Any other failure is narrowed down by trying
// each image alone, so that one bad image does not fail the others.
func (w *Worker) embed(ctx context.Context, slots []*slot) {
	var todo []*slot
	for _, s := range slots {
		if s.err == nil {
			todo = append(todo, s)
		}
	}
	if len(todo) == 0 {
		return
	}
	try := func(ss []*slot) func(context.Context) error {
		return func(ctx context.Context) error {
			imgs := make([]*imaging.Image, len(ss))
			for i, s := range ss {
				imgs[i] = s.img
			}
			out, err := w.emb.EmbedImages(ctx, imgs)
			if err != nil {
				return err
			}
			if len(out) != len(ss) {
				return fmt.Errorf("embedder returned %d embeddings for %d images", len(out), len(ss))
			}
			for i, s := range ss {
				if len(out[i]) == 0 {
					return fmt.Errorf("embedder returned an empty embedding for %s", s.d.Item.Path)
				}
				s.emb = out[i]
			}
			return nil
		}
	}
	err := w.retry(ctx, "embed", try(todo), w.opts.IsTransient)
	if err == nil || ctx.Err() != nil {
		return
	}
	if len(todo) == 1 {
		todo[0].fail(fmt.Errorf("embed %s: %w", todo[0].d.Item.Path, err), false)
		return
	}
	w.logger.Warn("batch inference failed; trying images one by one", "err", err, "images", len(todo))
	for _, s := range todo {
		if err := w.retry(ctx, "embed", try([]*slot{s}), w.opts.IsTransient); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.fail(fmt.Errorf("embed %s: %w", s.d.Item.Path, err), false)
		}
	}
}

// analyze runs faces and OCR on each image that embedded. An outage is
// waited out; any other failure fails that item only (it is retried, then
// dead-lettered).
func (w *Worker) analyze(ctx context.Context, slots []*slot) {
	if w.opts.Analyzer == nil {
		return
	}
	for _, s := range slots {
		if s.err != nil || ctx.Err() != nil {
			continue
		}
		err := w.retry(ctx, "analyze", func(ctx context.Context) error {
			faces, text, err := w.opts.Analyzer.Analyze(ctx, s.img)
			if err == nil {
				s.faces, s.ocr = faces, text
			}
			return err
		}, w.opts.IsTransient)
		if err != nil && ctx.Err() == nil {
			s.fail(fmt.Errorf("analyze %s: %w", s.d.Item.Path, err), false)
		}
	}
}

// write stores the batch's results in one transaction. An outage is waited
// out (the items stay held); a data error is narrowed down to the items
// that cause it by writing them one at a time. It returns false when the
// context ended before anything was stored.
func (w *Worker) write(ctx context.Context, slots []*slot) bool {
	var ok []*slot
	for _, s := range slots {
		if s.err == nil {
			ok = append(ok, s)
		}
	}
	if len(ok) == 0 {
		return true
	}
	results := func(ss []*slot) []Result {
		rs := make([]Result, len(ss))
		for i, s := range ss {
			rs[i] = Result{Item: s.d.Item, Hash: s.hash, Size: s.size, Embedding: s.emb, Faces: s.faces, OCR: s.ocr}
		}
		return rs
	}
	err := w.retry(ctx, "write results", func(ctx context.Context) error { return w.sink.Write(ctx, results(ok)) }, w.opts.IsTransient)
	if err == nil {
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	w.logger.Warn("batch write failed; writing items one by one", "err", err, "items", len(ok))
	for _, s := range ok {
		err := w.retry(ctx, "write result", func(ctx context.Context) error { return w.sink.Write(ctx, results([]*slot{s})) }, w.opts.IsTransient)
		if ctx.Err() != nil {
			return false // some may be stored; redelivery rewrites them
		}
		if err != nil {
			s.fail(fmt.Errorf("store %s: %w", s.d.Item.Path, err),
				errors.Is(err, search.ErrDimensionMismatch) || errors.Is(err, search.ErrInvalid) ||
					errors.Is(err, search.ErrUnknownModel) || errors.Is(err, search.ErrModelChanged))
		}
	}
	return true
}

// settle acknowledges what was stored and fails the rest. When the
// dead-letter stream is full, the items it refuses are handed back
// (attempts unchanged) and ErrDeadLetterFull is returned: the worker stops
// rather than drop them.
func (w *Worker) settle(ctx context.Context, slots []*slot) error {
	var acks []Delivery
	var refused []*slot
	var full error
	notFull := func(err error) bool { return !errors.Is(err, ErrDeadLetterFull) }
	for _, s := range slots {
		if s.err == nil {
			acks = append(acks, s.d)
			continue
		}
		err := w.retry(ctx, "fail item", func(ctx context.Context) error { return w.q.Fail(ctx, s.d, s.err, s.permanent) }, notFull)
		if errors.Is(err, ErrDeadLetterFull) {
			full = err
			refused = append(refused, s)
			continue
		}
		if err != nil {
			w.logger.Warn("cannot record a failed item; it will be redelivered", "path", s.d.Item.Path, "err", err)
			continue
		}
		if s.permanent || errors.Is(s.err, ErrPermanent) {
			w.dead.Add(1)
		} else {
			w.retried.Add(1)
		}
		w.logger.Debug("item failed", "path", s.d.Item.Path, "permanent", s.permanent, "err", s.err)
	}
	if len(refused) > 0 {
		w.release(refused)
	}
	if len(acks) == 0 {
		return full
	}
	if err := w.retry(ctx, "acknowledge", func(ctx context.Context) error { return w.q.Ack(ctx, acks) }, always); err != nil {
		// The results are stored; the items will be redelivered and
		// rewritten, which changes nothing.
		w.logger.Warn("cannot acknowledge stored items; they will be redelivered", "items", len(acks), "err", err)
		return full
	}
	w.done.Add(int64(len(acks)))
	return full
}

// release hands the batch back, with a context of its own: the work
// context may be what ended.
func (w *Worker) release(slots []*slot) {
	ds := make([]Delivery, len(slots))
	for i, s := range slots {
		ds[i] = s.d
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.q.Release(ctx, ds); err != nil {
		w.logger.Warn("cannot hand items back; they return after the visibility timeout", "items", len(ds), "err", err)
		return
	}
	w.logger.Info("handed unfinished items back to the queue", "items", len(ds))
}

func always(error) bool { return true }

// retry calls f until it succeeds, returns an error transient says is
// not worth retrying, or ctx ends.
func (w *Worker) retry(ctx context.Context, what string, f func(context.Context) error, transient func(error) bool) error {
	wait := w.opts.Backoff
	for n := 1; ; n++ {
		err := f(ctx)
		if err == nil || !transient(err) {
			if err == nil && n > 1 {
				w.logger.Info("recovered", "op", what, "attempts", n)
			}
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (after %w)", what, ctx.Err(), err)
		}
		if n == 1 || n%10 == 0 {
			w.logger.Warn("temporary failure; retrying", "op", what, "attempt", n, "err", err, "in", wait)
		}
		sleep(ctx, wait)
		wait = min(2*wait, w.opts.MaxBackoff)
	}
}
