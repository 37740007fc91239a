package inference

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/mlserve/mlserve/onnx"
)

// SessionOptions adjust one session.
type SessionOptions struct {
	// Device is where the session runs: the name of one of the runtime's
	// Devices, or "CPU" when the CPU may be used. Empty means the
	// runtime's first device.
	Device string
	// NoFallback makes a failure on the device an error even when the
	// runtime allows the CPU fallback, for callers that first free memory
	// on the device and retry, and fall back after (FallBackToCPU).
	NoFallback bool
	// CacheDir is the model's folder, where providers keep compiled
	// artefacts: OpenVINO's cache in CacheDir/openvino (as Immich does),
	// TensorRT's engines and timing cache in CacheDir/tensorrt.
	CacheDir string
	// IntraOpThreads overrides the runtime's intra-op threads for this
	// session (0: the runtime's).
	IntraOpThreads int
	// SplitBatch lets a CPU session with several intra-op threads run a
	// batch of at least as many rows as threads as that many
	// single-threaded runs at once, each on a part of the rows, on a twin
	// session that shares the weights (it costs its activations, not a
	// second copy of the weights). Smaller batches, and batches whose parts
	// would come out uneven, run on every thread as before. Threads of one
	// run wait for each other at every operator; independent runs do not,
	// which on two cores gave ViT-B/32 batches of 4 up to 20% more images
	// a second (the more so when a neighbour takes a core part of the
	// time). Every input and output must have the batch on axis 0. Where
	// the weights cannot be shared (not Linux, no large initializers in
	// the model file) or the batch dimension is fixed, the session runs
	// its batches whole.
	SplitBatch bool
}

// backend is a built session: ONNX Runtime's own, or a FakeDevice's
// bookkeeping around one. Session creation and runs go through it, so
// that a fake device drives the same code paths as a real one.
type backend interface {
	run(in, out []ort.Value, ro *ort.RunOptions, ri runInfo) error
	destroy() error
}

// runInfo is what a backend learns about a run besides its values.
type runInfo struct {
	// inputBytes is the size of the inputs.
	inputBytes int64
	// shrink asks for the device's arena to give back its unused memory
	// after the run.
	shrink bool
}

// shrinkKey is ONNX Runtime's run option for arena shrinkage; its value
// lists arenas as "gpu:0" or "cpu:0;gpu:0".
const shrinkKey = "memory.enable_memory_arena_shrinkage"

// ortBackend is an ONNX Runtime session.
type ortBackend struct {
	s     *ort.DynamicAdvancedSession
	api   ortAPI
	arena string // what shrink names ("gpu:0"), or "" when nothing
	// twin and weights are set for CPU sessions opened with SplitBatch.
	twin    *twin
	weights *sharedWeights
}

func (b *ortBackend) run(in, out []ort.Value, ro *ort.RunOptions, ri runInfo) error {
	if ri.shrink && b.arena != "" {
		// Best effort: without the entry the run still runs, its memory
		// only comes back later.
		_ = b.api.addRunConfig(ro, shrinkKey, b.arena)
	}
	return b.s.RunWithOptions(in, out, ro)
}

// destroy releases the twin and the session before the weights they share.
func (b *ortBackend) destroy() error {
	var err error
	if b.twin != nil {
		err = b.twin.destroy()
	}
	err = errors.Join(err, b.s.Destroy())
	if b.weights != nil {
		err = errors.Join(err, b.weights.close())
	}
	return err
}

type shrinkCtxKey struct{}

// WithShrink marks the runs made with ctx to give their device arena's
// unused memory back after they finish: for the last run of a burst, so
// that an idle device holds only the sessions' weights. It costs the next
// run its allocations again.
func WithShrink(ctx context.Context) context.Context {
	return context.WithValue(ctx, shrinkCtxKey{}, true)
}

func shrinkRequested(ctx context.Context) bool {
	v, _ := ctx.Value(shrinkCtxKey{}).(bool)
	return v
}

// placement is where a session runs now; it changes only when the session
// falls back to the CPU.
type placement struct {
	dev *Device
	// mem is the device memory the session took at load (0: unknown).
	mem int64
	// fallback is the error that moved the session to the CPU, or nil.
	fallback error
}

// Session is a loaded model. Run is safe for concurrent use; Close waits
// for runs in progress.
type Session struct {
	path     string
	info     *onnx.Info
	loadTime time.Duration
	rt       *Runtime
	// opts are the options the session was opened with, for its CPU
	// fallback.
	opts SessionOptions

	where atomic.Pointer[placement]
	// fallbackMu makes concurrent failing runs build one CPU session, not
	// one each.
	fallbackMu sync.Mutex
	// shrinkNext makes the next run shrink the arena (set after an
	// out-of-memory error, so the memory of the failed run comes back).
	shrinkNext atomic.Bool

	mu      sync.RWMutex // held for reading by each Run, for writing by Close and FallBackToCPU
	backend backend
	closed  bool
}

// NewSession loads the model at path on the device so.Device names (the
// runtime's first device by default). The model's interface is read from
// the file first, so a file that is not a valid model fails fast with an
// error wrapping onnx.ErrInvalid. A failure of the device is a
// *DeviceError (wrapping ErrOutOfMemory or ErrDevice); other failures
// wrap ErrNoProvider. When the runtime allows the CPU fallback and
// so.NoFallback is not set, a session whose device fails is built on the
// CPU instead, and its Fallback says why.
func (r *Runtime) NewSession(path string, so SessionOptions) (*Session, error) {
	dev, err := r.Device(so.Device)
	if err != nil {
		return nil, err
	}
	return r.newSession(path, so, dev, nil)
}

// NewFallbackSession loads the model on the CPU because cause (a failure
// on a device) keeps it from its device: the session's Fallback returns
// cause. It is the load-time twin of Session.FallBackToCPU, for callers
// that load with NoFallback, free memory, retry, and fall back last. It
// returns ErrFallbackNotAllowed unless the runtime allows the CPU
// fallback.
func (r *Runtime) NewFallbackSession(path string, so SessionOptions, cause error) (*Session, error) {
	if !r.AllowCPUFallback() {
		return nil, ErrFallbackNotAllowed
	}
	if cause == nil {
		cause = errors.New("no cause given")
	}
	sess, err := r.newSession(path, so, r.cpu, cause)
	if err == nil {
		r.logger.Warn("model runs on the CPU: its device failed (CPU fallback allowed)", "model", path, "err", cause)
	}
	return sess, err
}

// newSession loads the model on dev; cause, when set, is why it is not on
// its device.
func (r *Runtime) newSession(path string, so SessionOptions, dev *Device, cause error) (*Session, error) {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	start := time.Now()
	info, err := onnx.Inspect(path)
	if err != nil {
		return nil, err
	}
	if len(info.Inputs) == 0 || len(info.Outputs) == 0 {
		return nil, fmt.Errorf("%w: %s has no inputs or no outputs", onnx.ErrInvalid, path)
	}
	sess := &Session{path: path, info: info, rt: r, opts: so}
	b, mem, err := r.open(dev, path, info, so)
	where := &placement{dev: dev, mem: mem, fallback: cause}
	if err != nil {
		err = r.failure("load", path, dev, err)
		var derr *DeviceError
		if !errors.As(err, &derr) || !r.AllowCPUFallback() || so.NoFallback || dev == r.cpu {
			return nil, err
		}
		var cpuErr error
		b, mem, cpuErr = r.open(r.cpu, path, info, so)
		if cpuErr != nil {
			return nil, fmt.Errorf("%w; on the CPU: %w", err, r.failure("load", path, r.cpu, cpuErr))
		}
		where = &placement{dev: r.cpu, mem: mem, fallback: err}
		r.logger.Warn("model runs on the CPU: its device failed (CPU fallback allowed)", "model", path, "device", dev.name, "err", err)
	}
	sess.backend = b
	sess.where.Store(where)
	sess.loadTime = time.Since(start)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		_ = b.destroy()
		return nil, ErrClosed
	}
	r.sessions[sess] = struct{}{}
	r.mu.Unlock()
	r.logger.Debug("session loaded", "model", path, "device", where.dev.name, "device_memory", mem,
		"inputs", info.Inputs, "outputs", info.Outputs, "took", sess.loadTime, "split_runs", sess.SplitRuns())
	return sess, nil
}

// open builds a session on d. On a device whose memory is its own (CUDA),
// loads are serialised and the memory the load took is measured; a
// FakeDevice accounts its own.
func (r *Runtime) open(d *Device, path string, info *onnx.Info, o SessionOptions) (backend, int64, error) {
	build := func(d *Device) (backend, error) {
		if o.SplitBatch && d.provider == CPU && d.fake == nil {
			intra := o.IntraOpThreads
			if intra <= 0 {
				intra, _ = r.threads(CPU)
			}
			if intra > 1 {
				b, err := r.openSplit(d, path, info, o, intra)
				if err == nil {
					return b, nil
				}
				r.logger.Debug("batches run whole: the weights cannot be shared", "model", path, "err", err)
			}
		}
		so, err := r.sessionOptions(d, o.CacheDir, o.IntraOpThreads)
		if err != nil {
			return nil, err
		}
		defer func() { _ = so.Destroy() }()
		s, err := ort.NewDynamicAdvancedSession(path, info.InputNames(), info.OutputNames(), so)
		if err != nil {
			return nil, err
		}
		return &ortBackend{s: s, api: r.api, arena: d.arena}, nil
	}
	if d.fake != nil {
		host := &Device{name: CPU, provider: CPU}
		return d.fake.open(path, func() (backend, error) { return build(host) })
	}
	if !d.measured() {
		b, err := build(d)
		return b, 0, err
	}
	d.loadMu.Lock()
	defer d.loadMu.Unlock()
	before, memErr := d.Memory()
	b, err := build(d)
	if err != nil || memErr != nil {
		return b, 0, err
	}
	after, memErr := d.Memory()
	if memErr != nil {
		return b, 0, nil
	}
	return b, max(0, before.Free-after.Free), nil
}

// failure turns an error of ONNX Runtime on d into a *DeviceError when it
// is the device's (always for out of memory; for provider errors on
// devices other than the CPU), with the device's memory figures, or into
// an ErrNoProvider error for the model.
func (r *Runtime) failure(op, path string, d *Device, err error) error {
	msg := err.Error()
	kind := classify(msg)
	if kind == failOther || (kind == failDevice && d.Host() && d.provider == CPU) {
		if op == "load" {
			return fmt.Errorf("%w %s on %s: %s", ErrNoProvider, path, d.name, cleanMessage(msg))
		}
		return fmt.Errorf("run %s on %s: %s", filepath.Base(path), d.name, cleanMessage(msg))
	}
	derr := &DeviceError{
		Op: op, Model: path, Device: d.name, Provider: d.provider,
		Err: ErrDevice, Detail: cleanMessage(msg),
	}
	if kind == failOOM {
		derr.Err = ErrOutOfMemory
		derr.Requested = requestedBytes(msg)
	}
	if m, err := d.Memory(); err == nil {
		derr.Total, derr.Free = m.Total, m.Free
	}
	return derr
}

// Path is the model file.
func (s *Session) Path() string { return s.path }

// Provider is the execution provider that runs the session ("CPU",
// "CUDA", "TensorRT", "OpenVINO"). Nodes a GPU provider cannot run are
// placed on the CPU by ONNX Runtime itself.
func (s *Session) Provider() string { return s.where.Load().dev.provider }

// Device is the device the session runs on ("CPU", "CUDA:0",
// "OpenVINO:GPU.0", "OpenVINO:CPU"): where it was placed, or "CPU" after
// a fallback.
func (s *Session) Device() string { return s.where.Load().dev.name }

// Fallback is the error that moved the session from its device to the
// CPU (a *DeviceError), or nil when it runs where it was placed.
func (s *Session) Fallback() error { return s.where.Load().fallback }

// DeviceMemory is the device memory the session took when it loaded, in
// bytes, as the device's free memory showed it (CUDA) or as a FakeDevice
// accounts it; 0 on the CPU and where the device cannot tell. Runs add
// their activations on top, until the arena shrinks.
func (s *Session) DeviceMemory() int64 { return s.where.Load().mem }

// Info is the model's interface and metadata.
func (s *Session) Info() *onnx.Info { return s.info }

// Inputs describes the model's inputs, in order.
func (s *Session) Inputs() []onnx.ValueInfo { return s.info.Inputs }

// Outputs describes the model's outputs, in order.
func (s *Session) Outputs() []onnx.ValueInfo { return s.info.Outputs }

// Metadata returns a custom metadata value of the model.
func (s *Session) Metadata(key string) (string, bool) {
	v, ok := s.info.Metadata[key]
	return v, ok
}

// LoadTime is how long building the session took.
func (s *Session) LoadTime() time.Duration { return s.loadTime }

// LogValue implements slog.LogValuer.
func (s *Session) LogValue() slog.Value {
	w := s.where.Load()
	return slog.GroupValue(slog.String("model", s.path), slog.String("provider", w.dev.provider), slog.String("device", w.dev.name))
}

// Run feeds inputs, one per model input in model order, and returns the
// outputs in model order. When ctx ends during the run, ONNX Runtime is told
// to stop, Run waits for it and returns an error wrapping ErrCanceled and
// the context's error. A failure of the device is a *DeviceError; when the
// runtime allows the CPU fallback and the session was not made with
// NoFallback, the session moves to the CPU (FallBackToCPU) and the run is
// made again there, once.
func (s *Session) Run(ctx context.Context, inputs ...Tensor) ([]Tensor, error) {
	out, err := s.run(ctx, inputs)
	var derr *DeviceError
	if err == nil || s.opts.NoFallback || !s.rt.AllowCPUFallback() || !errors.As(err, &derr) || derr.Device == s.rt.cpu.name {
		return out, err
	}
	if ferr := s.FallBackToCPU(err); ferr != nil {
		return nil, fmt.Errorf("%w; on the CPU: %w", err, ferr)
	}
	return s.run(ctx, inputs)
}

func (s *Session) run(ctx context.Context, inputs []Tensor) ([]Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCanceled, err)
	}
	if len(inputs) != len(s.info.Inputs) {
		return nil, fmt.Errorf("%w: %s takes %d inputs, got %d", ErrInput, s.path, len(s.info.Inputs), len(inputs))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	dev := s.where.Load().dev
	ri := runInfo{}
	for i, t := range inputs {
		if err := checkInput(s.info.Inputs[i], t); err != nil {
			return nil, err
		}
		ri.inputBytes += t.bytes()
	}
	if b, ok := s.backend.(*ortBackend); ok && b.twin != nil {
		if n := batchRows(inputs); splits(n, b.twin.runs) {
			return s.runSplit(ctx, b.twin, dev, inputs, n)
		}
	}
	ri.shrink = s.shrinkNext.Swap(false) || shrinkRequested(ctx) ||
		(s.rt.opts.CUDA.ShrinkArena && (dev.provider == CUDA || dev.provider == TensorRT))
	return s.runWith(ctx, dev, inputs, ri, s.backend.run)
}

// runWith runs checked inputs through run (a backend's, or a twin's for
// one part of a split batch) with run options that end the run when ctx
// does, and returns the outputs.
func (s *Session) runWith(ctx context.Context, dev *Device, inputs []Tensor, ri runInfo,
	run func(in, out []ort.Value, ro *ort.RunOptions, ri runInfo) error) ([]Tensor, error) {
	in := make([]ort.Value, len(inputs))
	defer func() {
		for _, v := range in {
			if v != nil {
				_ = v.Destroy()
			}
		}
	}()
	for i, t := range inputs {
		v, err := t.ortValue()
		if err != nil {
			return nil, fmt.Errorf("%w: input %s: %w", ErrInput, s.info.Inputs[i].Name, err)
		}
		in[i] = v
	}
	ro, err := ort.NewRunOptions()
	if err != nil {
		return nil, err
	}
	// The context's callback sets the terminate flag from another
	// goroutine. It may start at any moment, even after the run returned;
	// the run options are destroyed only once it can no longer start
	// (stop returned true) or it has finished (terminated is closed).
	terminated := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(terminated)
		_ = ro.Terminate()
	})
	defer func() {
		if !stop() {
			<-terminated
		}
		_ = ro.Destroy()
	}()
	out := make([]ort.Value, len(s.info.Outputs))
	runErr := run(in, out, ro, ri)
	defer func() {
		for _, v := range out {
			if v != nil {
				_ = v.Destroy()
			}
		}
	}()
	// Keep the Go input slices alive until ONNX Runtime is done with them.
	for i := range inputs {
		inputs[i].keepAlive()
	}
	if runErr != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ErrCanceled, ctx.Err())
		}
		err := s.rt.failure("run", s.path, dev, runErr)
		if errors.Is(err, ErrOutOfMemory) {
			// What the failed run allocated stays in the arena: the next
			// run gives it back.
			s.shrinkNext.Store(true)
		}
		return nil, err
	}
	res := make([]Tensor, len(out))
	for i, v := range out {
		t, err := fromORT(v)
		if err != nil {
			return nil, fmt.Errorf("output %s: %w", s.info.Outputs[i].Name, err)
		}
		res[i] = t
	}
	return res, nil
}

// FallBackToCPU rebuilds the session on the CPU, in place: runs in
// progress finish first, the device's session is then released (its
// memory goes back to the device) and later runs use the CPU; Fallback
// returns cause from then on. It returns ErrFallbackNotAllowed unless the
// runtime allows the CPU fallback, and nil when the session already runs
// on the CPU.
func (s *Session) FallBackToCPU(cause error) error {
	cpu := s.rt.cpu
	if !s.rt.AllowCPUFallback() {
		return ErrFallbackNotAllowed
	}
	s.fallbackMu.Lock()
	defer s.fallbackMu.Unlock()
	if s.where.Load().dev == cpu {
		return nil
	}
	b, mem, err := s.rt.open(cpu, s.path, s.info, s.opts)
	if err != nil {
		return s.rt.failure("load", s.path, cpu, err)
	}
	s.mu.Lock()
	if s.closed || s.where.Load().dev == cpu {
		closed := s.closed
		s.mu.Unlock()
		_ = b.destroy()
		if closed {
			return ErrClosed
		}
		return nil
	}
	old, from := s.backend, s.where.Load().dev
	s.backend = b
	s.where.Store(&placement{dev: cpu, mem: mem, fallback: cause})
	err = old.destroy()
	s.mu.Unlock()
	s.rt.logger.Warn("model moved to the CPU: its device failed (CPU fallback allowed)", "model", s.path, "device", from.name, "err", cause)
	if err != nil {
		return fmt.Errorf("release the session on %s: %w", from.name, err)
	}
	return nil
}

// checkInput compares a tensor with the model's declared input: dtype,
// rank and fixed dimensions. ONNX Runtime checks too, but its messages do
// not name the model.
func checkInput(want onnx.ValueInfo, t Tensor) error {
	if want.Type != onnx.Undefined && want.Type != t.Type() {
		return fmt.Errorf("%w: input %s wants %s, got %s", ErrInput, want.Name, want.Type, t.Type())
	}
	if want.Dims != nil && len(want.Dims) != len(t.Shape) {
		return fmt.Errorf("%w: input %s has rank %d, got shape %v", ErrInput, want.Name, len(want.Dims), t.Shape)
	}
	for i, d := range want.Dims {
		if !d.Dynamic() && d.Value != t.Shape[i] {
			return fmt.Errorf("%w: input %s wants dimension %d = %d, got shape %v", ErrInput, want.Name, i, d.Value, t.Shape)
		}
	}
	return t.validate()
}

// Close releases the session once runs in progress have finished; its
// device memory goes back to the device.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.backend.destroy()
	s.backend = nil
	s.mu.Unlock()
	s.rt.mu.Lock()
	delete(s.rt.sessions, s)
	s.rt.mu.Unlock()
	return err
}
