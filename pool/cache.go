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

	"github.com/mlserve/mlserve/inference"
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
// ctx ends when the load takes longer than CacheOptions.LoadTimeout, when
// no caller waits for the model any more, or when the cache closes; a load
// that returns a model anyway is kept.
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
	// A load that ran out of device memory is remembered at most 5 s, and
	// only until a model becomes idle or is unloaded (memory may be had
	// then). Loads canceled because nobody waited any more, or because
	// the cache closed, are not failures.
	FailureHoldOff time.Duration
	// LoadTimeout bounds one load, download included (default 5 minutes,
	// Immich's default MACHINE_LEARNING_WORKER_TIMEOUT). A load that times
	// out fails like any other.
	LoadTimeout time.Duration
	// CloseTimeout bounds how long Close waits for loads in progress to
	// stop after canceling them (default 10 s); a load that ignores its
	// context and finishes later has its model closed at once.
	CloseTimeout time.Duration
	// OnUnload is called after a model was closed (metrics, memory trim).
	OnUnload func(Key)
}

// Cache keeps loaded models with reference counts: a model in use is never
// closed. Models leave the cache when idle longer than the TTL, when the
// cap pushes them out (closed once their last user releases them), or when
// the cache closes. Preloaded models stay.
//
// A model is in memory at most once: one load at a time per key (callers
// share it), and a model the cap pushed out while in use is taken back
// into the cache by the next caller instead of being loaded again.
//
// Loads run on goroutines of the cache, bounded by LoadTimeout; each
// counts the callers waiting for it, and the last one to give up cancels
// it. Close cancels the loads in progress and waits for them (bounded by
// CloseTimeout).
//
// Lock order: Cache.mu, then nothing (load and close run unlocked).
type Cache struct {
	opts   CacheOptions
	load   LoadFunc
	logger *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	lru     *lru.Cache[Key, *entry] // unpinned models
	pinned  map[Key]*entry          // preloaded models
	loading map[Key]*loadCall
	// evicted holds the models pushed out of the LRU while in use, until
	// their last user releases them: a request for one takes it back.
	evicted  map[Key]*entry
	failures map[Key]failure
	closed   bool
	closing  chan struct{} // closed by Close: waiters stop waiting
	// evicting collects entries the LRU pushed out during an Add; they
	// are handled once the Add returns (still under mu).
	evicting []*entry

	loads sync.WaitGroup // load goroutines
}

type entry struct {
	key      Key
	model    Model
	refs     int
	lastUsed time.Time
	loadTime time.Duration
	gone     bool // out of the cache: close when refs reach 0
}

// loadCall is one load in progress, shared by the callers that wait for
// it. It stays in Cache.loading until its goroutine ends, even when
// abandoned, so that a key never has two loads at once.
type loadCall struct {
	done   chan struct{}
	entry  *entry
	err    error // set before done is closed
	cancel context.CancelFunc
	// waiters counts the callers waiting; abandoned is set when the last
	// one left before the load finished (its context is then canceled).
	// Both guarded by Cache.mu.
	waiters   int
	abandoned bool
}

type failure struct {
	err     error
	at      time.Time
	holdOff time.Duration
}

// outOfMemoryHoldOff is how long a load that ran out of device memory is
// remembered (FailureHoldOff, if shorter).
const outOfMemoryHoldOff = 5 * time.Second

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
	if opts.LoadTimeout <= 0 {
		opts.LoadTimeout = 5 * time.Minute
	}
	if opts.CloseTimeout <= 0 {
		opts.CloseTimeout = 10 * time.Second
	}
	c := &Cache{
		opts:     opts,
		load:     load,
		logger:   logger,
		now:      time.Now,
		pinned:   map[Key]*entry{},
		loading:  map[Key]*loadCall{},
		evicted:  map[Key]*entry{},
		failures: map[Key]failure{},
		closing:  make(chan struct{}),
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
// this caller's wait: a load in progress continues for the others, and is
// canceled when the last caller waiting for it gives up.
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
		if e, idle := c.lookup(key, pin); e != nil {
			e.refs++
			e.lastUsed = c.now()
			c.mu.Unlock()
			c.closeAll(idle)
			return &Handle{c: c, e: e, Model: e.model}, nil
		}
		if f, ok := c.failures[key]; ok {
			if c.now().Sub(f.at) < f.holdOff {
				c.mu.Unlock()
				return nil, f.err
			}
			delete(c.failures, key)
		}
		if err := ctx.Err(); err != nil {
			c.mu.Unlock()
			return nil, err
		}
		call, inFlight := c.loading[key]
		if !inFlight {
			// The load keeps the first caller's values (logger, trace) but
			// not its cancellation: it has its own timeout and ends when
			// nobody waits any more.
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.LoadTimeout)
			call = &loadCall{done: make(chan struct{}), cancel: cancel}
			c.loading[key] = call
			c.loads.Add(1)
			go c.runLoad(lctx, key, call, pin)
		}
		call.waiters++
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			c.leave(call)
			return nil, ctx.Err()
		case <-c.closing:
			c.leave(call)
			return nil, ErrClosed
		case <-call.done:
		}
		c.mu.Lock()
		call.waiters--
		if call.abandoned {
			// Everyone before us gave up and the load was canceled (or
			// finished regardless): look again, and load afresh if need be.
			c.mu.Unlock()
			continue
		}
		if call.err != nil {
			c.mu.Unlock()
			return nil, call.err
		}
		e := call.entry
		if e.gone {
			// Pushed out between the load and our wake-up: go round again
			// (lookup takes it back if it is still in use, else it loads).
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

// leave drops a waiter that gave up; the last one to leave a load in
// progress cancels it.
func (c *Cache) leave(call *loadCall) {
	c.mu.Lock()
	defer c.mu.Unlock()
	call.waiters--
	if call.waiters > 0 {
		return
	}
	select {
	case <-call.done:
		return
	default:
	}
	call.abandoned = true
	call.cancel()
}

// lookup finds a loaded model, taking back one that the cap pushed out
// while it was in use; with pin, it moves it to the pinned set. Taking a
// model back may push out another: the idle ones it pushed out are
// returned, to be closed once mu is released. Called with mu held.
func (c *Cache) lookup(key Key, pin bool) (*entry, []*entry) {
	if e, ok := c.pinned[key]; ok {
		return e, nil
	}
	if e, ok := c.evicted[key]; ok {
		// Still in memory: back into the cache as the most recently used
		// model, never loaded a second time.
		delete(c.evicted, key)
		e.gone = false
		if pin {
			c.pinned[key] = e
			return e, nil
		}
		c.lru.Add(key, e)
		return e, c.takeEvicted()
	}
	e, ok := c.lru.Get(key)
	if !ok {
		return nil, nil
	}
	if pin {
		c.pinLocked(e)
	}
	return e, nil
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

// runLoad loads one model with ctx, which no caller owns: a load that
// several callers wait for survives any one of them giving up.
func (c *Cache) runLoad(ctx context.Context, key Key, call *loadCall, pin bool) {
	defer c.loads.Done()
	defer call.cancel()
	start := c.now()
	m, err := c.load(ctx, key)
	took := c.now().Sub(start)
	var toClose []*entry
	c.mu.Lock()
	delete(c.loading, key)
	switch {
	case err != nil && (call.abandoned || c.closed) && ctx.Err() != nil:
		// Canceled by us: not the model's fault, nothing to remember.
		call.err = fmt.Errorf("%w '%s': %w", ErrLoadFailed, key.Name, err)
		if c.closed {
			call.err = ErrClosed
		}
		c.logger.Info("model load canceled", "model", key.String(), "err", err)
	case err != nil:
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			err = fmt.Errorf("load took longer than %v: %w", c.opts.LoadTimeout, err)
		}
		call.err = fmt.Errorf("%w '%s': %w", ErrLoadFailed, key.Name, err)
		holdOff := c.opts.FailureHoldOff
		if errors.Is(err, inference.ErrOutOfMemory) {
			// The device's memory may be free again soon (a model in use
			// is released): retry sooner.
			holdOff = min(holdOff, outOfMemoryHoldOff)
		}
		c.failures[key] = failure{err: call.err, at: c.now(), holdOff: holdOff}
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
		} else if !c.closed {
			c.evicted[e.key] = e
		}
	}
	c.evicting = c.evicting[:0]
	return idle
}

func (c *Cache) release(e *entry) {
	c.mu.Lock()
	e.refs--
	e.lastUsed = c.now()
	if e.refs == 0 {
		c.forgetOutOfMemory()
	}
	closeNow := e.gone && e.refs == 0
	if closeNow && c.evicted[e.key] == e {
		delete(c.evicted, e.key)
	}
	c.mu.Unlock()
	if closeNow {
		c.closeAll([]*entry{e})
	}
}

// forgetOutOfMemory drops the remembered loads that failed for want of
// device memory: a model just became idle (it may be unloaded to make
// room) or was unloaded. Called with mu held.
func (c *Cache) forgetOutOfMemory() {
	for k, f := range c.failures {
		if errors.Is(f.err, inference.ErrOutOfMemory) {
			delete(c.failures, k)
		}
	}
}

func (c *Cache) closeAll(es []*entry) {
	if len(es) > 0 {
		c.mu.Lock()
		c.forgetOutOfMemory()
		c.mu.Unlock()
	}
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
	// Provider and Device are where the model runs ("CUDA", "CUDA:1";
	// "CPU" after a fallback): its first replica's. Empty for models the
	// service did not load.
	Provider, Device string
	// Devices lists the device of each replica, the first one first: a
	// busy model has one session per device that had room for it.
	// Replicas says the same with each one's provider, and whether it
	// runs on the CPU because its device failed.
	Devices  []string
	Replicas []Where
	// DeviceMemory is what the model's sessions took on their devices at
	// load, all replicas together, in bytes (0 on the CPU, or where the
	// device cannot tell).
	DeviceMemory int64
	// Fallback is why the model runs on the CPU instead of its device
	// (MLSERVE_ALLOW_CPU_FALLBACK): the device's error. Nil when it runs
	// where it was placed.
	Fallback error
}

// describer is a model that tells where it runs (the service's models).
type describer interface {
	describe(l *Loaded)
}

// Loaded lists the models in memory, sorted by key.
func (c *Cache) Loaded() []Loaded { return c.loaded() }

// snapshot lists the models in memory, sorted by key.
func (c *Cache) snapshot() []Loaded {
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
	for _, e := range c.evicted {
		add(e, false) // pushed out, closed when its last user is done
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.String() < out[j].Key.String() })
	return out
}

// loaded lists the models in memory, sorted by key, with where they run
// (read outside the cache's lock).
func (c *Cache) loaded() []Loaded {
	out := c.snapshot()
	for i := range out {
		if d, ok := out[i].Model.(describer); ok {
			d.describe(&out[i])
		}
	}
	return out
}

// idleEntry is a model nobody holds.
type idleEntry struct {
	key      Key
	model    Model
	lastUsed time.Time
}

// idleEntries lists the models nobody holds, preloaded ones excepted,
// least recently used first.
func (c *Cache) idleEntries() []idleEntry {
	c.mu.Lock()
	var out []idleEntry
	for _, k := range c.lru.Keys() {
		if e, ok := c.lru.Peek(k); ok && e.refs == 0 {
			out = append(out, idleEntry{key: k, model: e.model, lastUsed: e.lastUsed})
		}
	}
	c.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].lastUsed.Before(out[j].lastUsed) })
	return out
}

// models lists every model in memory.
func (c *Cache) models() []Model {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Model
	for _, e := range c.pinned {
		out = append(out, e.model)
	}
	for _, k := range c.lru.Keys() {
		if e, ok := c.lru.Peek(k); ok {
			out = append(out, e.model)
		}
	}
	for _, e := range c.evicted {
		out = append(out, e.model)
	}
	return out
}

// evictIdle unloads the model of key if it is still m, idle and not
// preloaded, and reports whether it did. The model is closed before
// evictIdle returns.
func (c *Cache) evictIdle(key Key, m Model) bool {
	c.mu.Lock()
	e, ok := c.lru.Peek(key)
	if !ok || e.model != m || e.refs > 0 {
		c.mu.Unlock()
		return false
	}
	c.lru.Remove(key)
	idle := c.takeEvicted()
	c.mu.Unlock()
	c.closeAll(idle)
	return len(idle) > 0
}

// Forget drops a remembered load failure, so the next request retries.
func (c *Cache) Forget(key Key) {
	c.mu.Lock()
	delete(c.failures, key)
	c.mu.Unlock()
}

// Close unloads every model; models in use are closed when released.
// Callers waiting for a load get ErrClosed at once; loads in progress are
// canceled, and Close waits up to CloseTimeout for them to stop (a model
// that a load still returns afterwards is closed at once).
func (c *Cache) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.closing)
	for _, call := range c.loading {
		call.cancel()
	}
	loading := len(c.loading)
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
	if loading == 0 {
		return
	}
	stopped := make(chan struct{})
	go func() {
		c.loads.Wait()
		close(stopped)
	}()
	t := time.NewTimer(c.opts.CloseTimeout)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		c.logger.Warn("model loads still running after the cache closed; their models are closed when they finish",
			"waited", c.opts.CloseTimeout)
	}
}
