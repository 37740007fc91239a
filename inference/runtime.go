// Package inference runs ONNX models with ONNX Runtime through cgo
// (github.com/yalue/onnxruntime_go).
//
// A [Runtime] shares the process-wide ONNX Runtime environment: the first
// Runtime made starts it and the last one closed destroys it; all
// Runtimes of a process load the same library. Sessions ([Session]) are
// made from a model file; their input and output names, element types and
// dynamic dimensions are read from the model itself.
//
// # Providers and devices
//
// Which execution providers can run here is decided once, by [New]: each
// configured provider, in order, is probed with a one-node session built
// with the very options real sessions get, on each configured device, and
// the first provider with a usable device is the one every session uses.
// A provider whose library is not installed next to ONNX Runtime's is
// "not in this build" (an info line at start, not a warning); one whose
// library is there but fails (no device, a missing cuDNN, a driver too
// old) is a warning. The CPU counts only when it is in the list or
// Options.AllowCPUFallback is set, and when no provider is usable New
// fails with ErrNoUsableProvider naming what each one lacks. The start log
// lists the usable providers, their devices and options, once.
//
// A session is placed on one [Device] (SessionOptions.Device, default the
// first of [Runtime.Devices]): "CUDA:0" (CUDA or TensorRT), "OpenVINO:GPU.0",
// "OpenVINO:CPU", "CPU". It never moves silently: a load or a run that
// fails on a GPU returns a *DeviceError wrapping ErrOutOfMemory or
// ErrDevice, with the device's memory figures when it reports them. Only
// with Options.AllowCPUFallback does a failed session move to the CPU,
// and then [Session.Fallback] says why, for readiness and metrics.
// SessionOptions.NoFallback, [Runtime.NewFallbackSession] and
// [Session.FallBackToCPU] let a scheduler first free memory on the device
// and retry, and fall back only after.
//
// Sessions on a GPU get small ONNX Runtime thread pools (2 intra-op, 1
// inter-op threads unless configured): the device does the work. CUDA
// sessions use the arena growth strategy kSameAsRequested and cuDNN's
// HEURISTIC algorithm search by default (see [CUDAOptions]); their memory
// goes back to the device when the session is closed, and after a run
// that asked for it ([WithShrink], CUDAOptions.ShrinkArena, or the run
// following an out-of-memory error), through ONNX Runtime's
// memory.enable_memory_arena_shrinkage run option. [Device.Memory] reads
// a CUDA device's memory through the driver (libcuda.so.1, opened at run
// time) and [Session.DeviceMemory] is what a session took at load.
//
// [FakeDevice] is a simulated GPU for tests: no hardware, real CPU
// sessions, a GPU's memory bookkeeping and out-of-memory errors on demand.
//
// # Runs
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
	"slices"
	"strconv"
	"strings"
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
	// ErrRuntimeExists: ONNX Runtime's environment is process-wide, and it
	// was started from another library (or not by this package).
	ErrRuntimeExists = errors.New("an ONNX Runtime environment already exists in this process")
	// ErrLibrary: the ONNX Runtime shared library could not be loaded.
	ErrLibrary = errors.New("cannot load the ONNX Runtime library")
	// ErrClosed: the runtime or session was closed.
	ErrClosed = errors.New("closed")
	// ErrNoProvider: ONNX Runtime could not build a session for the model
	// (for a reason that is the model's, not the device's: those are
	// *DeviceError).
	ErrNoProvider = errors.New("no execution provider could load the model")
	// ErrInput: the inputs do not match the model.
	ErrInput = errors.New("inputs do not match the model")
	// ErrCanceled: the run was stopped because its context ended.
	ErrCanceled = errors.New("inference canceled")
	// ErrUnknownDevice: SessionOptions.Device names no device of the
	// runtime.
	ErrUnknownDevice = errors.New("unknown device")
	// ErrFallbackNotAllowed: a session may not move to the CPU
	// (Options.AllowCPUFallback is off).
	ErrFallbackNotAllowed = errors.New("CPU fallback not allowed")
)

// Options configure a Runtime. The zero value runs on CPU with Immich's
// thread defaults.
type Options struct {
	// LibraryPath is the ONNX Runtime shared library
	// (libonnxruntime.so.1). Empty means the dynamic loader's search path.
	LibraryPath string
	// Providers is the order of preference of execution providers (CPU,
	// CUDA, TensorRT, OpenVINO; FakeGPU in tests): the first usable one
	// runs every session. Empty means CPU.
	Providers []string
	// DeviceID selects the GPU (CUDA device_id, OpenVINO GPU.<id>) when
	// DeviceIDs is empty.
	DeviceID int
	// IntraOpThreads and InterOpThreads set ONNX Runtime's thread pools.
	// Zero means mlserve's defaults: on CPU, DefaultIntraOpThreads intra-op
	// threads and 1 inter-op thread; on GPU providers 2 and 1 (the device
	// does the work; see gpuThreads).
	IntraOpThreads, InterOpThreads int
	// Throughput, with IntraOpThreads zero, gives CPU sessions
	// ThroughputIntraOpThreads instead of DefaultIntraOpThreads: for bulk
	// work, where no input waits alone, one run per core at once does more
	// per core than one run on every core (no threads waiting for each
	// other inside a run), at the cost of a lone input's latency.
	Throughput bool
	// Spin lets idle intra-op threads busy-wait for the next parallel
	// section (ONNX Runtime's default, session.intra_op.allow_spinning).
	// Off by default: between and after runs the spinning threads burn the
	// cores that decoding, preprocessing and other sessions need.
	Spin bool
	// DisableArena turns off ONNX Runtime's CPU memory arena, so memory
	// freed by a run goes back to the allocator at once.
	DisableArena bool
	// ThreadNice > 0 starts the sessions' intra-op pool threads at that
	// nice value (Linux; see NiceThread for the thread that calls Run).
	ThreadNice int
	// OpenVINOPrecision is FP32 (default) or FP16.
	OpenVINOPrecision string
	// Verbose lets ONNX Runtime print its own warnings to stderr; otherwise
	// only fatal errors are printed (every error is returned and logged
	// through the logger anyway). The first Runtime of a process sets it.
	Verbose bool

	// DeviceIDs are the GPUs to use (CUDA ordinals, OpenVINO GPU.<id>):
	// each one that works is a device of the runtime. Empty means
	// DeviceID alone.
	DeviceIDs []int
	// AllowCPUFallback lets a session whose device fails (out of memory, a
	// provider error) move to the CPU, and the runtime start on the CPU
	// when no configured provider is usable. Off, such failures are
	// errors.
	AllowCPUFallback bool
	// CUDA, TensorRT and OpenVINO configure those providers.
	CUDA     CUDAOptions
	TensorRT TensorRTOptions
	OpenVINO OpenVINOOptions
	// FakeDevices are the devices of the FakeGPU provider: simulated GPUs
	// for tests (see FakeDevice).
	FakeDevices []*FakeDevice
}

// Runtime owns a share of the ONNX Runtime environment, the devices found
// at start, and builds sessions. It is safe for concurrent use.
type Runtime struct {
	opts   Options
	logger *slog.Logger
	api    ortAPI
	cuda   *cudaDriver

	// states is the start-up probe's result, per configured provider.
	states []ProviderState
	// devices are the devices of the provider in use, in DeviceIDs order.
	devices []*Device
	// cpu is the CPU device when the CPU may be used (listed, or the
	// fallback), else nil.
	cpu *Device

	mu       sync.Mutex
	closed   bool
	sessions map[*Session]struct{}
}

// ortEnv is the process-wide environment, shared by the Runtimes.
var ortEnv struct {
	sync.Mutex
	refs    int
	library string
}

// New starts (or joins) ONNX Runtime, finds which of the configured
// providers can run here, and logs them. It fails with ErrOptions for
// options ONNX Runtime does not know and with ErrNoUsableProvider when no
// configured provider has a usable device.
func New(opts Options, logger *slog.Logger) (*Runtime, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	if err := acquireEnv(opts); err != nil {
		return nil, err
	}
	r := &Runtime{
		opts:     opts,
		logger:   logger,
		sessions: map[*Session]struct{}{},
	}
	var err error
	if r.api, err = loadORTAPI(opts.LibraryPath); err != nil {
		logger.Debug("arena shrinkage unavailable", "err", err)
	}
	if err := r.resolve(); err != nil {
		_ = r.release()
		return nil, err
	}
	r.logStart()
	return r, nil
}

// acquireEnv starts the environment, or takes a share of the running one
// when it was started from the same library.
func acquireEnv(opts Options) error {
	ortEnv.Lock()
	defer ortEnv.Unlock()
	if ortEnv.refs > 0 {
		if ortEnv.library != opts.LibraryPath {
			return fmt.Errorf("%w: loaded from %q, not %q", ErrRuntimeExists, ortEnv.library, opts.LibraryPath)
		}
		ortEnv.refs++
		return nil
	}
	if ort.IsInitialized() {
		return ErrRuntimeExists
	}
	if opts.LibraryPath != "" {
		if _, err := os.Stat(opts.LibraryPath); err != nil && containsSlash(opts.LibraryPath) {
			return fmt.Errorf("%w: %w", ErrLibrary, err)
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
		return fmt.Errorf("%w: disable telemetry: %w", ErrLibrary, err)
	}
	level := ort.WithLogLevelFatal()
	if opts.Verbose {
		level = ort.WithLogLevelWarning()
	}
	if err := ort.InitializeEnvironment(level); err != nil {
		return fmt.Errorf("%w %q: %w", ErrLibrary, opts.LibraryPath, err)
	}
	if err := ort.DisableTelemetry(); err != nil {
		_ = ort.DestroyEnvironment()
		return fmt.Errorf("%w: disable telemetry: %w", ErrLibrary, err)
	}
	ortEnv.refs, ortEnv.library = 1, opts.LibraryPath
	return nil
}

// release gives back the runtime's share of the environment and its
// driver handle.
func (r *Runtime) release() error {
	var errs []error
	if r.cuda != nil {
		errs = append(errs, r.cuda.close())
	}
	ortEnv.Lock()
	defer ortEnv.Unlock()
	ortEnv.refs--
	if ortEnv.refs == 0 {
		errs = append(errs, ort.DestroyEnvironment())
	}
	return errors.Join(errs...)
}

func containsSlash(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return true
		}
	}
	return false
}

// resolve probes the configured providers in order until one has a usable
// device, and the CPU when it may be used.
func (r *Runtime) resolve() error {
	dir := libraryDir(r.opts.LibraryPath)
	cpuAllowed := slices.Contains(r.opts.Providers, CPU) || r.opts.AllowCPUFallback
	if cpuAllowed {
		r.cpu = &Device{name: CPU, provider: CPU}
		if !r.opts.DisableArena {
			r.cpu.arena = "cpu:0"
		}
	}
	for _, p := range r.opts.Providers {
		st := ProviderState{Provider: p}
		if r.devices != nil {
			st.Err = errNotTried
			r.states = append(r.states, st)
			continue
		}
		var devs []*Device
		devs, st.Err = r.probeProvider(p, dir)
		for _, d := range devs {
			st.Devices = append(st.Devices, d.name)
		}
		if len(devs) > 0 {
			r.devices = devs
		}
		r.states = append(r.states, st)
	}
	if r.cpu != nil && (r.devices == nil || r.devices[0] != r.cpu) {
		if err := r.probe(r.cpu); err != nil {
			return fmt.Errorf("%w: even the CPU provider fails: %w", ErrNoUsableProvider, unusableReason(CPU, err))
		}
	}
	if r.devices != nil {
		return nil
	}
	if r.opts.AllowCPUFallback {
		r.devices = []*Device{r.cpu}
		r.logger.Warn("no configured execution provider is usable; every model runs on the CPU (CPU fallback allowed)",
			"providers", r.opts.Providers, "reasons", r.reasons())
		return nil
	}
	return fmt.Errorf("%w among %s: %s", ErrNoUsableProvider, strings.Join(r.opts.Providers, ", "), r.reasons())
}

// reasons lists why each provider is unusable.
func (r *Runtime) reasons() string {
	var parts []string
	for _, st := range r.states {
		if !st.Usable() && st.Err != nil {
			parts = append(parts, st.Provider+": "+st.Err.Error())
		}
	}
	return strings.Join(parts, "; ")
}

// probeProvider returns p's usable devices, and the reason of those that
// are not (nil when all are).
func (r *Runtime) probeProvider(p, dir string) ([]*Device, error) {
	var cands []*Device
	switch p {
	case CPU:
		cands = []*Device{r.cpu}
	case CUDA, TensorRT:
		for _, id := range r.opts.DeviceIDs {
			cands = append(cands, &Device{name: "CUDA:" + strconv.Itoa(id), provider: p, id: id, arena: "gpu:" + strconv.Itoa(id)})
		}
	case OpenVINO:
		ov := func(t string) *Device { return &Device{name: OpenVINO + ":" + t, provider: OpenVINO, ovType: t} }
		switch r.opts.OpenVINO.Device {
		case OpenVINOAuto, OpenVINOGPU:
			for _, id := range r.opts.DeviceIDs {
				cands = append(cands, ov("GPU."+strconv.Itoa(id)))
			}
		default:
			cands = []*Device{ov(r.opts.OpenVINO.Device)}
		}
	case FakeGPU:
		var devs []*Device
		for i, f := range r.opts.FakeDevices {
			devs = append(devs, &Device{name: FakeGPU + ":" + strconv.Itoa(i), provider: FakeGPU, id: i, fake: f})
		}
		return devs, nil
	}
	var ok []*Device
	var errs []error
	for _, d := range cands {
		err := r.probe(d)
		if err == nil {
			ok = append(ok, d)
			continue
		}
		// Only a failed probe is checked against the files: a provider
		// that works is built, wherever its libraries are.
		if lib, missing := notBuilt(dir, p); missing {
			return nil, fmt.Errorf("%w (%s is missing)", ErrNotBuilt, lib)
		}
		reason := unusableReason(p, err)
		if errors.Is(reason, ErrNotBuilt) {
			return nil, reason
		}
		errs = append(errs, fmt.Errorf("%s: %w", d.name, reason))
	}
	if len(ok) > 0 && (p == CUDA || p == TensorRT) {
		if r.cuda == nil {
			r.cuda = openCUDADriver(cudaDriverLibrary)
		}
		for _, d := range ok {
			d.cuda = r.cuda
		}
	}
	if len(ok) == 0 && p == OpenVINO && r.opts.OpenVINO.Device == OpenVINOAuto {
		// Immich's choice: OpenVINO on the CPU when it sees no GPU. That
		// is where the device is, not a fallback after a failure.
		d := &Device{name: OpenVINO + ":" + OpenVINOCPU, provider: OpenVINO, ovType: OpenVINOCPU}
		err := r.probe(d)
		if err == nil {
			r.logger.Info("OpenVINO sees no GPU; its sessions run on OpenVINO's CPU device", "reason", errors.Join(errs...))
			return []*Device{d}, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", d.name, unusableReason(p, err)))
	}
	return ok, errors.Join(errs...)
}

// probe builds a one-node session on d with the options real sessions
// get: the only test that loads a provider's libraries and opens its
// device for real.
func (r *Runtime) probe(d *Device) error {
	if d.fake != nil {
		return nil
	}
	g := onnx.NewGraph("probe")
	g.Output("y", g.Input("x", onnx.Float, onnx.D(1)), onnx.Float, onnx.D(1))
	model := onnx.Model{Graph: g}.Marshal()
	so, err := r.sessionOptions(d, "", 0)
	if err != nil {
		return err
	}
	defer func() { _ = so.Destroy() }()
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(model, []string{"x"}, []string{"y"}, so)
	if err != nil {
		return err
	}
	return s.Destroy()
}

// logStart logs, once, what the probe found: each configured provider's
// state (not in this build: info; failing: warning), the options of the
// one in use, and its devices.
func (r *Runtime) logStart() {
	for _, st := range r.states {
		switch {
		case errors.Is(st.Err, errNotTried):
			r.logger.Debug("execution provider not tried: an earlier one is used", "provider", st.Provider)
		case errors.Is(st.Err, ErrNotBuilt):
			r.logger.Info("execution provider not in this ONNX Runtime build", "provider", st.Provider, "detail", st.Err.Error())
		case st.Err != nil && st.Usable():
			r.logger.Warn("some devices of the execution provider are unusable", "provider", st.Provider, "usable", st.Devices, "reason", st.Err.Error())
		case st.Err != nil:
			r.logger.Warn("execution provider unusable", "provider", st.Provider, "reason", st.Err.Error())
		}
	}
	d0 := r.devices[0]
	attrs := []any{"provider", d0.provider, "devices", r.deviceNames(), "options", r.providerOptions(d0)}
	for _, d := range r.devices {
		if d.Host() || d.fake != nil {
			continue
		}
		if m, err := d.Memory(); err == nil {
			attrs = append(attrs, d.name, m.String())
		}
	}
	r.logger.Info("execution provider in use", attrs...)
	if r.cpu != nil && r.opts.AllowCPUFallback && d0 != r.cpu {
		r.logger.Info("CPU fallback allowed: a model that fails on its device moves to the CPU, and readiness says so")
	}
	r.logger.Info("ONNX Runtime ready", "version", ort.GetVersion(), "library", r.opts.LibraryPath, "providers", r.Providers())
}

// providerOptions is a one-line summary of d's provider options, for the
// start log.
func (r *Runtime) providerOptions(d *Device) string {
	var m map[string]string
	switch d.provider {
	case CUDA:
		m = r.cudaProviderOptions(d.id)
	case TensorRT:
		m = r.tensorRTProviderOptions(d.id, "<model>")
		for k, v := range r.cudaProviderOptions(d.id) {
			m["cuda."+k] = v
		}
	case OpenVINO:
		m = r.openVINOProviderOptions(d.ovType, "<model>")
	}
	if m == nil {
		m = map[string]string{}
	}
	delete(m, "device_id")
	delete(m, "device_type")
	if d.provider == CUDA || d.provider == TensorRT {
		m["arena_shrink_every_run"] = strconv.FormatBool(r.opts.CUDA.ShrinkArena)
	}
	intra, inter := r.threads(CPU)
	if d.provider != CPU && d.provider != FakeGPU { // as sessionOptions does
		intra, inter = r.gpuThreads()
	}
	m["intra_op_threads"], m["inter_op_threads"] = strconv.Itoa(intra), strconv.Itoa(inter)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, " ")
}

func (r *Runtime) deviceNames() []string {
	out := make([]string, len(r.devices))
	for i, d := range r.devices {
		out[i] = d.name
	}
	return out
}

// Version is the ONNX Runtime library's version.
func (r *Runtime) Version() string { return ort.GetVersion() }

// Providers are the usable providers: the one in use, then the CPU when
// it may be used too (listed, or the fallback).
func (r *Runtime) Providers() []string {
	out := []string{r.devices[0].provider}
	if r.cpu != nil && r.devices[0] != r.cpu {
		out = append(out, CPU)
	}
	return out
}

// ProviderStates is what the start-up probe found, per configured
// provider, in the configured order.
func (r *Runtime) ProviderStates() []ProviderState { return slices.Clone(r.states) }

// ProviderStatus tells, for each configured provider and the CPU, whether
// sessions can use it: nil, or the reason it is not used (decided at
// start; nothing is probed again).
func (r *Runtime) ProviderStatus() map[string]error {
	out := map[string]error{}
	for _, st := range r.states {
		switch {
		case st.Usable():
			out[st.Provider] = nil
		case st.Err != nil:
			out[st.Provider] = st.Err
		default:
			out[st.Provider] = errors.New("no usable device")
		}
	}
	if r.cpu != nil {
		out[CPU] = nil
	} else if _, ok := out[CPU]; !ok {
		out[CPU] = errors.New("not configured (neither listed nor allowed as fallback)")
	}
	return out
}

// Devices are the devices sessions are placed on: those of the provider
// in use, in the configured order. The first is the default.
func (r *Runtime) Devices() []*Device { return slices.Clone(r.devices) }

// CPU is the CPU device when sessions may use it (it is listed, or the
// fallback is allowed), else nil.
func (r *Runtime) CPU() *Device { return r.cpu }

// AllowCPUFallback tells whether sessions may move to the CPU when their
// device fails.
func (r *Runtime) AllowCPUFallback() bool { return r.opts.AllowCPUFallback && r.cpu != nil }

// Device returns the device named name ("CUDA:1", "CPU"), or
// ErrUnknownDevice. The empty name is the default device.
func (r *Runtime) Device(name string) (*Device, error) {
	if name == "" {
		return r.devices[0], nil
	}
	for _, d := range r.devices {
		if d.name == name {
			return d, nil
		}
	}
	if r.cpu != nil && name == r.cpu.name {
		return r.cpu, nil
	}
	return nil, fmt.Errorf("%w %q: have %s", ErrUnknownDevice, name, strings.Join(r.deviceNames(), ", "))
}

// Close destroys every open session and gives back the runtime's share of
// the environment (the last Runtime destroys it). It returns all teardown
// errors joined.
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
	if err := r.release(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
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

// maxThroughputRuns bounds the runs of one model at once that
// ThroughputIntraOpThreads makes room for: each run holds its own
// activations, so a many-core machine runs a few threads each rather than
// one each, and that memory stays at 8 runs' worth.
const maxThroughputRuns = 8

// ThroughputIntraOpThreads is the intra-op thread count of CPU sessions
// under Options.Throughput: one, or on more than maxThroughputRuns cores
// as few as keep the runs at once (cores ÷ threads) within it.
func ThroughputIntraOpThreads(cores int) int {
	return max(1, (cores+maxThroughputRuns-1)/maxThroughputRuns)
}

// Threads is the intra- and inter-op thread count of sessions on provider
// p (0: ONNX Runtime's own default).
func (r *Runtime) Threads(p string) (intra, inter int) { return r.threads(p) }

func (r *Runtime) threads(p string) (intra, inter int) {
	intra, inter = r.opts.IntraOpThreads, r.opts.InterOpThreads
	if p == CPU {
		if intra == 0 && r.opts.Throughput {
			intra = ThroughputIntraOpThreads(runtime.NumCPU())
		}
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
	if r.opts.ThreadNice > 0 {
		err = errors.Join(err, r.api.setThreadNice(so, r.opts.ThreadNice))
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
