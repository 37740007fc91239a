package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/mlserve/mlserve/search"
)

// Lookuper tells what is already indexed (search.Store implements it).
type Lookuper interface {
	Lookup(ctx context.Context, model string, paths []string) (map[string]search.Indexed, error)
}

// PendingLister lists the Immich assets to embed (search.Immich
// implements it).
type PendingLister interface {
	Pending(ctx context.Context, force bool, after string, limit int) ([]search.ImmichAsset, error)
}

// ProducerOptions configure a Producer.
type ProducerOptions struct {
	// Model is the CLIP model the items are for.
	Model string
	// Run names this producer run (its progress counters); random when
	// empty.
	Run string
	// Chunk is how many files are looked up and enqueued together
	// (default 256).
	Chunk int
	// Walk selects the files of a folder walk.
	Walk WalkOptions
}

// ProduceStats counts what a producer did.
type ProduceStats struct {
	WalkStats
	// Queued items; Unchanged files already indexed with the same content.
	Queued, Unchanged int64
}

// Producer finds work and enqueues it.
type Producer struct {
	q      Enqueuer
	opts   ProducerOptions
	logger *slog.Logger
	queued atomic.Int64
	// state: 0 before Folders/Immich, 1 while finding work, 2 after.
	state atomic.Int32
}

// NewProducer returns a producer for q.
func NewProducer(q Enqueuer, opts ProducerOptions, logger *slog.Logger) *Producer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.Run == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		opts.Run = time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
	}
	if opts.Chunk <= 0 {
		opts.Chunk = 256
	}
	return &Producer{q: q, opts: opts, logger: logger}
}

// Run is the name of this producer's run.
func (p *Producer) Run() string { return p.opts.Run }

// Queued is how many items were enqueued so far.
func (p *Producer) Queued() int64 { return p.queued.Load() }

func (p *Producer) enqueue(ctx context.Context, items []Item) error {
	if len(items) == 0 {
		return nil
	}
	if err := p.q.Enqueue(ctx, items); err != nil {
		return err
	}
	p.queued.Add(int64(len(items)))
	return nil
}

// Folders walks roots and enqueues every image file that has no embedding
// of the model yet, or whose content changed since. A file whose size and
// modification time match what was indexed is skipped without reading it;
// one whose metadata changed is hashed, and skipped if its content did
// not. idx may be nil (enqueue everything).
func (p *Producer) Folders(ctx context.Context, idx Lookuper, roots ...string) (ProduceStats, error) {
	p.state.Store(1)
	defer p.state.Store(2)
	var st ProduceStats
	var batch []File
	flush := func() error {
		items, unchanged, err := p.changed(ctx, idx, batch)
		batch = batch[:0]
		if err != nil {
			return err
		}
		st.Unchanged += unchanged
		st.Queued += int64(len(items))
		return p.enqueue(ctx, items)
	}
	ws, err := Walk(ctx, roots, p.opts.Walk, func(f File) error {
		batch = append(batch, f)
		if len(batch) >= p.opts.Chunk {
			return flush()
		}
		return nil
	})
	st.WalkStats = ws
	if err == nil {
		err = flush()
	}
	if st.HEIC > 0 {
		p.logger.Warn("HEIC/HEIF files skipped: this build's image decoder cannot read them", "files", st.HEIC)
	}
	return st, err
}

// changed returns the items of files that need (re)indexing.
func (p *Producer) changed(ctx context.Context, idx Lookuper, files []File) ([]Item, int64, error) {
	known := map[string]search.Indexed{}
	if idx != nil && len(files) > 0 {
		paths := make([]string, len(files))
		for i, f := range files {
			paths[i] = f.Path
		}
		var err error
		if known, err = idx.Lookup(ctx, p.opts.Model, paths); err != nil {
			return nil, 0, fmt.Errorf("look up indexed files: %w", err)
		}
	}
	var items []Item
	var unchanged int64
	for _, f := range files {
		if ix, ok := known[f.Path]; ok {
			if ix.Current && ix.Size == f.Size && ix.ModTime.Equal(f.ModTime) {
				unchanged++
				continue
			}
			h, err := hashFile(f.Path)
			if err == nil && bytes.Equal(h, ix.Hash) {
				unchanged++
				continue
			}
			// Unreadable now: let a worker try, and report it.
		}
		items = append(items, Item{Path: f.Path, Model: p.opts.Model, Size: f.Size, ModTime: f.ModTime.UnixNano(), Run: p.opts.Run})
	}
	return items, unchanged, nil
}

func hashFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// Immich enqueues the Immich assets that lack a CLIP embedding (all of
// them with force). Items carry the preview path as Immich stored it; each
// worker maps it to its own mount (WorkerOptions.Paths), since worker
// hosts may mount the library in different places.
func (p *Producer) Immich(ctx context.Context, im PendingLister, force bool) (ProduceStats, error) {
	p.state.Store(1)
	defer p.state.Store(2)
	var st ProduceStats
	after := ""
	for {
		page, err := im.Pending(ctx, force, after, p.opts.Chunk)
		if err != nil {
			return st, err
		}
		if len(page) == 0 {
			return st, nil
		}
		after = page[len(page)-1].ID
		items := make([]Item, len(page))
		for i, a := range page {
			items[i] = Item{Path: a.Preview, AssetID: a.ID, Model: p.opts.Model, Run: p.opts.Run}
		}
		st.Files += int64(len(items))
		st.Queued += int64(len(items))
		if err := p.enqueue(ctx, items); err != nil {
			return st, err
		}
	}
}

// Progress is a run's progress as reported while workers run.
type Progress struct {
	Total, Done, Failed int64
	// Finding is true while the producer is still finding work (Total
	// still grows).
	Finding bool
	// Rate is items finished per second, over the last minute.
	Rate float64
	// ETA is the time left at that rate; negative when unknown.
	ETA     time.Duration
	Elapsed time.Duration
}

// String is the progress line printed by `mlserve index`.
func (pr Progress) String() string {
	total := fmt.Sprint(pr.Total)
	if pr.Finding {
		total += "+"
	}
	s := fmt.Sprintf("%d/%s done", pr.Done, total)
	if pr.Failed > 0 {
		s += fmt.Sprintf(", %d failed", pr.Failed)
	}
	s += fmt.Sprintf(", %.1f img/s", pr.Rate)
	if pr.ETA >= 0 {
		s += ", ETA " + pr.ETA.Round(time.Second).String()
	}
	return s
}

// ErrRunLost: the queue forgot the run (Redis restarted without
// persistence); its items are gone and indexing must run again (files
// already indexed are skipped).
var ErrRunLost = errors.New("queue lost the run's state")

// Watch reports progress every interval until the producer has finished
// and every item of the run is done or failed, ctx ends, or the queue
// loses the run. It may start before the producer does. report may be nil.
func (p *Producer) Watch(ctx context.Context, every time.Duration, report func(Progress)) (Progress, error) {
	start := time.Now()
	type sample struct {
		at       time.Time
		finished int64
	}
	var window []sample
	var last Progress
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		finding := p.state.Load() != 2
		c, err := p.q.Progress(ctx, p.opts.Run)
		if err != nil {
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			p.logger.Warn("cannot read progress", "err", err)
		} else {
			if !c.Known && !finding && p.queued.Load() > 0 {
				return last, fmt.Errorf("%w %s", ErrRunLost, p.opts.Run)
			}
			now := time.Now()
			finished := c.Done + c.Failed
			window = append(window, sample{now, finished})
			for len(window) > 2 && now.Sub(window[0].at) > time.Minute {
				window = window[1:]
			}
			pr := Progress{Total: c.Total, Done: c.Done, Failed: c.Failed, Finding: finding, ETA: -1, Elapsed: now.Sub(start)}
			if first := window[0]; now.Sub(first.at) > 0 && len(window) > 1 {
				pr.Rate = float64(finished-first.finished) / now.Sub(first.at).Seconds()
			}
			if !finding && pr.Rate > 0 {
				pr.ETA = time.Duration(float64(c.Total-finished) / pr.Rate * float64(time.Second))
			}
			last = pr
			if report != nil {
				report(pr)
			}
			if !finding && finished >= c.Total {
				return pr, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-t.C:
		}
	}
}
