package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/internal/testenv"
)

func items(run string, n int) []Item {
	out := make([]Item, n)
	for i := range out {
		out[i] = Item{Path: fmt.Sprintf("/p/%03d.jpg", i), Model: testModel, Run: run}
	}
	return out
}

func paths(ds []Delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Item.Path)
	}
	return out
}

// queueContract checks what every Queue must do.
func queueContract(t *testing.T, q interface {
	Queue
	Enqueuer
}, maxAttempts int, dead func() []DeadLetter) {
	ctx := ctxT(t)
	if err := q.Enqueue(ctx, items("r", 5)); err != nil {
		t.Fatal(err)
	}
	var got []Delivery
	for len(got) < 5 {
		ds, err := q.Read(ctx, 5-len(got))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ds...)
	}
	if want := paths(Delivery{}.all(items("r", 5))); !slices.Equal(paths(got), want) {
		t.Fatalf("read %v, want %v in order", paths(got), want)
	}
	for _, d := range got {
		if d.Attempt != 1 || d.Item.Model != testModel || d.Item.Run != "r" {
			t.Fatalf("delivery %+v", d)
		}
	}
	if err := q.Extend(ctx, got); err != nil {
		t.Fatal(err)
	}
	// 0, 1 done; 2 fails until it is dead; 3 fails permanently; 4 goes back.
	if err := q.Ack(ctx, got[:2]); err != nil {
		t.Fatal(err)
	}
	if err := q.Ack(ctx, got[:1]); err != nil { // twice: counted once
		t.Fatal(err)
	}
	if err := q.Fail(ctx, got[3], errors.New("bad image"), true); err != nil {
		t.Fatal(err)
	}
	if err := q.Release(ctx, got[4:5]); err != nil {
		t.Fatal(err)
	}
	d := got[2]
	for attempt := 1; ; attempt++ {
		if d.Attempt != attempt {
			t.Fatalf("attempt %d, want %d", d.Attempt, attempt)
		}
		if attempt > 1 && d.LastError != fmt.Sprintf("flaky %d", attempt-1) {
			t.Fatalf("last error %q", d.LastError)
		}
		if err := q.Fail(ctx, d, fmt.Errorf("flaky %d", attempt), false); err != nil {
			t.Fatal(err)
		}
		if attempt == maxAttempts {
			break
		}
		// The retry and the released item come back.
		var ds []Delivery
		for len(ds) == 0 {
			var err error
			if ds, err = q.Read(ctx, 10); err != nil {
				t.Fatal(err)
			}
		}
		var next *Delivery
		for i := range ds {
			switch ds[i].Item.Path {
			case got[4].Item.Path:
				if ds[i].Attempt != 1 {
					t.Fatalf("released item came back with attempt %d", ds[i].Attempt)
				}
				if err := q.Ack(ctx, ds[i:i+1]); err != nil {
					t.Fatal(err)
				}
			case d.Item.Path:
				next = &ds[i]
			default:
				t.Fatalf("unexpected delivery %+v", ds[i])
			}
		}
		if next == nil {
			ds, err := q.Read(ctx, 10)
			if err != nil || len(ds) != 1 {
				t.Fatalf("retry not delivered: %v %v", ds, err)
			}
			next = &ds[0]
		}
		d = *next
	}
	c, err := q.Progress(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if c != (Counts{Total: 5, Done: 3, Failed: 2, Known: true}) {
		t.Fatalf("counts %+v, want total 5, done 3, failed 2", c)
	}
	dl := dead()
	if len(dl) != 2 {
		t.Fatalf("dead letters %+v", dl)
	}
	byPath := map[string]DeadLetter{}
	for _, x := range dl {
		byPath[x.Item.Path] = x
	}
	if x := byPath[got[3].Item.Path]; x.Error != "bad image" || x.Attempts != 1 {
		t.Errorf("permanent failure: %+v", x)
	}
	if x := byPath[got[2].Item.Path]; x.Error != fmt.Sprintf("flaky %d", maxAttempts) || x.Attempts != maxAttempts {
		t.Errorf("exhausted retries: %+v", x)
	}
	if c, _ := q.Progress(ctx, "unknown run"); c.Known {
		t.Errorf("unknown run is known: %+v", c)
	}
}

func (Delivery) all(its []Item) []Delivery {
	out := make([]Delivery, len(its))
	for i, it := range its {
		out[i].Item = it
	}
	return out
}

func TestMemoryQueue(t *testing.T) {
	q := NewMemory(MemoryOptions{MaxAttempts: 3, Wait: 50 * time.Millisecond})
	queueContract(t, q, 3, q.Dead)
	q.Close()
	if _, err := q.Read(context.Background(), 1); !errors.Is(err, ErrDrained) {
		t.Fatalf("closed and empty: %v, want ErrDrained", err)
	}
	if err := q.Enqueue(context.Background(), items("x", 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("enqueue after close: %v", err)
	}
}

func TestMemoryBackpressureAndDrain(t *testing.T) {
	ctx := ctxT(t)
	q := NewMemory(MemoryOptions{Capacity: 4, Wait: 20 * time.Millisecond})
	enqueued := make(chan error, 1)
	go func() { enqueued <- q.Enqueue(ctx, items("r", 10)) }()
	select {
	case err := <-enqueued:
		t.Fatalf("Enqueue of 10 into capacity 4 returned %v without waiting", err)
	case <-time.After(100 * time.Millisecond):
	}
	var got []Delivery
	for len(got) < 10 {
		ds, err := q.Read(ctx, 3)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ds...)
	}
	if err := <-enqueued; err != nil {
		t.Fatal(err)
	}
	q.Close()
	// Closed, but items are in flight: readers wait rather than stop.
	if ds, err := q.Read(ctx, 1); err != nil || len(ds) != 0 {
		t.Fatalf("read with items in flight: %v, %v", ds, err)
	}
	if err := q.Release(ctx, got[9:]); err != nil {
		t.Fatal(err)
	}
	if err := q.Ack(ctx, got[:9]); err != nil {
		t.Fatal(err)
	}
	ds, err := q.Read(ctx, 5)
	if err != nil || len(ds) != 1 {
		t.Fatalf("released item: %v, %v", ds, err)
	}
	if err := q.Ack(ctx, ds); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Read(ctx, 1); !errors.Is(err, ErrDrained) {
		t.Fatalf("after the last ack: %v, want ErrDrained", err)
	}
	// Enqueue gives up with its context.
	q2 := NewMemory(MemoryOptions{Capacity: 1})
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := q2.Enqueue(cctx, items("r", 2)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("full queue: %v", err)
	}
}

func TestRedisQueue(t *testing.T) {
	c := redisClient(t, testenv.RedisURL(t))
	q := newRedisQueue(t, c, RedisOptions{MaxAttempts: 3, Block: 50 * time.Millisecond})
	queueContract(t, q, 3, func() []DeadLetter {
		dl, err := q.Dead(context.Background(), 100)
		if err != nil {
			t.Fatal(err)
		}
		return dl
	})
	st, err := q.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st != (QueueStats{Length: 0, Pending: 0, Dead: 2, DeadMax: 100000}) {
		t.Fatalf("stats %+v: acknowledged entries must be deleted", st)
	}
}

func TestRedisReclaim(t *testing.T) {
	ctx := ctxT(t)
	c := redisClient(t, testenv.RedisURL(t))
	opts := RedisOptions{VisibilityTimeout: 300 * time.Millisecond, MaxDeliveries: 2, Block: 50 * time.Millisecond}
	a := newRedisQueue(t, c, opts)
	opts.Name, opts.Consumer = a.Options().Name, "worker-b"
	b := newRedisQueue(t, c, opts)
	if err := a.Enqueue(ctx, items("r", 2)); err != nil {
		t.Fatal(err)
	}
	held, err := a.Read(ctx, 2)
	if err != nil || len(held) != 2 {
		t.Fatalf("read: %v, %v", held, err)
	}
	// a keeps extending item 0 and "dies" holding item 1.
	readB := func() []Delivery {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if err := a.Extend(ctx, held[:1]); err != nil {
				t.Fatal(err)
			}
			ds, err := b.Read(ctx, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) > 0 {
				return ds
			}
		}
		t.Fatal("nothing reclaimed")
		return nil
	}
	ds := readB()
	if len(ds) != 1 || ds[0].Item.Path != held[1].Item.Path || ds[0].ID != held[1].ID {
		t.Fatalf("b reclaimed %+v, want only the abandoned item", ds)
	}
	// b dies too: the second reclaim exceeds MaxDeliveries (2), so the
	// item goes to the dead-letter stream instead of killing more workers.
	time.Sleep(400 * time.Millisecond)
	if _, err := a.Read(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Read(ctx, 10); err != nil {
		t.Fatal(err)
	}
	dl, err := a.Dead(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 || dl[0].Item.Path != held[1].Item.Path || dl[0].Error == "" {
		t.Fatalf("dead letters %+v", dl)
	}
	// The extended item was never taken from a; its ack still counts.
	if err := a.Ack(ctx, held[:1]); err != nil {
		t.Fatal(err)
	}
	cnt, err := a.Progress(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if cnt.Done != 1 || cnt.Failed != 1 {
		t.Fatalf("counts %+v", cnt)
	}
}

func TestRedisBackpressure(t *testing.T) {
	ctx := ctxT(t)
	c := redisClient(t, testenv.RedisURL(t))
	q := newRedisQueue(t, c, RedisOptions{MaxLen: 5, Block: 50 * time.Millisecond})
	var wg sync.WaitGroup
	var enqErr error
	wg.Go(func() { enqErr = q.Enqueue(ctx, items("r", 30)) })
	maxLen := int64(0)
	done := 0
	for done < 30 {
		n, err := c.XLen(ctx, q.stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		maxLen = max(maxLen, n)
		ds, err := q.Read(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Ack(ctx, ds); err != nil {
			t.Fatal(err)
		}
		done += len(ds)
	}
	wg.Wait()
	if enqErr != nil {
		t.Fatal(enqErr)
	}
	if maxLen > 5 {
		t.Fatalf("stream reached %d entries, above MaxLen 5", maxLen)
	}
	if n, _ := c.XLen(ctx, q.stream).Result(); n != 0 {
		t.Fatalf("stream holds %d entries after everything was acknowledged", n)
	}
}

func TestRedisMalformedEntryAndLostGroup(t *testing.T) {
	ctx := ctxT(t)
	c := redisClient(t, testenv.RedisURL(t))
	q := newRedisQueue(t, c, RedisOptions{Block: 50 * time.Millisecond})
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: q.stream, Values: []any{"item", "{not json"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, items("r", 1)); err != nil {
		t.Fatal(err)
	}
	ds, err := q.Read(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Item.Path != "/p/000.jpg" {
		t.Fatalf("read %+v: the malformed entry must not reach a worker", ds)
	}
	dl, err := q.Dead(ctx, 10)
	if err != nil || len(dl) != 1 || dl[0].Raw != "{not json" {
		t.Fatalf("dead letters %+v, %v", dl, err)
	}
	// The whole queue vanishes (a Redis without persistence restarted):
	// acknowledging is a no-op and reading recreates the group.
	if err := c.Del(ctx, q.stream).Err(); err != nil {
		t.Fatal(err)
	}
	if err := q.Ack(ctx, ds); err != nil {
		t.Fatalf("ack after the group vanished: %v", err)
	}
	for range 2 {
		if _, err := q.Read(ctx, 10); err != nil {
			t.Fatalf("read after the group vanished: %v", err)
		}
	}
	if err := q.Enqueue(ctx, items("r2", 1)); err != nil {
		t.Fatal(err)
	}
	ds, err = q.Read(ctx, 10)
	if err != nil || len(ds) != 1 {
		t.Fatalf("after recreating the group: %+v, %v", ds, err)
	}
}

func TestDecodeEntry(t *testing.T) {
	tests := []struct {
		name    string
		values  map[string]any
		wantErr bool
		attempt int
	}{
		{"ok", map[string]any{"item": `{"path":"/a.jpg","model":"m"}`, "attempt": "2", "error": "x"}, false, 2},
		{"no attempt", map[string]any{"item": `{"path":"/a.jpg"}`}, false, 1},
		{"no item", map[string]any{"attempt": "1"}, true, 1},
		{"bad json", map[string]any{"item": `{`}, true, 1},
		{"no path", map[string]any{"item": `{"model":"m"}`}, true, 1},
		{"bad attempt", map[string]any{"item": `{"path":"/a"}`, "attempt": "zero"}, true, 1},
		{"attempt 0", map[string]any{"item": `{"path":"/a"}`, "attempt": "0"}, true, 1},
		{"item not a string", map[string]any{"item": 3}, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := decodeEntry("1-0", tt.values)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v", err)
			}
			if err != nil && !errors.Is(err, ErrBadEntry) {
				t.Fatalf("err %v is not ErrBadEntry", err)
			}
			if err == nil && d.Attempt != tt.attempt {
				t.Fatalf("attempt %d", d.Attempt)
			}
		})
	}
}

// sameItem compares items, an empty task list equal to none.
func sameItem(a, b Item) bool {
	return slices.Equal(a.Tasks, b.Tasks) && reflect.DeepEqual(
		Item{a.Path, a.AssetID, a.Model, a.Size, a.ModTime, a.Run, nil, a.FaceModel, a.OCRModel},
		Item{b.Path, b.AssetID, b.Model, b.Size, b.ModTime, b.Run, nil, b.FaceModel, b.OCRModel})
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(`{"path":"/a.jpg","model":"m","size":3,"mtime":5,"run":"r"}`, "1", "")
	f.Add(`{"path":"/a.jpg","asset":"0b1c"}`, "3", "boom")
	f.Add(`{"path":"/a.jpg","model":"m","tasks":["faces","ocr"],"faces":"buffalo_l","ocr":"PP-OCRv5_mobile"}`, "2", "")
	f.Add(`{"path":"/a.jpg","tasks":[]}`, "1", "")
	f.Add(`{`, "x", "")
	f.Add(`null`, "-1", "")
	f.Fuzz(func(t *testing.T, item, attempt, msg string) {
		d, err := decodeEntry("1-0", map[string]any{"item": item, "attempt": attempt, "error": msg})
		if err != nil {
			if !errors.Is(err, ErrBadEntry) {
				t.Fatalf("error %v is not ErrBadEntry", err)
			}
			return
		}
		if d.Item.Path == "" || d.Attempt < 1 {
			t.Fatalf("accepted %+v", d)
		}
		// What decodes re-encodes and decodes to the same item.
		raw, err := encodeItem(d.Item)
		if err != nil {
			t.Fatal(err)
		}
		d2, err := decodeEntry("1-0", map[string]any{"item": raw})
		if err != nil || !sameItem(d2.Item, d.Item) {
			t.Fatalf("round trip: %+v, %v", d2.Item, err)
		}
	})
}

// TestRedisExtendNeverSteals: a slow worker whose entry was reclaimed by
// another worker (its visibility timeout passed) must not take it back
// with its next heartbeat; it learns that it lost the entry. Extending an
// entry it still holds resets its idle time.
func TestRedisExtendNeverSteals(t *testing.T) {
	ctx := ctxT(t)
	c := redisClient(t, testenv.RedisURL(t))
	opts := RedisOptions{VisibilityTimeout: 200 * time.Millisecond, Block: 50 * time.Millisecond, Consumer: "slow"}
	a := newRedisQueue(t, c, opts)
	opts.Name, opts.Consumer = a.Options().Name, "fast"
	b := newRedisQueue(t, c, opts)
	if err := a.Enqueue(ctx, items("r", 2)); err != nil {
		t.Fatal(err)
	}
	held, err := a.Read(ctx, 1)
	if err != nil || len(held) != 1 {
		t.Fatalf("read: %v, %v", held, err)
	}
	owner := func(id string) (string, time.Duration) {
		t.Helper()
		p, err := c.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: a.stream, Group: a.opts.Group, Start: id, End: id, Count: 1}).Result()
		if err != nil || len(p) != 1 {
			t.Fatalf("XPENDING %s: %v, %v", id, p, err)
		}
		return p[0].Consumer, p[0].Idle
	}
	// a still holds it: Extend resets the idle time.
	time.Sleep(150 * time.Millisecond)
	if err := a.Extend(ctx, held); err != nil {
		t.Fatal(err)
	}
	if who, idle := owner(held[0].ID); who != "slow" || idle > 100*time.Millisecond {
		t.Fatalf("after Extend: owner %s, idle %v", who, idle)
	}
	// a stalls past the visibility timeout; b reclaims the entry.
	time.Sleep(300 * time.Millisecond)
	var got []Delivery
	for len(got) == 0 {
		ds, err := b.Read(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if d.ID == held[0].ID {
				got = append(got, d)
			}
		}
	}
	// a's late heartbeat must not take it back.
	err = a.Extend(ctx, held)
	if who, _ := owner(held[0].ID); who != "fast" {
		t.Fatalf("the entry went back to %s; want it with the worker that reclaimed it", who)
	}
	if !errors.Is(err, ErrLost) || !strings.Contains(err.Error(), held[0].ID) {
		t.Fatalf("Extend of a reclaimed entry: %v, want ErrLost naming %s", err, held[0].ID)
	}
	if err := b.Extend(ctx, got); err != nil {
		t.Fatalf("the new owner's Extend: %v", err)
	}
	// Settled entries are lost too: nothing to extend.
	if err := b.Ack(ctx, got); err != nil {
		t.Fatal(err)
	}
	if err := b.Extend(ctx, got); !errors.Is(err, ErrLost) {
		t.Fatalf("Extend after Ack: %v, want ErrLost", err)
	}
}

// TestRedisRemovesGoneConsumers: consumers silent for ConsumerIdle that
// hold nothing are removed from the group when a worker reads; one that
// still holds an entry (reclaimed later by a live worker) stays, as do
// live consumers.
func TestRedisRemovesGoneConsumers(t *testing.T) {
	ctx := ctxT(t)
	c := redisClient(t, testenv.RedisURL(t))
	opts := RedisOptions{ConsumerIdle: 300 * time.Millisecond, Block: 20 * time.Millisecond}
	consumer := func(name string) *Redis {
		o := opts
		o.Consumer = name
		q := newRedisQueue(t, c, o)
		opts.Name = q.Options().Name
		return q
	}
	self := consumer("self")
	idle, holding, live := consumer("exited"), consumer("died-holding"), consumer("live")
	if err := self.Enqueue(ctx, items("r", 2)); err != nil {
		t.Fatal(err)
	}
	ds, err := idle.Read(ctx, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("read: %v %v", ds, err)
	}
	if err := idle.Ack(ctx, ds); err != nil {
		t.Fatal(err)
	}
	if ds, err := holding.Read(ctx, 1); err != nil || len(ds) != 1 {
		t.Fatalf("read: %v %v", ds, err)
	}
	// Live workers: each round, each gets an entry and settles it.
	work := func() {
		t.Helper()
		if err := self.Enqueue(ctx, items("r", 2)); err != nil {
			t.Fatal(err)
		}
		for _, q := range []*Redis{self, live} {
			ds, err := q.Read(ctx, 1)
			if err != nil || len(ds) != 1 {
				t.Fatalf("read: %v %v", ds, err)
			}
			if err := q.Ack(ctx, ds); err != nil {
				t.Fatal(err)
			}
		}
	}
	work()
	names := func() []string {
		t.Helper()
		cs, err := c.XInfoConsumers(ctx, self.stream, self.opts.Group).Result()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, x := range cs {
			out = append(out, x.Name)
		}
		slices.Sort(out)
		return out
	}
	if got := names(); !slices.Equal(got, []string{"died-holding", "exited", "live", "self"}) {
		t.Fatalf("consumers %v", got)
	}
	// Time passes; self and live keep working, the others are silent.
	// Their reads remove the consumer that held nothing.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		work()
		time.Sleep(20 * time.Millisecond)
	}
	if got := names(); !slices.Equal(got, []string{"died-holding", "live", "self"}) {
		t.Fatalf("consumers after the sweep: %v, want the one that exited gone", got)
	}
	// The entry the dead consumer held is still pending, ready to reclaim.
	p, err := c.XPending(ctx, self.stream, self.opts.Group).Result()
	if err != nil || p.Count != 1 || p.Consumers["died-holding"] != 1 {
		t.Fatalf("pending %+v, %v", p, err)
	}
}

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRedisDeadLettersNeverDropped: the dead-letter stream is never
// trimmed. Near its cap every failure is logged as a warning; at the cap
// Fail refuses and the entry stays pending in the queue, and a worker that
// meets the refusal hands its items back and stops with ErrDeadLetterFull.
func TestRedisDeadLettersNeverDropped(t *testing.T) {
	ctx := ctxT(t)
	c := redisClient(t, testenv.RedisURL(t))
	q := newRedisQueue(t, c, RedisOptions{DeadMaxLen: 10, Block: 20 * time.Millisecond})
	var logs syncBuffer
	q.logger = slog.New(slog.NewTextHandler(&logs, nil))
	if err := q.Enqueue(ctx, items("r", 12)); err != nil {
		t.Fatal(err)
	}
	var got []Delivery
	for len(got) < 12 {
		ds, err := q.Read(ctx, 12)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ds...)
	}
	for i, d := range got {
		err := q.Fail(ctx, d, errors.New("bad"), true)
		switch {
		case i < 10 && err != nil:
			t.Fatalf("dead letter %d: %v", i+1, err)
		case i >= 10 && !errors.Is(err, ErrDeadLetterFull):
			t.Fatalf("dead letter %d beyond the cap of 10: %v, want ErrDeadLetterFull", i+1, err)
		}
		if i == 7 && strings.Contains(logs.String(), "nearly full") {
			t.Fatal("warned below 90% of the cap")
		}
		if i == 8 && !strings.Contains(logs.String(), "dead-letter stream nearly full") {
			t.Fatalf("no warning at 90%% of the cap; logs:\n%s", logs.String())
		}
	}
	dl, err := q.Dead(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 10 || dl[0].Item.Path != got[0].Item.Path || dl[9].Item.Path != got[9].Item.Path {
		t.Fatalf("dead letters %d (first %v): want the first 10, none dropped", len(dl), dl[0].Item.Path)
	}
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Dead != 10 || st.DeadMax != 10 || st.Pending != 2 || st.Length != 2 {
		t.Fatalf("stats %+v: the 2 refused entries must stay pending in the queue", st)
	}

	// A worker whose items all fail meets the full stream and stops,
	// handing its items back.
	if err := q.Release(ctx, got[10:]); err != nil {
		t.Fatal(err)
	}
	w := NewWorker(q, EmbedFunc(func(context.Context, []*imaging.Image) ([][]float32, error) {
		t.Error("nothing should reach the model")
		return nil, nil
	}), nil, WorkerOptions{BatchSize: 4}, nil)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrDeadLetterFull) || !strings.Contains(err.Error(), q.dead) {
			t.Fatalf("worker: %v, want ErrDeadLetterFull naming %s", err, q.dead)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop at a full dead-letter stream")
	}
	if st, _ := q.Stats(ctx); st.Dead != 10 || st.Length != 2 || st.Pending != 0 {
		t.Fatalf("after the worker stopped: %+v, want 10 dead and 2 waiting", st)
	}
}
