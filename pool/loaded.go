package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/models"
)

// loaded is a model in the cache with the engine's state for it: its
// replicas (one per device it runs on) and, for models that batch, the
// batcher whose queue all replicas serve.
type loaded struct {
	key Key
	h   *handler
	s   *Service
	dir string
	// model is the first replica's model, which the model's CPU work
	// (preprocessing, tokenizing) uses: the first replica stays as long
	// as the model does.
	model Model
	// batch is the model's *batcher, of the handler's types; eng drives
	// it. Both nil for models run one request at a time.
	batch any
	eng   engine

	mu       sync.Mutex
	replicas []*replica
	closed   bool
	// growing is set while a replica loads; backedSince is when the
	// model's queue was first seen backed up (zero: it is not);
	// nextTry is when a replica may be tried again after none could be
	// had.
	growing     bool
	backedSince time.Time
	nextTry     time.Time
}

// engine is a model's batcher seen from its lifecycle.
type engine interface {
	addLane(r *replica)
	dropLane(r *replica)
	close()
	stats() BatchStats
}

// batchEngine is the batcher of a model whose runs have types In and Out.
type batchEngine[In, Out any] struct {
	m      *loaded
	b      *batcher[In, Out]
	newRun func(Model) runFunc[In, Out]
}

// addLane gives the replica runners: as many as its device has slots,
// each running the batches on the replica's own model.
func (e *batchEngine[In, Out]) addLane(r *replica) {
	s := e.m.s
	slot := func() chan struct{} { return s.devices.slot(r.device()) }
	r.lane = e.b.addLane(cap(slot()), slot, r.where, s.retryRun(e.m, r), func() runFunc[In, Out] { return e.newRun(r.model) })
}

func (e *batchEngine[In, Out]) dropLane(r *replica) {
	if r.lane != nil {
		e.b.dropLane(r.lane)
	}
}

func (e *batchEngine[In, Out]) close() { e.b.close() }

func (e *batchEngine[In, Out]) stats() BatchStats {
	st := e.b.stats()
	st.Key = e.m.key
	return st
}

// startBatcher gives a loaded model its batcher; newRun makes the run
// function of one runner on one replica's model.
func startBatcher[In, Out any](s *Service, m *loaded, maxRows int, newRun func(Model) runFunc[In, Out]) {
	b := newBatcher[In, Out](batchOptions{
		name:     m.key.String(),
		maxRows:  maxRows,
		maxWait:  s.opts.Batch.Wait,
		gather:   s.opts.Batch.gather(),
		maxQueue: s.opts.Batch.Queue,
		onSubmit: m.noteBacklog,
		nice:     s.opts.Batch.Nice,
	}, nil)
	m.batch = b
	m.eng = &batchEngine[In, Out]{m: m, b: b, newRun: newRun}
}

// expecter is the model's batcher as the requests preparing its inputs
// see it (nil for a model without one).
func (l *loaded) expecter() expecter {
	e, _ := l.batch.(expecter)
	return e
}

// Close stops the model's batcher, then closes its replicas. The cache
// calls it once no request holds the model.
func (l *loaded) Close() error {
	l.mu.Lock()
	l.closed = true
	rs := l.replicas
	l.replicas = nil
	for _, r := range rs {
		r.gone = true
	}
	l.mu.Unlock()
	if l.eng != nil {
		l.eng.close()
	}
	var errs []error
	for _, r := range rs {
		errs = append(errs, l.s.closeReplica(r))
	}
	return errors.Join(errs...)
}

// Provider is the execution provider that runs the model (its first
// replica).
func (l *loaded) Provider() string {
	if rs := l.replicaList(); len(rs) > 0 {
		return rs[0].provider()
	}
	return providerOf(l.model)
}

// Device is the device the model runs on (its first replica's).
func (l *loaded) Device() string {
	if rs := l.replicaList(); len(rs) > 0 {
		return rs[0].device()
	}
	return ""
}

// Model returns the loaded model itself (a *clip.Visual, *face.Detector, ...).
func (l *loaded) Model() Model { return l.model }

func (l *loaded) describe(out *Loaded) {
	rs := l.replicaList()
	if len(rs) == 0 {
		return
	}
	out.Provider, out.Device = rs[0].provider(), rs[0].device()
	for _, r := range rs {
		out.Devices = append(out.Devices, r.device())
		out.Replicas = append(out.Replicas, r.where())
		out.DeviceMemory += r.memory()
		if out.Fallback == nil {
			out.Fallback = r.fallback()
		}
	}
}

// replicaList returns the model's replicas, the first one first.
func (l *loaded) replicaList() []*replica {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*replica(nil), l.replicas...)
}

// isFirst tells whether r is the model's first replica.
func (l *loaded) isFirst(r *replica) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.replicas) > 0 && l.replicas[0] == r
}

// replicasOn returns the replicas running on device.
func (l *loaded) replicasOn(device string) []*replica {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*replica
	for _, r := range l.replicas {
		if r.device() == device {
			out = append(out, r)
		}
	}
	return out
}

// dropReplica unloads r if it is one of the model's extra replicas (the
// first one goes only with the model) and reports whether it did. A
// batch running on it finishes first; the queue stays for the others.
func (l *loaded) dropReplica(r *replica) bool {
	l.mu.Lock()
	i := -1
	for j, x := range l.replicas {
		if x == r {
			i = j
		}
	}
	if i <= 0 {
		l.mu.Unlock()
		return false
	}
	l.replicas = append(l.replicas[:i:i], l.replicas[i+1:]...)
	r.gone = true
	closeNow := r.uses == 0
	l.mu.Unlock()
	if l.eng != nil {
		l.eng.dropLane(r)
	}
	if closeNow {
		if err := l.s.closeReplica(r); err != nil {
			l.s.logger.Warn("closing a replica failed", "model", l.key.String(), "err", err)
		}
	}
	return true
}

// pick chooses the replica a request runs a per-request model (a
// detector) on: the one with the fewest requests per run its device
// allows. Give it back with unpick. backed tells whether the requests on
// the model are more than twice what its devices run at once.
func (l *loaded) pick() (r *replica, backed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	uses, slots := 0, 0
	var best *replica
	var bestLoad float64
	for _, x := range l.replicas {
		n := cap(l.s.devices.slot(x.device()))
		uses += x.uses
		slots += n
		if load := float64(x.uses) / float64(n); best == nil || load < bestLoad {
			best, bestLoad = x, load
		}
	}
	if best == nil {
		return nil, false
	}
	best.uses++
	return best, uses+1 > 2*slots
}

// unpick gives back a replica pick returned; a replica dropped meanwhile
// is closed by its last user.
func (l *loaded) unpick(r *replica) {
	l.mu.Lock()
	r.uses--
	closeNow := r.gone && r.uses == 0
	l.mu.Unlock()
	if closeNow {
		_ = l.s.closeReplica(r)
	}
}

// replicaRetry is how long a model waits before it tries again for a
// replica after none could be had.
const replicaRetry = 30 * time.Second

// noteBacklog follows whether the model's queue is backed up, and starts
// loading a replica on another device once it has been for ReplicaAfter.
func (l *loaded) noteBacklog(backed bool) {
	p := l.s.placer
	if p.opts.ReplicaAfter < 0 || len(p.devs) < 2 {
		return
	}
	now := time.Now()
	l.mu.Lock()
	if !backed {
		l.backedSince = time.Time{}
		l.mu.Unlock()
		return
	}
	if l.backedSince.IsZero() {
		l.backedSince = now
	}
	start := !l.closed && !l.growing && now.Sub(l.backedSince) >= p.opts.ReplicaAfter &&
		!now.Before(l.nextTry) && len(l.replicas) < len(p.devs)
	if start {
		l.growing = true
		l.s.growing.Add(1)
	}
	l.mu.Unlock()
	if start {
		go l.grow()
	}
}

// grow loads a replica of the model on a device that has room for it,
// and gives it runners.
func (l *loaded) grow() {
	defer l.s.growing.Done()
	r, err := l.s.loadReplica(l)
	l.mu.Lock()
	l.growing = false
	l.backedSince = time.Time{}
	if r == nil {
		l.nextTry = time.Now().Add(replicaRetry)
		l.mu.Unlock()
		l.s.logger.Debug("no replica for a busy model", "model", l.key.String(), "reason", err)
		return
	}
	if l.closed {
		l.mu.Unlock()
		_ = l.s.closeReplica(r)
		return
	}
	if l.eng != nil {
		l.eng.addLane(r)
	}
	l.replicas = append(l.replicas, r)
	n := len(l.replicas)
	l.mu.Unlock()
	l.s.logger.Info("busy model got a replica", "model", l.key.String(), "device", r.device(),
		"device_memory", r.memory(), "replicas", n)
	l.s.notePlaced(l.key, r)
}

// errNoRoom: no device without the model has room for a replica.
var errNoRoom = errors.New("no other device has room for it")

// loadReplica loads one more copy of l's model on a device that does not
// hold it and has room without unloading anything. A replica is never
// retried nor moved to the CPU.
func (s *Service) loadReplica(l *loaded) (*replica, error) {
	var avoid []string
	for _, r := range l.replicaList() {
		if r.placed != nil {
			avoid = append(avoid, r.placed.Name())
		}
		avoid = append(avoid, r.device())
	}
	p := s.placer
	need, floor := p.estimate(l.key, l.dir, l.h.sub)
	pl, err := p.place(l.key, need, floor, avoid, true)
	if err != nil {
		return nil, err
	}
	defer pl.release()
	r, err := s.loadOn(l.h, l.dir, l.key, pl.dev, nil)
	if err != nil {
		var derr *inference.DeviceError
		if errors.As(err, &derr) && errors.Is(err, inference.ErrOutOfMemory) {
			s.noteOOM(l.key, derr.Device, "load")
		}
		return nil, err
	}
	p.measure(l.key, r)
	return r, nil
}

// loadOn loads the handler's model from dir on dev (nil: the Sessions'
// default), or on the CPU because of cause when cause is set.
func (s *Service) loadOn(h *handler, dir string, key Key, dev *inference.Device, cause error) (*replica, error) {
	ps := &placedSessions{base: s.sessions, rt: s.placer.rt, cause: cause}
	if dev != nil {
		ps.device = dev.Name()
	}
	m, err := h.load(ps, dir, key)
	if err != nil {
		return nil, err
	}
	r := &replica{model: m, sessions: ps.sessions(), placed: dev}
	s.placer.register(r)
	return r, nil
}

// closeReplica closes a replica's model: its device memory goes back.
func (s *Service) closeReplica(r *replica) error {
	err := r.model.Close()
	s.placer.unregister(r)
	return err
}

// loadFirst loads a model's first replica: on the device placement
// chooses (unloading idle models there to make room for its estimate);
// after an out-of-memory error, again once, having unloaded every idle
// model on that device; after a second failure on the device, on the CPU
// if the fallback is allowed, else an error that names the device and its
// memory.
func (s *Service) loadFirst(h *handler, dir string, key Key) (*replica, error) {
	p := s.placer
	need, floor := p.estimate(key, dir, h.sub)
	pl, err := p.place(key, need, floor, nil, false)
	if err != nil {
		if errors.Is(err, inference.ErrOutOfMemory) && p.fallbackAllowed() {
			r, ferr := s.loadOn(h, dir, key, nil, err)
			if ferr != nil {
				return nil, fmt.Errorf("%w; on the CPU: %w", err, ferr)
			}
			s.noteFallback(key, p.devs[0].Name(), err)
			return r, nil
		}
		return nil, err
	}
	defer pl.release()
	r, err := s.loadOn(h, dir, key, pl.dev, nil)
	var derr *inference.DeviceError
	if err == nil || pl.dev == nil || pl.dev.Host() || !errors.As(err, &derr) {
		if err == nil {
			p.measure(key, r)
		}
		return r, err
	}
	retried := false
	if errors.Is(err, inference.ErrOutOfMemory) {
		s.noteOOM(key, derr.Device, "load")
		n := p.relieve(derr.Device, key)
		s.logger.Warn("model ran out of device memory while loading; idle models there unloaded, loading again",
			"model", key.String(), "device", derr.Device, "unloaded", n, "err", err)
		retried = true
		r, err = s.loadOn(h, dir, key, pl.dev, nil)
		if err == nil {
			p.measure(key, r)
			return r, nil
		}
		if !errors.As(err, &derr) {
			return nil, err
		}
		if errors.Is(err, inference.ErrOutOfMemory) {
			s.noteOOM(key, derr.Device, "load")
		}
	}
	if p.fallbackAllowed() {
		r, ferr := s.loadOn(h, dir, key, pl.dev, err)
		if ferr != nil {
			return nil, fmt.Errorf("%w; on the CPU: %w", err, ferr)
		}
		s.noteFallback(key, derr.Device, err)
		return r, nil
	}
	if retried && errors.Is(err, inference.ErrOutOfMemory) {
		return nil, memoryError(fmt.Errorf("%w (the model needs about %s; idle models on %s were unloaded and the load retried; %s; CPU fallback not allowed)",
			err, inference.FormatBytes(need), derr.Device, p.heldOn(derr.Device)), key, "load", derr.Device, need)
	}
	return nil, err
}

// retryRun is the retry policy of a replica's failed runs: after an
// out-of-memory error on its device, unload the idle models there and run
// again, once; after a failure on the device that this does not cure (or
// any other device failure), move the replica to the CPU and run there if
// the fallback is allowed; else fail with the device's error and memory.
func (s *Service) retryRun(l *loaded, r *replica) func(attempt int, err error) (bool, error) {
	p := s.placer
	return func(attempt int, err error) (bool, error) {
		var derr *inference.DeviceError
		if !errors.As(err, &derr) || derr.Device == inference.CPU || p.rt == nil {
			return false, err
		}
		oom := errors.Is(err, inference.ErrOutOfMemory)
		if oom {
			s.noteOOM(l.key, derr.Device, "run")
		}
		if attempt == 1 && oom {
			n := p.relieve(derr.Device, l.key)
			s.logger.Warn("model ran out of device memory while running; idle models there unloaded, running again",
				"model", l.key.String(), "device", derr.Device, "unloaded", n, "err", err)
			return true, nil
		}
		if attempt <= 2 && p.fallbackAllowed() {
			if ferr := r.fallBack(err); ferr != nil {
				return false, fmt.Errorf("%w; moving to the CPU failed: %w", err, ferr)
			}
			s.noteFallback(l.key, derr.Device, err)
			return true, nil
		}
		if oom && attempt >= 2 {
			return false, memoryError(fmt.Errorf("%w (idle models on %s were unloaded and the run retried; %s; CPU fallback not allowed)",
				err, derr.Device, p.heldOn(derr.Device)), l.key, "run", derr.Device, 0)
		}
		return false, err
	}
}

// loadModel is the cache's LoadFunc: find (or download) the model folder,
// place the model and build it; a model that fails to load as corrupt is
// cleared and fetched once more, as Immich does.
func (s *Service) loadModel(ctx context.Context, key Key) (Model, error) {
	h := s.handlers[handlerKey{key.Task, key.Type}]
	if h == nil {
		return nil, fmt.Errorf("%w: %s", models.ErrUnsupported, key)
	}
	task, typ := models.Task(key.Task), models.Type(key.Type)
	start := time.Now()
	dir, err := s.store.Ensure(ctx, task, typ, key.Name)
	if err != nil {
		return nil, err
	}
	r, err := s.loadFirst(h, dir, key)
	if err != nil && corrupt(err) {
		s.logger.Warn("Failed to load model; clearing cache and downloading it again", "model", key.String(), "err", err)
		if cerr := s.store.ClearType(task, typ, key.Name); cerr != nil {
			return nil, errors.Join(err, cerr)
		}
		if dir, err = s.store.Ensure(ctx, task, typ, key.Name); err != nil {
			return nil, err
		}
		r, err = s.loadFirst(h, dir, key)
	}
	if err != nil {
		return nil, err
	}
	// Building a session leaves the model file's bytes and its graph's
	// copies freed in the C heap (hundreds of MB for a large model);
	// hand them back, or the resident set keeps them.
	inference.ReleaseMemory()
	l := &loaded{key: key, h: h, s: s, dir: dir, model: r.model, replicas: []*replica{r}}
	if h.engine != nil {
		h.engine(l)
		l.eng.addLane(r)
	}
	s.obs.ModelLoaded(key, time.Since(start))
	s.notePlaced(key, r)
	return l, nil
}

// loadedModels lists the service's models in memory.
func (s *Service) loadedModels() []*loaded {
	var out []*loaded
	for _, m := range s.cache.models() {
		if l, ok := m.(*loaded); ok {
			out = append(out, l)
		}
	}
	return out
}

func (s *Service) noteOOM(key Key, device, op string) {
	s.placer.count(&s.placer.ooms, device).Add(1)
	if o, ok := s.obs.(DeviceObserver); ok {
		o.DeviceOutOfMemory(key, device, op)
	}
}

func (s *Service) noteFallback(key Key, device string, cause error) {
	s.placer.count(&s.placer.fallbacks, device).Add(1)
	s.logger.Warn("model moved to the CPU: its device failed (MLSERVE_ALLOW_CPU_FALLBACK)", "model", key.String(), "device", device, "err", cause)
	if o, ok := s.obs.(DeviceObserver); ok {
		o.ModelFellBack(key, device, cause)
	}
}

func (s *Service) notePlaced(key Key, r *replica) {
	if o, ok := s.obs.(DeviceObserver); ok {
		o.ModelPlaced(key, r.device(), r.memory())
	}
}
