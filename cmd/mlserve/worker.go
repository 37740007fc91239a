package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/jobs"
)

// workerOptions are worker's flags.
type workerOptions struct {
	db         dbFlags
	tasks      taskFlags
	batch      int
	workers    int
	queue      string
	visibility time.Duration
	attempts   int
	statsEvery time.Duration
}

// workerCommand is `mlserve worker`.
func (a *app) workerCommand() *cobra.Command {
	var o workerOptions
	cmd := &cobra.Command{
		Use:   "worker [flags]",
		Short: "Process the Redis queue that mlserve index fills",
		Long: `Takes images from the Redis queue (MLSERVE_REDIS_URL) that ` + "`mlserve index`" + `
fills, computes their CLIP embeddings on this host's accelerator and writes
them to PostgreSQL (MLSERVE_DATABASE_URL): our own schema, or with --immich
an Immich database's smart_search. Run it on any number of hosts; each
batch is written in one transaction and only then acknowledged, and items
of a worker that dies are taken over after --visibility. SIGTERM finishes
the batch in flight (or hands it back) and exits.`,
		Example: `  mlserve worker --immich --path-map /usr/src/app/upload=/mnt/immich`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.tasks.check(o.db.immich); err != nil {
				return usageError{err}
			}
			cfg, logger, err := a.setup(false)
			if err != nil {
				return err
			}
			return runWorker(cmd.Context(), o, a.stdout, cfg, logger)
		},
	}
	f := cmd.Flags()
	o.db.register(f)
	f.IntVar(&o.batch, "batch", 16, "images per batch")
	o.tasks.register(f)
	f.IntVar(&o.workers, "workers", 1, "batches processed at once on this host")
	f.StringVar(&o.queue, "queue", "", "Redis queue name (default derived from the schema and model, as `mlserve index` does)")
	f.DurationVar(&o.visibility, "visibility", 2*time.Minute, "how long a silent worker's items wait before another worker takes them")
	f.IntVar(&o.attempts, "attempts", 3, "failed attempts before an item goes to the dead-letter stream")
	f.DurationVar(&o.statsEvery, "stats", time.Minute, "how often throughput is logged (0: only at exit)")
	return cmd
}

func runWorker(ctx context.Context, o workerOptions, stdout io.Writer, cfg *config.Config, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	db, tasks := o.db, o.tasks
	if cfg.RedisURL == "" {
		return errors.New("MLSERVE_REDIS_URL is not set: workers take their work from a Redis queue (without Redis, `mlserve index` does the work itself)")
	}
	open, paths, err := openIndex(db, cfg, false, logger)
	if err != nil {
		return err
	}
	rc, err := redisClient(cfg)
	if err != nil {
		return err
	}
	defer rc.Close()
	// The Indexer loads the models before it opens the database.
	svc, closeEngine, err := openEngine(cfg, true, logger)
	if err != nil {
		return err
	}
	defer closeEngine()
	opts := jobs.IndexerOptions{
		Engine: svc, Open: open, Immich: db.immich, Model: db.model, Redis: rc,
		Queue:     jobs.RedisOptions{Name: o.queue, VisibilityTimeout: o.visibility, MaxAttempts: o.attempts},
		FaceModel: tasks.faces, OCRModel: tasks.ocr, Analysis: tasks.analysis(),
		BatchSize: o.batch, Workers: o.workers, Paths: paths, StatsEvery: o.statsEvery,
		Decode:  decoder(ctx, svc, clipModel(db), tasks.faces != "" || tasks.ocr != ""),
		Recycle: svc.Recycle,
	}
	start := time.Now()
	st, err := jobs.NewIndexer(opts, logger).Work(ctx)
	reportStats(stdout, st, time.Since(start))
	return err
}
