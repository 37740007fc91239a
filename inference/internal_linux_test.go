package inference

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
)

// ortLibrary is testenv.ORTLibrary for this package's own tests (testenv
// imports inference, so they cannot use it).
func ortLibrary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("MLSERVE_ORT_LIBRARY")
	if p == "" {
		dir := os.Getenv("MLSERVE_DEPS_DIR")
		if dir == "" {
			dir = filepath.Join("..", ".deps")
			if abs, err := filepath.Abs(dir); err == nil {
				dir = abs
			}
		}
		p = filepath.Join(dir, "onnxruntime", "libonnxruntime.so.1")
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI: required test dependency missing: ONNX Runtime library: %v", err)
		}
		t.Skipf("test dependency missing: ONNX Runtime library: %v", err)
	}
	return p
}

// TestRunConfigEntry sets the arena shrinkage run option through the
// OrtApi table and reads it back (GetRunConfigEntry, ONNX Runtime 1.23+):
// the table's indices and the RunOptions pointer are right.
func TestRunConfigEntry(t *testing.T) {
	rt, err := New(Options{LibraryPath: ortLibrary(t)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if rt.api.p == nil {
		t.Fatal("OrtApi table not found")
	}
	var major, minor int
	if _, err := fmtSscanf(ort.GetVersion(), &major, &minor); err != nil || major < 1 || (major == 1 && minor < 23) {
		t.Skipf("ONNX Runtime %s has no GetRunConfigEntry", ort.GetVersion())
	}
	ro, err := ort.NewRunOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ro.Destroy() }()
	if _, ok := rt.api.runConfig(ro, shrinkKey); ok {
		t.Fatal("entry set before AddRunConfigEntry")
	}
	if err := rt.api.addRunConfig(ro, shrinkKey, "gpu:3"); err != nil {
		t.Fatal(err)
	}
	if v, ok := rt.api.runConfig(ro, shrinkKey); !ok || v != "gpu:3" {
		t.Fatalf("read back %q %v, want gpu:3", v, ok)
	}
	// ONNX Runtime refuses an empty key: its error comes back.
	if err := rt.api.addRunConfig(ro, "", "1"); err == nil {
		t.Fatal("an empty key was accepted")
	} else {
		t.Log(err)
	}
}

// TestCUDADriverShim opens a stand-in for libcuda.so.1 (testdata/
// fakecuda.c, compiled here; no GPU is involved) and reads two devices'
// memory through the same cgo calls a GPU host makes; a missing driver is
// ErrMemoryUnknown.
func TestCUDADriverShim(t *testing.T) {
	missing := openCUDADriver(filepath.Join(t.TempDir(), "libcuda.so.1"))
	if _, err := missing.memory(0); !errors.Is(err, ErrMemoryUnknown) || !strings.Contains(err.Error(), "no CUDA driver library") {
		t.Fatalf("missing driver: %v", err)
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI: no C compiler (%s): %v", cc, err)
		}
		t.Skipf("no C compiler (%s): %v", cc, err)
	}
	lib := filepath.Join(t.TempDir(), "libcuda.so.1")
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", lib, filepath.Join("testdata", "fakecuda.c")).CombinedOutput(); err != nil {
		t.Fatalf("compile the driver stand-in: %v\n%s", err, out)
	}
	d := openCUDADriver(lib)
	if n, err := d.count(); err != nil || n != 2 {
		t.Fatalf("count = %d, %v", n, err)
	}
	if name, err := d.name(1); err != nil || name != "Fake GPU One" {
		t.Fatalf("name = %q, %v", name, err)
	}
	for i, want := range []Memory{{Total: 24 << 30, Free: 20 << 30}, {Total: 80 << 30, Free: 79 << 30}} {
		for range 2 { // the second read reuses the retained context
			m, err := d.memory(i)
			if err != nil || m != want {
				t.Fatalf("device %d: %+v, %v; want %+v", i, m, err, want)
			}
		}
	}
	if _, err := d.memory(5); !errors.Is(err, ErrMemoryUnknown) || !strings.Contains(err.Error(), "CUDA_ERROR_INVALID_DEVICE") {
		t.Fatalf("device 5: %v", err)
	}
	if len(d.ctxs) != 2 {
		t.Fatalf("%d contexts retained, want 2", len(d.ctxs))
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.memory(0); err == nil {
		t.Fatal("read after close")
	}
	dev := &Device{name: "CUDA:1", provider: CUDA, id: 1, cuda: openCUDADriver(lib)}
	defer dev.cuda.close()
	if m, err := dev.Memory(); err != nil || m.Total != 80<<30 || !dev.measured() {
		t.Fatalf("Device.Memory = %+v, %v", m, err)
	}
}

// fmtSscanf reads "major.minor" from a version string.
func fmtSscanf(v string, major, minor *int) (int, error) { return fmt.Sscanf(v, "%d.%d", major, minor) }
