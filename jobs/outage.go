package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Services an outage can be about, as OutageError.Service names them.
const (
	ServiceDatabase  = "database"
	ServiceQueue     = "queue"
	ServiceInference = "inference"
)

// DefaultOutageDeadline is how long an outage is waited out before the
// work stops with an *OutageError.
const DefaultOutageDeadline = 2 * time.Minute

// ErrOutage matches every *OutageError (errors.Is).
var ErrOutage = errors.New("outage longer than the deadline")

// OutageError ends work that waited an outage out for longer than its
// deadline: the database, the queue or inference kept failing with errors
// that are not the items' fault. Its message names the setting to check.
type OutageError struct {
	// Service is ServiceDatabase, ServiceQueue or ServiceInference.
	Service string
	// For is how long the outage lasted.
	For time.Duration
	// Err is the last error.
	Err error
}

func (e *OutageError) Error() string {
	d := e.For.Round(time.Second)
	switch e.Service {
	case ServiceDatabase:
		return fmt.Sprintf("the database (MLSERVE_DATABASE_URL) has been unavailable for %s: %v", d, e.Err)
	case ServiceQueue:
		return fmt.Sprintf("the Redis queue (MLSERVE_REDIS_URL) has been unavailable for %s: %v", d, e.Err)
	default:
		return fmt.Sprintf("inference has been unavailable for %s: %v", d, e.Err)
	}
}

func (e *OutageError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrOutage) true.
func (e *OutageError) Is(target error) bool { return target == ErrOutage }

// retrier waits outages out: it retries an operation with backoff while
// its errors are transient, for at most a deadline.
type retrier struct {
	backoff, maxBackoff time.Duration
	// deadline is how long an outage may last; negative: forever.
	deadline time.Duration
	// timeout bounds one attempt of a database operation (0: none), so
	// that a database that accepts connections and never answers (PGlite
	// while another client holds a transaction open) is an outage too,
	// not a hang.
	timeout time.Duration
	logger  *slog.Logger
}

// do calls f until it succeeds, fails with an error transient does not
// accept, ctx ends (ctx's error, wrapping the last one), or the failures
// have lasted longer than the deadline (an *OutageError for service).
func (r retrier) do(ctx context.Context, what, service string, f func(context.Context) error, transient func(error) bool) error {
	wait := r.backoff
	var first time.Time
	for n := 1; ; n++ {
		began := time.Now()
		err := r.attempt(ctx, service, f)
		if err == nil || !transient(err) {
			if err == nil && n > 1 {
				r.logger.Info("recovered", "op", what, "attempts", n, "after", time.Since(first).Round(time.Millisecond))
			}
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (after %w)", what, ctx.Err(), err)
		}
		if n == 1 {
			first = began // an attempt that hung counts from its start
		}
		lasted := time.Since(first)
		if r.deadline >= 0 && lasted+wait > r.deadline {
			return &OutageError{Service: service, For: lasted, Err: fmt.Errorf("%s: %w", what, err)}
		}
		if n == 1 || n%10 == 0 {
			r.logger.Warn("temporary failure; retrying", "op", what, "attempt", n, "err", err, "in", wait,
				"unavailable_for", lasted.Round(time.Second), "gives_up_after", r.deadline)
		}
		sleep(ctx, wait)
		wait = min(2*wait, r.maxBackoff)
	}
}

func (r retrier) attempt(ctx context.Context, service string, f func(context.Context) error) error {
	if service != ServiceDatabase || r.timeout <= 0 {
		return f(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return f(ctx)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
