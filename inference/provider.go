package inference

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
)

// TensorRT is NVIDIA's TensorRT provider; FakeGPU is the provider of
// [FakeDevice]s, which exist only in tests.
const (
	TensorRT = "TensorRT"
	FakeGPU  = "FakeGPU"
)

// Provider errors.
var (
	// ErrOptions: a provider option has a value ONNX Runtime does not know.
	ErrOptions = errors.New("invalid execution provider options")
	// ErrNotBuilt: this ONNX Runtime library has no such provider (its
	// provider library is not installed next to it).
	ErrNotBuilt = errors.New("not in this ONNX Runtime build")
	// ErrNoUsableProvider: none of the configured providers can run here.
	ErrNoUsableProvider = errors.New("no usable execution provider")
)

// CUDAOptions configure ONNX Runtime's CUDA provider, which TensorRT
// sessions use too for the nodes TensorRT does not take. The zero value
// is mlserve's default.
type CUDAOptions struct {
	// MemLimit caps the CUDA memory arena of each session, in bytes
	// (gpu_mem_limit); 0 leaves it to the device's size.
	MemLimit int64
	// ArenaExtendStrategy is how the arena grows: "kSameAsRequested"
	// (default: by what a run asks for, so the arena stays near the real
	// peak) or "kNextPowerOfTwo" (ONNX Runtime's default, fewer cudaMalloc
	// calls and up to twice the memory).
	ArenaExtendStrategy string
	// ConvAlgoSearch is cuDNN's convolution algorithm search
	// (cudnn_conv_algo_search): "HEURISTIC" (default), "DEFAULT" or
	// "EXHAUSTIVE". EXHAUSTIVE, ONNX Runtime's default, benchmarks every
	// algorithm, with large scratch buffers, for each new input shape; with
	// the dynamic shapes mlserve feeds (batches of 1 to 32, OCR line
	// widths, face detector sizes) that means a slow first run and a memory
	// spike per shape, and out-of-memory errors on busy cards. HEURISTIC
	// asks cuDNN's heuristics once per shape, at almost no cost, and picks
	// the same or a near-best algorithm for the convolutions these models
	// use. DEFAULT always takes IMPLICIT_PRECOMP_GEMM: no search at all, but
	// often slower kernels.
	ConvAlgoSearch string
	// CopyInSeparateStream sets do_copy_in_default_stream=0: copies use
	// their own CUDA stream. ONNX Runtime warns it may race; off by
	// default.
	CopyInSeparateStream bool
	// ShrinkArena gives the arena's unused memory back to the device after
	// every run (run option memory.enable_memory_arena_shrinkage). It
	// costs cudaMalloc/cudaFree calls on every run; without it the memory
	// comes back when the session is closed, and a run can ask for it with
	// [WithShrink].
	ShrinkArena bool
}

// TensorRTOptions configure the TensorRT provider. Engines and the timing
// cache are kept in the model's folder (SessionOptions.CacheDir/tensorrt),
// so only the first load of a model on a given GPU and TensorRT version
// builds them.
type TensorRTOptions struct {
	// FP16 lets TensorRT use half-precision kernels (trt_fp16_enable):
	// faster, with embeddings that differ slightly from FP32's.
	FP16 bool
}

// OpenVINO device choices.
const (
	OpenVINOAuto = "AUTO" // a GPU when OpenVINO sees one, else the CPU (Immich's choice)
	OpenVINOGPU  = "GPU"
	OpenVINOCPU  = "CPU"
	OpenVINONPU  = "NPU"
)

// OpenVINOOptions configure the OpenVINO provider. Compiled models are
// cached in the model's folder (SessionOptions.CacheDir/openvino).
type OpenVINOOptions struct {
	// Device is AUTO (default), GPU, CPU or NPU. GPU means GPU.<id> for
	// each of Options.DeviceIDs.
	Device string
}

var (
	arenaStrategies = []string{"kSameAsRequested", "kNextPowerOfTwo"}
	convSearches    = []string{"HEURISTIC", "DEFAULT", "EXHAUSTIVE"}
	openVINODevices = []string{OpenVINOAuto, OpenVINOGPU, OpenVINOCPU, OpenVINONPU}
	precisions      = []string{"FP32", "FP16"}
	knownProviders  = []string{CUDA, TensorRT, OpenVINO, CPU, FakeGPU}
)

// oneOf returns the canonical spelling of v among choices (compared
// without case), or an error naming the option.
func oneOf(option, v, def string, choices []string) (string, error) {
	if v == "" {
		return def, nil
	}
	for _, c := range choices {
		if strings.EqualFold(v, c) {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w: %s %q: want one of %s", ErrOptions, option, v, strings.Join(choices, ", "))
}

// normalize checks the options and fills in defaults.
func (o *Options) normalize() error {
	var errs []error
	seen := map[string]bool{}
	var providers []string
	for _, p := range o.Providers {
		c, err := oneOf("provider", p, "", knownProviders)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !seen[c] {
			seen[c] = true
			providers = append(providers, c)
		}
	}
	if len(o.Providers) == 0 {
		providers = []string{CPU}
	}
	o.Providers = providers
	var err error
	if o.CUDA.ArenaExtendStrategy, err = oneOf("arena_extend_strategy", o.CUDA.ArenaExtendStrategy, "kSameAsRequested", arenaStrategies); err != nil {
		errs = append(errs, err)
	}
	if o.CUDA.ConvAlgoSearch, err = oneOf("cudnn_conv_algo_search", o.CUDA.ConvAlgoSearch, "HEURISTIC", convSearches); err != nil {
		errs = append(errs, err)
	}
	if o.CUDA.MemLimit < 0 {
		errs = append(errs, fmt.Errorf("%w: gpu_mem_limit %d is negative", ErrOptions, o.CUDA.MemLimit))
	}
	if o.OpenVINO.Device, err = oneOf("OpenVINO device", o.OpenVINO.Device, OpenVINOAuto, openVINODevices); err != nil {
		errs = append(errs, err)
	}
	if o.OpenVINOPrecision, err = oneOf("OpenVINO precision", o.OpenVINOPrecision, "FP32", precisions); err != nil {
		errs = append(errs, err)
	}
	if len(o.DeviceIDs) == 0 {
		o.DeviceIDs = []int{o.DeviceID}
	}
	ids := map[int]bool{}
	for _, id := range o.DeviceIDs {
		if id < 0 || ids[id] {
			errs = append(errs, fmt.Errorf("%w: device ids %v: each must be a distinct number ≥ 0", ErrOptions, o.DeviceIDs))
			break
		}
		ids[id] = true
	}
	if seen[FakeGPU] && len(o.FakeDevices) == 0 {
		errs = append(errs, fmt.Errorf("%w: provider %s needs Options.FakeDevices", ErrOptions, FakeGPU))
	}
	for i, f := range o.FakeDevices {
		if f == nil || f.Total <= 0 {
			errs = append(errs, fmt.Errorf("%w: FakeDevices[%d] needs a Total", ErrOptions, i))
		}
	}
	return errors.Join(errs...)
}

// gpuThreads is the thread pool size of sessions whose work runs on a
// device rather than on the host's cores: the GPU (or OpenVINO's own
// threads) does the work, ONNX Runtime's threads only run the few nodes
// placed on the CPU and launch the rest, so a large pool would only add
// idle threads per session. Explicit Options values win.
func (r *Runtime) gpuThreads() (intra, inter int) {
	intra, inter = r.opts.IntraOpThreads, r.opts.InterOpThreads
	if intra == 0 {
		intra = min(2, runtime.NumCPU())
	}
	if inter == 0 {
		inter = 1
	}
	return intra, inter
}

// sessionOptions builds the session options of a session on d: threads,
// then d's provider with its options. cacheDir is the model's folder
// (empty: no compiled-model caches, as for probes).
func (r *Runtime) sessionOptions(d *Device, cacheDir string, intra int) (*ort.SessionOptions, error) {
	p := d.provider
	if p == FakeGPU {
		p = CPU // a fake device's sessions are real CPU sessions
	}
	so, err := r.newOptions(p, intra)
	if err != nil {
		return nil, err
	}
	if p != CPU {
		gi, ge := r.gpuThreads()
		if intra > 0 {
			gi = intra
		}
		err = errors.Join(so.SetIntraOpNumThreads(gi), so.SetInterOpNumThreads(ge))
	}
	if err == nil {
		err = r.appendProvider(so, d, cacheDir)
	}
	if err != nil {
		_ = so.Destroy()
		return nil, err
	}
	return so, nil
}

// cudaProviderOptions are the CUDA provider's options for device id.
func (r *Runtime) cudaProviderOptions(id int) map[string]string {
	c := r.opts.CUDA
	m := map[string]string{
		"device_id":                 strconv.Itoa(id),
		"arena_extend_strategy":     c.ArenaExtendStrategy,
		"cudnn_conv_algo_search":    c.ConvAlgoSearch,
		"do_copy_in_default_stream": "1",
	}
	if c.CopyInSeparateStream {
		m["do_copy_in_default_stream"] = "0"
	}
	if c.MemLimit > 0 {
		m["gpu_mem_limit"] = strconv.FormatInt(c.MemLimit, 10)
	}
	return m
}

// tensorRTProviderOptions are the TensorRT provider's options for device
// id, with its engine and timing caches in cacheDir/tensorrt.
func (r *Runtime) tensorRTProviderOptions(id int, cacheDir string) map[string]string {
	m := map[string]string{
		"device_id":       strconv.Itoa(id),
		"trt_fp16_enable": "0",
	}
	if r.opts.TensorRT.FP16 {
		m["trt_fp16_enable"] = "1"
	}
	if cacheDir != "" {
		dir := filepath.Join(cacheDir, "tensorrt")
		m["trt_engine_cache_enable"] = "1"
		m["trt_engine_cache_path"] = dir
		m["trt_timing_cache_enable"] = "1"
		m["trt_timing_cache_path"] = dir
	}
	return m
}

// openVINOProviderOptions are the OpenVINO provider's options for device
// type dev ("GPU.0", "CPU", "NPU"), with its cache in cacheDir/openvino.
// The precision applies to GPUs: OpenVINO's CPU device computes in FP32
// and its NPU in FP16 whatever is asked.
func (r *Runtime) openVINOProviderOptions(dev, cacheDir string) map[string]string {
	m := map[string]string{"device_type": dev}
	if strings.HasPrefix(dev, "GPU") {
		m["precision"] = r.opts.OpenVINOPrecision
	}
	if cacheDir != "" {
		m["cache_dir"] = filepath.Join(cacheDir, "openvino")
	}
	return m
}

// appendProvider adds d's execution provider to so. Nothing is appended
// for the CPU, whose provider ONNX Runtime always has.
func (r *Runtime) appendProvider(so *ort.SessionOptions, d *Device, cacheDir string) error {
	if sub := map[string]string{TensorRT: "tensorrt", OpenVINO: "openvino"}[d.provider]; sub != "" && cacheDir != "" {
		if err := os.MkdirAll(filepath.Join(cacheDir, sub), 0o755); err != nil {
			// A read-only model cache: the provider compiles the model
			// at every load instead.
			r.logger.Warn("cannot keep compiled models in the model's folder", "provider", d.provider, "err", err)
			cacheDir = ""
		}
	}
	switch d.provider {
	case CPU, FakeGPU:
		return nil
	case CUDA:
		return appendCUDA(so, r.cudaProviderOptions(d.id))
	case TensorRT:
		to, err := ort.NewTensorRTProviderOptions()
		if err != nil {
			return err
		}
		defer func() { _ = to.Destroy() }()
		if err := to.Update(r.tensorRTProviderOptions(d.id, cacheDir)); err != nil {
			return err
		}
		if err := so.AppendExecutionProviderTensorRT(to); err != nil {
			return err
		}
		// The nodes TensorRT does not take run on CUDA, not on the CPU.
		return appendCUDA(so, r.cudaProviderOptions(d.id))
	case OpenVINO:
		return so.AppendExecutionProviderOpenVINO(r.openVINOProviderOptions(d.ovType, cacheDir))
	}
	return fmt.Errorf("%w: unknown execution provider %q", ErrOptions, d.provider)
}

func appendCUDA(so *ort.SessionOptions, opts map[string]string) error {
	co, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return err
	}
	defer func() { _ = co.Destroy() }()
	if err := co.Update(opts); err != nil {
		return err
	}
	return so.AppendExecutionProviderCUDA(co)
}

// providerLibraries are the shared libraries a provider needs next to
// libonnxruntime.
var providerLibraries = map[string][]string{
	CUDA:     {"libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"},
	TensorRT: {"libonnxruntime_providers_tensorrt.so", "libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"},
	OpenVINO: {"libonnxruntime_providers_openvino.so", "libonnxruntime_providers_shared.so"},
}

// notBuilt tells whether p's provider libraries are missing from dir, the
// folder of the loaded ONNX Runtime library; it returns the first missing
// one. An empty dir (unknown) tells nothing.
func notBuilt(dir, p string) (string, bool) {
	if dir == "" {
		return "", false
	}
	for _, lib := range providerLibraries[p] {
		if _, err := os.Stat(filepath.Join(dir, lib)); errors.Is(err, os.ErrNotExist) {
			return lib, true
		}
	}
	return "", false
}

// libraryDir is the folder of the loaded ONNX Runtime library, where ONNX
// Runtime looks for its provider libraries: the configured path's when it
// has one (dlopen keeps that name), else read from the process's
// mappings; "" when neither tells.
func libraryDir(configured string) string {
	if strings.Contains(configured, "/") {
		return filepath.Dir(configured)
	}
	if f, err := os.Open("/proc/self/maps"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			i := strings.IndexByte(line, '/')
			if i < 0 {
				continue
			}
			path := line[i:]
			if base := filepath.Base(path); strings.HasPrefix(base, "libonnxruntime.so") {
				return filepath.Dir(path)
			}
		}
	}
	return ""
}

var missingLibRe = regexp.MustCompile(`([\w.+-]+\.so[\w.]*): cannot open shared object file`)

// unusableReason turns a failed probe into a short reason without ONNX
// Runtime's source paths: either ErrNotBuilt, or what the provider said.
func unusableReason(p string, err error) error {
	msg := err.Error()
	low := strings.ToLower(msg)
	if m := missingLibRe.FindStringSubmatch(msg); m != nil {
		if strings.HasPrefix(m[1], "libonnxruntime_providers_") {
			return fmt.Errorf("%w (%s is missing)", ErrNotBuilt, m[1])
		}
		return fmt.Errorf("its library needs %s, which the dynamic loader cannot find (LD_LIBRARY_PATH)", m[1])
	}
	if strings.Contains(low, "not supported in this build") || strings.Contains(low, "unknown provider name") ||
		strings.Contains(low, "not enabled in this build") {
		return ErrNotBuilt
	}
	if strings.Contains(low, "failed to load shared library") {
		return fmt.Errorf("%w, or its libraries cannot be loaded", ErrNotBuilt)
	}
	return errors.New(cleanMessage(msg))
}
