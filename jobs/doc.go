// Package jobs moves bulk embedding work from the place that knows what to
// index to the hosts that compute embeddings, and writes the results to
// PostgreSQL.
//
// A [Producer] finds work: `mlserve index PATH…` walks folders (skipping
// files whose content is already indexed) and `mlserve index --immich`
// lists the assets of an Immich library that lack a CLIP embedding. It
// enqueues [Item]s with bounded memory: Enqueue waits while the queue is
// long. It reports progress (done/total, rate, ETA) until the work is done.
//
// A [Worker] reads items in batches, reads and decodes the files, runs the
// CLIP image encoder on the batch, writes all results of the batch in one
// database transaction and only then acknowledges the items. Delivery is
// at least once and every write is an idempotent upsert, so a worker killed
// at any point loses nothing and duplicates nothing.
//
// Two queues implement the same contract:
//
//   - [Redis]: a Redis stream with a consumer group, for any number of
//     worker hosts. Items a dead worker held are reclaimed with XAUTOCLAIM
//     after a visibility timeout (live workers extend theirs while a batch
//     runs); a failing item is retried with a count and goes to a
//     dead-letter stream with its error after MaxAttempts, without blocking
//     the rest; an item that keeps killing workers goes there after
//     MaxDeliveries. Acknowledged entries are deleted, so the stream's
//     length is the work outstanding, and producers wait while it is above
//     MaxLen. Redis must persist (AOF or RDB) for queued work to survive a
//     Redis restart; workers reconnect and recreate their group either way.
//   - [Memory]: the same pipeline in one process, without Redis (the
//     embedded default of `mlserve index`).
//
// Error classes ([IsOutage]): a file that is gone or does not decode is
// permanent (dead letter at once, with its error); an error about one item
// (the model rejects the image, a run fails on it, the database refuses its
// row) is retried up to MaxAttempts. An outage is not the items' fault and
// never counts toward their attempts: the inference pool full or closing,
// a model that does not load, a timeout, the database or the queue down.
// The worker waits it out with backoff and retries the same batch, holding
// its items, until the service is back or the worker stops (then the items
// are handed back with their attempts unchanged).
package jobs
