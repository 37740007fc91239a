package inference_test

import (
	"context"
	"errors"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/onnx"
)

func writeModel(t testing.TB, m onnx.Model) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "model.onnx")
	if err := m.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func norm(v []float32) float64 {
	s := 0.0
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func ramp(n int, scale float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(i%97)/97*scale - scale/2
	}
	return out
}

func TestCLIPVisualGraph(t *testing.T) {
	rt := testenv.Runtime(t)
	s, err := rt.NewSession(writeModel(t, modelgen.CLIPVisual{Size: 224, Dim: 512}.Model()), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Provider(); got != inference.CPU {
		t.Errorf("provider = %q, want CPU", got)
	}
	in := s.Inputs()
	if len(in) != 1 || in[0].Name != "image" || in[0].Type != onnx.Float || !in[0].Dims[0].Dynamic() || in[0].Dims[2].Value != 224 {
		t.Fatalf("inputs = %v", in)
	}
	if out := s.Outputs(); len(out) != 1 || out[0].Name != "embedding" {
		t.Fatalf("outputs = %v", out)
	}
	// Batch sizes 1, 3 and 2 on one session.
	for _, n := range []int{1, 3, 2} {
		data := ramp(n*3*224*224, 4)
		res, err := s.Run(context.Background(), inference.F32(data, int64(n), 3, 224, 224))
		if err != nil {
			t.Fatalf("batch %d: %v", n, err)
		}
		if got := res[0].Shape; len(got) != 2 || got[0] != int64(n) || got[1] != 512 {
			t.Fatalf("batch %d: output shape %v", n, got)
		}
		if d := norm(res[0].Float32[:512]); math.Abs(d-1) > 1e-5 {
			t.Errorf("embedding norm %v, want 1", d)
		}
	}
	// The output depends on the input: swapping two channels changes it.
	a := ramp(3*224*224, 4)
	b := append([]float32(nil), a...)
	copy(b[:224*224], a[224*224:2*224*224])
	copy(b[224*224:2*224*224], a[:224*224])
	ra, err := s.Run(context.Background(), inference.F32(a, 1, 3, 224, 224))
	if err != nil {
		t.Fatal(err)
	}
	rb, err := s.Run(context.Background(), inference.F32(b, 1, 3, 224, 224))
	if err != nil {
		t.Fatal(err)
	}
	dot := 0.0
	for i := range ra[0].Float32 {
		dot += float64(ra[0].Float32[i]) * float64(rb[0].Float32[i])
	}
	if dot > 0.999 {
		t.Errorf("channel swap left the embedding unchanged (cos %v)", dot)
	}
}

func TestCLIPTextualGraphs(t *testing.T) {
	rt := testenv.Runtime(t)
	for _, mclip := range []bool{false, true} {
		t.Run("mclip="+strconv.FormatBool(mclip), func(t *testing.T) {
			s, err := rt.NewSession(writeModel(t, modelgen.CLIPTextual{Context: 77, Vocab: 49408, Dim: 512, MCLIP: mclip}.Model()), inference.SessionOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ids := make([]int32, 2*77)
			for i := range ids {
				ids[i] = int32(i * 131 % 49408)
			}
			inputs := []inference.Tensor{inference.I32(ids, 2, 77)}
			wantNames := []string{"text"}
			if mclip {
				mask := make([]int32, 2*77)
				for i := range mask {
					if i%77 < 10 {
						mask[i] = 1
					}
				}
				inputs = append(inputs, inference.I32(mask, 2, 77))
				wantNames = []string{"input_ids", "attention_mask"}
			}
			if got := s.Info().InputNames(); strings.Join(got, ",") != strings.Join(wantNames, ",") {
				t.Fatalf("inputs %v, want %v", got, wantNames)
			}
			res, err := s.Run(context.Background(), inputs...)
			if err != nil {
				t.Fatal(err)
			}
			if sh := res[0].Shape; sh[0] != 2 || sh[1] != 512 {
				t.Fatalf("shape %v", sh)
			}
			if d := norm(res[0].Float32[:512]); math.Abs(d-1) > 1e-5 {
				t.Errorf("norm %v", d)
			}
			// A token id beyond the vocabulary fails, as with the real model.
			ids[5] = 49408
			if _, err := s.Run(context.Background(), inputs...); err == nil {
				t.Error("out-of-vocabulary id ran without error")
			}
		})
	}
}

func TestRealFaceFeatureModel(t *testing.T) {
	rt := testenv.Runtime(t)
	s, err := rt.NewSession(testenv.TestData(t, "models/faceplugin/fr_feature.onnx"), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in := s.Inputs()[0]
	if in.Name != "input" || len(in.Dims) != 4 || in.Dims[0].Value != 1 || in.Dims[2].Value != 112 {
		t.Fatalf("input = %v", in)
	}
	res, err := s.Run(context.Background(), inference.F32(ramp(3*112*112, 2), 1, 3, 112, 112))
	if err != nil {
		t.Fatal(err)
	}
	if sh := res[0].Shape; len(sh) != 2 || sh[0] != 1 || sh[1] != 512 {
		t.Fatalf("output shape %v", sh)
	}
	// A fixed batch of 1 refuses a batch of 2 with a clear error.
	_, err = s.Run(context.Background(), inference.F32(ramp(2*3*112*112, 2), 2, 3, 112, 112))
	if !errors.Is(err, inference.ErrInput) {
		t.Errorf("batch 2 on a batch-1 model: err = %v, want ErrInput", err)
	}
}

func TestInputValidation(t *testing.T) {
	rt := testenv.Runtime(t)
	s, err := rt.NewSession(writeModel(t, modelgen.CLIPVisual{Size: 224, Dim: 8}.Model()), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	cases := map[string][]inference.Tensor{
		"no inputs":     nil,
		"wrong dtype":   {inference.I32(make([]int32, 3*224*224), 1, 3, 224, 224)},
		"wrong rank":    {inference.F32(make([]float32, 3*224*224), 3, 224, 224)},
		"wrong size":    {inference.F32(make([]float32, 3*225*225), 1, 3, 225, 225)},
		"short data":    {inference.F32(make([]float32, 10), 1, 3, 224, 224)},
		"two for one":   {inference.F32(make([]float32, 3*224*224), 1, 3, 224, 224), inference.F32(make([]float32, 1), 1)},
		"negative dims": {inference.F32(make([]float32, 0), -1, 3, 224, 224)},
	}
	for name, in := range cases {
		if _, err := s.Run(ctx, in...); !errors.Is(err, inference.ErrInput) {
			t.Errorf("%s: err = %v, want ErrInput", name, err)
		}
	}
}

func TestInvalidModelFile(t *testing.T) {
	rt := testenv.Runtime(t)
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"empty":     {},
		"garbage":   []byte("this is not a protobuf \xff\xff\xff"),
		"truncated": modelgen.CLIPVisual{Size: 224, Dim: 8}.Model().Marshal()[:5000],
	} {
		p := filepath.Join(dir, name+".onnx")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := rt.NewSession(p, inference.SessionOptions{}); !errors.Is(err, onnx.ErrInvalid) {
			t.Errorf("%s: err = %v, want onnx.ErrInvalid", name, err)
		}
	}
	if _, err := rt.NewSession(filepath.Join(dir, "missing.onnx"), inference.SessionOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
}

// TestProviderFallback asks for CUDA and OpenVINO on this CPU-only build of
// ONNX Runtime: the session must still load, on CPU, and say so.
func TestProviderFallback(t *testing.T) {
	rt := testenv.Runtime(t)
	status := rt.ProviderStatus()
	if status[inference.CPU] != nil {
		t.Fatalf("CPU unavailable: %v", status[inference.CPU])
	}
	s, err := rt.NewSession(writeModel(t, modelgen.CLIPVisual{Size: 224, Dim: 8}.Model()), inference.SessionOptions{
		Providers: []string{inference.CUDA, inference.OpenVINO},
		CacheDir:  t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if os.Getenv("MLSERVE_EXPECT_GPU") == "" {
		if s.Provider() != inference.CPU {
			t.Fatalf("provider = %q on a CPU-only library, want CPU", s.Provider())
		}
		if status[inference.CUDA] == nil {
			t.Errorf("CUDA reported available on a CPU-only library")
		}
	} else if s.Provider() != inference.CUDA {
		t.Fatalf("provider = %q, want CUDA on a GPU host", s.Provider())
	}
	if _, err := s.Run(context.Background(), inference.F32(make([]float32, 3*224*224), 1, 3, 224, 224)); err != nil {
		t.Fatal(err)
	}
}

// TestCancelRun stops a run of several seconds through its context and
// expects Run to return promptly with ErrCanceled, after the C call ended.
func TestCancelRun(t *testing.T) {
	rt := testenv.Runtime(t)
	const size = 512
	s, err := rt.NewSession(writeModel(t, modelgen.Busy{Steps: 400, Size: size}.Model()), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := inference.F32(ramp(size*size, 1), size, size)

	// Measure one uncancelled step count to be sure the graph is slow
	// enough for the test to mean something.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Run(ctx, x)
	took := time.Since(start)
	if !errors.Is(err, inference.ErrCanceled) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrCanceled wrapping DeadlineExceeded (run took %v)", err, took)
	}
	if took > 5*time.Second {
		t.Errorf("cancelled run returned after %v", took)
	}
	// An already-cancelled context does not start a run.
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := s.Run(done, x); !errors.Is(err, inference.ErrCanceled) {
		t.Errorf("err = %v", err)
	}
	// The session still works after a cancellation.
	small, err := rt.NewSession(writeModel(t, modelgen.Busy{Steps: 1, Size: 8}.Model()), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	if _, err := small.Run(context.Background(), inference.F32(make([]float32, 64), 8, 8)); err != nil {
		t.Fatal(err)
	}
}

func TestRunAfterClose(t *testing.T) {
	rt := testenv.Runtime(t)
	s, err := rt.NewSession(writeModel(t, modelgen.Busy{Steps: 1, Size: 8}.Model()), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Run(context.Background(), inference.F32(make([]float32, 64), 8, 8)); !errors.Is(err, inference.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

func TestSecondRuntimeRefused(t *testing.T) {
	testenv.Runtime(t)
	_, err := inference.New(inference.Options{LibraryPath: testenv.ORTLibrary(t)}, slog.Default())
	if !errors.Is(err, inference.ErrRuntimeExists) {
		t.Fatalf("err = %v, want ErrRuntimeExists", err)
	}
}

// rss reads the resident set size from /proc.
func rss(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// TestNoLeakAcrossRuns runs a session 10,000 times and checks that
// nothing accumulates: neither in the C heap (every ONNX Runtime value of
// every run released: one forgotten value of ~100 bytes per run would be
// about 1 MB), nor in the resident set (one leaked 16 KiB output per run
// would be 160 MiB).
func TestNoLeakAcrossRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	rt := testenv.Runtime(t)
	s, err := rt.NewSession(writeModel(t, modelgen.CLIPVisual{Size: 112, Dim: 4096}.Model()), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := inference.F32(ramp(3*112*112, 2), 1, 3, 112, 112)
	run := func(n int) (heap, resident int64) {
		for i := 0; i < n; i++ {
			if _, err := s.Run(context.Background(), x); err != nil {
				t.Fatal(err)
			}
		}
		debug.FreeOSMemory()
		inference.ReleaseMemory()
		return inference.CHeapBytes(), rss(t)
	}
	run(1000) // warm up arenas and Go's heap
	heap0, rss0 := run(1)
	heap1, rss1 := run(10000)
	t.Logf("C heap %d KiB → %d KiB, RSS %d MiB → %d MiB over 10000 runs", heap0>>10, heap1>>10, rss0>>20, rss1>>20)
	if heap0 >= 0 && heap1-heap0 > 256<<10 {
		t.Errorf("C heap grew by %d KiB over 10000 runs", (heap1-heap0)>>10)
	}
	if grow := rss1 - rss0; grow > 32<<20 {
		t.Errorf("RSS grew by %d KiB over 10000 runs", grow>>10)
	}
}

// TestCancelAtRunBoundary cancels thousands of short runs at random
// moments around their end, from several goroutines at once, so that the
// context's callback (which sets ONNX Runtime's terminate flag) often fires
// while Run is finishing. Run must never free the run options under that
// callback: under -race, a callback still touching the options when Run
// destroys them is reported as a data race (and without -race it is a
// use-after-free in C). Every run must end with its outputs or with
// ErrCanceled, and the session must keep working.
func TestCancelAtRunBoundary(t *testing.T) {
	rt := testenv.Runtime(t)
	s, err := rt.NewSession(writeModel(t, modelgen.Busy{Steps: 2, Size: 32}.Model()), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := inference.F32(ramp(32*32, 1), 32, 32)
	// How long one run takes here, to aim the cancellations at its end.
	start := time.Now()
	for range 50 {
		if _, err := s.Run(context.Background(), x); err != nil {
			t.Fatal(err)
		}
	}
	per := time.Since(start) / 50
	const goroutines, runs = 4, 1000
	var wg sync.WaitGroup
	var canceled, finished atomic.Int64
	for g := range goroutines {
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(uint64(g), 1))
			for range runs {
				ctx, cancel := context.WithCancel(context.Background())
				timer := time.AfterFunc(time.Duration(r.Int64N(int64(2*per)+1)), cancel)
				_, err := s.Run(ctx, x)
				timer.Stop()
				cancel()
				switch {
				case err == nil:
					finished.Add(1)
				case errors.Is(err, inference.ErrCanceled):
					canceled.Add(1)
				default:
					t.Errorf("run: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("one run %v; %d finished, %d canceled", per, finished.Load(), canceled.Load())
	if _, err := s.Run(context.Background(), x); err != nil {
		t.Fatalf("session broken after cancellations: %v", err)
	}
}
