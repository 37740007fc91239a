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

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/pool"
	"github.com/mlserve/mlserve/search"
)

// ImageEmbedder computes CLIP image embeddings (the CLIP visual model,
// through the inference pool). out[i] belongs to imgs[i]. The worker calls
// it with one image at a time, from many goroutines: the pool batches
// them across calls.
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

// ImageAnalyzer runs the face and OCR pipelines on a decoded image
// (through the inference pool), with the models named. A task that ran
// and found nothing returns an empty, non-nil slice.
type ImageAnalyzer interface {
	Faces(ctx context.Context, model string, img *imaging.Image) ([]search.Face, error)
	Text(ctx context.Context, model string, img *imaging.Image) ([]search.OCRBox, error)
}

// CPUSlots admits CPU work: the inference pool's CPU workers
// (pool.Service.Workers()), so that decoding shares one budget with the
// pool's preprocessing and never oversubscribes the cores.
type CPUSlots interface {
	Acquire(ctx context.Context, p pool.Priority) error
	Release()
}

// Result is what a worker computed for one item.
type Result struct {
	Item Item
	// Hash is the SHA-256 of the bytes that were read; Size their length.
	Hash []byte
	Size int64
	// Embedding is the CLIP image embedding; nil when not asked for.
	Embedding []float32
	// Faces and OCR are the face and text results, with their models; nil
	// when not asked for.
	Faces     []search.Face
	FaceModel string
	OCR       []search.OCRBox
	OCRModel  string
}

// Sink stores a batch of results, all or nothing, idempotently.
type Sink interface {
	Write(ctx context.Context, rs []Result) error
}

// FailureRecorder is a sink that remembers files that cannot be indexed,
// so that later runs skip them until they change (IndexSink over our own
// schema).
type FailureRecorder interface {
	RecordFailures(ctx context.Context, fs []search.Failure) error
}

// WorkerOptions configure a Worker.
type WorkerOptions struct {
	// Model is the CLIP model the worker runs; items for another model are
	// refused (dead-lettered).
	Model string
	// BatchSize is how many items are read, written and acknowledged
	// together (default 16). Inference batches are the pool's.
	BatchSize int
	// MaxImages bounds the decoded images the worker holds at once, all
	// its Run calls together (default 2 × BatchSize; the Indexer asks
	// its engine, pool.Service.DecodeAhead): decoding runs that far ahead
	// of inference.
	MaxImages int
	// CPU admits decoding (reading is not admitted). Nil: GOMAXPROCS slots
	// of the worker's own.
	CPU CPUSlots
	// ShutdownTimeout is how long batches in flight may run on after the
	// worker's context ends; then their items are handed back (default
	// 30s).
	ShutdownTimeout time.Duration
	// Heartbeat is how often the items of a batch in flight are extended
	// (default 20s; keep it well under the queue's visibility timeout).
	Heartbeat time.Duration
	// Backoff is the first wait after an outage; it doubles up to
	// MaxBackoff (defaults 200ms and 10s).
	Backoff, MaxBackoff time.Duration
	// OutageDeadline is how long an outage of the queue, the database or
	// inference is waited out before Run stops with an *OutageError
	// (default DefaultOutageDeadline; negative: forever).
	OutageDeadline time.Duration
	// OpTimeout bounds one attempt of a database operation (default 1
	// minute): a database that never answers is an outage, not a hang.
	OpTimeout time.Duration
	// IsTransient tells outages (wait and retry, attempts unchanged) from
	// item errors (charged to the item); default IsOutage. It applies to
	// inference and to database writes.
	IsTransient func(error) bool
	// Paths maps an item's path to where this host reads it (an Immich
	// library or a shared folder mounted elsewhere); no rules: as is.
	Paths search.PathMap
	// ReadFile and Decode read and decode an image (defaults os.ReadFile
	// and imaging.Decode).
	ReadFile func(path string) ([]byte, error)
	Decode   func([]byte) (*imaging.Image, error)
	// Recycle, if set, is given each decoded image once the item's models
	// are done with it (pool.Service.Recycle: the decoder reuses its
	// pixels instead of allocating and faulting in 9 MB per preview).
	Recycle func(*imaging.Image)
	// Analyzer runs faces and OCR for the items that ask for them (our
	// own schema only: Immich's own jobs own its face and OCR tables).
	Analyzer ImageAnalyzer
	// FaceModel and OCRModel are run on items that name no model of their
	// own; on items without Tasks (older producers), they are run when set.
	FaceModel, OCRModel string
	// FailFast stops Run with ErrAllFailing once this many items failed in
	// inference (not their files) and none was indexed yet: a model that
	// cannot run anything fails once, not once per image (default 2 ×
	// BatchSize; negative: never).
	FailFast int

	// hook, for tests, is called at each stage of a batch.
	hook func(stage string, ds []Delivery)
}

// ErrAllFailing: every item failed in inference and none succeeded (see
// WorkerOptions.FailFast).
var ErrAllFailing = errors.New("every image failed")

// Stats are a worker's counters since it started. Decode and Infer add up
// the time of each item (items overlap), Write and Ack that of each batch.
type Stats struct {
	Batches, Items      int64
	Done, Retried, Dead int64
	// Faces and Lines found in the items done.
	Faces, Lines        int64
	Read, Decode, Infer time.Duration
	Write, Ack          time.Duration
}

// Worker embeds the items of a queue and writes them to a sink. Run may be
// called from several goroutines at once; they share the counters and the
// bound on decoded images.
//
// Items flow through three stages that overlap: each image of a batch is
// read, then decoded on a CPU slot, then embedded (and analysed) through
// the pool, on its own, so that the decoding of one image overlaps the
// inference of the others and the pool forms its batches across images
// and batches. Once every image of a batch is decoded, the next batch is
// read; a batch whose images are all computed is written in one
// transaction and acknowledged while the next ones compute.
type Worker struct {
	q      Queue
	emb    ImageEmbedder
	sink   Sink
	opts   WorkerOptions
	logger *slog.Logger
	retry  retrier
	cpu    CPUSlots
	images chan struct{} // decoded images held

	batches, items, done, retried, dead  atomic.Int64
	faces, lines                         atomic.Int64
	tRead, tDecode, tInfer, tWrite, tAck atomic.Int64 // nanoseconds
	inferFailed                          atomic.Int64 // items failed in inference while none was done
	firstErr                             atomic.Pointer[error]
}

// NewWorker returns a worker.
func NewWorker(q Queue, emb ImageEmbedder, sink Sink, opts WorkerOptions, logger *slog.Logger) *Worker {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 16
	}
	if opts.MaxImages <= 0 {
		opts.MaxImages = 2 * opts.BatchSize
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
	if opts.OutageDeadline == 0 {
		opts.OutageDeadline = DefaultOutageDeadline
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = time.Minute
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
	if opts.FailFast == 0 {
		opts.FailFast = 2 * opts.BatchSize
	}
	cpu := opts.CPU
	if cpu == nil {
		cpu = pool.NewWorkers(pool.WorkersOptions{Workers: runtime.GOMAXPROCS(0)})
	}
	return &Worker{
		q: q, emb: emb, sink: sink, opts: opts, logger: logger, cpu: cpu,
		images: make(chan struct{}, opts.MaxImages),
		retry: retrier{backoff: opts.Backoff, maxBackoff: opts.MaxBackoff, deadline: opts.OutageDeadline,
			timeout: opts.OpTimeout, logger: logger},
	}
}

// Stats returns the counters.
func (w *Worker) Stats() Stats {
	return Stats{
		Batches: w.batches.Load(), Items: w.items.Load(),
		Done: w.done.Load(), Retried: w.retried.Load(), Dead: w.dead.Load(),
		Faces: w.faces.Load(), Lines: w.lines.Load(),
		Read: time.Duration(w.tRead.Load()), Decode: time.Duration(w.tDecode.Load()),
		Infer: time.Duration(w.tInfer.Load()), Write: time.Duration(w.tWrite.Load()),
		Ack: time.Duration(w.tAck.Load()),
	}
}

// Run processes batches until ctx ends (then the batches in flight get
// ShutdownTimeout to finish, or are handed back) or the queue is drained.
// Outages are waited out for OutageDeadline; a longer one stops Run with
// an *OutageError (its batches handed back). It also stops with
// ErrDeadLetterFull and ErrAllFailing.
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

	// The finisher writes and settles batches in the order they were
	// read. After a fatal error it hands back whatever comes.
	ready := make(chan *batch, 1)
	failed := make(chan struct{})
	var fatal error
	var fin sync.WaitGroup
	fin.Go(func() {
		for b := range ready {
			if fatal != nil {
				b.abort()
				w.release(b.slots)
				continue
			}
			if err := w.finish(work, b); err != nil {
				fatal = err
				close(failed)
			}
		}
	})
	err := w.readLoop(ctx, work, ready, failed)
	close(ready)
	fin.Wait()
	if fatal != nil {
		return fatal
	}
	return err
}

// readLoop reads batches and starts them until ctx ends, the queue is
// drained, the finisher failed, or the queue's outage outlasts the
// deadline.
func (w *Worker) readLoop(ctx, work context.Context, ready chan<- *batch, failed <-chan struct{}) error {
	wait := w.opts.Backoff
	var down time.Time // when the queue's current outage began
	for ctx.Err() == nil {
		select {
		case <-failed:
			return nil
		default:
		}
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
				return nil //nolint:nilerr // the read failed because the context ended: the worker stops without an error
			}
			if down.IsZero() {
				down = start
			}
			if lasted := time.Since(down); w.opts.OutageDeadline >= 0 && lasted+wait > w.opts.OutageDeadline {
				return &OutageError{Service: ServiceQueue, For: lasted, Err: err}
			}
			w.logger.Warn("queue unavailable; retrying", "err", err, "in", wait, "unavailable_for", time.Since(down).Round(time.Second))
			sleep(ctx, wait)
			wait = min(2*wait, w.opts.MaxBackoff)
			continue
		}
		wait, down = w.opts.Backoff, time.Time{}
		if len(ds) == 0 {
			continue
		}
		b := w.start(work, ds)
		select {
		case <-b.decoded:
		case <-failed:
			b.abort()
			w.release(b.slots)
			return nil
		}
		w.hook("decoded", ds)
		select {
		case ready <- b:
		case <-failed:
			b.abort()
			w.release(b.slots)
			return nil
		}
	}
	return nil
}

func (w *Worker) hook(stage string, ds []Delivery) {
	if w.opts.hook != nil {
		w.opts.hook(stage, ds)
	}
}

// slot is one delivery's way through a batch.
type slot struct {
	d         Delivery
	hash      []byte
	size      int64
	emb       []float32
	faces     []search.Face
	faceModel string
	ocr       []search.OCRBox
	ocrModel  string
	err       error
	permanent bool
	// recordable: the failure is the file's (it does not decode, the
	// model refuses it); later runs skip the file until it changes.
	recordable bool
	// outage: an outage outlasted its deadline while this item was in
	// it; the batch is handed back and the worker stops.
	outage error
}

func (s *slot) fail(err error, permanent bool) {
	s.err, s.permanent = err, permanent || errors.Is(err, ErrPermanent)
}

// batch is one read's deliveries on their way through the stages.
type batch struct {
	ds    []Delivery
	slots []*slot
	// ctx ends with the worker's work context, or when the batch is
	// abandoned.
	ctx    context.Context //nolint:containedctx // the batch outlives the call that read it: its stages run on other goroutines and stop together with it
	cancel context.CancelFunc
	// decoded closes when every image is decoded (or failed), done when
	// every item is computed.
	decoded, done chan struct{}
	stopBeat      func()
}

// abort stops the batch's items and waits for them.
func (b *batch) abort() {
	b.cancel()
	<-b.done
	b.stopBeat()
}

// start launches a batch: the heartbeat, and one goroutine per item.
func (w *Worker) start(work context.Context, ds []Delivery) *batch {
	w.batches.Add(1)
	w.items.Add(int64(len(ds)))
	w.hook("read", ds)
	ctx, cancel := context.WithCancel(work)
	b := &batch{ds: ds, ctx: ctx, cancel: cancel, decoded: make(chan struct{}), done: make(chan struct{})}
	beat, stopBeat := context.WithCancel(ctx)
	var beats sync.WaitGroup
	beats.Go(func() { w.heartbeat(beat, ds) })
	b.stopBeat = func() {
		stopBeat()
		beats.Wait()
	}
	b.slots = make([]*slot, len(ds))
	var decoded, computed sync.WaitGroup
	decoded.Add(len(ds))
	for i, d := range ds {
		s := &slot{d: d}
		b.slots[i] = s
		computed.Go(func() { w.item(ctx, s, decoded.Done) })
	}
	go func() {
		decoded.Wait()
		close(b.decoded)
	}()
	go func() {
		computed.Wait()
		close(b.done)
	}()
	return b
}

// item reads, decodes and computes one item. decoded is called once the
// image is decoded or the item failed before.
func (w *Worker) item(ctx context.Context, s *slot, decoded func()) {
	var once sync.Once
	signal := func() { once.Do(decoded) }
	defer signal()
	it := s.d.Item
	if w.opts.Model != "" && it.Model != "" && it.Model != w.opts.Model {
		s.fail(fmt.Errorf("%w: item is for model %s, this worker runs %s", ErrPermanent, it.Model, w.opts.Model), true)
		return
	}
	tasks, err := w.tasks(it)
	if err != nil {
		s.fail(err, true)
		return
	}
	select {
	case w.images <- struct{}{}:
	case <-ctx.Done():
		s.fail(ctx.Err(), false)
		return
	}
	defer func() { <-w.images }()

	start := time.Now()
	img := w.decode(ctx, s)
	w.tDecode.Add(int64(time.Since(start)))
	signal()
	if img == nil {
		return
	}
	if w.opts.Recycle != nil {
		defer w.opts.Recycle(img)
	}

	start = time.Now()
	defer func() { w.tInfer.Add(int64(time.Since(start))) }()
	if tasks.clip {
		w.compute(ctx, s, "embed", func(ctx context.Context) error {
			out, err := w.emb.EmbedImages(ctx, []*imaging.Image{img})
			if err != nil {
				return err
			}
			if len(out) != 1 || len(out[0]) == 0 {
				return fmt.Errorf("embedder returned %d embeddings (the first empty?) for one image", len(out))
			}
			s.emb = out[0]
			return nil
		})
	}
	if tasks.faces != "" && s.err == nil {
		s.faceModel = tasks.faces
		w.compute(ctx, s, "detect faces", func(ctx context.Context) error {
			faces, err := w.opts.Analyzer.Faces(ctx, tasks.faces, img)
			if err == nil && faces == nil {
				faces = []search.Face{}
			}
			s.faces = faces
			return err
		})
	}
	if tasks.ocr != "" && s.err == nil {
		s.ocrModel = tasks.ocr
		w.compute(ctx, s, "read text", func(ctx context.Context) error {
			lines, err := w.opts.Analyzer.Text(ctx, tasks.ocr, img)
			if err == nil && lines == nil {
				lines = []search.OCRBox{}
			}
			s.ocr = lines
			return err
		})
	}
}

type itemTasks struct {
	clip       bool
	faces, ocr string // models; empty: not run
}

// tasks resolves what to compute for an item.
func (w *Worker) tasks(it Item) (itemTasks, error) {
	t := itemTasks{clip: it.wants(TaskCLIP)}
	legacy := len(it.Tasks) == 0
	if it.wants(TaskFaces) {
		t.faces = it.FaceModel
		if t.faces == "" {
			t.faces = w.opts.FaceModel
		}
		if t.faces == "" && !legacy {
			return t, fmt.Errorf("%w: item asks for faces and names no model; start the worker with a face model", ErrPermanent)
		}
	}
	if it.wants(TaskOCR) {
		t.ocr = it.OCRModel
		if t.ocr == "" {
			t.ocr = w.opts.OCRModel
		}
		if t.ocr == "" && !legacy {
			return t, fmt.Errorf("%w: item asks for OCR and names no model; start the worker with an OCR model", ErrPermanent)
		}
	}
	if (t.faces != "" || t.ocr != "") && w.opts.Analyzer == nil {
		return t, fmt.Errorf("%w: item asks for faces or OCR and this worker has no analyzer", ErrPermanent)
	}
	if it.AssetID != "" && (t.faces != "" || t.ocr != "") {
		if legacy {
			t.faces, t.ocr = "", ""
		} else {
			return t, fmt.Errorf("%w: faces and OCR are never computed for an Immich asset (Immich's own jobs own them)", ErrPermanent)
		}
	}
	if !t.clip && t.faces == "" && t.ocr == "" {
		return t, fmt.Errorf("%w: item asks for nothing this worker computes (tasks %v)", ErrPermanent, it.Tasks)
	}
	return t, nil
}

// decode reads the item's file and decodes it on a CPU slot. It returns
// nil after failing the item.
func (w *Worker) decode(ctx context.Context, s *slot) *imaging.Image {
	local, err := w.opts.Paths.Map(s.d.Item.Path)
	if err != nil {
		s.fail(err, true)
		return nil
	}
	data, err := w.opts.ReadFile(local)
	if err != nil {
		// A file that is gone will not come back by retrying (and the
		// next folder walk prunes it); other read errors (a mount away,
		// permissions) might.
		s.fail(fmt.Errorf("read %s: %w", local, err), errors.Is(err, fs.ErrNotExist))
		return nil
	}
	if err := w.cpu.Acquire(ctx, pool.PriorityBackground); err != nil {
		s.fail(err, false)
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			s.outage = &OutageError{Service: ServiceInference, Err: err}
		}
		return nil
	}
	defer w.cpu.Release()
	h := sha256.Sum256(data)
	s.hash, s.size = h[:], int64(len(data))
	img, err := w.opts.Decode(data)
	if err != nil {
		s.fail(fmt.Errorf("decode %s: %w", local, err), true)
		s.recordable = true
		return nil
	}
	return img
}

// compute runs one inference step of an item. An outage is waited out
// with the item held, without charging it; a longer one marks the item so
// that its batch is handed back. An image the model refuses is a
// permanent failure of the file; any other failure is charged to the
// item.
func (w *Worker) compute(ctx context.Context, s *slot, what string, f func(context.Context) error) {
	err := w.retry.do(ctx, what, ServiceInference, f, w.opts.IsTransient)
	switch {
	case err == nil:
	case errors.Is(err, ErrOutage):
		s.outage = err
		s.fail(err, false)
	case ctx.Err() != nil:
		s.fail(err, false)
	case errors.Is(err, inference.ErrInput):
		s.fail(fmt.Errorf("%s %s: %w", what, s.d.Item.Path, err), true)
		s.recordable = true
	default:
		s.fail(fmt.Errorf("%s %s: %w", what, s.d.Item.Path, err), false)
	}
}

// finish waits for a batch's items, writes what they computed in one
// transaction, records the files that failed for good, and settles the
// queue. It returns an error when the worker must stop (the batch is then
// handed back, except for what was settled).
func (w *Worker) finish(work context.Context, b *batch) error {
	<-b.done
	defer b.stopBeat()
	w.hook("embedded", b.ds)
	for _, s := range b.slots {
		if s.outage != nil {
			w.release(b.slots)
			return s.outage
		}
	}
	if b.ctx.Err() != nil {
		w.release(b.slots)
		return nil
	}
	start := time.Now()
	committed, err := w.write(b.ctx, b.slots)
	w.tWrite.Add(int64(time.Since(start)))
	if err != nil || !committed {
		w.release(b.slots)
		return err
	}
	w.hook("written", b.ds)
	if err := w.record(b.ctx, b.slots); err != nil {
		w.release(b.slots)
		return err
	}
	start = time.Now()
	err = w.settle(b.ctx, b.slots)
	w.tAck.Add(int64(time.Since(start)))
	w.hook("acked", b.ds)
	if err != nil {
		return err
	}
	if n := w.opts.FailFast; n > 0 && w.done.Load() == 0 && w.inferFailed.Load() >= int64(n) {
		first := w.firstErr.Load()
		return fmt.Errorf("%w: %d images failed in inference and none was indexed; the first: %w", ErrAllFailing, w.inferFailed.Load(), *first)
	}
	return nil
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

// write stores the batch's results in one transaction. An outage is waited
// out (the items stay held) until the deadline: then the error is
// returned. A data error is narrowed down to the items that cause it by
// writing them one at a time. It returns false when the context ended
// before anything was stored.
func (w *Worker) write(ctx context.Context, slots []*slot) (bool, error) {
	var ok []*slot
	for _, s := range slots {
		if s.err == nil {
			ok = append(ok, s)
		}
	}
	if len(ok) == 0 {
		return true, nil
	}
	results := func(ss []*slot) []Result {
		rs := make([]Result, len(ss))
		for i, s := range ss {
			rs[i] = Result{Item: s.d.Item, Hash: s.hash, Size: s.size, Embedding: s.emb,
				Faces: s.faces, FaceModel: s.faceModel, OCR: s.ocr, OCRModel: s.ocrModel}
		}
		return rs
	}
	err := w.retry.do(ctx, "write results", ServiceDatabase, func(ctx context.Context) error { return w.sink.Write(ctx, results(ok)) }, w.opts.IsTransient)
	if err == nil {
		return true, nil
	}
	if ctx.Err() != nil {
		return false, nil //nolint:nilerr // the context ended: nothing is settled and the batch is redelivered
	}
	if errors.Is(err, ErrOutage) {
		return false, err
	}
	w.logger.Warn("batch write failed; writing items one by one", "err", err, "items", len(ok))
	for _, s := range ok {
		err := w.retry.do(ctx, "write result", ServiceDatabase, func(ctx context.Context) error { return w.sink.Write(ctx, results([]*slot{s})) }, w.opts.IsTransient)
		if ctx.Err() != nil {
			return false, nil //nolint:nilerr // the context ended: some may be stored; redelivery rewrites them
		}
		if errors.Is(err, ErrOutage) {
			return false, err
		}
		if err != nil {
			s.fail(fmt.Errorf("store %s: %w", s.d.Item.Path, err),
				errors.Is(err, search.ErrDimensionMismatch) || errors.Is(err, search.ErrInvalid) ||
					errors.Is(err, search.ErrUnknownModel) || errors.Is(err, search.ErrModelChanged))
		}
	}
	return true, nil
}

// record remembers the files that failed for good (they do not decode),
// when the sink can.
func (w *Worker) record(ctx context.Context, slots []*slot) error {
	fr, ok := w.sink.(FailureRecorder)
	if !ok {
		return nil
	}
	var fs []search.Failure
	for _, s := range slots {
		if s.err != nil && s.recordable && s.d.Item.AssetID == "" {
			fs = append(fs, search.Failure{Path: s.d.Item.Path, Size: s.d.Item.Size, ModTime: s.d.Item.ModifiedAt(), Error: errorText(s.err)})
		}
	}
	if len(fs) == 0 {
		return nil
	}
	err := w.retry.do(ctx, "record failures", ServiceDatabase, func(ctx context.Context) error { return fr.RecordFailures(ctx, fs) }, w.opts.IsTransient)
	if err != nil && !errors.Is(err, ErrOutage) && ctx.Err() == nil {
		// Not worth stopping for: the files are retried next run.
		w.logger.Warn("cannot record failed files", "files", len(fs), "err", err)
		return nil
	}
	if ctx.Err() != nil {
		return nil //nolint:nilerr // the context ended: the failures are recorded when the files are retried
	}
	return err
}

// settle acknowledges what was stored and fails the rest. When the
// dead-letter stream is full, the items it refuses are handed back
// (attempts unchanged) and ErrDeadLetterFull is returned: the worker stops
// rather than drop them. A queue outage past the deadline returns an
// *OutageError.
func (w *Worker) settle(ctx context.Context, slots []*slot) error {
	var acks []Delivery
	var refused []*slot
	var stop error
	transient := func(err error) bool { return !errors.Is(err, ErrDeadLetterFull) }
	for _, s := range slots {
		if s.err == nil {
			s.d.faces, s.d.lines = len(s.faces), len(s.ocr)
			acks = append(acks, s.d)
			continue
		}
		err := w.retry.do(ctx, "fail item", ServiceQueue, func(ctx context.Context) error { return w.q.Fail(ctx, s.d, s.err, s.permanent) }, transient)
		if errors.Is(err, ErrDeadLetterFull) || errors.Is(err, ErrOutage) {
			stop = err
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
		if !s.recordable && !s.permanent && w.done.Load() == 0 {
			w.firstErr.CompareAndSwap(nil, &s.err)
			w.inferFailed.Add(1)
		}
		w.logger.Debug("item failed", "path", s.d.Item.Path, "permanent", s.permanent, "err", s.err)
	}
	if len(refused) > 0 {
		w.release(refused)
	}
	if len(acks) == 0 {
		return stop
	}
	err := w.retry.do(ctx, "acknowledge", ServiceQueue, func(ctx context.Context) error { return w.q.Ack(ctx, acks) }, always)
	if err != nil {
		// The results are stored; the items will be redelivered and
		// rewritten, which changes nothing.
		w.logger.Warn("cannot acknowledge stored items; they will be redelivered", "items", len(acks), "err", err)
		if stop == nil && errors.Is(err, ErrOutage) {
			stop = err
		}
		return stop
	}
	w.done.Add(int64(len(acks)))
	for _, d := range acks {
		w.faces.Add(int64(d.faces))
		w.lines.Add(int64(d.lines))
	}
	return stop
}

// release hands slots back, with a context of its own: the work context
// may be what ended.
func (w *Worker) release(slots []*slot) {
	if len(slots) == 0 {
		return
	}
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
