package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

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
	if cfg.RedisURL == "" {
		return errors.New("MLSERVE_REDIS_URL is not set: workers take their work from a Redis queue (without Redis, `mlserve index` does the work itself)")
	}
	d, rq, queue, closeAll, err := openWork(ctx, db, cfg, false, queue, logger)
	if err != nil {
		return err
	}
	defer closeAll()
	// openQueue used the defaults; apply this command's settings.
	opts := rq.Options()
	opts.VisibilityTimeout, opts.MaxAttempts = visibility, attempts
	if rq, err = jobs.NewRedis(ctx, opts, logger); err != nil {
		return err
	}
	cm, err := openCLIP(cfg, d.model, logger)
	if err != nil {
		return err
	}
	defer cm.Close()
	w := jobs.NewWorker(rq, cm, tasks.sink(d.sink()), jobs.WorkerOptions{
		Analyzer: tasks.analyzer(cm.svc),
		Model:    d.model, BatchSize: batch, Paths: d.paths, Heartbeat: visibility / 3,
		Decode: decoder(ctx, cm.svc, d.model, tasks.analyzer(cm.svc) != nil),
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
