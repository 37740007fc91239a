package inference

import (
	"fmt"
	"os"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// FakeDevice is a simulated GPU for tests. There is no GPU behind it: its
// sessions are real ONNX Runtime CPU sessions, and the device only keeps
// the books of a GPU's memory, the way ONNX Runtime's CUDA provider uses
// it, so that code above this package (placement, eviction, memory
// budgets, out-of-memory handling) can be tested on machines without a
// GPU:
//
//   - a load takes the model file's size × WeightFactor, and fails with an
//     out-of-memory error when the device has not that much free;
//   - a run needs its inputs' size × RunFactor for activations, taken from
//     the session's arena, which grows when the runs in progress need more
//     and keeps the memory afterwards (as the CUDA arena does), until the
//     session is closed or a run shrinks it ([WithShrink],
//     CUDAOptions.ShrinkArena, or the run after an out-of-memory error);
//   - FailLoads and FailRuns make the next loads or runs fail on demand.
//
// Its errors carry the text ONNX Runtime's CUDA arena writes (source path
// and signature included), so they go through the same classification
// and cleaning as real ones and come out as a *DeviceError wrapping
// ErrOutOfMemory. FakeDevices are configured with Options.FakeDevices and
// the provider FakeGPU; mlserve's configuration never makes one.
type FakeDevice struct {
	// Total is the simulated memory, in bytes.
	Total int64
	// WeightFactor scales a model's file size to what its session takes
	// at load (0: 1).
	WeightFactor float64
	// RunFactor scales a run's input size to the activations it needs (0:
	// 4).
	RunFactor float64

	mu        sync.Mutex
	used      int64
	failLoads int
	failRuns  int
	sessions  int
	ooms      int
}

// Memory is the simulated memory.
func (f *FakeDevice) Memory() Memory {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Memory{Total: f.Total, Free: f.Total - f.used}
}

// FailLoads makes the next n loads on the device fail with out of memory.
func (f *FakeDevice) FailLoads(n int) {
	f.mu.Lock()
	f.failLoads = n
	f.mu.Unlock()
}

// FailRuns makes the next n runs on the device fail with out of memory.
func (f *FakeDevice) FailRuns(n int) {
	f.mu.Lock()
	f.failRuns = n
	f.mu.Unlock()
}

// Sessions is the number of sessions open on the device.
func (f *FakeDevice) Sessions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions
}

// OutOfMemory is the number of out-of-memory errors the device has
// returned.
func (f *FakeDevice) OutOfMemory() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ooms
}

func (f *FakeDevice) weightFactor() float64 {
	if f.WeightFactor > 0 {
		return f.WeightFactor
	}
	return 1
}

func (f *FakeDevice) runFactor() float64 {
	if f.RunFactor > 0 {
		return f.RunFactor
	}
	return 4
}

// oom is the message of ONNX Runtime's CUDA arena when cudaMalloc fails,
// source path and all.
func fakeOOM(prefix string, n int64) error {
	return fmt.Errorf("%s/onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, onnxruntime::WaitNotificationFn) Failed to allocate memory for requested buffer of size %d", prefix, n)
}

// open builds a session on the device: the memory first, then the real
// CPU session through build.
func (f *FakeDevice) open(path string, build func() (backend, error)) (backend, int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, err
	}
	need := int64(float64(st.Size()) * f.weightFactor())
	f.mu.Lock()
	if f.failLoads > 0 || f.used+need > f.Total {
		if f.failLoads > 0 {
			f.failLoads--
		}
		f.ooms++
		f.mu.Unlock()
		return nil, 0, fakeOOM("Exception during initialization: ", need)
	}
	f.used += need
	f.sessions++
	f.mu.Unlock()
	inner, err := build()
	if err != nil {
		f.mu.Lock()
		f.used -= need
		f.sessions--
		f.mu.Unlock()
		return nil, 0, err
	}
	return &fakeSession{dev: f, inner: inner, weights: need}, need, nil
}

// fakeSession is a real session whose device memory a FakeDevice
// accounts.
type fakeSession struct {
	dev     *FakeDevice
	inner   backend
	weights int64
	// arena is what the session's arena holds; inUse what the runs in
	// progress use of it. Guarded by dev.mu.
	arena, inUse int64
}

func (s *fakeSession) run(in, out []ort.Value, ro *ort.RunOptions, ri runInfo) error {
	need := int64(float64(ri.inputBytes) * s.dev.runFactor())
	f := s.dev
	f.mu.Lock()
	grow := s.inUse + need - s.arena
	if f.failRuns > 0 || (grow > 0 && f.used+grow > f.Total) {
		if f.failRuns > 0 {
			f.failRuns--
		}
		f.ooms++
		f.mu.Unlock()
		return fakeOOM("", need)
	}
	if grow > 0 {
		f.used += grow
		s.arena += grow
	}
	s.inUse += need
	f.mu.Unlock()

	err := s.inner.run(in, out, ro, runInfo{inputBytes: ri.inputBytes})

	f.mu.Lock()
	s.inUse -= need
	if ri.shrink {
		f.used -= s.arena - s.inUse
		s.arena = s.inUse
	}
	f.mu.Unlock()
	return err
}

func (s *fakeSession) destroy() error {
	err := s.inner.destroy()
	f := s.dev
	f.mu.Lock()
	f.used -= s.weights + s.arena
	s.arena, s.weights = 0, 0
	f.sessions--
	f.mu.Unlock()
	return err
}
