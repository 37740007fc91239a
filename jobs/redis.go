package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configure a Redis stream queue.
type RedisOptions struct {
	// Client is the Redis connection (redis.NewClient(redis.ParseURL(…))).
	Client *redis.Client
	// Name names the queue; keys are "{Name}" (the stream), "{Name}:dead"
	// and "{Name}:run:<run>" (progress counters). Default "mlserve:index".
	Name string
	// Group is the consumer group (default "mlserve-workers").
	Group string
	// Consumer names this worker in the group (default host-pid-random).
	Consumer string
	// MaxLen bounds the stream: Enqueue waits while it holds this many
	// entries (waiting plus in flight). Default 10000.
	MaxLen int64
	// Block is how long Read waits for new entries (default 1s).
	Block time.Duration
	// VisibilityTimeout is how long an entry may stay with a worker that
	// neither acknowledges nor extends it before another worker reclaims
	// it (default 2 minutes; workers extend theirs every third of it).
	VisibilityTimeout time.Duration
	// MaxAttempts is how many failed attempts an item gets before the
	// dead-letter stream (default 3).
	MaxAttempts int
	// MaxDeliveries is how many times an entry may be handed out without
	// an outcome (its worker died or hung) before the dead-letter stream
	// (default 5).
	MaxDeliveries int
	// DeadMaxLen bounds the dead-letter stream (default 100000). Dead
	// letters are never dropped: from 90% of the cap every failure logs a
	// warning (at most once a minute), and at the cap Fail refuses with
	// ErrDeadLetterFull, the item stays in the queue and the worker stops.
	DeadMaxLen int64
	// RunTTL is how long a run's progress counters are kept (default 7
	// days).
	RunTTL time.Duration
	// ConsumerIdle is how long a consumer of the group may stay silent
	// before it is taken for gone and removed from the group, if it holds
	// no entry (default 1 hour, and at least 10 visibility timeouts). Each
	// worker process is a consumer with a name of its own; without this,
	// every restart would leave one behind. A live worker that found
	// nothing to do for that long may be removed too: it holds nothing,
	// and Redis adds it again with the next entry it reads.
	ConsumerIdle time.Duration
}

// Redis is a job queue on a Redis stream with a consumer group. It is safe
// for concurrent use.
type Redis struct {
	c      *redis.Client
	opts   RedisOptions
	stream string
	dead   string
	runs   string // prefix of run keys
	logger *slog.Logger

	mu      sync.Mutex
	cursor  string    // XAUTOCLAIM cursor
	claimed time.Time // last reclaim sweep
	swept   time.Time // last removal of gone consumers
	warned  time.Time // last warning that the dead-letter stream fills up
}

var (
	_ Queue    = (*Redis)(nil)
	_ Enqueuer = (*Redis)(nil)
)

// NewRedis returns a queue on opts.Client and creates its consumer group
// if needed.
func NewRedis(ctx context.Context, opts RedisOptions, logger *slog.Logger) (*Redis, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.Client == nil {
		return nil, errors.New("jobs: RedisOptions.Client is nil")
	}
	if opts.Name == "" {
		opts.Name = "mlserve:index"
	}
	if opts.Group == "" {
		opts.Group = "mlserve-workers"
	}
	if opts.Consumer == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = rand.Read(b[:])
		opts.Consumer = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if opts.MaxLen <= 0 {
		opts.MaxLen = 10000
	}
	if opts.Block <= 0 {
		opts.Block = time.Second
	}
	if opts.VisibilityTimeout <= 0 {
		opts.VisibilityTimeout = 2 * time.Minute
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	if opts.MaxDeliveries <= 0 {
		opts.MaxDeliveries = 5
	}
	if opts.DeadMaxLen <= 0 {
		opts.DeadMaxLen = 100000
	}
	if opts.RunTTL <= 0 {
		opts.RunTTL = 7 * 24 * time.Hour
	}
	if opts.ConsumerIdle <= 0 {
		opts.ConsumerIdle = max(time.Hour, 10*opts.VisibilityTimeout)
	}
	base := "{" + opts.Name + "}" // one hash slot for every key of the queue
	q := &Redis{c: opts.Client, opts: opts, stream: base, dead: base + ":dead", runs: base + ":run:", logger: logger, cursor: "0-0"}
	if err := q.ensureGroup(ctx); err != nil {
		return nil, err
	}
	return q, nil
}

// Options returns the options in effect (defaults filled in).
func (q *Redis) Options() RedisOptions { return q.opts }

// ensureGroup creates the stream and group; "0" makes a group created
// after a Redis restart see entries already added again.
func (q *Redis) ensureGroup(ctx context.Context) error {
	err := q.c.XGroupCreateMkStream(ctx, q.stream, q.opts.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create consumer group: %w", err)
	}
	return nil
}

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// Enqueue adds items in chunks, waiting while the stream holds MaxLen
// entries. Each chunk and its progress counter are added atomically.
func (q *Redis) Enqueue(ctx context.Context, items []Item) error {
	const chunk = 500
	for len(items) > 0 {
		room, err := q.waitForRoom(ctx)
		if err != nil {
			return err
		}
		n := min(chunk, len(items), room)
		part := items[:n]
		items = items[n:]
		runs := map[string]int64{}
		_, err = q.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, it := range part {
				raw, err := encodeItem(it)
				if err != nil {
					return err
				}
				p.XAdd(ctx, &redis.XAddArgs{Stream: q.stream, Values: []any{fieldItem, raw, fieldAttempt, "1"}})
				runs[it.Run]++
			}
			for run, k := range runs {
				if run == "" {
					continue
				}
				p.HIncrBy(ctx, q.runs+run, "total", k)
				p.Expire(ctx, q.runs+run, q.opts.RunTTL)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
	}
	return nil
}

// waitForRoom blocks while the stream is at MaxLen (backpressure) and
// returns how many entries fit. Producers racing each other may overshoot
// MaxLen by a little; retried and released items are re-added regardless.
func (q *Redis) waitForRoom(ctx context.Context) (int, error) {
	wait := 100 * time.Millisecond
	for {
		n, err := q.c.XLen(ctx, q.stream).Result()
		if err != nil {
			return 0, fmt.Errorf("enqueue: %w", err)
		}
		if n < q.opts.MaxLen {
			return int(min(q.opts.MaxLen-n, 1<<30)), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// Read implements Queue: entries abandoned by dead workers first
// (XAUTOCLAIM, at most every quarter visibility timeout), then new ones
// (XREADGROUP).
func (q *Redis) Read(ctx context.Context, max int) ([]Delivery, error) {
	q.mu.Lock()
	sweep := time.Since(q.swept) >= q.opts.ConsumerIdle/4
	if sweep {
		q.swept = time.Now()
	}
	q.mu.Unlock()
	if sweep {
		if _, err := q.RemoveGoneConsumers(ctx); err != nil && ctx.Err() == nil {
			q.logger.Warn("cannot remove gone consumers from the queue's group", "err", err)
		}
	}
	out, err := q.reclaim(ctx, max)
	if err != nil {
		return nil, err
	}
	if len(out) > 0 {
		return out, nil
	}
	res, err := q.c.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: q.opts.Group, Consumer: q.opts.Consumer,
		Streams: []string{q.stream, ">"}, Count: int64(max), Block: q.opts.Block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if isNoGroup(err) {
		// Redis lost the group (restarted without persistence, or the
		// key was deleted): recreate it and read next time.
		q.logger.Warn("queue consumer group missing; recreating it", "stream", q.stream)
		return nil, q.ensureGroup(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("read queue: %w", err)
	}
	for _, s := range res {
		for _, m := range s.Messages {
			d, err := decodeEntry(m.ID, m.Values)
			if err != nil {
				if err := q.bury(ctx, d, err); err != nil {
					return nil, q.giveBack(ctx, out, err)
				}
				continue
			}
			out = append(out, d)
		}
	}
	return out, nil
}

// giveBack hands deliveries back when Read cannot go on (the dead-letter
// stream is full), and returns err.
func (q *Redis) giveBack(ctx context.Context, ds []Delivery, err error) error {
	if rerr := q.Release(ctx, ds); rerr != nil {
		q.logger.Warn("cannot hand entries back; they return after the visibility timeout", "entries", len(ds), "err", rerr)
	}
	return err
}

// reclaim takes over entries idle longer than the visibility timeout.
func (q *Redis) reclaim(ctx context.Context, max int) ([]Delivery, error) {
	q.mu.Lock()
	if time.Since(q.claimed) < q.opts.VisibilityTimeout/4 {
		q.mu.Unlock()
		return nil, nil
	}
	cursor := q.cursor
	q.mu.Unlock()

	msgs, next, err := q.c.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: q.stream, Group: q.opts.Group, Consumer: q.opts.Consumer,
		MinIdle: q.opts.VisibilityTimeout, Start: cursor, Count: int64(max),
	}).Result()
	if isNoGroup(err) {
		q.logger.Warn("queue consumer group missing; recreating it", "stream", q.stream)
		return nil, q.ensureGroup(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("reclaim: %w", err)
	}
	q.mu.Lock()
	q.cursor = next
	if next == "0-0" || next == "" {
		q.cursor = "0-0"
		q.claimed = time.Now() // a full sweep is done: rest a while
	}
	q.mu.Unlock()
	if len(msgs) == 0 {
		return nil, nil
	}
	// How often has each been handed out? (XAUTOCLAIM counted this one.)
	counts := map[string]int64{}
	pend, err := q.c.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: q.stream, Group: q.opts.Group, Start: msgs[0].ID, End: msgs[len(msgs)-1].ID,
		Count: int64(len(msgs)) + 1000, Consumer: q.opts.Consumer,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("reclaim: %w", err)
	}
	for _, p := range pend {
		counts[p.ID] = p.RetryCount
	}
	var out []Delivery
	for _, m := range msgs {
		d, err := decodeEntry(m.ID, m.Values)
		if err != nil {
			if err := q.bury(ctx, d, err); err != nil {
				return nil, q.giveBack(ctx, out, err)
			}
			continue
		}
		if n := counts[m.ID]; n > int64(q.opts.MaxDeliveries) {
			cause := fmt.Errorf("%w: handed to workers %d times without an outcome (a worker crashed or hung on it); last error: %s",
				ErrPermanent, n, d.LastError)
			if err := q.Fail(ctx, d, cause, true); err != nil {
				return nil, q.giveBack(ctx, out, err)
			}
			continue
		}
		q.logger.Info("reclaimed queue entry", "id", m.ID, "path", d.Item.Path, "deliveries", counts[m.ID])
		out = append(out, d)
	}
	return out, nil
}

// goneScript removes the consumers of the group, other than the caller,
// that have been silent for at least ARGV[3] ms and hold no entry, and
// returns their names. Checking and removing in one script means an entry
// is never dropped with its consumer (XGROUP DELCONSUMER forgets the
// entries a consumer holds).
var goneScript = redis.NewScript(`
local gone = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
	local f = {}
	for i = 1, #c, 2 do
		f[c[i]] = c[i + 1]
	end
	if f['name'] ~= ARGV[2] and tonumber(f['pending']) == 0 and tonumber(f['idle']) >= tonumber(ARGV[3]) then
		redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
		gone[#gone + 1] = f['name']
	end
end
return gone`)

// RemoveGoneConsumers removes from the group the consumers silent for
// ConsumerIdle that hold no entry (workers that exited or died, whose
// entries were reclaimed), and returns how many it removed. Read calls it
// every quarter of ConsumerIdle.
func (q *Redis) RemoveGoneConsumers(ctx context.Context) (int, error) {
	gone, err := goneScript.Run(ctx, q.c, []string{q.stream},
		q.opts.Group, q.opts.Consumer, q.opts.ConsumerIdle.Milliseconds()).StringSlice()
	if isNoGroup(err) || errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("remove gone consumers: %w", err)
	}
	for _, name := range gone {
		q.logger.Info("removed a gone consumer from the queue's group", "consumer", name, "silent_for_at_least", q.opts.ConsumerIdle)
	}
	return len(gone), nil
}

// bury sends an undecodable entry to the dead-letter stream. Only a full
// dead-letter stream is returned; other errors leave the entry pending, to
// be reclaimed and buried later.
func (q *Redis) bury(ctx context.Context, d Delivery, cause error) error {
	q.logger.Error("malformed queue entry", "id", d.ID, "err", cause)
	err := q.Fail(ctx, d, cause, true)
	if errors.Is(err, ErrDeadLetterFull) {
		return err
	}
	if err != nil {
		q.logger.Error("cannot move malformed entry to the dead-letter stream", "id", d.ID, "err", err)
	}
	return nil
}

// ackScript acknowledges and deletes entries and counts each one done
// once, with the faces and lines of text found in it: an entry
// acknowledged twice (it was reclaimed from a slow worker that finished
// after all) counts only the first time.
var ackScript = redis.NewScript(`
local n = 0
for i = 3, #ARGV, 4 do
	if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
		redis.call('XDEL', KEYS[1], ARGV[i])
		n = n + 1
		if ARGV[i+1] ~= '' then
			local run = ARGV[2] .. ARGV[i+1]
			redis.call('HINCRBY', run, 'done', 1)
			if ARGV[i+2] ~= '0' then
				redis.call('HINCRBY', run, 'faces', ARGV[i+2])
			end
			if ARGV[i+3] ~= '0' then
				redis.call('HINCRBY', run, 'lines', ARGV[i+3])
			end
		end
	end
end
return n`)

// moveScript acknowledges one entry and, if this caller is the one that
// acknowledged it, re-adds it (retry or release) or adds it to the
// dead-letter stream, atomically: an item is never lost between the two
// and never duplicated by two workers failing it at once. It returns 0
// when another worker settled the entry first, -1 when the dead-letter
// stream is full (nothing changed: the entry stays pending), else the
// length of the stream the entry went to.
var moveScript = redis.NewScript(`
if ARGV[5] == 'dead' and redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[9]) then
	return -1
end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]) == 0 then
	return 0
end
redis.call('XDEL', KEYS[1], ARGV[3])
if ARGV[5] == 'dead' then
	redis.call('XADD', KEYS[2], '*', 'item', ARGV[6], 'attempt', ARGV[7], 'error', ARGV[8], 'id', ARGV[3])
	if ARGV[4] ~= '' then
		redis.call('HINCRBY', ARGV[2] .. ARGV[4], 'failed', 1)
	end
	return redis.call('XLEN', KEYS[2])
end
redis.call('XADD', KEYS[1], '*', 'item', ARGV[6], 'attempt', ARGV[7], 'error', ARGV[8])
return redis.call('XLEN', KEYS[1])`)

// Ack implements Queue.
func (q *Redis) Ack(ctx context.Context, ds []Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	args := []any{q.opts.Group, q.runs}
	for _, d := range ds {
		args = append(args, d.ID, d.Item.Run, d.faces, d.lines)
	}
	err := ackScript.Run(ctx, q.c, []string{q.stream}, args...).Err()
	if isNoGroup(err) {
		return nil // the entries are gone with the group
	}
	if err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}

func (q *Redis) move(ctx context.Context, d Delivery, dest string, attempt int, msg string) error {
	n, err := moveScript.Run(ctx, q.c, []string{q.stream, q.dead},
		q.opts.Group, q.runs, d.ID, d.Item.Run, dest, d.raw, strconv.Itoa(attempt), msg, q.opts.DeadMaxLen).Int64()
	if isNoGroup(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("queue %s: %w", dest, err)
	}
	if dest != "dead" {
		return nil
	}
	if n < 0 {
		q.logger.Error("dead-letter stream full: failed items are kept in the queue, never dropped",
			"stream", q.dead, "cap", q.opts.DeadMaxLen, "path", d.Item.Path)
		return fmt.Errorf("%w: %s holds %d entries (DeadMaxLen); look at them with `redis-cli XRANGE '%s' - +`, then delete them (or raise the cap) and restart the workers",
			ErrDeadLetterFull, q.dead, q.opts.DeadMaxLen, q.dead)
	}
	if n*10 >= q.opts.DeadMaxLen*9 {
		q.mu.Lock()
		warn := time.Since(q.warned) >= time.Minute
		if warn {
			q.warned = time.Now()
		}
		q.mu.Unlock()
		if warn {
			q.logger.Warn("dead-letter stream nearly full: at the cap the workers stop rather than drop failed items",
				"stream", q.dead, "entries", n, "cap", q.opts.DeadMaxLen)
		}
	}
	return nil
}

// Fail implements Queue.
func (q *Redis) Fail(ctx context.Context, d Delivery, cause error, permanent bool) error {
	msg := errorText(cause)
	if permanent || errors.Is(cause, ErrPermanent) || d.Attempt >= q.opts.MaxAttempts {
		q.logger.Warn("item dead-lettered", "path", d.Item.Path, "asset", d.Item.AssetID, "attempts", d.Attempt, "err", msg)
		return q.move(ctx, d, "dead", d.Attempt, msg)
	}
	q.logger.Info("item will be retried", "path", d.Item.Path, "attempt", d.Attempt, "err", msg)
	return q.move(ctx, d, "retry", d.Attempt+1, msg)
}

// Release implements Queue: the entries go back to the end of the stream
// with their attempt count unchanged.
func (q *Redis) Release(ctx context.Context, ds []Delivery) error {
	var errs []error
	for _, d := range ds {
		errs = append(errs, q.move(ctx, d, "retry", d.Attempt, d.LastError))
	}
	return errors.Join(errs...)
}

// extendScript resets the idle time of the entries this consumer still
// holds (XCLAIM … JUSTID, which counts no delivery) and returns the ids it
// no longer holds: another worker reclaimed them after our visibility
// timeout, or they were settled. Checking and claiming in one script means
// a heartbeat can never take an entry back from the worker that reclaimed
// it.
var extendScript = redis.NewScript(`
local lost = {}
for i = 3, #ARGV do
	local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
	if #p == 1 and p[1][2] == ARGV[2] then
		redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
	else
		lost[#lost + 1] = ARGV[i]
	end
end
return lost`)

// Extend implements Queue: it resets the idle time of the entries this
// worker still holds, without counting a delivery. Entries another worker
// has reclaimed meanwhile stay with it; Extend then returns an error
// wrapping ErrLost with their ids.
func (q *Redis) Extend(ctx context.Context, ds []Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	args := make([]any, 0, len(ds)+2)
	args = append(args, q.opts.Group, q.opts.Consumer)
	for _, d := range ds {
		args = append(args, d.ID)
	}
	lost, err := extendScript.Run(ctx, q.c, []string{q.stream}, args...).StringSlice()
	if isNoGroup(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("extend: %w", err)
	}
	if len(lost) > 0 {
		return fmt.Errorf("%w: %d of %d entries (%s)", ErrLost, len(lost), len(ds), strings.Join(lost, ", "))
	}
	return nil
}

// Progress implements Enqueuer.
func (q *Redis) Progress(ctx context.Context, run string) (Counts, error) {
	m, err := q.c.HGetAll(ctx, q.runs+run).Result()
	if err != nil {
		return Counts{}, fmt.Errorf("progress: %w", err)
	}
	var c Counts
	c.Known = len(m) > 0
	c.Total, _ = strconv.ParseInt(m["total"], 10, 64)
	c.Done, _ = strconv.ParseInt(m["done"], 10, 64)
	c.Failed, _ = strconv.ParseInt(m["failed"], 10, 64)
	c.Faces, _ = strconv.ParseInt(m["faces"], 10, 64)
	c.Lines, _ = strconv.ParseInt(m["lines"], 10, 64)
	return c, nil
}

// QueueStats describes the queue's state.
type QueueStats struct {
	// Length is the entries in the stream: waiting and in flight.
	Length int64
	// Pending is the entries handed out and not yet acknowledged.
	Pending int64
	// Dead is the dead-letter stream's length; at DeadMax, workers stop.
	Dead, DeadMax int64
}

// Stats returns the queue's current sizes.
func (q *Redis) Stats(ctx context.Context) (QueueStats, error) {
	s := QueueStats{DeadMax: q.opts.DeadMaxLen}
	var err error
	if s.Length, err = q.c.XLen(ctx, q.stream).Result(); err != nil {
		return s, fmt.Errorf("queue stats: %w", err)
	}
	p, err := q.c.XPending(ctx, q.stream, q.opts.Group).Result()
	if err != nil && !isNoGroup(err) {
		return s, fmt.Errorf("queue stats: %w", err)
	}
	if p != nil {
		s.Pending = p.Count
	}
	if s.Dead, err = q.c.XLen(ctx, q.dead).Result(); err != nil {
		return s, fmt.Errorf("queue stats: %w", err)
	}
	return s, nil
}

// Dead lists up to n dead letters, oldest first.
func (q *Redis) Dead(ctx context.Context, n int64) ([]DeadLetter, error) {
	msgs, err := q.c.XRangeN(ctx, q.dead, "-", "+", n).Result()
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	out := make([]DeadLetter, 0, len(msgs))
	for _, m := range msgs {
		d, _ := decodeEntry(m.ID, m.Values) // keep what decodes
		out = append(out, DeadLetter{Item: d.Item, Raw: d.raw, Attempts: d.Attempt, Error: d.LastError, ID: m.ID})
	}
	return out, nil
}

// RunDead lists up to n dead letters of one run, oldest first, that were
// added at or after since (stream ids are times, so only that part of the
// dead-letter stream is read), and how many of them there are in all.
func (q *Redis) RunDead(ctx context.Context, run string, since time.Time, n int) ([]DeadLetter, int64, error) {
	start := strconv.FormatInt(since.UnixMilli(), 10)
	var out []DeadLetter
	var total int64
	for {
		msgs, err := q.c.XRangeN(ctx, q.dead, start, "+", 500).Result()
		if err != nil {
			return out, total, fmt.Errorf("dead letters: %w", err)
		}
		for _, m := range msgs {
			d, _ := decodeEntry(m.ID, m.Values)
			if d.Item.Run != run {
				continue
			}
			total++
			if len(out) < n {
				out = append(out, DeadLetter{Item: d.Item, Raw: d.raw, Attempts: d.Attempt, Error: d.LastError, ID: m.ID})
			}
		}
		if len(msgs) < 500 {
			return out, total, nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}
