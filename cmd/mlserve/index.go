package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/jobs"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
	"github.com/mlserve/mlserve/search"
)

const indexUsage = `usage: mlserve index [flags] PATH...
       mlserve index --immich [--force] [flags]

Computes CLIP image embeddings and stores them in PostgreSQL/pgvector
(MLSERVE_DATABASE_URL; ` + "`make db`" + ` starts a local one).

  mlserve index PATH...   walks the folders (JPEG, PNG, WebP), skipping files
                          already indexed with the same content, into our own
                          schema; find them with ` + "`mlserve search`" + `.
  mlserve index --immich  embeds the assets of the Immich database at
                          MLSERVE_DATABASE_URL that lack a CLIP embedding (all
                          with --force) from their preview files, and upserts
                          smart_search as the Immich server does.

Without MLSERVE_REDIS_URL the work runs in this process. With it, the work
goes to a Redis queue for ` + "`mlserve worker`" + ` processes on any number
of hosts, and this command shows their progress until they are done.

flags:
`

// pathFlags collects repeated --path-map FROM=TO.
type pathFlags []string

func (p *pathFlags) String() string     { return strings.Join(*p, ",") }
func (p *pathFlags) Set(v string) error { *p = append(*p, v); return nil }

// dbFlags are the flags that pick the database side, shared by index,
// worker and search.
type dbFlags struct {
	model        string
	immich       bool
	schema       string
	immichSchema string
	paths        pathFlags
}

func (d *dbFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.model, "model", "", "CLIP model (default ViT-B-32__openai; with --immich, the model Immich is configured with)")
	fs.BoolVar(&d.immich, "immich", false, "work on an Immich database (smart_search) instead of our own schema")
	fs.StringVar(&d.schema, "schema", search.DefaultSchema, "PostgreSQL schema of our own tables")
	fs.StringVar(&d.immichSchema, "immich-schema", "public", "PostgreSQL schema of Immich's tables")
	fs.Var(&d.paths, "path-map", "FROM=TO: read files stored under FROM (e.g. Immich's /usr/src/app/upload) from TO on this host; repeatable")
}

// database is the side results go to: our schema or Immich's.
type database struct {
	store  *search.Store
	immich *search.Immich
	model  string
	dim    int
	paths  search.PathMap
}

func (d *database) Close() {
	if d.store != nil {
		d.store.Close()
	}
	if d.immich != nil {
		d.immich.Close()
	}
}

func (d *database) sink() jobs.Sink {
	if d.immich != nil {
		return jobs.ImmichSink{Immich: d.immich}
	}
	return jobs.StoreSink{Store: d.store, Model: d.model}
}

// openDatabase connects, settles the model and checks its dimension
// against the tables.
func openDatabase(ctx context.Context, f dbFlags, cfg *config.Config, deferIndexes bool, logger *slog.Logger) (*database, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("MLSERVE_DATABASE_URL is not set (`make db` starts a local PostgreSQL with pgvector and prints it)")
	}
	paths, err := search.ParsePathMap(f.paths)
	if err != nil {
		return nil, err
	}
	d := &database{paths: paths, model: f.model}
	if f.immich {
		im, err := search.OpenImmich(ctx, search.ImmichOptions{URL: cfg.DatabaseURL, Schema: f.immichSchema, Paths: paths}, logger)
		if err != nil {
			return nil, err
		}
		d.immich = im
		configured, err := im.ConfiguredModel(ctx)
		if err != nil {
			d.Close()
			return nil, err
		}
		if d.model == "" {
			d.model = configured
		} else if d.model != configured {
			d.Close()
			return nil, fmt.Errorf("Immich is configured for CLIP model %s; embeddings of %s would not match its search (change the model in Immich first)", configured, d.model)
		}
	} else {
		if d.model == "" {
			d.model = search.DefaultImmichModel
		}
		st, err := search.Open(ctx, search.Options{URL: cfg.DatabaseURL, Schema: f.schema, DeferIndexes: deferIndexes}, logger)
		if err != nil {
			return nil, err
		}
		d.store = st
	}
	dim, ok := models.CLIPDim(d.model)
	if !ok {
		d.Close()
		return nil, fmt.Errorf("unknown CLIP model %q", d.model)
	}
	d.dim = dim
	if d.immich != nil {
		err = d.immich.CheckModel(d.model, dim)
	} else {
		_, err = d.store.EnsureModel(ctx, d.model, dim)
	}
	if err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// clipModels runs CLIP through the service's model cache and worker pool,
// as /predict does, a batch of images at a time.
type clipModels struct {
	rt   *inference.Runtime
	svc  *pool.Service
	name string // cleaned
}

func openCLIP(cfg *config.Config, model string, logger *slog.Logger) (*clipModels, error) {
	name, err := models.CleanName(model)
	if err != nil {
		return nil, err
	}
	rt, err := newRuntime(cfg, logger)
	if err != nil {
		return nil, err
	}
	svc, err := newService(cfg, rt, nil, logger)
	if err != nil {
		rt.Close()
		return nil, err
	}
	return &clipModels{rt: rt, svc: svc, name: name}, nil
}

func (c *clipModels) Close() {
	c.svc.Close()
	c.rt.Close()
}

// EmbedImages implements jobs.ImageEmbedder.
func (c *clipModels) EmbedImages(ctx context.Context, imgs []*imaging.Image) ([][]float32, error) {
	return c.svc.EmbedImages(ctx, c.name, imgs)
}

// EmbedText implements search.TextEmbedder.
func (c *clipModels) EmbedText(ctx context.Context, text string) ([]float32, error) {
	return c.svc.EmbedText(ctx, c.name, text, "")
}

// openQueue connects to Redis, or returns nil without MLSERVE_REDIS_URL.
func openQueue(ctx context.Context, cfg *config.Config, name string, logger *slog.Logger) (*jobs.Redis, func(), error) {
	if cfg.RedisURL == "" {
		return nil, func() {}, nil
	}
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("MLSERVE_REDIS_URL: %w", cfg.Redactor().Error(err)) // net/url quotes the whole URL
	}
	c := redis.NewClient(opt)
	q, err := jobs.NewRedis(ctx, jobs.RedisOptions{Client: c, Name: name}, logger)
	if err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	return q, func() { _ = c.Close() }, nil
}

// openWork opens the database side and, with MLSERVE_REDIS_URL, the queue
// (named after the side and model unless queue is given). closeAll closes
// both.
func openWork(ctx context.Context, db dbFlags, cfg *config.Config, deferIdx bool, queue string, logger *slog.Logger) (d *database, rq *jobs.Redis, name string, closeAll func(), err error) {
	d, err = openDatabase(ctx, db, cfg, deferIdx, logger)
	if err != nil {
		return nil, nil, "", nil, err
	}
	if queue == "" {
		queue = queueName(db, d.model)
	}
	rq, closeQueue, err := openQueue(ctx, cfg, queue, logger)
	if err != nil {
		d.Close()
		return nil, nil, "", nil, err
	}
	return d, rq, queue, func() { closeQueue(); d.Close() }, nil
}

// queueName is the default stream of a database side and model: workers
// and producers that agree on both share it.
func queueName(f dbFlags, model string) string {
	if f.immich {
		return "mlserve:immich:" + f.immichSchema + ":" + model
	}
	return "mlserve:index:" + f.schema + ":" + model
}

func runIndex(ctx context.Context, args []string, stdout io.Writer, cfg *config.Config, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	fs := flag.NewFlagSet("index", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() { fmt.Fprint(stdout, indexUsage); fs.PrintDefaults() }
	var (
		db        dbFlags
		force     bool
		batch     int
		workers   int
		noWait    bool
		queue     string
		deferIdx  bool
		interval  time.Duration
		heicFiles bool
	)
	db.register(fs)
	fs.BoolVar(&force, "force", false, "with --immich: embed every asset again, not only those without an embedding")
	fs.IntVar(&batch, "batch", 16, "images per batch (read, embed, write, acknowledge)")
	var tasks taskFlags
	tasks.register(fs)
	fs.IntVar(&workers, "workers", 1, "in-process mode: batches processed at once")
	fs.BoolVar(&noWait, "no-wait", false, "with Redis: enqueue and return without waiting for the workers")
	fs.StringVar(&queue, "queue", "", "Redis queue name (default derived from the schema and model)")
	fs.BoolVar(&deferIdx, "defer-index", false, "build the HNSW index after loading instead of while loading (faster for a first bulk load)")
	fs.DurationVar(&interval, "progress", 2*time.Second, "how often progress is printed")
	fs.BoolVar(&heicFiles, "heic", false, "also pick .heic/.heif files (only if this build's decoder reads them)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := tasks.check(db.immich); err != nil {
		return err
	}
	roots := fs.Args()
	if db.immich != (len(roots) == 0) {
		fs.Usage()
		return errors.New("give folders to index, or --immich (not both)")
	}
	if force && !db.immich {
		return errors.New("--force applies to --immich")
	}

	d, rq, queue, closeAll, err := openWork(ctx, db, cfg, deferIdx, queue, logger)
	if err != nil {
		return err
	}
	defer closeAll()

	var q interface {
		jobs.Queue
		jobs.Enqueuer
	}
	var mem *jobs.Memory
	if rq != nil {
		q = rq
	} else {
		mem = jobs.NewMemory(jobs.MemoryOptions{Capacity: 4 * batch * max(workers, 1)})
		q = mem
	}
	p := jobs.NewProducer(q, jobs.ProducerOptions{Model: d.model, Walk: jobs.WalkOptions{HEIC: heicFiles}}, logger)
	logger.Info("indexing", "model", d.model, "dim", d.dim, "immich", db.immich, "queue", map[bool]string{true: "redis:" + queue, false: "in-process"}[rq != nil], "run", p.Run())

	g, gctx := errgroup.WithContext(ctx)
	var produced jobs.ProduceStats
	g.Go(func() error {
		if mem != nil {
			defer mem.Close()
		}
		var err error
		if db.immich {
			produced, err = p.Immich(gctx, d.immich, force)
		} else {
			produced, err = p.Folders(gctx, d.store, roots...)
		}
		if err != nil {
			return fmt.Errorf("find work: %w", err)
		}
		logger.Info("all work queued", "queued", produced.Queued, "unchanged", produced.Unchanged,
			"skipped", produced.Skipped, "heic_skipped", produced.HEIC, "unreadable", produced.Errors)
		return nil
	})

	var ws []*jobs.Worker
	var cm *clipModels
	if mem != nil {
		cm, err = openCLIP(cfg, d.model, logger)
		if err != nil {
			return err
		}
		defer cm.Close()
		w := jobs.NewWorker(mem, cm, tasks.sink(d.sink()), jobs.WorkerOptions{
			Model: d.model, BatchSize: batch, Paths: d.paths, Analyzer: tasks.analyzer(cm.svc),
			Decode: decoder(ctx, cm.svc, d.model, tasks.analyzer(cm.svc) != nil),
		}, logger)
		ws = append(ws, w)
		for range max(workers, 1) {
			g.Go(func() error { return w.Run(gctx) })
		}
	}
	if rq == nil || !noWait {
		var last jobs.Progress // read after g.Wait
		g.Go(func() error {
			var err error
			last, err = p.Watch(gctx, interval, func(pr jobs.Progress) {
				fmt.Fprintf(stdout, "indexing: %s\n", pr)
			})
			return err
		})
		defer func() {
			if last.Total > 0 {
				fmt.Fprintf(stdout, "indexed %d of %d images (%d failed) in %s\n", last.Done, last.Total, last.Failed, last.Elapsed.Round(time.Second))
			}
		}()
	}
	start := time.Now()
	if err := g.Wait(); err != nil {
		return err
	}
	for _, w := range ws {
		reportStats(stdout, w.Stats(), time.Since(start))
	}
	if mem != nil {
		for _, dl := range mem.Dead() {
			fmt.Fprintf(stdout, "failed: %s: %s\n", dl.Item.Path, dl.Error)
		}
	}
	if rq != nil && noWait {
		fmt.Fprintf(stdout, "queued %d images on %s (run %s); start `mlserve worker` to process them\n", produced.Queued, queue, p.Run())
	}
	if deferIdx && d.store != nil {
		start := time.Now()
		if err := d.store.CreateIndexes(ctx); err != nil {
			return err
		}
		logger.Info("built HNSW indexes", "took", time.Since(start))
	}
	return nil
}

// reportStats prints a worker's throughput and where its time went.
func reportStats(w io.Writer, st jobs.Stats, wall time.Duration) {
	if st.Items == 0 {
		return
	}
	busy := st.Decode + st.Infer + st.Write + st.Ack
	pct := func(d time.Duration) float64 {
		if busy <= 0 {
			return 0
		}
		return 100 * float64(d) / float64(busy)
	}
	fmt.Fprintf(w, "worker: %d images in %d batches, %.1f img/s; decode %.0f%%, inference %.0f%%, database %.0f%%, queue %.0f%%\n",
		st.Done, st.Batches, float64(st.Done)/wall.Seconds(), pct(st.Decode), pct(st.Infer), pct(st.Write), pct(st.Ack))
}
