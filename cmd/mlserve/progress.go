package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/mlserve/mlserve/models"
)

// Reporter is told of a long command's progress: items (or bytes) done
// and failed out of a total that may grow as work is found. The indexer
// reports to it; see progress for what it shows. Close ends the display
// (call it before printing a summary); it may be called more than once.
type Reporter interface {
	Progress(done, total, failed int64)
	Close()
}

// progress shows a Reporter's numbers. On a terminal it is one bar,
// redrawn in place, with done/total, percentage, rate, ETA and failures,
// and log lines are printed above it; otherwise it prints a plain line
// every interval (and none while nothing is known). Close ends it.
type progress struct {
	label    string
	bytes    bool
	out      io.Writer
	interval time.Duration
	tty      bool
	logs     *logSink

	mu                  sync.Mutex
	done, total, failed int64
	start               time.Time // first progress
	base                int64     // done at the first progress (resumed, skipped)
	lastLine            time.Time
	closed              bool

	p       *mpb.Progress
	bar     *mpb.Bar
	restore func() // gives the log lines back to stderr
}

// isTerminal tells whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// newProgress prepares a progress display on stderr; bytes formats the
// counts as sizes. Nothing is shown until there is a total.
func (a *app) newProgress(label string, bytes bool, interval time.Duration) *progress {
	return &progress{label: label, bytes: bytes, out: a.stderr, interval: interval, tty: isTerminal(a.stderr), logs: a.logs}
}

// startBar draws the bar (called with mu held, once there is a total).
func (pr *progress) startBar() {
	pr.p = mpb.New(mpb.WithOutput(pr.out), mpb.WithRefreshRate(120*time.Millisecond), mpb.WithWidth(100))
	pr.bar = pr.p.New(0, mpb.BarStyle().Lbound("[").Rbound("]").Filler("=").Tip(">").Padding(" "),
		mpb.PrependDecorators(decor.Name(pr.label)),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return " " + pr.stats() })),
		mpb.BarWidth(30),
	)
	pr.restore = pr.logs.redirect(pr.p)
}

// Progress implements Reporter.
func (pr *progress) Progress(done, total, failed int64) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.closed {
		return
	}
	now := time.Now()
	if pr.start.IsZero() {
		pr.start, pr.base, pr.lastLine = now, done, now
	}
	pr.done, pr.total, pr.failed = done, max(total, done), failed
	if pr.tty && pr.bar == nil && pr.total > 0 {
		pr.startBar()
	}
	if pr.bar != nil {
		pr.bar.SetTotal(pr.total, false)
		pr.bar.SetCurrent(done)
		return
	}
	if now.Sub(pr.lastLine) >= pr.interval && pr.total > 0 {
		pr.lastLine = now
		fmt.Fprintf(pr.out, "%s %s\n", pr.label, pr.statsLocked())
	}
}

func (pr *progress) stats() string {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.statsLocked()
}

// statsLocked is "12/500 (2%), 3.1 img/s, ETA 2m37s, 1 failed".
func (pr *progress) statsLocked() string {
	var b strings.Builder
	if pr.bytes {
		fmt.Fprintf(&b, "%s/%s", size(pr.done), size(pr.total))
	} else {
		fmt.Fprintf(&b, "%d/%d", pr.done, pr.total)
	}
	if pr.total > 0 {
		fmt.Fprintf(&b, " (%d%%)", 100*pr.done/pr.total)
	}
	if el := time.Since(pr.start); !pr.start.IsZero() && el > 500*time.Millisecond && pr.done > pr.base {
		rate := float64(pr.done-pr.base) / el.Seconds()
		if pr.bytes {
			fmt.Fprintf(&b, ", %s/s", size(int64(rate)))
		} else {
			fmt.Fprintf(&b, ", %.1f/s", rate)
		}
		if left := pr.total - pr.done; left > 0 {
			fmt.Fprintf(&b, ", ETA %s", (time.Duration(float64(left)/rate) * time.Second).Round(time.Second))
		}
	}
	if pr.failed > 0 {
		fmt.Fprintf(&b, ", %d failed", pr.failed)
	}
	return b.String()
}

// Close ends the display: the bar stays drawn with its last state (log
// lines go to stderr again); without a terminal, a last line is printed
// if anything was shown.
func (pr *progress) Close() {
	pr.mu.Lock()
	if pr.closed {
		pr.mu.Unlock()
		return
	}
	pr.closed = true
	bar, p := pr.bar, pr.p
	pr.mu.Unlock()
	if bar == nil {
		if pr.total > 0 && !pr.lastLine.Equal(pr.start) {
			fmt.Fprintf(pr.out, "%s %s\n", pr.label, pr.stats())
		}
		return
	}
	bar.SetTotal(-1, true) // complete at the current count
	p.Wait()
	pr.restore()
}

// size formats a byte count (binary units).
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// downloadProgress turns a model store's download events into a bytes
// progress display: the files of the models downloading now, added up.
type downloadProgress struct {
	pr *progress

	mu      sync.Mutex
	total   int64            // bytes announced by DownloadStarted (-1 unknown)
	have    map[string]int64 // per file
	sizes   map[string]int64 // per file, once known
	unknown bool
}

var _ models.DownloadObserver = (*downloadProgress)(nil)

func newDownloadProgress(pr *progress) *downloadProgress {
	return &downloadProgress{pr: pr, have: map[string]int64{}, sizes: map[string]int64{}}
}

// DownloadStarted implements models.DownloadObserver.
func (d *downloadProgress) DownloadStarted(model string, files int, bytes int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if bytes < 0 {
		d.unknown = true
	} else {
		d.total += bytes
	}
	d.report()
}

// DownloadProgress implements models.DownloadObserver.
func (d *downloadProgress) DownloadProgress(p models.FileProgress) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := p.Model + "/" + p.File
	d.have[k] = p.Have
	if p.Size >= 0 {
		d.sizes[k] = p.Size
	}
	d.report()
}

// DownloadFinished implements models.DownloadObserver.
func (d *downloadProgress) DownloadFinished(string, error) {}

func (d *downloadProgress) report() {
	var have, total int64
	for k, n := range d.have {
		have += n
		if d.unknown {
			total += max(d.sizes[k], n)
		}
	}
	if !d.unknown {
		total = d.total
	}
	d.pr.Progress(have, total, 0)
}
