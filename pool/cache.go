package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Key identifies a loaded model as Immich's cache does: task, type and the
// cleaned model name. Request options are not part of the key.
type Key struct {
	Task, Type, Name string
}

func (k Key) String() string { return k.Task + "/" + k.Type + "/" + k.Name }

// Model is anything the cache can hold: a loaded model whose memory is
// released by Close.
type Model interface {
	Close() error
}

// LoadFunc loads a model. It is called at most once at a time per key.
type LoadFunc func(ctx context.Context, key Key) (Model, error)

// ErrLoadFailed is returned, wrapped with the cause, for a model whose
// load failed; further requests get it without a new attempt until the
// failure's hold-off has passed (Immich keeps failing until the model's
// TTL expires; we retry sooner).
var ErrLoadFailed = errors.New("failed to load model")

// CacheOptions configure a Cache.
type CacheOptions struct {
	// TTL unloads a model that has not been used for this long; zero
	// keeps models until the cap pushes them out.
	TTL time.Duration
	// MaxLoaded caps the number of models kept loaded besides preloaded
	// ones; the least recently used idle model goes first.
	MaxLoaded int
	// FailureHoldOff is how long a failed load is remembered (default 30 s).
	FailureHoldOff time.Duration
	// OnUnload is called after a model was closed (metrics, memory trim).
	OnUnload func(Key)
}

// Cache keeps loaded models with reference counts: a model in use is never
// closed. Models leave the cache when idle longer than the TTL, when the
// cap pushes them out (closed once their last user releases them), or when
// the cache closes. Preloaded models stay.
//
// Lock order: Cache.mu, then nothing (load and close run unlocked).
type Cache struct {
	opts   CacheOptions
	load   LoadFunc
	logger *slog.Logger
	now    func() time.Time

	mu       sync.Mutex
	lru      *lru.Cache[Key, *entry] // unpinned models
	pinned   map[Key]*entry          // preloaded models
	loading  map[Key]*loadCall
	failures map[Key]failure
	closed   bool
	// evicting collects entries the LRU pushed out during an Add; they
	// are handled once the Add returns (still under mu).
	evicting []*entry
}

type entry struct {
	key      Key
	model    Model
	refs     int
	lastUsed time.Time
	loadTime time.Duration
	gone     bool // out of the cache: close when refs reach 0
}

type loadCall struct {
	done  chan struct{}
	entry *entry
	err   error
}

type failure struct {
	err error
	at  time.Time
}

// NewCache makes a cache that loads models with load.
func NewCache(opts CacheOptions, load LoadFunc, logger *slog.Logger) (*Cache, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxLoaded <= 0 {
		opts.MaxLoaded = 8
	}
	if opts.FailureHoldOff <= 0 {
		opts.FailureHoldOff = 30 * time.Second
	}
	c := &Cache{
		opts:     opts,
		load:     load,
		logger:   logger,
		now:      time.Now,
		pinned:   map[Key]*entry{},
		loading:  map[Key]*loadCall{},
		failures: map[Key]failure{},
	}
	l, err := lru.NewWithEvict(opts.MaxLoaded, func(_ Key, e *entry) {
		c.evicting = append(c.evicting, e)
	})
	if err != nil {
		return nil, fmt.Errorf("pool.NewCache: %w", err)
	}
	c.lru = l
	return c, nil
}

// Handle is a reference to a loaded model. Release it when done; the
// model stays open until then.
type Handle struct {
	c     *Cache
	e     *entry
	once  sync.Once
	Model Model
	// Loaded tells whether this call loaded the model (a cold start), and
	// LoadTime how long that took.
	Loaded   bool
	LoadTime time.Duration
}

// Release returns the reference. It is safe to call more than once.
func (h *Handle) Release() {
	h.once.Do(func() { h.c.release(h.e) })
}

// Acquire returns a reference to the model for key, loading it if needed.
// Concurrent callers for one key share a single load. ctx bounds only
// this caller's wait: a load in progress continues for the others.
func (c *Cache) Acquire(ctx context.Context, key Key) (*Handle, error) {
	return c.acquire(ctx, key, false)
}

// Preload loads the model for key and keeps it loaded until Close.
func (c *Cache) Preload(ctx context.Context, key Key) error {
	h, err := c.acquire(ctx, key, true)
	if err != nil {
		return err
	}
	h.Release()
	return nil
}

func (c *Cache) acquire(ctx context.Context, key Key, pin bool) (*Handle, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if e := c.lookup(key, pin); e != nil {
			e.refs++
			e.lastUsed = c.now()
			c.mu.Unlock()
			return &Handle{c: c, e: e, Model: e.model}, nil
		}
		if f, ok := c.failures[key]; ok {
			if c.now().Sub(f.at) < c.opts.FailureHoldOff {
				c.mu.Unlock()
				return nil, f.err
			}
			delete(c.failures, key)
		}
		call, inFlight := c.loading[key]
		if !inFlight {
			call = &loadCall{done: make(chan struct{})}
			c.loading[key] = call
			c.mu.Unlock()
			go c.runLoad(key, call, pin)
		} else {
			c.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-call.done:
		}
		if call.err != nil {
			return nil, call.err
		}
		c.mu.Lock()
		e := call.entry
		if e.gone {
			// Evicted between the load and our wake-up: go round again.
			c.mu.Unlock()
			continue
		}
		if pin && !c.isPinned(e) {
			c.pinLocked(e)
		}
		e.refs++
		e.lastUsed = c.now()
		c.mu.Unlock()
		h := &Handle{c: c, e: e, Model: e.model}
		if !inFlight {
			h.Loaded, h.LoadTime = true, e.loadTime
		}
		return h, nil
	}
}

// lookup finds a loaded model; with pin, it moves it to the pinned set.
// Called with mu held.
func (c *Cache) lookup(key Key, pin bool) *entry {
	if e, ok := c.pinned[key]; ok {
		return e
	}
	e, ok := c.lru.Get(key)
	if !ok {
		return nil
	}
	if pin {
		c.pinLocked(e)
	}
	return e
}

func (c *Cache) isPinned(e *entry) bool {
	p, ok := c.pinned[e.key]
	return ok && p == e
}

func (c *Cache) pinLocked(e *entry) {
	c.lru.Remove(e.key) // the eviction callback must not close it
	c.evicting = c.evicting[:0]
	e.gone = false
	c.pinned[e.key] = e
}

// runLoad loads one model. It has no caller's context: a load that
// someone started finishes (or fails) on its own, so that a client that
// disconnects does not waste the work others wait for.
func (c *Cache) runLoad(key Key, call *loadCall, pin bool) {
	start := c.now()
	m, err := c.load(context.Background(), key)
	took := c.now().Sub(start)
	var toClose []*entry
	c.mu.Lock()
	delete(c.loading, key)
	switch {
	case err != nil:
		call.err = fmt.Errorf("%w '%s': %w", ErrLoadFailed, key.Name, err)
		c.failures[key] = failure{err: call.err, at: c.now()}
		c.logger.Error("model failed to load", "model", key.String(), "err", err)
	case c.closed:
		call.err = ErrClosed
		toClose = append(toClose, &entry{key: key, model: m, gone: true})
	default:
		e := &entry{key: key, model: m, lastUsed: c.now(), loadTime: took}
		call.entry = e
		if pin {
			c.pinned[key] = e
		} else {
			c.lru.Add(key, e)
			toClose = c.takeEvicted()
		}
		c.logger.Info("model loaded", "model", key.String(), "took", took.Round(time.Millisecond))
	}
	c.mu.Unlock()
	close(call.done)
	c.closeAll(toClose)
}

// takeEvicted marks entries pushed out of the LRU as gone and returns those
// that nobody uses, to be closed outside the lock. Called with mu held.
func (c *Cache) takeEvicted() []*entry {
	var idle []*entry
	for _, e := range c.evicting {
		e.gone = true
		if e.refs == 0 {
			idle = append(idle, e)
		}
	}
	c.evicting = c.evicting[:0]
	return idle
}

func (c *Cache) release(e *entry) {
	c.mu.Lock()
	e.refs--
	e.lastUsed = c.now()
	closeNow := e.gone && e.refs == 0
	c.mu.Unlock()
	if closeNow {
		c.closeAll([]*entry{e})
	}
}

func (c *Cache) closeAll(es []*entry) {
	for _, e := range es {
		if err := e.model.Close(); err != nil {
			c.logger.Warn("closing model failed", "model", e.key.String(), "err", err)
		}
		c.logger.Info("model unloaded", "model", e.key.String())
		if c.opts.OnUnload != nil {
			c.opts.OnUnload(e.key)
		}
	}
}

// Sweep unloads the models idle for longer than the TTL and returns how
// many it unloaded. Preloaded models and models in use stay.
func (c *Cache) Sweep() int {
	if c.opts.TTL <= 0 {
		return 0
	}
	now := c.now()
	c.mu.Lock()
	var idle []*entry
	for _, k := range c.lru.Keys() {
		e, ok := c.lru.Peek(k)
		if ok && e.refs == 0 && now.Sub(e.lastUsed) > c.opts.TTL {
			c.lru.Remove(k)
			idle = append(idle, c.takeEvicted()...)
		}
	}
	c.mu.Unlock()
	c.closeAll(idle)
	return len(idle)
}

// Run sweeps idle models every poll interval until ctx ends.
func (c *Cache) Run(ctx context.Context, poll time.Duration) error {
	if poll <= 0 {
		poll = 10 * time.Second
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c.Sweep()
		}
	}
}

// Loaded describes one loaded model.
type Loaded struct {
	Key      Key
	InUse    int
	Pinned   bool
	IdleFor  time.Duration
	LoadTime time.Duration
	Model    Model
}

// Loaded lists the models in memory, sorted by key.
func (c *Cache) Loaded() []Loaded {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	var out []Loaded
	add := func(e *entry, pinned bool) {
		out = append(out, Loaded{Key: e.key, InUse: e.refs, Pinned: pinned, IdleFor: now.Sub(e.lastUsed), LoadTime: e.loadTime, Model: e.model})
	}
	for _, e := range c.pinned {
		add(e, true)
	}
	for _, k := range c.lru.Keys() {
		if e, ok := c.lru.Peek(k); ok {
			add(e, false)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.String() < out[j].Key.String() })
	return out
}

// Forget drops a remembered load failure, so the next request retries.
func (c *Cache) Forget(key Key) {
	c.mu.Lock()
	delete(c.failures, key)
	c.mu.Unlock()
}

// Close unloads every model; models in use are closed when released.
// Loads in progress are closed when they finish.
func (c *Cache) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	var idle []*entry
	for _, e := range c.pinned {
		e.gone = true
		if e.refs == 0 {
			idle = append(idle, e)
		}
	}
	c.pinned = map[Key]*entry{}
	c.lru.Purge()
	idle = append(idle, c.takeEvicted()...)
	c.mu.Unlock()
	c.closeAll(idle)
}
