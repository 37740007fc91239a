package jobs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
	"github.com/mlserve/mlserve/search"
)

// Engine is the inference side of indexing: *pool.Service. Images are
// decoded on its CPU workers and embedded through its batching engine,
// as /predict's are.
type Engine interface {
	FaceTexter
	Preload(ctx context.Context, task, typ string, names []string) error
	EmbedImages(ctx context.Context, model string, imgs []*imaging.Image) ([][]float32, error)
	Workers() *pool.Workers
}

// IndexerOptions configure an Indexer: what `mlserve index` and `mlserve
// worker` do, without their flags.
type IndexerOptions struct {
	// Engine runs the models. Required, except for Run with Redis (which
	// only enqueues).
	Engine Engine
	// Open opens the index (search.OpenIndex). For our own schema it is
	// called only once the models are loaded, so that a run whose runtime
	// or model cannot load creates no tables; an Immich database is opened
	// first (it is only read) to learn its model.
	Open func(ctx context.Context) (search.Index, error)
	// Immich says that Open returns an Immich database (*search.Immich):
	// the work is its assets without a CLIP embedding (all with Force).
	// Otherwise the work is the image files under Roots.
	Immich bool
	Roots  []string
	Force  bool
	// Redis, when set, carries the work through a Redis queue: Run
	// enqueues and, unless NoWait, waits for `mlserve worker` processes;
	// Work takes from it. Without it, Run does the work in this process
	// (and Work refuses).
	Redis *redis.Client
	// Queue configures the Redis queue (its Client is Redis; its Name
	// defaults to QueueName).
	Queue  RedisOptions
	NoWait bool
	// Model is the CLIP model; empty: the index's default (Immich's
	// configured model, or DefaultImmichModel).
	Model string
	// FaceModel and OCRModel add faces and OCR (our own schema only).
	// Files already indexed get only the analyses they lack.
	FaceModel, OCRModel string
	Analysis            AnalysisOptions
	// Prune removes from the index the files under Roots that are gone
	// (`mlserve index` prunes by default). A root under which no image
	// was found is not pruned (an unmounted drive looks like an empty
	// folder).
	Prune bool
	// RetryFailed queues files whose failure is recorded even if they did
	// not change since.
	RetryFailed bool
	// BatchSize is the items written and acknowledged together (default
	// 16); Workers the in-process worker's Run calls (default 1). Neither
	// changes how images are batched for inference (the engine's).
	BatchSize, Workers int
	Walk               WalkOptions
	// Paths maps item paths to this host (Immich previews).
	Paths search.PathMap
	// Decode decodes images (default imaging.Decode); Recycle, if set,
	// takes each back once its models are done (WorkerOptions.Recycle).
	Decode  func([]byte) (*imaging.Image, error)
	Recycle func(*imaging.Image)
	// CreateIndexes builds the missing HNSW indexes after the run (after
	// a bulk load with deferred indexes).
	CreateIndexes bool
	// OutageDeadline is how long an outage of the database, the queue or
	// inference is waited out before the run ends with an *OutageError
	// (default DefaultOutageDeadline; negative: forever).
	OutageDeadline time.Duration
	// ShutdownTimeout is how long batches in flight may finish after ctx
	// ends (default 30s); then they are handed back.
	ShutdownTimeout time.Duration
	// Progress is called every ProgressEvery (default 2s) while a run's
	// items are processed; nil: not called.
	Progress      func(Progress)
	ProgressEvery time.Duration
	// MaxFailures caps the failures a Summary lists (default 100).
	MaxFailures int
	// Cluster tunes the grouping of faces into people that follows a run
	// with faces (our own schema).
	Cluster search.ClusterOptions
	// StatsEvery is how often Work logs its throughput (0: never).
	StatsEvery time.Duration

	// worker, for tests, adjusts the in-process worker's options.
	worker func(*WorkerOptions)
}

// Errors of an index run.
var (
	// ErrItemsFailed: the run ended, and some items could not be indexed
	// (Summary.Failures lists them).
	ErrItemsFailed = errors.New("some images could not be indexed")
	// ErrInterrupted: the run's context ended; the Summary counts what was
	// done. It wraps the context's error.
	ErrInterrupted = errors.New("interrupted")
	// ErrNoRoots: a folder run without folders, or an Immich run with some.
	ErrNoRoots = errors.New("give folders to index, or index an Immich database (not both)")
)

// Failure is an item that could not be indexed.
type Failure struct {
	Path    string
	AssetID string // Immich mode
	Error   string
}

// Summary is what an index run did. The counts are read from the queue
// when the run ends, so they are true after an interruption too.
type Summary struct {
	// Run names the run; Model is the CLIP model; Queue is "in-process"
	// or the Redis queue's name.
	Run, Model, Queue string
	// Found counts the image files found under the roots (or the Immich
	// assets listed).
	Found int64
	// Queued of them needed work; Partial of those only some analyses
	// (e.g. faces added to an existing index).
	Queued, Partial int64
	// Unchanged were already indexed; KnownFailures failed before and did
	// not change (RetryFailed queues them).
	Unchanged, KnownFailures int64
	// Indexed and Failed are the queued items done and failed; the rest
	// (Queued - Indexed - Failed) were not finished (interrupted, or left
	// to Redis workers with NoWait).
	Indexed, Failed int64
	// Faces and Lines are the faces and lines of text found.
	Faces, Lines int64
	// Pruned assets were removed because their files are gone.
	Pruned int64
	// People is the face clustering that followed (nil: none ran).
	People *search.ClusterResult
	// Failures lists up to MaxFailures failed items.
	Failures []Failure
	// Load is the time spent loading models; Elapsed the time after it.
	Load, Elapsed time.Duration
	// Interrupted: the run's context ended before the work was done.
	Interrupted bool
}

// Skipped counts the files that needed no work.
func (s Summary) Skipped() int64 { return s.Unchanged + s.KnownFailures }

// Rate is the items indexed per second, model loading excluded.
func (s Summary) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Indexed) / s.Elapsed.Seconds()
}

// Indexer runs `mlserve index` and `mlserve worker`.
type Indexer struct {
	opts   IndexerOptions
	logger *slog.Logger
}

// NewIndexer returns an indexer.
func NewIndexer(opts IndexerOptions, logger *slog.Logger) *Indexer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 16
	}
	if opts.Workers <= 0 {
		opts.Workers = 1
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = 2 * time.Second
	}
	if opts.MaxFailures <= 0 {
		opts.MaxFailures = 100
	}
	if opts.OutageDeadline == 0 {
		opts.OutageDeadline = DefaultOutageDeadline
	}
	return &Indexer{opts: opts, logger: logger}
}

// QueueName is the default Redis stream of an index and model: workers
// and producers that agree on both share it.
func QueueName(ix search.Index, model string) string {
	switch ix := ix.(type) {
	case *search.Immich:
		return "mlserve:immich:" + ix.Schema() + ":" + model
	case *search.Store:
		return "mlserve:index:" + ix.Schema() + ":" + model
	}
	return "mlserve:index:" + model
}

// session is what Run and Work set up: the models loaded, the index open.
type session struct {
	ix      search.Index
	model   string // as stored and queued
	engine  string // the CLIP model name the engine loads
	load    time.Duration
	closeIx func()
}

// check validates the options before anything is loaded or opened.
func (x *Indexer) check(work bool) error {
	o := x.opts
	if o.Open == nil {
		return errors.New("jobs: IndexerOptions.Open is nil")
	}
	if !work && o.Immich == (len(o.Roots) > 0) {
		return ErrNoRoots
	}
	if o.Immich && (o.FaceModel != "" || o.OCRModel != "") {
		return errors.New("faces and OCR are written to our own schema only; Immich's face and OCR jobs own its tables")
	}
	if o.Engine == nil && (work || o.Redis == nil) {
		return errors.New("jobs: IndexerOptions.Engine is nil")
	}
	if work && o.Redis == nil {
		return errors.New("MLSERVE_REDIS_URL is not set: workers take their work from a Redis queue (without Redis, `mlserve index` does the work itself)")
	}
	for _, root := range o.Roots {
		if _, err := os.Stat(root); err != nil {
			return fmt.Errorf("index %s: %w", root, err)
		}
	}
	for _, m := range []struct {
		task  models.Task
		name  string
		which string
	}{{models.TaskFacialRecognition, o.FaceModel, "face"}, {models.TaskOCR, o.OCRModel, "OCR"}} {
		if m.name == "" {
			continue
		}
		name, err := models.CleanName(m.name)
		if err != nil {
			return fmt.Errorf("%s model: %w", m.which, err)
		}
		if _, err := models.Lookup(m.task, models.TypeDetection, name); err != nil {
			return fmt.Errorf("%s model: %w", m.which, err)
		}
	}
	return nil
}

// open loads the models and opens the index, in the order that keeps a
// failed run from touching the database: our schema is opened (and
// migrated) only after the models loaded. load says whether this process
// runs models.
func (x *Indexer) open(ctx context.Context, load bool) (*session, error) {
	o := x.opts
	s := &session{closeIx: func() {}}
	if o.Immich {
		ix, err := o.Open(ctx)
		if err != nil {
			return nil, fmt.Errorf("open the Immich database: %w", err)
		}
		s.ix, s.closeIx = ix, ix.Close
		if s.model = o.Model; s.model == "" {
			if s.model, err = ix.DefaultModel(ctx); err != nil {
				ix.Close()
				return nil, err
			}
		}
	} else if s.model = o.Model; s.model == "" {
		s.model = search.DefaultImmichModel
	}
	var err error
	if s.engine, err = models.CleanName(s.model); err != nil {
		s.closeIx()
		return nil, err
	}
	if !o.Immich {
		s.model = s.engine
	}
	dim, ok := models.CLIPDim(s.engine)
	if !ok {
		s.closeIx()
		return nil, fmt.Errorf("unknown CLIP model %q", s.model)
	}
	if load {
		start := time.Now()
		if err := x.preload(ctx, s.engine); err != nil {
			s.closeIx()
			return nil, err
		}
		s.load = time.Since(start)
	}
	if s.ix == nil {
		ix, err := o.Open(ctx)
		if err != nil {
			return nil, fmt.Errorf("open the database: %w", err)
		}
		s.ix, s.closeIx = ix, ix.Close
	}
	if _, err := s.ix.EnsureModel(ctx, s.model, dim); err != nil {
		s.closeIx()
		return nil, err
	}
	return s, nil
}

// preload loads every model the run uses, so that a model that cannot
// load fails the run before any work (and before the database is
// touched).
func (x *Indexer) preload(ctx context.Context, clip string) error {
	o := x.opts
	type want struct{ task, typ, name string }
	ws := []want{{"clip", "visual", clip}}
	if o.FaceModel != "" {
		ws = append(ws, want{"facial-recognition", "detection", o.FaceModel}, want{"facial-recognition", "recognition", o.FaceModel})
	}
	if o.OCRModel != "" {
		ws = append(ws, want{"ocr", "detection", o.OCRModel}, want{"ocr", "recognition", o.OCRModel})
	}
	for _, w := range ws {
		if err := o.Engine.Preload(ctx, w.task, w.typ, []string{w.name}); err != nil {
			return fmt.Errorf("load %s/%s model %s: %w", w.task, w.typ, w.name, err)
		}
	}
	return nil
}

// newWorker builds a worker on the engine for q.
func (x *Indexer) newWorker(q Queue, s *session) *Worker {
	o := x.opts
	opts := WorkerOptions{
		Model: s.model, BatchSize: o.BatchSize, CPU: o.Engine.Workers(),
		ShutdownTimeout: o.ShutdownTimeout, OutageDeadline: o.OutageDeadline,
		Paths: o.Paths, Decode: o.Decode, Recycle: o.Recycle,
		Analyzer:  EngineAnalyzer{Engine: o.Engine, Opts: o.Analysis},
		FaceModel: o.FaceModel, OCRModel: o.OCRModel,
	}
	if rq, ok := q.(*Redis); ok {
		opts.Heartbeat = rq.Options().VisibilityTimeout / 3
	}
	if d, ok := o.Engine.(decodeAheader); ok {
		// The model is loaded by now: this only asks where it runs.
		if n, err := d.DecodeAhead(context.Background(), s.engine); err == nil && n > 0 {
			opts.MaxImages = n
		}
	}
	if o.worker != nil {
		o.worker(&opts)
	}
	emb := EmbedFunc(func(ctx context.Context, imgs []*imaging.Image) ([][]float32, error) {
		return o.Engine.EmbedImages(ctx, s.engine, imgs)
	})
	return NewWorker(q, emb, IndexSink{Index: s.ix, Model: s.model}, opts, x.logger)
}

// decodeAheader is an Engine that says how far ahead of its model the
// worker should decode (*pool.Service).
type decodeAheader interface {
	DecodeAhead(ctx context.Context, model string) (int, error)
}

// redisQueue opens the Redis queue for the session's index and model.
func (x *Indexer) redisQueue(ctx context.Context, s *session) (*Redis, error) {
	ro := x.opts.Queue
	ro.Client = x.opts.Redis
	if ro.Name == "" {
		ro.Name = QueueName(s.ix, s.model)
	}
	var q *Redis
	r := retrier{backoff: 200 * time.Millisecond, maxBackoff: 10 * time.Second, deadline: x.opts.OutageDeadline, logger: x.logger}
	err := r.do(ctx, "connect to the queue", ServiceQueue, func(ctx context.Context) error {
		var err error
		q, err = NewRedis(ctx, ro, x.logger)
		return err
	}, IsOutage)
	return q, err
}

// Run indexes: it finds the work (the files under Roots, or the Immich
// assets), and does it in this process or, with Redis, queues it for
// workers and waits for them (unless NoWait). It returns what was done
// and an error when the run failed: a fatal error (a model that does not
// load, a database or queue outage past the deadline, every image failing
// in inference) ends it at once; ErrItemsFailed says that the run ended
// and some items failed; ErrInterrupted that ctx ended (the batches in
// flight were finished or handed back, and the counts are true).
func (x *Indexer) Run(ctx context.Context) (Summary, error) {
	o := x.opts
	sum := Summary{Queue: "in-process"}
	if err := x.check(false); err != nil {
		return sum, err
	}
	inProcess := o.Redis == nil
	s, err := x.open(ctx, inProcess)
	if err != nil {
		return sum, err
	}
	defer s.closeIx()
	sum.Model, sum.Load = s.model, s.load
	start := time.Now()

	var q interface {
		Queue
		Enqueuer
	}
	var mem *Memory
	var rq *Redis
	if inProcess {
		mem = NewMemory(MemoryOptions{Capacity: 4 * o.BatchSize * o.Workers})
		q = mem
	} else {
		if rq, err = x.redisQueue(ctx, s); err != nil {
			return sum, err
		}
		q = rq
		sum.Queue = rq.Options().Name
	}
	p := NewProducer(q, ProducerOptions{
		Model: s.model, FaceModel: o.FaceModel, OCRModel: o.OCRModel, RetryFailed: o.RetryFailed,
		Walk: o.Walk, OutageDeadline: o.OutageDeadline,
	}, x.logger)
	sum.Run = p.Run()
	x.logger.Info("indexing", "model", s.model, "queue", sum.Queue, "run", sum.Run, "load", s.load.Round(time.Millisecond))

	g, gctx := errgroup.WithContext(ctx)
	var produced ProduceStats
	var pruned int64
	g.Go(func() error {
		if mem != nil {
			defer mem.Close()
		}
		var err error
		if o.Immich {
			pl, ok := s.ix.(PendingLister)
			if !ok {
				return fmt.Errorf("jobs: %T cannot list Immich assets", s.ix)
			}
			produced, err = p.Immich(gctx, pl, o.Force)
		} else {
			st, _ := s.ix.(Statuser)
			produced, err = p.Folders(gctx, st, o.Roots...)
		}
		if err != nil {
			return fmt.Errorf("find work: %w", err)
		}
		if o.Prune && !o.Immich {
			pruned, err = x.prune(gctx, s.ix, produced.RootFiles)
		}
		return err
	})
	var w *Worker
	if inProcess {
		w = x.newWorker(mem, s)
		for range o.Workers {
			g.Go(func() error { return w.Run(gctx) })
		}
	}
	if inProcess || !o.NoWait {
		g.Go(func() error {
			_, err := p.Watch(gctx, o.ProgressEvery, x.reporter(rq != nil))
			return err
		})
	}
	err = g.Wait()
	sum.Elapsed = time.Since(start)
	interrupted := ctx.Err() != nil

	sum.Found, sum.Queued, sum.Partial = produced.Files, produced.Queued, produced.Partial
	sum.Unchanged, sum.KnownFailures, sum.Pruned = produced.Unchanged, produced.KnownFailures, pruned
	// The final counts, read once the workers have stopped (the context
	// may have ended: read with one of their own).
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if c, cerr := q.Progress(fctx, sum.Run); cerr == nil {
		sum.Indexed, sum.Failed, sum.Faces, sum.Lines = c.Done, c.Failed, c.Faces, c.Lines
	}
	sum.Failures = x.failures(fctx, mem, rq, sum.Run, start)

	if interrupted {
		sum.Interrupted = true
		return sum, fmt.Errorf("%w: %w", ErrInterrupted, context.Cause(ctx))
	}
	if err != nil {
		return sum, err
	}
	if o.FaceModel != "" && (inProcess || !o.NoWait) || sum.Pruned > 0 {
		if cl, ok := s.ix.(clusterer); ok && (sum.Faces > 0 || sum.Pruned > 0) {
			res, err := cl.ClusterFaces(ctx, o.Cluster)
			if err != nil {
				return sum, fmt.Errorf("group faces into people: %w", err)
			}
			sum.People = &res
		}
	}
	if o.CreateIndexes {
		if ci, ok := s.ix.(interface{ CreateIndexes(context.Context) error }); ok {
			start := time.Now()
			if err := ci.CreateIndexes(ctx); err != nil {
				return sum, err
			}
			x.logger.Info("built HNSW indexes", "took", time.Since(start))
		}
	}
	if sum.Failed > 0 {
		return sum, fmt.Errorf("%w: %d of %d", ErrItemsFailed, sum.Failed, sum.Queued)
	}
	return sum, nil
}

// clusterer groups faces into people (search.Store).
type clusterer interface {
	ClusterFaces(ctx context.Context, opts search.ClusterOptions) (search.ClusterResult, error)
}

// pruner removes the assets of files that are gone (search.Store).
type pruner interface {
	Prune(ctx context.Context, root string, gone func(path string) bool) (int, error)
}

// prune removes the assets under each root whose files are gone, for the
// roots under which the walk found images.
func (x *Indexer) prune(ctx context.Context, ix search.Index, roots map[string]int64) (int64, error) {
	pr, ok := ix.(pruner)
	if !ok {
		return 0, nil
	}
	gone := func(path string) bool {
		_, err := os.Stat(path)
		return errors.Is(err, fs.ErrNotExist)
	}
	r := retrier{backoff: 200 * time.Millisecond, maxBackoff: 10 * time.Second, deadline: x.opts.OutageDeadline, logger: x.logger}
	var total int64
	for root, files := range roots {
		if files == 0 {
			x.logger.Warn("no image found under a folder: its index entries are kept (an unmounted drive looks like an empty folder)", "folder", root)
			continue
		}
		err := r.do(ctx, "prune", ServiceDatabase, func(ctx context.Context) error {
			n, err := pr.Prune(ctx, filepath.Clean(root), gone)
			total += int64(n)
			return err
		}, IsOutage)
		if err != nil {
			return total, fmt.Errorf("prune %s: %w", root, err)
		}
	}
	return total, nil
}

// failures lists the run's failed items, from the in-process queue or the
// Redis dead-letter stream.
func (x *Indexer) failures(ctx context.Context, mem *Memory, rq *Redis, run string, since time.Time) []Failure {
	var dead []DeadLetter
	switch {
	case mem != nil:
		dead = mem.Dead()
	case rq != nil:
		var err error
		if dead, _, err = rq.RunDead(ctx, run, since.Add(-time.Second), x.opts.MaxFailures); err != nil {
			x.logger.Warn("cannot list failed items", "err", err)
		}
	}
	var out []Failure
	for _, d := range dead {
		if d.Item.Run != run || len(out) >= x.opts.MaxFailures {
			continue
		}
		out = append(out, Failure{Path: d.Item.Path, AssetID: d.Item.AssetID, Error: d.Error})
	}
	return out
}

// reporter wraps the Progress callback; with Redis it warns once when
// nothing moves for a while (no worker running?).
func (x *Indexer) reporter(redisQueue bool) func(Progress) {
	var last int64 = -1
	var since time.Time
	warned := false
	return func(pr Progress) {
		if redisQueue && !warned {
			if done := pr.Done + pr.Failed; done != last {
				last, since = done, time.Now()
			} else if pr.Total > done && time.Since(since) > time.Minute {
				x.logger.Warn("no item finished for a minute: is an `mlserve worker` running on this queue?")
				warned = true
			}
		}
		if x.opts.Progress != nil {
			x.opts.Progress(pr)
		}
	}
}

// Work takes items from the Redis queue and indexes them until ctx ends,
// with Workers batches in flight: what `mlserve worker` does. The models
// are loaded and the index opened first (a failure there returns at
// once). It stops with an error on an outage longer than the deadline, a
// full dead-letter stream, or when every image fails in inference.
func (x *Indexer) Work(ctx context.Context) (Stats, error) {
	if err := x.check(true); err != nil {
		return Stats{}, err
	}
	s, err := x.open(ctx, true)
	if err != nil {
		return Stats{}, err
	}
	defer s.closeIx()
	q, err := x.redisQueue(ctx, s)
	if err != nil {
		return Stats{}, err
	}
	w := x.newWorker(q, s)
	x.logger.Info("worker started", "model", s.model, "queue", q.Options().Name, "consumer", q.Options().Consumer,
		"workers", x.opts.Workers, "batch", x.opts.BatchSize, "load", s.load.Round(time.Millisecond))
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for range x.opts.Workers {
		g.Go(func() error { return w.Run(gctx) })
	}
	if every := x.opts.StatsEvery; every > 0 {
		g.Go(func() error {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-gctx.Done():
					return nil
				case <-t.C:
					st := w.Stats()
					x.logger.Info("worker progress", "done", st.Done, "retried", st.Retried, "dead", st.Dead,
						"faces", st.Faces, "lines", st.Lines,
						"rate", fmt.Sprintf("%.1f img/s", float64(st.Done)/time.Since(start).Seconds()))
				}
			}
		})
	}
	err = g.Wait()
	return w.Stats(), err
}
