package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/jobs"
	"github.com/mlserve/mlserve/search"
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
	db, tasks, batch, workers, queue, visibility, attempts, statsEvery :=
		o.db, o.tasks, o.batch, o.workers, o.queue, o.visibility, o.attempts, o.statsEvery
	if cfg.RedisURL == "" {
		return errors.New("MLSERVE_REDIS_URL is not set: workers take their work from a Redis queue (without Redis, `mlserve index` does the work itself)")
	}
	// The runtime and the models load before the database is touched,
	// when the model is known without it.
	var cm *clipModels
	if !db.immich || db.model != "" {
		var err error
		if cm, err = openCLIP(cfg, cmp.Or(db.model, search.DefaultImmichModel), logger); err != nil {
			return err
		}
		defer cm.Close()
		if err := cm.load(ctx, false, tasks); err != nil {
			return err
		}
	}
	d, rq, queue, closeAll, err := openWork(ctx, db, cfg, false, queue,
		jobs.RedisOptions{VisibilityTimeout: visibility, MaxAttempts: attempts}, logger)
	if err != nil {
		return err
	}
	defer closeAll()
	opts := rq.Options()
	if cm == nil {
		if cm, err = openCLIP(cfg, d.model, logger); err != nil {
			return err
		}
		defer cm.Close()
	}
	w := jobs.NewWorker(rq, cm, tasks.sink(d.sink()), jobs.WorkerOptions{
		Analyzer: tasks.analyzer(cm.svc),
		Model:    d.model, BatchSize: batch, Paths: d.paths, Heartbeat: visibility / 3,
		Decode: decoder(cfg),
	}, logger)
	logger.Info("worker started", "model", d.model, "queue", queue, "consumer", opts.Consumer, "immich", db.immich, "workers", workers, "batch", batch)

	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for range max(workers, 1) {
		g.Go(func() error { return w.Run(gctx) })
	}
	if statsEvery > 0 {
		g.Go(func() error {
			t := time.NewTicker(statsEvery)
			defer t.Stop()
			for {
				select {
				case <-gctx.Done():
					return nil
				case <-t.C:
					st := w.Stats()
					logger.Info("worker progress", "done", st.Done, "retried", st.Retried, "dead", st.Dead,
						"rate", fmt.Sprintf("%.1f img/s", float64(st.Done)/time.Since(start).Seconds()))
				}
			}
		})
	}
	err = g.Wait()
	reportStats(stdout, w.Stats(), time.Since(start))
	return err
}
