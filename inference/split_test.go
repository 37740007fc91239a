package inference_test

import (
	"context"
	"errors"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
)

// smallViT is the CLIP image tower's architecture, small enough for tests
// but with weights above the sharing threshold (64 KiB).
func smallViT() modelgen.ViT {
	return modelgen.ViT{ImageSize: 64, Patch: 16, Width: 128, Layers: 2, Heads: 4, MLP: 512, Dim: 64, Seed: 7}
}

// TestSplitBatch runs batches on a session opened with SplitBatch (3
// threads: some batches run whole, some split, 25 rows into uneven
// parts) and on a plain session of the same model, and wants the same
// embeddings, bit for bit: each row is computed alone in either case.
func TestSplitBatch(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("shared weights are Linux-only")
	}
	rt := testenv.Runtime(t)
	path := writeModel(t, smallViT().Model())
	split, err := rt.NewSession(path, inference.SessionOptions{IntraOpThreads: 3, SplitBatch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer split.Close()
	plain, err := rt.NewSession(path, inference.SessionOptions{IntraOpThreads: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if got := split.SplitRuns(); got != 3 {
		t.Fatalf("SplitRuns = %d, want 3", got)
	}
	if got := plain.SplitRuns(); got != 1 {
		t.Fatalf("plain session: SplitRuns = %d, want 1", got)
	}
	per := 3 * 64 * 64
	for _, n := range []int{1, 2, 3, 4, 6, 7, 25} { // 3, 6: even parts; 25: 9+8+8
		x := inference.F32(ramp(n*per, 3), int64(n), 3, 64, 64)
		want, err := plain.Run(context.Background(), x)
		if err != nil {
			t.Fatal(err)
		}
		got, err := split.Run(context.Background(), x)
		if err != nil {
			t.Fatalf("batch %d: %v", n, err)
		}
		if len(got[0].Shape) != 2 || got[0].Shape[0] != int64(n) || got[0].Shape[1] != 64 {
			t.Fatalf("batch %d: output shape %v", n, got[0].Shape)
		}
		for i := range want[0].Float32 {
			if got[0].Float32[i] != want[0].Float32[i] {
				t.Fatalf("batch %d: value %d is %v split, %v whole", n, i, got[0].Float32[i], want[0].Float32[i])
			}
		}
	}
}

// TestSplitBatchCancel cancels split runs at moments during them: each
// ends with its outputs or ErrCanceled, and the session keeps working.
func TestSplitBatchCancel(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("shared weights are Linux-only")
	}
	rt := testenv.Runtime(t)
	s, err := rt.NewSession(writeModel(t, smallViT().Model()), inference.SessionOptions{IntraOpThreads: 2, SplitBatch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// 256 rows take tens of milliseconds: the cancels land before and
	// during the runs.
	x := inference.F32(ramp(256*3*64*64, 3), 256, 3, 64, 64)
	canceled := 0
	for i := range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		stop := time.AfterFunc(time.Duration(i)*time.Millisecond/2, cancel)
		_, err := s.Run(ctx, x)
		stop.Stop()
		cancel()
		switch {
		case errors.Is(err, inference.ErrCanceled):
			canceled++
		case err != nil:
			t.Fatalf("run canceled after %d ms: %v", i, err)
		}
	}
	t.Logf("%d of 20 runs canceled", canceled)
	if canceled == 0 {
		t.Error("no run was canceled")
	}
	if _, err := s.Run(context.Background(), x); err != nil {
		t.Fatalf("after canceled runs: %v", err)
	}
}

// TestSplitBatchSharesWeights: the twin shares the session's weights, so
// a session opened with SplitBatch takes about the resident memory of a
// plain one, not twice it.
func TestSplitBatchSharesWeights(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("shared weights are Linux-only")
	}
	rt := testenv.Runtime(t)
	vit := modelgen.ViT{ImageSize: 64, Patch: 16, Width: 512, Layers: 4, Heads: 8, MLP: 2048, Dim: 64, Seed: 9}
	path := writeModel(t, vit.Model())
	weights := int64(vit.Params()) * 4
	grow := func(o inference.SessionOptions) int64 {
		debug.FreeOSMemory()
		inference.ReleaseMemory()
		before := rss(t)
		s, err := rt.NewSession(path, o)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		debug.FreeOSMemory()
		inference.ReleaseMemory()
		return rss(t) - before
	}
	plain := grow(inference.SessionOptions{IntraOpThreads: 2})
	split := grow(inference.SessionOptions{IntraOpThreads: 2, SplitBatch: true})
	t.Logf("weights %d MiB; resident growth: plain session %d MiB, with its twin %d MiB", weights>>20, plain>>20, split>>20)
	if split > plain+weights/4 {
		t.Errorf("a session with its twin grew RSS by %d MiB, a plain one by %d MiB: the weights (%d MiB) are not shared", split>>20, plain>>20, weights>>20)
	}
}

// TestSplitBatchFixedBatch: a model whose batch dimension is fixed runs
// whole, without a twin.
func TestSplitBatchFixedBatch(t *testing.T) {
	rt := testenv.Runtime(t)
	s, err := rt.NewSession(writeModel(t, modelgen.ArcFace{Batch: 1}.Model()), inference.SessionOptions{IntraOpThreads: 2, SplitBatch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.SplitRuns(); got != 1 {
		t.Errorf("fixed batch: SplitRuns = %d, want 1", got)
	}
	if _, err := s.Run(context.Background(), inference.F32(ramp(3*112*112, 1), 1, 3, 112, 112)); err != nil {
		t.Fatal(err)
	}
}
