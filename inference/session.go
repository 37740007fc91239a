package inference

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/mlserve/mlserve/onnx"
)

// SessionOptions adjust one session.
type SessionOptions struct {
	// Providers overrides the runtime's provider order for this model
	// (CPU is still the last resort).
	Providers []string
	// CacheDir is where providers may keep compiled artefacts (OpenVINO's
	// cache_dir); Immich uses <model folder>/openvino.
	CacheDir string
	// IntraOpThreads overrides the runtime's intra-op threads for this
	// session (0: the runtime's).
	IntraOpThreads int
}

// Session is a loaded model. Run is safe for concurrent use; Close waits
// for runs in progress.
type Session struct {
	path     string
	info     *onnx.Info
	provider string
	loadTime time.Duration
	rt       *Runtime
	logger   *slog.Logger

	mu     sync.RWMutex // held for reading by each Run, for writing by Close
	ort    *ort.DynamicAdvancedSession
	closed bool
}

// NewSession loads the model at path, trying the execution providers in
// order. The model's interface is read from the file first, so a file that
// is not a valid model fails fast with an error wrapping onnx.ErrInvalid.
func (r *Runtime) NewSession(path string, so SessionOptions) (*Session, error) {
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
	providers := r.opts.Providers
	if len(so.Providers) > 0 {
		providers = normalizeProviders(so.Providers)
	}
	var errs []error
	for _, p := range providers {
		attempts := []openVINODevice{deviceGPU}
		if p == OpenVINO {
			attempts = append(attempts, deviceCPU)
		}
		for _, dev := range attempts {
			if err := r.knownUnavailable(p); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p, err))
				break
			}
			s, name, err := r.tryProvider(path, info, p, so, dev)
			if err != nil {
				r.logger.Warn("execution provider cannot run model; trying the next",
					"provider", p, "model", path, "err", err)
				errs = append(errs, fmt.Errorf("%s: %w", p, err))
				continue
			}
			sess := &Session{
				path: path, info: info, provider: name, rt: r, ort: s,
				loadTime: time.Since(start),
				logger:   r.logger.With("model", path, "provider", name),
			}
			r.mu.Lock()
			if r.closed {
				r.mu.Unlock()
				_ = s.Destroy()
				return nil, ErrClosed
			}
			r.sessions[sess] = struct{}{}
			r.mu.Unlock()
			if len(errs) > 0 {
				r.logger.Warn("model runs on a fallback provider", "model", path, "provider", name, "wanted", providers[0])
			}
			r.logger.Debug("session loaded", "model", path, "provider", name, "inputs", info.Inputs, "outputs", info.Outputs, "took", sess.loadTime)
			return sess, nil
		}
	}
	return nil, fmt.Errorf("%w %s: %w", ErrNoProvider, path, errors.Join(errs...))
}

// knownUnavailable returns the remembered load error of a provider whose
// library is missing.
func (r *Runtime) knownUnavailable(p string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unavailable[p]
}

func (r *Runtime) tryProvider(path string, info *onnx.Info, p string, o SessionOptions, dev openVINODevice) (*ort.DynamicAdvancedSession, string, error) {
	cacheDir := o.CacheDir
	so, err := r.newOptions(p, o.IntraOpThreads)
	if err != nil {
		return nil, "", err
	}
	defer so.Destroy()
	if p == OpenVINO && cacheDir != "" {
		cacheDir = filepath.Join(cacheDir, "openvino")
	}
	name, err := r.appendProvider(so, p, cacheDir, dev)
	if err != nil {
		if isLibraryMissing(err) {
			r.mu.Lock()
			if _, seen := r.unavailable[p]; !seen {
				r.unavailable[p] = err
				r.logger.Info("execution provider not available in this ONNX Runtime build", "provider", p, "err", err)
			}
			r.mu.Unlock()
		}
		return nil, "", err
	}
	s, err := ort.NewDynamicAdvancedSession(path, info.InputNames(), info.OutputNames(), so)
	if err != nil {
		return nil, "", err
	}
	return s, name, nil
}

// isLibraryMissing tells provider errors that will not change from one
// model to the next (the provider is not built in, or its shared library
// is missing) from errors about one model.
func isLibraryMissing(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "failed to load shared library") ||
		strings.Contains(s, "not enabled") ||
		strings.Contains(s, "not available") ||
		strings.Contains(s, "cannot open shared object") ||
		strings.Contains(s, "not supported in this build")
}

// Path is the model file.
func (s *Session) Path() string { return s.path }

// Provider is the execution provider that runs the session ("CPU",
// "CUDA", "OpenVINO:GPU.0", ...). Nodes a GPU provider cannot run are
// placed on CPU by ONNX Runtime itself.
func (s *Session) Provider() string { return s.provider }

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
	return slog.GroupValue(slog.String("model", s.path), slog.String("provider", s.provider))
}

// Run feeds inputs, one per model input in model order, and returns the
// outputs in model order. When ctx ends during the run, ONNX Runtime is told
// to stop, Run waits for it and returns an error wrapping ErrCanceled and
// the context's error.
func (s *Session) Run(ctx context.Context, inputs ...Tensor) ([]Tensor, error) {
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

	in := make([]ort.Value, len(inputs))
	defer func() {
		for _, v := range in {
			if v != nil {
				_ = v.Destroy()
			}
		}
	}()
	for i, t := range inputs {
		if err := checkInput(s.info.Inputs[i], t); err != nil {
			return nil, err
		}
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
	runErr := s.ort.RunWithOptions(in, out, ro)
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
		return nil, fmt.Errorf("run %s: %w", filepath.Base(s.path), runErr)
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

// Close releases the session once runs in progress have finished.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ort.Destroy()
	s.ort = nil
	s.mu.Unlock()
	s.rt.mu.Lock()
	delete(s.rt.sessions, s)
	s.rt.mu.Unlock()
	return err
}
