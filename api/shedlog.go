package api

import (
	"log/slog"
	"sync"
	"time"
)

// shedLogEvery is how often, at most, the log reports refused requests.
const shedLogEvery = 10 * time.Second

// shedLog reports the requests refused for overload (503 + Retry-After:
// a full queue, the in-flight byte budget, the shutdown drain) without a
// line per request. Under overload the service refuses dozens of requests
// a second by design; a line each would flood the log and spend the CPU
// that refusing early is meant to save. The first refusal is logged at
// once, later ones are counted and reported at most every shedLogEvery;
// mlserve_http_rejected_total counts every one.
type shedLog struct {
	logger *slog.Logger
	every  time.Duration

	mu      sync.Mutex
	last    time.Time // of the last line
	pending int       // refusals since then
}

func newShedLog(logger *slog.Logger) *shedLog {
	return &shedLog{logger: logger, every: shedLogEvery}
}

// note counts one refusal and logs when the last line is old enough.
func (l *shedLog) note(reason string) {
	now := time.Now()
	l.mu.Lock()
	l.pending++
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.mu.Unlock()
		return
	}
	n, since := l.pending, now.Sub(l.last)
	first := l.last.IsZero()
	l.pending, l.last = 0, now
	l.mu.Unlock()
	if first {
		l.logger.Warn("refusing requests with 503 + Retry-After: the service is overloaded (counted in mlserve_http_rejected_total, reported here at most once per period)", "reason", reason, "period", l.every.String())
		return
	}
	l.logger.Warn("refusing requests with 503 + Retry-After: the service is overloaded", "refused", n, "in", since.Round(time.Second).String(), "reason", reason)
}
