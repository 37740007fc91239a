// Package inference runs ONNX models with ONNX Runtime through cgo
// (github.com/yalue/onnxruntime_go).
//
// A [Runtime] owns the process-wide ONNX Runtime environment: it is
// initialised once, when the Runtime is made, and destroyed once, by
// [Runtime.Close]. Sessions ([Session]) are made from a model file; their
// input and output names, element types and dynamic dimensions are read from
// the model itself. Execution providers are tried in the configured order
// (CUDA, OpenVINO, CPU) and the first one that builds the session is the one
// the session reports; every fallback is logged.
//
// A run is cancelled through its context: the context's end sets ONNX
// Runtime's terminate flag for that run ([RunOptions.Terminate]), and Run
// returns once the C call has returned, never before, so tensors are never
// freed under a running kernel. Inputs are Go memory handed to ONNX Runtime
// for the duration of a run; outputs are copied into Go slices and the ONNX
// Runtime values released before Run returns. The run options are destroyed
// only after the cancellation callback has finished or can no longer start.
//
// ONNX Runtime's telemetry is always off: [New] sets ORT_DISABLE_TELEMETRY=1
// in the process environment before the environment starts and then calls
// DisableTelemetryEvents, so no event is recorded, written or sent.
package inference

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/mlserve/mlserve/onnx"
)

// Execution provider names, as configured and as reported.
const (
	CPU      = "CPU"
	CUDA     = "CUDA"
	OpenVINO = "OpenVINO"
)

// Errors returned by this package.
var (
	// ErrRuntimeExists: ONNX Runtime's environment is process-wide and one
	// Runtime already owns it.
	ErrRuntimeExists = errors.New("an ONNX Runtime environment already exists in this process")
	// ErrLibrary: the ONNX Runtime shared library could not be loaded.
	ErrLibrary = errors.New("cannot load the ONNX Runtime library")
	// ErrClosed: the runtime or session was closed.
	ErrClosed = errors.New("closed")
	// ErrNoProvider: no configured execution provider could build the session.
	ErrNoProvider = errors.New("no execution provider could load the model")
	// ErrInput: the inputs do not match the model.
	ErrInput = errors.New("inputs do not match the model")
	// ErrCanceled: the run was stopped because its context ended.
	ErrCanceled = errors.New("inference canceled")
)

// Options configure a Runtime. The zero value runs on CPU with Immich's
// thread defaults.
type Options struct {
	// LibraryPath is the ONNX Runtime shared library
	// (libonnxruntime.so.1). Empty means the dynamic loader's search path.
	LibraryPath string
	// Providers is the order in which execution providers are tried. CPU is
	// appended when missing: it is always the last resort.
	Providers []string
	// DeviceID selects the GPU (CUDA device_id, OpenVINO GPU.<id>).
	DeviceID int
	// IntraOpThreads and InterOpThreads set ONNX Runtime's thread pools.
	// Zero means mlserve's defaults: on CPU, DefaultIntraOpThreads intra-op
	// threads and 1 inter-op thread; on GPU providers ONNX Runtime's own
	// defaults.
	IntraOpThreads, InterOpThreads int
	// Spin lets idle intra-op threads busy-wait for the next parallel
	// section (ONNX Runtime's default, session.intra_op.allow_spinning).
	// Off by default: between and after runs the spinning threads burn the
	// cores that decoding, preprocessing and other sessions need.
	Spin bool
	// DisableArena turns off ONNX Runtime's CPU memory arena, so memory
	// freed by a run goes back to the allocator at once.
	DisableArena bool
	// OpenVINOPrecision is FP32 (default) or FP16.
	OpenVINOPrecision string
	// Verbose lets ONNX Runtime print its own warnings to stderr; otherwise
	// only fatal errors are printed (every error is returned and logged
	// through the logger anyway).
	Verbose bool
}

// Runtime owns the ONNX Runtime environment and builds sessions.
// It is safe for concurrent use.
type Runtime struct {
	opts   Options
	logger *slog.Logger

	mu     sync.Mutex
	closed bool
	// unavailable remembers providers whose library failed to load, so
	// that the failure is logged once, not for every model.
	unavailable map[string]error
	sessions    map[*Session]struct{}
}

// ortOwner guards the process-wide environment.
var ortOwner struct {
	sync.Mutex
	owned bool
}

// New initialises ONNX Runtime. Only one Runtime may exist at a time in a
// process.
func New(opts Options, logger *slog.Logger) (*Runtime, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts.Providers = normalizeProviders(opts.Providers)
	if opts.OpenVINOPrecision == "" {
		opts.OpenVINOPrecision = "FP32"
	}
	ortOwner.Lock()
	defer ortOwner.Unlock()
	if ortOwner.owned || ort.IsInitialized() {
		return nil, ErrRuntimeExists
	}
	if opts.LibraryPath != "" {
		if _, err := os.Stat(opts.LibraryPath); err != nil && containsSlash(opts.LibraryPath) {
			return nil, fmt.Errorf("%w: %w", ErrLibrary, err)
		}
		ort.SetSharedLibraryPath(opts.LibraryPath)
	}
	// Telemetry off: some ONNX Runtime builds (npm's among them) start an
	// event collector with the environment, which writes a device id and
	// an event database under $XDG_CACHE_HOME (~/.cache)/Microsoft and
	// files in $TMPDIR, and can upload them. The variable is read when the
	// environment is created, so it is set first; DisableTelemetryEvents
	// afterwards stops whatever the variable did not.
	if err := os.Setenv("ORT_DISABLE_TELEMETRY", "1"); err != nil {
		return nil, fmt.Errorf("%w: disable telemetry: %w", ErrLibrary, err)
	}
	level := ort.WithLogLevelFatal()
	if opts.Verbose {
		level = ort.WithLogLevelWarning()
	}
	if err := ort.InitializeEnvironment(level); err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrLibrary, opts.LibraryPath, err)
	}
	if err := ort.DisableTelemetry(); err != nil {
		_ = ort.DestroyEnvironment()
		return nil, fmt.Errorf("%w: disable telemetry: %w", ErrLibrary, err)
	}
	ortOwner.owned = true
	r := &Runtime{
		opts:        opts,
		logger:      logger,
		unavailable: map[string]error{},
		sessions:    map[*Session]struct{}{},
	}
	logger.Info("ONNX Runtime ready", "version", ort.GetVersion(), "library", opts.LibraryPath, "providers", opts.Providers)
	return r, nil
}

func containsSlash(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return true
		}
	}
	return false
}

func normalizeProviders(in []string) []string {
	out := []string{}
	seen := map[string]bool{}
	for _, p := range in {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	if !seen[CPU] {
		out = append(out, CPU)
	}
	return out
}

// Version is the ONNX Runtime library's version.
func (r *Runtime) Version() string { return ort.GetVersion() }

// Providers is the configured provider order (CPU last).
func (r *Runtime) Providers() []string { return append([]string(nil), r.opts.Providers...) }

// ProviderStatus tells, for each provider mlserve knows (CUDA, OpenVINO,
// CPU), whether this ONNX Runtime library can use it: nil, or the error
// that makes it unavailable. Each provider is probed
// by building a one-node session with it, which is the only test that
// loads its libraries for real.
func (r *Runtime) ProviderStatus() map[string]error {
	g := onnx.NewGraph("probe")
	g.Output("y", g.Input("x", onnx.Float, onnx.D(1)), onnx.Float, onnx.D(1))
	model := onnx.Model{Graph: g}.Marshal()
	out := map[string]error{}
	for _, p := range []string{CUDA, OpenVINO, CPU} {
		out[p] = r.probe(p, model)
	}
	return out
}

func (r *Runtime) probe(p string, model []byte) error {
	so, err := r.newOptions(p, 0)
	if err != nil {
		return err
	}
	defer so.Destroy()
	if _, err := r.appendProvider(so, p, "", deviceGPU); err != nil {
		return err
	}
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(model, []string{"x"}, []string{"y"}, so)
	if err != nil {
		return err
	}
	return s.Destroy()
}

// Close destroys every open session and the environment. It returns all
// teardown errors joined.
func (r *Runtime) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	open := make([]*Session, 0, len(r.sessions))
	for s := range r.sessions {
		open = append(open, s)
	}
	r.mu.Unlock()
	var errs []error
	for _, s := range open {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	ortOwner.Lock()
	defer ortOwner.Unlock()
	if err := ort.DestroyEnvironment(); err != nil {
		errs = append(errs, err)
	}
	ortOwner.owned = false
	return errors.Join(errs...)
}

type openVINODevice int

const (
	deviceGPU openVINODevice = iota
	deviceCPU
)

// appendProvider adds one execution provider to so and returns the name
// to report for it.
func (r *Runtime) appendProvider(so *ort.SessionOptions, p, cacheDir string, ovDev openVINODevice) (string, error) {
	switch p {
	case CPU:
		return CPU, nil
	case CUDA:
		co, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return "", err
		}
		defer co.Destroy()
		if err := co.Update(map[string]string{
			"device_id":             strconv.Itoa(r.opts.DeviceID),
			"arena_extend_strategy": "kSameAsRequested",
		}); err != nil {
			return "", err
		}
		if err := so.AppendExecutionProviderCUDA(co); err != nil {
			return "", err
		}
		return CUDA, nil
	case OpenVINO:
		dev := "GPU." + strconv.Itoa(r.opts.DeviceID)
		if ovDev == deviceCPU {
			dev = "CPU"
		}
		o := map[string]string{"device_type": dev, "precision": r.opts.OpenVINOPrecision}
		if cacheDir != "" {
			o["cache_dir"] = cacheDir
		}
		if err := so.AppendExecutionProviderOpenVINO(o); err != nil {
			return "", err
		}
		return OpenVINO + ":" + dev, nil
	}
	return "", fmt.Errorf("unknown execution provider %q", p)
}

// DefaultIntraOpThreads is the intra-op thread count of CPU sessions when
// Options.IntraOpThreads is zero: every core, up to 8, so that one run has
// the whole machine (a lone request gets the lowest latency) and the pool
// runs max(1, cores/threads) of them at once, batching what queues
// meanwhile. The cap of 8 is a judgement, not a measurement: on bigger
// machines a run of these small models parallelises less well than two
// runs side by side (`mlserve bench -threads` compares the two on a
// machine).
func DefaultIntraOpThreads(cores int) int {
	return max(1, min(cores, 8))
}

// Threads is the intra- and inter-op thread count of sessions on provider
// p (0: ONNX Runtime's own default).
func (r *Runtime) Threads(p string) (intra, inter int) { return r.threads(p) }

func (r *Runtime) threads(p string) (intra, inter int) {
	intra, inter = r.opts.IntraOpThreads, r.opts.InterOpThreads
	if p == CPU {
		if intra == 0 {
			intra = DefaultIntraOpThreads(runtime.NumCPU())
		}
		if inter == 0 {
			inter = 1
		}
	}
	return intra, inter
}

// newOptions makes the session options of provider p; intraOverride > 0
// replaces the runtime's intra-op threads.
func (r *Runtime) newOptions(p string, intraOverride int) (*ort.SessionOptions, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	intra, inter := r.threads(p)
	if intraOverride > 0 {
		intra = intraOverride
	}
	if intra > 0 {
		err = errors.Join(err, so.SetIntraOpNumThreads(intra))
	}
	if inter > 0 {
		err = errors.Join(err, so.SetInterOpNumThreads(inter))
	}
	if inter > 1 {
		err = errors.Join(err, so.SetExecutionMode(ort.ExecutionModeParallel))
	}
	if !r.opts.Spin {
		err = errors.Join(err, so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"),
			so.AddSessionConfigEntry("session.inter_op.allow_spinning", "0"))
	}
	if r.opts.DisableArena {
		err = errors.Join(err, so.SetCpuMemArena(false))
	}
	if err != nil {
		_ = so.Destroy()
		return nil, err
	}
	return so, nil
}
