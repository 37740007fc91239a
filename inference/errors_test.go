package inference

import (
	"errors"
	"testing"
	"unicode/utf8"
)

// Messages as ONNX Runtime and its providers write them. The first is
// this machine's CPU-only build asked for CUDA; the others are the shapes
// of CUDA's, the BFC arena's and OpenVINO's GPU plugin's errors.
var ortMessages = []struct {
	name, msg string
	kind      failure
	clean     string
	requested int64
}{
	{
		name:  "provider library missing",
		msg:   "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1988 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library /opt/ort/libonnxruntime_providers_shared.so with error: /opt/ort/libonnxruntime_providers_shared.so: cannot open shared object file: No such file or directory",
		kind:  failOther,
		clean: "Failed to load library /opt/ort/libonnxruntime_providers_shared.so with error: /opt/ort/libonnxruntime_providers_shared.so: cannot open shared object file: No such file or directory",
	},
	{
		name:  "cudaMalloc",
		msg:   "/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:121 std::conditional_t<THRW, void, onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const char*, ERRTYPE, const char*, const char*, int) [with ERRTYPE = cudaError; bool THRW = true; std::conditional_t<THRW, void, onnxruntime::common::Status> = void] /onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:114 std::conditional_t<THRW, void, onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const char*, ERRTYPE, const char*, const char*, int) [with ERRTYPE = cudaError; bool THRW = true; std::conditional_t<THRW, void, onnxruntime::common::Status> = void] CUDA failure 2: out of memory ; GPU=0 ; hostname=gpu-box-7 ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_allocator.cc ; line=47 ; expr=cudaMalloc((void**)&p, size);",
		kind:  failOOM,
		clean: "CUDA failure 2: out of memory ; GPU=0",
	},
	{
		name:      "arena",
		msg:       "Exception during initialization: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, onnxruntime::WaitNotificationFn) Failed to allocate memory for requested buffer of size 1073741824",
		kind:      failOOM,
		clean:     "Exception during initialization: Failed to allocate memory for requested buffer of size 1073741824",
		requested: 1 << 30,
	},
	{
		name:      "arena limit",
		msg:       "/onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:359 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, onnxruntime::WaitNotificationFn) Available memory of 0 is smaller than requested bytes of 4194304",
		kind:      failOOM,
		clean:     "Available memory of 0 is smaller than requested bytes of 4194304",
		requested: 4 << 20,
	},
	{
		name:  "cudnn",
		msg:   "/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:121 std::conditional_t<THRW, void, onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const char*, ERRTYPE, const char*, const char*, int) [with ERRTYPE = cudnnStatus_t; bool THRW = true] CUDNN failure 4: CUDNN_STATUS_INTERNAL_ERROR ; GPU=1 ; hostname=h ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_execution_provider.cc ; line=180 ; expr=cudnnCreate(&cudnn_handle_);",
		kind:  failDevice,
		clean: "CUDNN failure 4: CUDNN_STATUS_INTERNAL_ERROR ; GPU=1",
	},
	{
		name:  "openvino",
		msg:   "[OpenVINO-EP]  Exception while Loading Network for graph: OpenVINOExecutionProvider_OpenVINO-EP-subgraph_1_0Exception from src/inference/src/cpp/core.cpp:109:\nCheck 'false' failed at src/plugins/intel_gpu/src/runtime/ocl/ocl_engine.cpp:153:\n[GPU] out of GPU resources",
		kind:  failOOM,
		clean: "[OpenVINO-EP] Exception while Loading Network for graph: OpenVINOExecutionProvider_OpenVINO-EP-subgraph_1_0Exception from Check 'false' failed at [GPU] out of GPU resources",
	},
	{
		name:  "bad input",
		msg:   "Got invalid dimensions for input: x for the following indices\n index: 1 Got: 3 Expected: 4\n Please fix either the inputs/outputs or the model.",
		kind:  failOther,
		clean: "Got invalid dimensions for input: x for the following indices index: 1 Got: 3 Expected: 4 Please fix either the inputs/outputs or the model.",
	},
}

func TestClassifyAndClean(t *testing.T) {
	for _, m := range ortMessages {
		if got := classify(m.msg); got != m.kind {
			t.Errorf("%s: classify = %d, want %d", m.name, got, m.kind)
		}
		if got := cleanMessage(m.msg); got != m.clean {
			t.Errorf("%s: clean\n got %q\nwant %q", m.name, got, m.clean)
		}
		if got := requestedBytes(m.msg); got != m.requested {
			t.Errorf("%s: requested = %d, want %d", m.name, got, m.requested)
		}
	}
	// A file called "x.cache" is not a source path.
	if got := cleanMessage("cannot read /var/x.cache/model.onnx"); got != "cannot read /var/x.cache/model.onnx" {
		t.Errorf("clean = %q", got)
	}
}

func TestDeviceErrorMessage(t *testing.T) {
	e := &DeviceError{Op: "load", Model: "/cache/clip/ViT-B-32__openai/visual/model.onnx", Device: "CUDA:1", Provider: CUDA,
		Total: 24 << 30, Free: 300 << 20, Requested: 3 << 29, Err: ErrOutOfMemory, Detail: "CUDA failure 2: out of memory"}
	want := "load /cache/clip/ViT-B-32__openai/visual/model.onnx on CUDA:1: out of memory (requested 1.5 GiB, 300.0 MiB free of 24.0 GiB): CUDA failure 2: out of memory"
	if e.Error() != want {
		t.Errorf("got  %q\nwant %q", e.Error(), want)
	}
	if !errors.Is(e, ErrOutOfMemory) || errors.Is(e, ErrDevice) || errors.Is(e, ErrNoProvider) {
		t.Error("wrapping")
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 5 << 40: "5.0 TiB", 1 << 62: "4194304.0 TiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// FuzzCleanMessage: whatever ONNX Runtime writes, the cleaned message is
// bounded, valid where the input was, and has no source path left.
func FuzzCleanMessage(f *testing.F) {
	for _, m := range ortMessages {
		f.Add(m.msg)
	}
	f.Add("a.cc:1 x::y(((( [with")
	f.Add("/a/b.cc:1 f::g(int) const [with T = [x]] rest ; hostname=h ; file=/x.cc ; line=1")
	f.Fuzz(func(t *testing.T, msg string) {
		out := cleanMessage(msg)
		if len(out) > maxDetail+len("…") {
			t.Fatalf("%d bytes", len(out))
		}
		if utf8.ValidString(msg) && !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 from valid input: %q", out)
		}
		if loc := srcPathRe.FindString(out); loc != "" {
			t.Fatalf("source path %q left in %q", loc, out)
		}
		if fieldRe.MatchString(out) {
			t.Fatalf("host name, file, line or expression field left in %q", out)
		}
		_ = classify(msg)
		if n := requestedBytes(msg); n < 0 {
			t.Fatalf("requested %d", n)
		}
	})
}
