package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/jobs"
	"github.com/mlserve/mlserve/pool"
	"github.com/mlserve/mlserve/search"
)

// indexOptions are index's flags and arguments.
type indexOptions struct {
	db        dbFlags
	tasks     taskFlags
	force     bool
	batch     int
	workers   int
	noWait    bool
	queue     string
	deferIdx  bool
	interval  time.Duration
	heicFiles bool
	// retryFailed queues files whose failure is recorded although they
	// did not change.
	retryFailed bool
	roots       []string
	// progress is told of the run's progress (a bar on a terminal).
	progress Reporter
}

// indexCommand is `mlserve index`.
func (a *app) indexCommand() *cobra.Command {
	var o indexOptions
	cmd := &cobra.Command{
		Use:   "index [flags] PATH...",
		Short: "Embed a photo folder or an Immich library into PostgreSQL/pgvector",
		Long: `Computes CLIP image embeddings (and with --faces/--ocr, faces and text) and
stores them in PostgreSQL/pgvector (MLSERVE_DATABASE_URL; ` + "`make db`" + ` starts a local one).

  mlserve index PATH...   walks the folders (JPEG, PNG, WebP), skipping files
                          already indexed with the same content, into our own
                          schema; find them with ` + "`mlserve search`" + `.
  mlserve index --immich  embeds the assets of the Immich database at
                          MLSERVE_DATABASE_URL that lack a CLIP embedding (all
                          with --force) from their preview files, and upserts
                          smart_search as the Immich server does.

Without MLSERVE_REDIS_URL the work runs in this process. With it, the work
goes to a Redis queue for ` + "`mlserve worker`" + ` processes on any number
of hosts, and this command shows their progress until they are done. On a
terminal the progress is a bar; otherwise a line every --progress.`,
		Example: `  mlserve index ~/Pictures
  mlserve index ~/Pictures --faces buffalo_l --ocr PP-OCRv5_mobile
  mlserve index --immich --path-map /usr/src/app/upload=/mnt/immich`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.tasks.check(o.db.immich); err != nil {
				return usageError{err}
			}
			if o.db.immich != (len(args) == 0) {
				return usagef("give folders to index, or --immich (not both)")
			}
			if o.force && !o.db.immich {
				return usagef("--force applies to --immich")
			}
			cfg, logger, err := a.setup(true)
			if err != nil {
				return err
			}
			if cfg.DatabaseURL == "" {
				return errNoDatabase
			}
			o.roots = args
			bar := a.newProgress("indexing", false, o.interval)
			defer bar.Close()
			o.progress = bar
			return runIndex(cmd.Context(), o, a.stdout, cfg, logger)
		},
	}
	f := cmd.Flags()
	o.db.register(f)
	f.BoolVar(&o.force, "force", false, "with --immich: embed every asset again, not only those without an embedding")
	f.IntVar(&o.batch, "batch", 16, "images per batch (read, embed, write, acknowledge)")
	o.tasks.register(f)
	f.IntVar(&o.workers, "workers", 1, "in-process mode: batches processed at once")
	f.BoolVar(&o.noWait, "no-wait", false, "with Redis: enqueue and return without waiting for the workers")
	f.StringVar(&o.queue, "queue", "", "Redis queue name (default derived from the schema and model)")
	f.BoolVar(&o.deferIdx, "defer-index", false, "build the HNSW index after loading instead of while loading (faster for a first bulk load)")
	f.DurationVar(&o.interval, "progress", 2*time.Second, "how often a progress line is printed when stderr is not a terminal")
	f.BoolVar(&o.retryFailed, "retry-failed", false, "queue again the files that failed before, even if they did not change")
	f.BoolVar(&o.heicFiles, "heic", false, "also pick .heic/.heif files (only if this build's decoder reads them)")
	return cmd
}

// dbFlags are the flags that pick the database side, shared by index,
// worker and search.
type dbFlags struct {
	model        string
	immich       bool
	schema       string
	immichSchema string
	paths        []string
}

func (d *dbFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&d.model, "model", "", "CLIP model (default ViT-B-32__openai; with --immich, the model Immich is configured with)")
	fs.BoolVar(&d.immich, "immich", false, "work on an Immich database (smart_search) instead of our own schema")
	fs.StringVar(&d.schema, "schema", search.DefaultSchema, "PostgreSQL schema of our own tables")
	fs.StringVar(&d.immichSchema, "immich-schema", "public", "PostgreSQL schema of Immich's tables")
	fs.StringArrayVar(&d.paths, "path-map", nil, "FROM=TO: read files stored under FROM (e.g. Immich's /usr/src/app/upload) from TO on this host; repeatable")
	_ = fs.SetAnnotation("model", cobra.BashCompCustom, nil)
}

// openIndex returns the opener of the index the flags pick: our own
// schema or an Immich database. The indexer calls it only once the models
// have loaded.
func openIndex(f dbFlags, cfg *config.Config, deferIndexes bool, logger *slog.Logger) (func(context.Context) (search.Index, error), search.PathMap, error) {
	if cfg.DatabaseURL == "" {
		return nil, search.PathMap{}, errors.New("MLSERVE_DATABASE_URL is not set (`make db` starts a local PostgreSQL with pgvector and prints it)")
	}
	paths, err := search.ParsePathMap(f.paths)
	if err != nil {
		return nil, search.PathMap{}, err
	}
	opts := search.IndexOptions{URL: cfg.DatabaseURL, Immich: f.immich, Schema: f.schema, ImmichSchema: f.immichSchema,
		Paths: paths, DeferIndexes: deferIndexes}
	return func(ctx context.Context) (search.Index, error) { return search.OpenIndex(ctx, opts, logger) }, paths, nil
}

// openEngine starts ONNX Runtime and the inference service, as serve
// does; bulk (index, worker: no one waits for a lone image) runs one
// single-threaded run per core at once on the CPU unless
// MACHINE_LEARNING_MODEL_INTRA_OP_THREADS says otherwise.
func openEngine(cfg *config.Config, bulk bool, logger *slog.Logger) (*pool.Service, func(), error) {
	rt, err := newRuntimeFor(cfg, bulk, logger)
	if err != nil {
		return nil, nil, err
	}
	svc, err := newService(cfg, rt, nil, logger)
	if err != nil {
		rt.Close()
		return nil, nil, err
	}
	return svc, func() { svc.Close(); rt.Close() }, nil
}

// redisClient connects to MLSERVE_REDIS_URL, or returns nil without it.
func redisClient(cfg *config.Config) (*redis.Client, error) {
	if cfg.RedisURL == "" {
		return nil, nil
	}
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("MLSERVE_REDIS_URL: %w", cfg.Redactor().Error(err)) // net/url quotes the whole URL
	}
	return redis.NewClient(opt), nil
}

func runIndex(ctx context.Context, o indexOptions, stdout io.Writer, cfg *config.Config, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	db, tasks := o.db, o.tasks
	open, paths, err := openIndex(db, cfg, o.deferIdx, logger)
	if err != nil {
		return err
	}
	rc, err := redisClient(cfg)
	if err != nil {
		return err
	}
	// The bar is redrawn often; without a terminal it prints a line every
	// --progress itself.
	every, report := o.interval, func(pr jobs.Progress) { fmt.Fprintf(stdout, "indexing: %s\n", pr) }
	if o.progress != nil {
		every = min(o.interval, 500*time.Millisecond)
		report = func(pr jobs.Progress) { o.progress.Progress(pr.Done+pr.Failed, pr.Total, pr.Failed) }
	}
	opts := jobs.IndexerOptions{
		Open: open, Immich: db.immich, Roots: o.roots, Force: o.force, Model: db.model,
		Redis: rc, Queue: jobs.RedisOptions{Name: o.queue}, NoWait: o.noWait,
		FaceModel: tasks.faces, OCRModel: tasks.ocr, Analysis: tasks.analysis(),
		Prune: true, RetryFailed: o.retryFailed, BatchSize: o.batch, Workers: o.workers, Walk: jobs.WalkOptions{HEIC: o.heicFiles},
		Paths: paths, CreateIndexes: o.deferIdx,
		ProgressEvery: every, Progress: report,
	}
	if rc != nil {
		defer rc.Close()
	} else {
		// In-process: the models load (the Indexer loads them before it
		// opens the database) on this process's engine.
		svc, closeEngine, err := openEngine(cfg, true, logger)
		if err != nil {
			return err
		}
		defer closeEngine()
		opts.Engine = svc
		opts.Decode = decoder(ctx, svc, clipModel(db), tasks.faces != "" || tasks.ocr != "")
		opts.Recycle = svc.Recycle
	}
	sum, err := jobs.NewIndexer(opts, logger).Run(ctx)
	if o.progress != nil {
		o.progress.Close() // the bar ends before the summary
	}
	printSummary(stdout, sum, rc != nil && o.noWait)
	return err
}

// clipModel is the CLIP model the flags name before the database is open:
// --model, or for our own schema the default; "" when Immich's database
// says (then images decode at full size: see decoder).
func clipModel(db dbFlags) string {
	if db.model != "" || db.immich {
		return db.model
	}
	return search.DefaultImmichModel
}

// printSummary prints what an index run did.
func printSummary(w io.Writer, s jobs.Summary, noWait bool) {
	for _, f := range s.Failures {
		name := f.Path
		if f.AssetID != "" {
			name = f.AssetID + " (" + f.Path + ")"
		}
		fmt.Fprintf(w, "failed: %s: %s\n", name, f.Error)
	}
	if noWait {
		fmt.Fprintf(w, "queued %d images on %s (run %s); start `mlserve worker` to process them\n", s.Queued, s.Queue, s.Run)
		return
	}
	if s.Run == "" {
		return // failed before any work
	}
	fmt.Fprintf(w, "indexed %d of %d images (%d failed) in %s, %.1f img/s (models loaded in %s)",
		s.Indexed, s.Queued, s.Failed, s.Elapsed.Round(time.Second), s.Rate(), s.Load.Round(time.Millisecond))
	if s.Skipped() > 0 {
		fmt.Fprintf(w, "; %d unchanged, %d skipped as failed before (--retry-failed)", s.Unchanged, s.KnownFailures)
	}
	if s.Faces > 0 || s.Lines > 0 {
		fmt.Fprintf(w, "; %d faces, %d lines of text", s.Faces, s.Lines)
	}
	if s.Pruned > 0 {
		fmt.Fprintf(w, "; %d removed (files gone)", s.Pruned)
	}
	if s.Interrupted {
		fmt.Fprintf(w, "; interrupted, %d not done", s.Queued-s.Indexed-s.Failed)
	}
	fmt.Fprintln(w)
	if p := s.People; p != nil && p.Assigned > 0 {
		fmt.Fprintf(w, "people: %d faces assigned, %d new people\n", p.Assigned, p.Created)
	}
}

// reportStats prints a worker's throughput and where its time went (the
// items' decode and inference times overlap each other).
func reportStats(w io.Writer, st jobs.Stats, wall time.Duration) {
	if st.Items == 0 {
		return
	}
	fmt.Fprintf(w, "worker: %d images in %d batches, %.1f img/s; per image: decode %s, inference %s; per batch: database %s, queue %s\n",
		st.Done, st.Batches, float64(st.Done)/wall.Seconds(),
		(st.Decode / time.Duration(st.Items)).Round(time.Millisecond), (st.Infer / time.Duration(st.Items)).Round(time.Millisecond),
		(st.Write / time.Duration(st.Batches)).Round(time.Millisecond), (st.Ack / time.Duration(st.Batches)).Round(time.Millisecond))
}
