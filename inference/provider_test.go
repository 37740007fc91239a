package inference_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
)

// logBuffer collects a logger's records as text.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger(b *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// cpuOnlyBuild skips tests that need this CPU-only ONNX Runtime build when
// the test runs on a GPU host (MLSERVE_EXPECT_GPU).
func cpuOnlyBuild(t *testing.T) {
	t.Helper()
	if os.Getenv("MLSERVE_EXPECT_GPU") != "" {
		t.Skip("this test needs the CPU-only ONNX Runtime build")
	}
}

// TestDefaultProvidersOnCPUBuild starts with the default provider list
// (CUDA, OpenVINO, CPU) on the CPU-only build: the runtime starts on the
// CPU, the log says that CUDA and OpenVINO are not in this build (info),
// and has no warning and no path of ONNX Runtime's sources.
func TestDefaultProvidersOnCPUBuild(t *testing.T) {
	cpuOnlyBuild(t)
	var logs logBuffer
	rt, err := inference.New(inference.Options{
		LibraryPath: testenv.ORTLibrary(t),
		Providers:   []string{inference.CUDA, inference.OpenVINO, inference.CPU},
	}, newLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	out := logs.String()
	if strings.Contains(out, "level=WARN") || strings.Contains(out, "level=ERROR") {
		t.Errorf("warnings on a CPU-only start:\n%s", out)
	}
	for _, bad := range []string{"onnxruntime_src", ".cc:", "fall back"} {
		if strings.Contains(out, bad) {
			t.Errorf("log contains %q:\n%s", bad, out)
		}
	}
	for _, p := range []string{"CUDA", "OpenVINO"} {
		if !strings.Contains(out, `level=INFO msg="execution provider not in this ONNX Runtime build" provider=`+p) {
			t.Errorf("no info line for %s:\n%s", p, out)
		}
	}
	if got := rt.Providers(); len(got) != 1 || got[0] != inference.CPU {
		t.Errorf("Providers = %v, want [CPU]", got)
	}
	if d := rt.Devices(); len(d) != 1 || d[0].Name() != "CPU" || !d[0].Host() {
		t.Errorf("Devices = %v", d)
	}
	st := rt.ProviderStatus()
	if st[inference.CPU] != nil || !errors.Is(st[inference.CUDA], inference.ErrNotBuilt) || !errors.Is(st[inference.OpenVINO], inference.ErrNotBuilt) {
		t.Errorf("ProviderStatus = %v", st)
	}
	s, err := rt.NewSession(writeModel(t, modelgen.Busy{Steps: 1, Size: 8}.Model()), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Provider() != inference.CPU || s.Device() != "CPU" || s.Fallback() != nil {
		t.Errorf("session on %s/%s, fallback %v", s.Provider(), s.Device(), s.Fallback())
	}
}

// TestStartRefusedWithoutUsableProvider lists only GPU providers on the
// CPU-only build: New refuses, naming each provider and what it lacks.
// With the CPU fallback allowed the runtime starts on the CPU and warns.
func TestStartRefusedWithoutUsableProvider(t *testing.T) {
	cpuOnlyBuild(t)
	lib := testenv.ORTLibrary(t)
	for _, providers := range [][]string{{inference.CUDA}, {inference.CUDA, inference.OpenVINO}, {inference.TensorRT}} {
		var logs logBuffer
		_, err := inference.New(inference.Options{LibraryPath: lib, Providers: providers}, newLogger(&logs))
		if !errors.Is(err, inference.ErrNoUsableProvider) {
			t.Fatalf("%v: err = %v, want ErrNoUsableProvider", providers, err)
		}
		for _, p := range providers {
			if !strings.Contains(err.Error(), p+": not in this ONNX Runtime build (libonnxruntime_providers_") {
				t.Errorf("%v: error does not say what %s lacks: %v", providers, p, err)
			}
		}
		if strings.Contains(err.Error(), "onnxruntime_src") {
			t.Errorf("error has ONNX Runtime's source paths: %v", err)
		}
	}

	var logs logBuffer
	rt, err := inference.New(inference.Options{LibraryPath: lib, Providers: []string{inference.CUDA}, AllowCPUFallback: true}, newLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if d := rt.Devices(); len(d) != 1 || d[0].Name() != "CPU" {
		t.Fatalf("Devices = %v, want [CPU]", d)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "every model runs on the CPU") {
		t.Errorf("no warning for a start on the CPU fallback:\n%s", logs.String())
	}
}

// TestProviderOptionsRejected gives New options ONNX Runtime does not
// know.
func TestProviderOptionsRejected(t *testing.T) {
	lib := testenv.ORTLibrary(t)
	for name, o := range map[string]inference.Options{
		"provider":     {Providers: []string{"TPU"}},
		"conv search":  {CUDA: inference.CUDAOptions{ConvAlgoSearch: "FASTEST"}},
		"arena":        {CUDA: inference.CUDAOptions{ArenaExtendStrategy: "kDouble"}},
		"mem limit":    {CUDA: inference.CUDAOptions{MemLimit: -1}},
		"openvino":     {OpenVINO: inference.OpenVINOOptions{Device: "TPU"}},
		"precision":    {OpenVINOPrecision: "INT4"},
		"device ids":   {DeviceIDs: []int{0, 0}},
		"negative id":  {DeviceIDs: []int{-1}},
		"fake without": {Providers: []string{inference.FakeGPU}},
		"fake empty":   {Providers: []string{inference.FakeGPU}, FakeDevices: []*inference.FakeDevice{{}}},
	} {
		o.LibraryPath = lib
		if _, err := inference.New(o, nil); !errors.Is(err, inference.ErrOptions) {
			t.Errorf("%s: err = %v, want ErrOptions", name, err)
		}
	}
	// Spellings are not case-sensitive.
	rt, err := inference.New(inference.Options{LibraryPath: lib, Providers: []string{"cpu"},
		CUDA: inference.CUDAOptions{ConvAlgoSearch: "heuristic", ArenaExtendStrategy: "ksameasrequested"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = rt.Close()
}

// TestUnknownDevice places a session on a device the runtime does not
// have.
func TestUnknownDevice(t *testing.T) {
	rt := testenv.Runtime(t)
	_, err := rt.NewSession(writeModel(t, modelgen.Busy{Steps: 1, Size: 8}.Model()), inference.SessionOptions{Device: "CUDA:7"})
	if !errors.Is(err, inference.ErrUnknownDevice) || !strings.Contains(err.Error(), "CUDA:7") {
		t.Fatalf("err = %v, want ErrUnknownDevice", err)
	}
}

// TestShrinkOnCPUArena runs with WithShrink on the CPU, whose arena is on
// by default: ONNX Runtime accepts the run option ("cpu:0") and the run
// gives the right result. With the arena off no option is set (ONNX
// Runtime would refuse it).
func TestShrinkOnCPUArena(t *testing.T) {
	lib := testenv.ORTLibrary(t)
	path := writeModel(t, modelgen.Busy{Steps: 2, Size: 16}.Model())
	in := inference.F32(ramp(256, 1), 16, 16)
	var want []float32
	for _, arenaOff := range []bool{false, true} {
		rt, err := inference.New(inference.Options{LibraryPath: lib, DisableArena: arenaOff}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := rt.NewSession(path, inference.SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ctx := range []context.Context{context.Background(), inference.WithShrink(context.Background())} {
			out, err := s.Run(ctx, in)
			if err != nil {
				t.Fatalf("arena off %v: %v", arenaOff, err)
			}
			if want == nil {
				want = out[0].Float32
			} else if !equalF32(out[0].Float32, want) {
				t.Fatalf("arena off %v: outputs differ", arenaOff)
			}
		}
		_ = rt.Close()
	}
}

func equalF32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestThroughputThreads: Options.Throughput makes CPU sessions
// single-threaded unless IntraOpThreads is set; without it they get
// DefaultIntraOpThreads.
func TestThroughputThreads(t *testing.T) {
	lib := testenv.ORTLibrary(t)
	for _, c := range []struct {
		opts inference.Options
		want int
	}{
		{inference.Options{}, inference.DefaultIntraOpThreads(runtime.NumCPU())},
		{inference.Options{Throughput: true}, inference.ThroughputIntraOpThreads(runtime.NumCPU())},
		{inference.Options{Throughput: true, IntraOpThreads: 3}, 3},
		{inference.Options{IntraOpThreads: 3}, 3},
	} {
		c.opts.LibraryPath = lib
		rt, err := inference.New(c.opts, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if intra, _ := rt.Threads(inference.CPU); intra != c.want {
			t.Errorf("Throughput %v, IntraOpThreads %d: %d intra-op threads on the CPU, want %d", c.opts.Throughput, c.opts.IntraOpThreads, intra, c.want)
		}
		rt.Close()
	}
	for cores, want := range map[int]int{1: 1, 2: 1, 8: 1, 9: 2, 16: 2, 64: 8} {
		if got := inference.ThroughputIntraOpThreads(cores); got != want {
			t.Errorf("ThroughputIntraOpThreads(%d) = %d, want %d", cores, got, want)
		}
	}
}
