package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/jobs"
)

const workerUsage = `usage: mlserve worker [flags]

Takes images from the Redis queue (MLSERVE_REDIS_URL) that ` + "`mlserve index`" + `
fills, computes their CLIP embeddings on this host's accelerator and writes
them to PostgreSQL (MLSERVE_DATABASE_URL): our own schema, or with --immich
an Immich database's smart_search. Run it on any number of hosts; each
batch is written in one transaction and only then acknowledged, and items
of a worker that dies are taken over after --visibility. SIGTERM finishes
the batch in flight (or hands it back) and exits.

flags:
`

func runWorker(ctx context.Context, args []string, stdout io.Writer, cfg *config.Config, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() { fmt.Fprint(stdout, workerUsage); fs.PrintDefaults() }
	var (
		db         dbFlags
		batch      int
		workers    int
		queue      string
		visibility time.Duration
		attempts   int
		statsEvery time.Duration
	)
	db.register(fs)
	fs.IntVar(&batch, "batch", 16, "images per batch")
	var tasks taskFlags
	tasks.register(fs)
	fs.IntVar(&workers, "workers", 1, "batches processed at once on this host")
	fs.StringVar(&queue, "queue", "", "Redis queue name (default derived from the schema and model, as `mlserve index` does)")
	fs.DurationVar(&visibility, "visibility", 2*time.Minute, "how long a silent worker's items wait before another worker takes them")
	fs.IntVar(&attempts, "attempts", 3, "failed attempts before an item goes to the dead-letter stream")
	fs.DurationVar(&statsEvery, "stats", time.Minute, "how often throughput is logged (0: only at exit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := tasks.check(db.immich); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	open, paths, err := openIndex(db, cfg, false, logger)
	if err != nil {
		return err
	}
	rc, err := redisClient(cfg)
	if err != nil {
		return err
	}
	if rc != nil {
		defer rc.Close()
	}
	opts := jobs.IndexerOptions{
		Open: open, Immich: db.immich, Model: db.model, Redis: rc,
		Queue:     jobs.RedisOptions{Name: queue, VisibilityTimeout: visibility, MaxAttempts: attempts},
		FaceModel: tasks.faces, OCRModel: tasks.ocr, Analysis: tasks.analysis(),
		BatchSize: batch, Workers: workers, Paths: paths, Decode: decoder(cfg), StatsEvery: statsEvery,
	}
	if rc != nil {
		svc, closeEngine, err := openEngine(cfg, logger)
		if err != nil {
			return err
		}
		defer closeEngine()
		opts.Engine = svc
	}
	start := time.Now()
	st, err := jobs.NewIndexer(opts, logger).Work(ctx)
	reportStats(stdout, st, time.Since(start))
	return err
}
