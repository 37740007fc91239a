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
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/mlserve/mlserve/search"
)

// Statuser tells what an index knows about files (search.Store).
type Statuser interface {
	Status(ctx context.Context, q search.StatusQuery, paths []string) (map[string]search.FileStatus, error)
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
	// FaceModel and OCRModel, when set, ask for faces and OCR too: files
	// whose CLIP embedding is current get only the analyses they lack.
	FaceModel, OCRModel string
	// RetryFailed queues files whose failure is recorded even when they
	// did not change since.
	RetryFailed bool
	// Run names this producer run (its progress counters); random when
	// empty.
	Run string
	// Chunk is how many files are looked up and enqueued together
	// (default 256).
	Chunk int
	// Walk selects the files of a folder walk.
	Walk WalkOptions
	// OutageDeadline and Backoff: how long an outage of the database or
	// the queue is waited out, and the first wait (defaults
	// DefaultOutageDeadline and 200 ms; a negative deadline waits
	// forever); OpTimeout bounds one database lookup (default 1 minute).
	OutageDeadline, Backoff, OpTimeout time.Duration
}

// ProduceStats counts what a producer did.
type ProduceStats struct {
	WalkStats
	// Queued items; Unchanged files already indexed with the same
	// content and every analysis asked for.
	Queued, Unchanged int64
	// Partial of the queued items ask only for the analyses the index
	// lacks (e.g. faces added to an existing index).
	Partial int64
	// KnownFailures are files skipped because they failed before and did
	// not change since (ProducerOptions.RetryFailed queues them).
	KnownFailures int64
	// RootFiles counts the image files found under each root (absolute).
	RootFiles map[string]int64
}

// Producer finds work and enqueues it.
type Producer struct {
	q      Enqueuer
	opts   ProducerOptions
	logger *slog.Logger
	retry  retrier
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
	if opts.OutageDeadline == 0 {
		opts.OutageDeadline = DefaultOutageDeadline
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 200 * time.Millisecond
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = time.Minute
	}
	return &Producer{q: q, opts: opts, logger: logger,
		retry: retrier{backoff: opts.Backoff, maxBackoff: 10 * time.Second, deadline: opts.OutageDeadline, timeout: opts.OpTimeout, logger: logger}}
}

// Run is the name of this producer's run.
func (p *Producer) Run() string { return p.opts.Run }

// Queued is how many items were enqueued so far.
func (p *Producer) Queued() int64 { return p.queued.Load() }

func (p *Producer) enqueue(ctx context.Context, items []Item) error {
	if len(items) == 0 {
		return nil
	}
	if err := p.retry.do(ctx, "enqueue", ServiceQueue, func(ctx context.Context) error { return p.q.Enqueue(ctx, items) }, IsOutage); err != nil {
		return err
	}
	p.queued.Add(int64(len(items)))
	return nil
}

// Folders walks roots and enqueues every image file whose content the
// index lacks (idx may be nil: enqueue everything), asking for what is
// missing: the CLIP embedding of the model, and the faces and OCR asked
// for. A file whose size and modification time match what was indexed is
// not read; one whose metadata changed is hashed, and counts as unchanged
// if its content did not. A file whose failure is recorded is skipped
// until its size or modification time changes (or RetryFailed).
func (p *Producer) Folders(ctx context.Context, idx Statuser, roots ...string) (ProduceStats, error) {
	p.state.Store(1)
	defer p.state.Store(2)
	st := ProduceStats{RootFiles: map[string]int64{}}
	var batch []File
	flush := func() error {
		items, err := p.changed(ctx, idx, batch, &st)
		batch = batch[:0]
		if err != nil {
			return err
		}
		st.Queued += int64(len(items))
		return p.enqueue(ctx, items)
	}
	for _, root := range roots {
		abs, err := filepath.Abs(root)
		if err != nil {
			return st, fmt.Errorf("walk %s: %w", root, err)
		}
		ws, err := Walk(ctx, []string{abs}, p.opts.Walk, func(f File) error {
			batch = append(batch, f)
			if len(batch) >= p.opts.Chunk {
				return flush()
			}
			return nil
		})
		st.Files += ws.Files
		st.Skipped += ws.Skipped
		st.HEIC += ws.HEIC
		st.Errors += ws.Errors
		st.RootFiles[abs] += ws.Files
		if err != nil {
			return st, err
		}
	}
	if err := flush(); err != nil {
		return st, err
	}
	if st.HEIC > 0 {
		p.logger.Warn("HEIC/HEIF files skipped: this build's image decoder cannot read them", "files", st.HEIC)
	}
	return st, nil
}

// changed returns the items of files that need work, and counts the rest.
func (p *Producer) changed(ctx context.Context, idx Statuser, files []File, st *ProduceStats) ([]Item, error) {
	if len(files) == 0 {
		return nil, nil
	}
	known := map[string]search.FileStatus{}
	if idx != nil {
		paths := make([]string, len(files))
		for i, f := range files {
			paths[i] = f.Path
		}
		q := search.StatusQuery{Model: p.opts.Model, FaceModel: p.opts.FaceModel, OCRModel: p.opts.OCRModel}
		err := p.retry.do(ctx, "look up indexed files", ServiceDatabase, func(ctx context.Context) error {
			var err error
			known, err = idx.Status(ctx, q, paths)
			return err
		}, IsOutage)
		if err != nil {
			return nil, fmt.Errorf("look up indexed files: %w", err)
		}
	}
	var items []Item
	for _, f := range files {
		ks, ok := known[f.Path]
		if fl := ks.Failure; ok && fl != nil && !p.opts.RetryFailed && fl.Size == f.Size && sameTime(fl.ModTime, f.ModTime) {
			st.KnownFailures++
			continue
		}
		tasks := p.missing(ks, f)
		if len(tasks) == 0 {
			st.Unchanged++
			continue
		}
		it := Item{Path: f.Path, Model: p.opts.Model, Size: f.Size, ModTime: f.ModTime.UnixNano(), Run: p.opts.Run,
			Tasks: tasks, FaceModel: p.opts.FaceModel, OCRModel: p.opts.OCRModel}
		if len(tasks) < len(p.tasks()) {
			st.Partial++
		}
		items = append(items, it)
	}
	return items, nil
}

// tasks is everything this producer asks for.
func (p *Producer) tasks() []string {
	t := []string{TaskCLIP}
	if p.opts.FaceModel != "" {
		t = append(t, TaskFaces)
	}
	if p.opts.OCRModel != "" {
		t = append(t, TaskOCR)
	}
	return t
}

// missing returns what the index lacks for f: everything when f is not
// indexed or its content changed, else the analyses not done on it.
func (p *Producer) missing(ks search.FileStatus, f File) []string {
	all := p.tasks()
	if !ks.Indexed {
		return all
	}
	if ks.Size != f.Size || !sameTime(ks.ModTime, f.ModTime) {
		h, err := hashFile(f.Path)
		if err != nil || !bytes.Equal(h, ks.Hash) {
			return all // changed (or unreadable now: let a worker report it)
		}
	}
	var out []string
	for _, t := range all {
		switch {
		case t == TaskCLIP && ks.CLIP, t == TaskFaces && ks.Faces, t == TaskOCR && ks.OCR:
		default:
			out = append(out, t)
		}
	}
	return out
}

// sameTime compares a time the database stored (to the microsecond) with
// a file's (to the nanosecond).
func sameTime(stored, file time.Time) bool {
	d := stored.Sub(file)
	return d > -time.Microsecond && d < time.Microsecond
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
		var page []search.ImmichAsset
		err := p.retry.do(ctx, "list Immich assets", ServiceDatabase, func(ctx context.Context) error {
			var err error
			page, err = im.Pending(ctx, force, after, p.opts.Chunk)
			return err
		}, IsOutage)
		if err != nil {
			return st, err
		}
		if len(page) == 0 {
			return st, nil
		}
		after = page[len(page)-1].ID
		items := make([]Item, len(page))
		for i, a := range page {
			items[i] = Item{Path: a.Preview, AssetID: a.ID, Model: p.opts.Model, Run: p.opts.Run, Tasks: []string{TaskCLIP}}
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
	// Faces and Lines found in the items done.
	Faces, Lines int64
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

// watchPoll is how often Watch asks the queue whether the run is done.
const watchPoll = 50 * time.Millisecond

// Watch reports progress every interval until the producer has finished
// and every item of the run is done or failed, ctx ends, the queue loses
// the run, or the queue has been unreachable for longer than the outage
// deadline (an *OutageError). It may start before the producer does.
// report may be nil.
func (p *Producer) Watch(ctx context.Context, every time.Duration, report func(Progress)) (Progress, error) {
	start := time.Now()
	type sample struct {
		at       time.Time
		finished int64
	}
	var window []sample
	var last Progress
	var down time.Time // when the current outage began
	// The queue is asked often enough that the end of a run is seen at
	// once (a run that ends between two reports must not wait for the
	// next); report is called every `every`, and at the end.
	poll := min(every, watchPoll)
	var reported time.Time
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		finding := p.state.Load() != 2
		began := time.Now()
		c, err := p.q.Progress(ctx, p.opts.Run)
		if err != nil {
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			if down.IsZero() {
				down = began
			}
			if lasted := time.Since(down); p.opts.OutageDeadline >= 0 && lasted+every > p.opts.OutageDeadline {
				return last, &OutageError{Service: ServiceQueue, For: lasted, Err: fmt.Errorf("read progress: %w", err)}
			}
			if time.Since(reported) >= every {
				p.logger.Warn("cannot read progress", "err", err, "unavailable_for", time.Since(down).Round(time.Second))
				reported = time.Now()
			}
		} else {
			down = time.Time{}
			if !c.Known && !finding && p.queued.Load() > 0 {
				return last, fmt.Errorf("%w %s", ErrRunLost, p.opts.Run)
			}
			now := time.Now()
			finished := c.Done + c.Failed
			window = append(window, sample{now, finished})
			for len(window) > 2 && now.Sub(window[0].at) > time.Minute {
				window = window[1:]
			}
			pr := Progress{Total: c.Total, Done: c.Done, Failed: c.Failed, Faces: c.Faces, Lines: c.Lines,
				Finding: finding, ETA: -1, Elapsed: now.Sub(start)}
			if first := window[0]; now.Sub(first.at) > 0 && len(window) > 1 {
				pr.Rate = float64(finished-first.finished) / now.Sub(first.at).Seconds()
			}
			if !finding && pr.Rate > 0 {
				pr.ETA = time.Duration(float64(c.Total-finished) / pr.Rate * float64(time.Second))
			}
			last = pr
			done := !finding && finished >= c.Total
			if report != nil && (done || now.Sub(reported) >= every) {
				report(pr)
				reported = now
			}
			if done {
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
