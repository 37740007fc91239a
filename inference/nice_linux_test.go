package inference_test

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
)

// threadNices maps the process's thread ids to their nice values
// (/proc/self/task/*/stat, field 19).
func threadNices(t *testing.T) map[int]int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int{}
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/stat")
		if err != nil {
			continue // the thread ended
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from 3 on
		nice, _ := strconv.Atoi(f[16])
		tid, _ := strconv.Atoi(e.Name())
		out[tid] = nice
	}
	return out
}

// TestThreadNice: with ThreadNice the sessions' intra-op pool threads run
// at that nice value, and NiceThread lowers the calling thread's own.
func TestThreadNice(t *testing.T) {
	rt, err := inference.New(inference.Options{LibraryPath: testenv.ORTLibrary(t), Providers: []string{inference.CPU},
		IntraOpThreads: 3, ThreadNice: 7}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	before := threadNices(t)
	s, err := rt.NewSession(writeModel(t, modelgen.CLIPVisual{Size: 224, Dim: 8}.Model()), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in := inference.Tensor{Shape: []int64{1, 3, 224, 224}, Float32: make([]float32, 3*224*224)}
	if _, err := s.Run(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	// Each pool thread lowers its own priority when it starts, which on a
	// busy machine may come after the run (the caller can do a run's
	// work alone): wait for them a little.
	niced := 0
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		niced = 0
		for tid, n := range threadNices(t) {
			if _, old := before[tid]; !old && n == 7 {
				niced++
			}
		}
		if niced >= 2 || time.Now().After(deadline) {
			break
		}
	}
	if niced != 2 { // 3 intra-op threads: the caller and 2 of the pool's
		t.Fatalf("%d new threads at nice 7, want the pool's 2", niced)
	}

	got := make(chan int, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := inference.NiceThread(5); err != nil {
			t.Error(err)
		}
		b, _ := os.ReadFile("/proc/thread-self/stat")
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		n, _ := strconv.Atoi(f[16])
		got <- n
	}()
	if n := <-got; n != 5 {
		t.Fatalf("NiceThread(5): the thread runs at nice %d", n)
	}
}
