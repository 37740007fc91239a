package inference

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Device errors. A *DeviceError wraps one of them.
var (
	// ErrOutOfMemory: the device had not enough memory to load or run the
	// model.
	ErrOutOfMemory = errors.New("out of memory")
	// ErrDevice: the device's provider failed for another reason (a CUDA,
	// cuDNN, TensorRT or OpenVINO error).
	ErrDevice = errors.New("device failure")
)

// DeviceError is the failure of a model on its device. It wraps
// ErrOutOfMemory or ErrDevice, so callers test it with errors.Is and read
// the numbers with errors.As.
type DeviceError struct {
	// Op is "load" or "run".
	Op string
	// Model is the model file.
	Model string
	// Device is where it failed ("CUDA:0"), Provider the execution
	// provider ("CUDA").
	Device, Provider string
	// Total and Free are the device's memory when the failure was seen, in
	// bytes; both zero when the device cannot tell (OpenVINO).
	Total, Free int64
	// Requested is the allocation that failed, when ONNX Runtime's message
	// says; 0 otherwise.
	Requested int64
	// Err is ErrOutOfMemory or ErrDevice.
	Err error
	// Detail is ONNX Runtime's message, without its source paths, function
	// signatures and host name.
	Detail string
}

func (e *DeviceError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s on %s: %v", e.Op, e.Model, e.Device, e.Err)
	var nums []string
	if e.Requested > 0 {
		nums = append(nums, "requested "+FormatBytes(e.Requested))
	}
	if e.Total > 0 {
		nums = append(nums, FormatBytes(e.Free)+" free of "+FormatBytes(e.Total))
	}
	if len(nums) > 0 {
		b.WriteString(" (" + strings.Join(nums, ", ") + ")")
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	return b.String()
}

// Unwrap returns ErrOutOfMemory or ErrDevice.
func (e *DeviceError) Unwrap() error { return e.Err }

// FormatBytes writes n bytes in binary units ("1.5 GiB").
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		f /= unit
		if f < unit && f > -unit || u == "TiB" {
			return strconv.FormatFloat(f, 'f', 1, 64) + " " + u
		}
	}
	return ""
}

// Failure kinds of an ONNX Runtime error.
type failure int

const (
	failOther  failure = iota // not the device's: the model, the input
	failDevice                // the provider or its device
	failOOM                   // out of memory
)

var (
	// oomPatterns are the lowercase fragments of ONNX Runtime's and its
	// providers' out-of-memory messages: the BFC arena ("Failed to
	// allocate memory for requested buffer of size N", "Available memory
	// of N is smaller than requested bytes of M"), CUDA ("CUDA failure 2:
	// out of memory", cudaErrorMemoryAllocation), cuDNN and cuBLAS
	// (*_STATUS_ALLOC_FAILED), TensorRT ("could not be allocated"),
	// OpenVINO's GPU plugin (OpenCL's CL_OUT_OF_RESOURCES and
	// CL_MEM_OBJECT_ALLOCATION_FAILURE) and the host (std::bad_alloc).
	oomPatterns = []string{
		"out of memory", "failed to allocate memory", "is smaller than requested bytes",
		"memoryallocation", "status_alloc_failed", "could not be allocated",
		"cl_out_of_resources", "mem_object_allocation_failure", "out of gpu resources",
		"bad_alloc", "bad allocation",
	}
	// devicePatterns mark errors of a provider or its device that are not
	// about memory.
	devicePatterns = []string{
		"cuda failure", "cuda error", "cudaerror", "cudnn", "cublas", "cufft", "curand",
		"no cuda-capable device", "invalid device ordinal", "driver version is insufficient",
		"tensorrt", "nvinfer", "[openvino-ep]", "openvino", "cl_invalid", "device lost",
	}
	requestedRe = regexp.MustCompile(`(?i)(?:requested buffer of size|requested bytes of|requested amount of gpu memory \()\s*(\d{1,19})`)
)

// classify tells what kind of failure an ONNX Runtime message reports.
func classify(msg string) failure {
	s := strings.ToLower(msg)
	for _, p := range oomPatterns {
		if strings.Contains(s, p) {
			return failOOM
		}
	}
	for _, p := range devicePatterns {
		if strings.Contains(s, p) {
			return failDevice
		}
	}
	return failOther
}

// requestedBytes is the size of the allocation an out-of-memory message
// names, or 0.
func requestedBytes(msg string) int64 {
	m := requestedRe.FindStringSubmatch(msg)
	if m == nil {
		return 0
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

var (
	// srcPathRe matches a source file path with its line, as ONNX Runtime
	// prefixes its messages with ("/onnxruntime_src/onnxruntime/core/
	// framework/bfc_arena.cc:376") and OpenVINO quotes its own
	// ("src/inference/src/cpp/core.cpp:109").
	srcPathRe = regexp.MustCompile(`[\w.+-]*(?:/[^\s/:;]+)+\.(?:cc|cpp|cxx|cu|cuh|h|hpp|c|inl)\b(?::\d+)?:?`)
	// statusRe matches the "[ONNXRuntimeError] : 1 : FAIL :" prefix of a
	// nested status.
	statusRe = regexp.MustCompile(`\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:?`)
	// fieldRe matches the "; hostname=… ; file=… ; line=… ; expr=…" fields
	// of CUDA_CALL's messages.
	fieldRe = regexp.MustCompile(`;?\s*\b(?:hostname|file|line|expr)=[^;]*`)
	spaceRe = regexp.MustCompile(`\s+`)
)

// maxDetail bounds the cleaned message.
const maxDetail = 500

// cleanMessage removes from an ONNX Runtime message what must not reach
// logs and clients: source paths of ONNX Runtime's build, the C++
// signatures that follow them, the host name and the CUDA call's file,
// line and expression. What is left is bounded to maxDetail bytes.
func cleanMessage(msg string) string {
	if len(msg) > 64<<10 {
		msg = msg[:64<<10]
	}
	// Removing one part can make another (a field after a path); a few
	// passes settle every message ONNX Runtime writes.
	for range 4 {
		before := msg
		msg = statusRe.ReplaceAllString(msg, " ")
		msg = fieldRe.ReplaceAllString(msg, "")
		msg = removePaths(msg)
		if msg == before {
			break
		}
	}
	if srcPathRe.MatchString(msg) || fieldRe.MatchString(msg) {
		return "(ONNX Runtime's message withheld: it could not be cleaned)"
	}
	s := strings.Trim(spaceRe.ReplaceAllString(msg, " "), " ;:")
	if len(s) > maxDetail {
		cut := maxDetail
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// removePaths replaces each source path, and the function signature that
// follows it, with a space.
func removePaths(msg string) string {
	var b strings.Builder
	for {
		loc := srcPathRe.FindStringIndex(msg)
		if loc == nil {
			b.WriteString(msg)
			return b.String()
		}
		b.WriteString(msg[:loc[0]])
		b.WriteByte(' ')
		msg = skipSignature(msg[loc[1]:])
	}
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// skipSignature drops the C++ function signature that follows a source
// path in ONNX Runtime's messages ("void* onnxruntime::BFCArena::
// AllocateRawInternal(size_t, bool) const [with T = float] "), if the text
// starts with one: a run of words up to a parenthesised parameter list
// whose name contains "::", then " const" and a "[with …]" clause.
func skipSignature(s string) string {
	open := strings.IndexByte(s, '(')
	if open < 0 || !strings.Contains(s[:open], "::") || strings.ContainsAny(s[:open], ";\n") {
		return s
	}
	end := matchClose(s, open, '(', ')')
	if end < 0 {
		return s
	}
	rest := s[end+1:]
	rest = strings.TrimPrefix(rest, " const")
	if t := strings.TrimLeft(rest, " "); strings.HasPrefix(t, "[with ") {
		if e := matchClose(t, 0, '[', ']'); e >= 0 {
			rest = t[e+1:]
		}
	}
	return rest
}

// matchClose returns the index of the bracket closing the one at s[at], or
// -1.
func matchClose(s string, at int, open, close byte) int {
	depth := 0
	for i := at; i < len(s); i++ {
		switch s[i] {
		case open:
			depth++
		case close:
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}
