package jobs

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"
)

// MemoryOptions configure an in-process queue.
type MemoryOptions struct {
	// Capacity bounds the waiting items; Enqueue waits while it is
	// reached. Default 256. Retried items do not count against it, so a
	// worker never waits on its own producer.
	Capacity int
	// MaxAttempts before an item goes to the dead-letter list (default 3).
	MaxAttempts int
	// Wait is how long Read waits for a first item (default 1s).
	Wait time.Duration
}

// Memory is an in-process queue: the pipeline of `mlserve index` without
// Redis. Close it when no more items will come; workers then finish what
// is left and get ErrDrained.
type Memory struct {
	opts MemoryOptions

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change
	waiting  []Delivery
	inflight map[string]Delivery
	closed   bool
	next     uint64
	runs     map[string]*Counts
	dead     []DeadLetter
}

var (
	_ Queue    = (*Memory)(nil)
	_ Enqueuer = (*Memory)(nil)
)

// NewMemory returns an empty in-process queue.
func NewMemory(opts MemoryOptions) *Memory {
	if opts.Capacity <= 0 {
		opts.Capacity = 256
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	if opts.Wait <= 0 {
		opts.Wait = time.Second
	}
	return &Memory{opts: opts, changed: make(chan struct{}), inflight: map[string]Delivery{}, runs: map[string]*Counts{}}
}

// broadcast wakes every waiter; the caller holds mu.
func (m *Memory) broadcast() {
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *Memory) run(name string) *Counts {
	c, ok := m.runs[name]
	if !ok {
		c = &Counts{Known: true}
		m.runs[name] = c
	}
	return c
}

// Enqueue adds items, waiting while Capacity items wait.
func (m *Memory) Enqueue(ctx context.Context, items []Item) error {
	for len(items) > 0 {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return ErrClosed
		}
		room := m.opts.Capacity - len(m.waiting)
		if room > 0 {
			n := min(room, len(items))
			for _, it := range items[:n] {
				raw, err := encodeItem(it)
				if err != nil {
					m.mu.Unlock()
					return err
				}
				m.next++
				m.waiting = append(m.waiting, Delivery{Item: it, ID: strconv.FormatUint(m.next, 10), Attempt: 1, raw: raw})
				m.run(it.Run).Total++
			}
			items = items[n:]
			m.broadcast()
			m.mu.Unlock()
			continue
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
	return nil
}

// Close says no more items will be enqueued.
func (m *Memory) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		m.broadcast()
	}
}

// Read implements Queue.
func (m *Memory) Read(ctx context.Context, max int) ([]Delivery, error) {
	timer := time.NewTimer(m.opts.Wait)
	defer timer.Stop()
	for {
		m.mu.Lock()
		if len(m.waiting) > 0 {
			n := min(max, len(m.waiting))
			out := make([]Delivery, n)
			copy(out, m.waiting[:n])
			m.waiting = append(m.waiting[:0], m.waiting[n:]...)
			for _, d := range out {
				m.inflight[d.ID] = d
			}
			m.broadcast() // room for producers
			m.mu.Unlock()
			return out, nil
		}
		if m.closed && len(m.inflight) == 0 {
			m.mu.Unlock()
			return nil, ErrDrained
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, nil
		case <-ch:
		}
	}
}

// Ack implements Queue.
func (m *Memory) Ack(_ context.Context, ds []Delivery) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range ds {
		if _, ok := m.inflight[d.ID]; !ok {
			continue // already handled
		}
		delete(m.inflight, d.ID)
		c := m.run(d.Item.Run)
		c.Done++
		c.Faces += int64(d.faces)
		c.Lines += int64(d.lines)
	}
	m.broadcast()
	return nil
}

// Fail implements Queue.
func (m *Memory) Fail(_ context.Context, d Delivery, cause error, permanent bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.inflight[d.ID]; !ok {
		return nil
	}
	delete(m.inflight, d.ID)
	msg := errorText(cause)
	if permanent || errors.Is(cause, ErrPermanent) || d.Attempt >= m.opts.MaxAttempts {
		m.dead = append(m.dead, DeadLetter{Item: d.Item, Raw: d.raw, Attempts: d.Attempt, Error: msg, ID: d.ID})
		m.run(d.Item.Run).Failed++
	} else {
		m.next++
		m.waiting = append(m.waiting, Delivery{Item: d.Item, ID: strconv.FormatUint(m.next, 10), Attempt: d.Attempt + 1, LastError: msg, raw: d.raw})
	}
	m.broadcast()
	return nil
}

// Release implements Queue.
func (m *Memory) Release(_ context.Context, ds []Delivery) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range ds {
		if _, ok := m.inflight[d.ID]; !ok {
			continue
		}
		delete(m.inflight, d.ID)
		m.waiting = append(m.waiting, d)
	}
	m.broadcast()
	return nil
}

// Extend implements Queue; in one process nobody else could take them.
func (m *Memory) Extend(context.Context, []Delivery) error { return nil }

// Progress implements Enqueuer.
func (m *Memory) Progress(_ context.Context, run string) (Counts, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.runs[run]; ok {
		return *c, nil
	}
	return Counts{}, nil
}

// Dead returns the dead letters so far.
func (m *Memory) Dead() []DeadLetter {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]DeadLetter(nil), m.dead...)
}

// errorText bounds an error message stored with an item.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > 2000 {
		s = s[:2000] + "…"
	}
	return s
}
