package jobs

import (
	"context"
	"errors"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
	"github.com/mlserve/mlserve/search"
)

// IsOutage tells failures that are not an item's fault from those that
// are. An outage is retried with backoff, holding the batch, and never
// counts toward an item's attempts; anything else is charged to the item
// (retried up to MaxAttempts, or dead-lettered at once when permanent).
//
// Outages are:
//   - inference that cannot run now: the pool's queue is full or it is
//     shutting down (pool.ErrQueueFull, pool.ErrClosed), the model does
//     not load (pool.ErrLoadFailed: download, disk, provider), the runtime
//     closed (inference.ErrClosed), a device out of memory
//     (inference.ErrOutOfMemory, which pool's DeviceMemoryError wraps: the
//     pool evicted and retried once already; memory frees up as other
//     work ends), a download or the model store failed
//     (models.ErrDownload, ErrOffline, ErrBusy, ErrClosed);
//   - a deadline or cancellation that is not the worker's own shutdown
//     (context.DeadlineExceeded, context.Canceled, inference.ErrCanceled);
//   - the database or the network (search.IsTransient: connection
//     refused, reset or timed out, PostgreSQL shutting down or out of
//     resources, serialization failures).
//
// Item errors are everything else: a file that does not decode, an image
// the model rejects (inference.ErrInput), a failed run on that input, an
// embedding the database refuses.
func IsOutage(err error) bool {
	if err == nil {
		return false
	}
	for _, target := range []error{
		pool.ErrQueueFull, pool.ErrClosed, pool.ErrLoadFailed,
		inference.ErrClosed, inference.ErrCanceled, inference.ErrOutOfMemory,
		models.ErrDownload, models.ErrOffline, models.ErrBusy, models.ErrClosed,
		context.Canceled, context.DeadlineExceeded,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return search.IsTransient(err)
}
