package inference_test

// These tests run on a FakeDevice: a simulated GPU with no hardware
// behind it (see inference.FakeDevice). Its sessions are real ONNX
// Runtime CPU sessions; only the device memory is simulated.

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
)

const fakeSize = 64 // the model's side: input 64×64 float32

func fakeRuntime(t *testing.T, logs *logBuffer, allowCPU bool, devs ...*inference.FakeDevice) *inference.Runtime {
	t.Helper()
	rt, err := inference.New(inference.Options{
		LibraryPath:      testenv.ORTLibrary(t),
		Providers:        []string{inference.FakeGPU},
		FakeDevices:      devs,
		AllowCPUFallback: allowCPU,
	}, newLogger(logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	return rt
}

// fakeModel writes the test model and returns its path and size.
func fakeModel(t *testing.T) (string, int64) {
	t.Helper()
	p := writeModel(t, modelgen.Busy{Steps: 2, Size: fakeSize}.Model())
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, st.Size()
}

func fakeInput() inference.Tensor {
	return inference.F32(ramp(fakeSize*fakeSize, 1), fakeSize, fakeSize)
}

// activations is what one run of the test model takes on a FakeDevice
// with the default RunFactor (4 × the input's bytes).
const activations = 4 * 4 * fakeSize * fakeSize

func free(d *inference.FakeDevice) int64 { return d.Memory().Free }

func noSourcePaths(t *testing.T, what, s string) {
	t.Helper()
	for _, bad := range []string{"onnxruntime_src", ".cc:", "BFCArena::"} {
		if strings.Contains(s, bad) {
			t.Errorf("%s contains %q: %s", what, bad, s)
		}
	}
}

// TestFakeDeviceMemoryComesBack loads, runs and closes a session on a fake
// device and follows its memory: weights at load, the arena after a run,
// back to the weights after a shrinking run, back to the start after
// Close.
func TestFakeDeviceMemoryComesBack(t *testing.T) {
	dev := &inference.FakeDevice{Total: 1 << 30}
	var logs logBuffer
	rt := fakeRuntime(t, &logs, false, dev)
	devs := rt.Devices()
	if len(devs) != 1 || devs[0].Name() != "FakeGPU:0" || !devs[0].Fake() || devs[0].Host() {
		t.Fatalf("Devices = %v", devs)
	}
	if m, err := devs[0].Memory(); err != nil || m.Total != 1<<30 || m.Free != 1<<30 {
		t.Fatalf("Memory = %+v, %v", m, err)
	}
	path, size := fakeModel(t)
	s, err := rt.NewSession(path, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Provider() != inference.FakeGPU || s.Device() != "FakeGPU:0" || s.Fallback() != nil || s.DeviceMemory() != size {
		t.Fatalf("session on %s/%s, fallback %v, memory %d (model %d bytes)", s.Provider(), s.Device(), s.Fallback(), s.DeviceMemory(), size)
	}
	loaded := int64(1<<30) - size
	if got := free(dev); got != loaded {
		t.Fatalf("free after load = %d, want %d", got, loaded)
	}
	want, err := testenv.Runtime(t).NewSession(path, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	ref, err := want.Run(context.Background(), fakeInput())
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the arena grows once, then is reused
		out, err := s.Run(context.Background(), fakeInput())
		if err != nil {
			t.Fatal(err)
		}
		if !equalF32(out[0].Float32, ref[0].Float32) {
			t.Fatal("outputs differ from a plain CPU session's")
		}
		if got := free(dev); got != loaded-activations {
			t.Fatalf("free after a run = %d, want %d", got, loaded-activations)
		}
	}
	if _, err := s.Run(inference.WithShrink(context.Background()), fakeInput()); err != nil {
		t.Fatal(err)
	}
	if got := free(dev); got != loaded {
		t.Fatalf("free after a shrinking run = %d, want %d", got, loaded)
	}
	if _, err := s.Run(context.Background(), fakeInput()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := free(dev); got != 1<<30 || dev.Sessions() != 0 {
		t.Fatalf("after Close: free %d of %d, %d sessions", got, int64(1<<30), dev.Sessions())
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("warnings:\n%s", logs.String())
	}
}

// TestFakeDeviceOutOfMemoryOnLoad fills a fake device and loads one model
// more: the error is a *DeviceError naming the device and the numbers,
// nothing runs on the CPU, and the device stays usable.
func TestFakeDeviceOutOfMemoryOnLoad(t *testing.T) {
	path, size := fakeModel(t)
	// Room for one model and its runs' activations (a quarter of the
	// input: 4 KiB), not for two models.
	dev := &inference.FakeDevice{Total: size * 3 / 2, RunFactor: 0.25}
	var logs logBuffer
	rt := fakeRuntime(t, &logs, false, dev)
	first, err := rt.NewSession(path, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = rt.NewSession(path, inference.SessionOptions{})
	var derr *inference.DeviceError
	if !errors.As(err, &derr) || !errors.Is(err, inference.ErrOutOfMemory) {
		t.Fatalf("err = %v, want a *DeviceError wrapping ErrOutOfMemory", err)
	}
	if errors.Is(err, inference.ErrNoProvider) || errors.Is(err, inference.ErrDevice) {
		t.Errorf("an out-of-memory load must not read as a broken model: %v", err)
	}
	if derr.Op != "load" || derr.Device != "FakeGPU:0" || derr.Provider != inference.FakeGPU || derr.Model != path ||
		derr.Total != dev.Total || derr.Free != dev.Total-size || derr.Requested != size {
		t.Errorf("DeviceError %+v", derr)
	}
	for _, want := range []string{"FakeGPU:0", "out of memory", "requested " + inference.FormatBytes(size), inference.FormatBytes(dev.Total-size) + " free of " + inference.FormatBytes(dev.Total)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message lacks %q: %v", want, err)
		}
	}
	noSourcePaths(t, "error", err.Error())
	if free(dev) != dev.Total-size || dev.Sessions() != 1 {
		t.Errorf("the failed load changed the device: free %d, %d sessions", free(dev), dev.Sessions())
	}
	if _, err := first.Run(context.Background(), fakeInput()); err != nil {
		t.Fatalf("the device is unusable after an out-of-memory load: %v", err)
	}
	// On demand, on a device with room.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	dev.FailLoads(1)
	if _, err := rt.NewSession(path, inference.SessionOptions{}); !errors.Is(err, inference.ErrOutOfMemory) {
		t.Fatalf("FailLoads: err = %v", err)
	}
	s, err := rt.NewSession(path, inference.SessionOptions{})
	if err != nil {
		t.Fatalf("the load after an injected failure: %v", err)
	}
	defer s.Close()
	if dev.OutOfMemory() != 2 {
		t.Errorf("%d out-of-memory errors, want 2", dev.OutOfMemory())
	}
}

// TestFakeDeviceOutOfMemoryOnRun fails one run: the error names the
// device, the session stays on it, and the next run works and gives back
// what the failed one left in the arena.
func TestFakeDeviceOutOfMemoryOnRun(t *testing.T) {
	path, size := fakeModel(t)
	dev := &inference.FakeDevice{Total: 1 << 30}
	var logs logBuffer
	rt := fakeRuntime(t, &logs, false, dev)
	s, err := rt.NewSession(path, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Run(context.Background(), fakeInput()); err != nil {
		t.Fatal(err)
	}
	dev.FailRuns(1)
	_, err = s.Run(context.Background(), fakeInput())
	var derr *inference.DeviceError
	if !errors.As(err, &derr) || !errors.Is(err, inference.ErrOutOfMemory) || derr.Op != "run" || derr.Device != "FakeGPU:0" {
		t.Fatalf("err = %v, want an out-of-memory *DeviceError of the run", err)
	}
	noSourcePaths(t, "error", err.Error())
	if s.Device() != "FakeGPU:0" || s.Fallback() != nil {
		t.Fatalf("the session moved to %s (fallback %v) without being allowed to", s.Device(), s.Fallback())
	}
	if _, err := s.Run(context.Background(), fakeInput()); err != nil {
		t.Fatalf("the run after an out-of-memory run: %v", err)
	}
	if got, want := free(dev), dev.Total-size; got != want {
		t.Fatalf("free after the run that follows an out-of-memory error = %d, want %d (arena shrunk)", got, want)
	}
	if err := s.FallBackToCPU(err); !errors.Is(err, inference.ErrFallbackNotAllowed) {
		t.Fatalf("FallBackToCPU without the fallback allowed: %v", err)
	}
	if _, err := rt.NewFallbackSession(path, inference.SessionOptions{}, err); !errors.Is(err, inference.ErrFallbackNotAllowed) {
		t.Fatalf("NewFallbackSession without the fallback allowed: %v", err)
	}
}

// TestCPUFallbackOnFakeDevice allows the CPU fallback: a load and a run
// that fail on the device move the session to the CPU, which the session
// reports, and the device's memory comes back. NoFallback leaves the
// decision to the caller (FallBackToCPU).
func TestCPUFallbackOnFakeDevice(t *testing.T) {
	path, _ := fakeModel(t)
	dev := &inference.FakeDevice{Total: 1 << 30}
	var logs logBuffer
	rt := fakeRuntime(t, &logs, true, dev)
	if !rt.AllowCPUFallback() || rt.CPU() == nil {
		t.Fatal("CPU fallback not allowed")
	}

	dev.FailLoads(1)
	s, err := rt.NewSession(path, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Provider() != inference.CPU || s.Device() != "CPU" || !errors.Is(s.Fallback(), inference.ErrOutOfMemory) {
		t.Fatalf("session on %s/%s, fallback %v; want the CPU and the reason", s.Provider(), s.Device(), s.Fallback())
	}
	if dev.Sessions() != 0 || free(dev) != dev.Total {
		t.Fatalf("device keeps %d sessions, %d bytes", dev.Sessions(), dev.Total-free(dev))
	}

	s2, err := rt.NewSession(path, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Device() != "FakeGPU:0" {
		t.Fatalf("second session on %s", s2.Device())
	}
	dev.FailRuns(1)
	if _, err := s2.Run(context.Background(), fakeInput()); err != nil {
		t.Fatalf("run with the fallback allowed: %v", err)
	}
	if s2.Device() != "CPU" || !errors.Is(s2.Fallback(), inference.ErrOutOfMemory) {
		t.Fatalf("after a failed run: on %s, fallback %v", s2.Device(), s2.Fallback())
	}
	if dev.Sessions() != 0 || free(dev) != dev.Total {
		t.Fatalf("the device session was not released: %d sessions, %d bytes", dev.Sessions(), dev.Total-free(dev))
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Error("a fallback must be logged as a warning")
	}
	noSourcePaths(t, "log", logs.String())

	// NoFallback: the caller first frees memory and retries, then falls
	// back itself.
	dev.FailLoads(1)
	_, err = rt.NewSession(path, inference.SessionOptions{NoFallback: true})
	if !errors.Is(err, inference.ErrOutOfMemory) {
		t.Fatalf("NoFallback load: %v", err)
	}
	s4, err := rt.NewFallbackSession(path, inference.SessionOptions{NoFallback: true}, err)
	if err != nil {
		t.Fatal(err)
	}
	defer s4.Close()
	if s4.Device() != "CPU" || !errors.Is(s4.Fallback(), inference.ErrOutOfMemory) {
		t.Fatalf("NewFallbackSession: on %s, fallback %v", s4.Device(), s4.Fallback())
	}
	s3, err := rt.NewSession(path, inference.SessionOptions{NoFallback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	dev.FailRuns(1)
	_, err = s3.Run(context.Background(), fakeInput())
	if !errors.Is(err, inference.ErrOutOfMemory) || s3.Device() != "FakeGPU:0" {
		t.Fatalf("NoFallback run: %v on %s", err, s3.Device())
	}
	if err := s3.FallBackToCPU(err); err != nil {
		t.Fatal(err)
	}
	if _, err := s3.Run(context.Background(), fakeInput()); err != nil || s3.Device() != "CPU" || s3.Fallback() == nil {
		t.Fatalf("after FallBackToCPU: %v on %s", err, s3.Device())
	}
	if free(dev) != dev.Total {
		t.Fatalf("device holds %d bytes", dev.Total-free(dev))
	}
}

// TestTwoFakeDevices places sessions on two fake devices, each with its
// own memory: a model that does not fit on one is refused there and fits
// on the other.
func TestTwoFakeDevices(t *testing.T) {
	path, size := fakeModel(t)
	// Room for one model and its activations (4 KiB) each.
	d0 := &inference.FakeDevice{Total: size * 3 / 2, RunFactor: 0.25}
	d1 := &inference.FakeDevice{Total: size * 3 / 2, RunFactor: 0.25}
	var logs logBuffer
	rt := fakeRuntime(t, &logs, false, d0, d1)
	if names := []string{rt.Devices()[0].Name(), rt.Devices()[1].Name()}; names[0] != "FakeGPU:0" || names[1] != "FakeGPU:1" {
		t.Fatalf("devices %v", names)
	}
	a, err := rt.NewSession(path, inference.SessionOptions{}) // the default: the first device
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.NewSession(path, inference.SessionOptions{Device: "FakeGPU:0"}); !errors.Is(err, inference.ErrOutOfMemory) || !strings.Contains(err.Error(), "FakeGPU:0") {
		t.Fatalf("second model on FakeGPU:0: %v", err)
	}
	b, err := rt.NewSession(path, inference.SessionOptions{Device: "FakeGPU:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Device() != "FakeGPU:0" || b.Device() != "FakeGPU:1" {
		t.Fatalf("placed on %s and %s", a.Device(), b.Device())
	}
	if free(d0) != d0.Total-size || free(d1) != d1.Total-size {
		t.Fatalf("free %d and %d, want %d each", free(d0), free(d1), d0.Total-size)
	}
	if _, err := b.Run(context.Background(), fakeInput()); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if free(d0) != d0.Total || free(d1) != d1.Total-size-activations/16 {
		t.Fatalf("after closing the first: free %d and %d", free(d0), free(d1))
	}
	// The CPU is neither listed nor allowed as fallback.
	if _, err := rt.NewSession(path, inference.SessionOptions{Device: "CPU"}); !errors.Is(err, inference.ErrUnknownDevice) {
		t.Fatalf("placement on the CPU: %v", err)
	}
}

// TestConcurrentFallback fails runs on a fake device while others are in
// flight, with the CPU fallback allowed: every run succeeds, the session
// ends on the CPU and the device gets all its memory back.
func TestConcurrentFallback(t *testing.T) {
	path, _ := fakeModel(t)
	dev := &inference.FakeDevice{Total: 1 << 30}
	var logs logBuffer
	rt := fakeRuntime(t, &logs, true, dev)
	s, err := rt.NewSession(path, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dev.FailRuns(3)
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			_, err := s.Run(context.Background(), fakeInput())
			errs <- err
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if s.Device() != "CPU" || free(dev) != dev.Total || dev.Sessions() != 0 {
		t.Fatalf("on %s; device keeps %d bytes, %d sessions", s.Device(), dev.Total-free(dev), dev.Sessions())
	}
	if n := strings.Count(logs.String(), "model moved to the CPU"); n != 1 {
		t.Fatalf("%d moves logged, want 1", n)
	}
}
