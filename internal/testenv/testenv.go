// Package testenv finds what tests need outside the Go code: the ONNX
// Runtime library, the pinned real models and photos that scripts/setup.sh
// installs, and the Redis and PostgreSQL servers that `make test` starts.
//
// A test whose dependency is missing skips with the reason, except when the
// CI variable is set: then it fails, so that a broken install can never pass
// as green.
package testenv

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/onnx"
)

// Missing skips t, or fails it when CI is set.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI: required test dependency missing: "+format, args...)
	}
	t.Skipf("test dependency missing (run `make test` or scripts/setup.sh): "+format, args...)
}

var root = sync.OnceValue(func() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
})

// Root is the module's root folder.
func Root() string { return root() }

// DepsDir is the project-local dependency folder (.deps).
func DepsDir() string {
	if d := os.Getenv("MLSERVE_DEPS_DIR"); d != "" {
		return d
	}
	return filepath.Join(Root(), ".deps")
}

// ORTLibrary returns the ONNX Runtime shared library's path.
func ORTLibrary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("MLSERVE_ORT_LIBRARY")
	if p == "" {
		p = filepath.Join(DepsDir(), "onnxruntime", "libonnxruntime.so.1")
	}
	if _, err := os.Stat(p); err != nil {
		Missing(t, "ONNX Runtime library: %v", err)
	}
	return p
}

// TestData returns the path of a file that scripts/setup.sh installs under
// .deps/testdata (models/..., photos/..., clip/...).
func TestData(t testing.TB, rel string) string {
	t.Helper()
	dir := os.Getenv("MLSERVE_TESTDATA")
	if dir == "" {
		dir = filepath.Join(DepsDir(), "testdata")
	}
	p := filepath.Join(dir, rel)
	if _, err := os.Stat(p); err != nil {
		Missing(t, "test data %s: %v", rel, err)
	}
	return p
}

var shared struct {
	once sync.Once
	rt   *inference.Runtime
	err  error
}

// Runtime returns a CPU ONNX Runtime shared by the whole test binary (ONNX
// Runtime's environment is process-wide). It is never closed.
func Runtime(t testing.TB) *inference.Runtime {
	t.Helper()
	lib := ORTLibrary(t)
	shared.once.Do(func() {
		shared.rt, shared.err = inference.New(inference.Options{
			LibraryPath: lib,
			Providers:   []string{inference.CPU},
		}, slog.New(slog.DiscardHandler))
	})
	if shared.err != nil {
		t.Fatalf("ONNX Runtime: %v", shared.err)
	}
	return shared.rt
}

// RedisURL is the Redis server that `make test` starts.
func RedisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("MLSERVE_TEST_REDIS_URL")
	if u == "" {
		Missing(t, "Redis: MLSERVE_TEST_REDIS_URL is not set")
	}
	return u
}

// DatabaseURL is the PostgreSQL (PGlite + pgvector) server that `make test`
// starts.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("MLSERVE_TEST_DATABASE_URL")
	if u == "" {
		Missing(t, "PostgreSQL: MLSERVE_TEST_DATABASE_URL is not set")
	}
	return u
}

// Load writes a generated model to a temporary file and loads it on the
// shared runtime; the session is closed when the test ends.
func Load(t testing.TB, m onnx.Model) *inference.Session {
	t.Helper()
	p := filepath.Join(t.TempDir(), "model.onnx")
	if err := m.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	s, err := Runtime(t).NewSession(p, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Chromium returns the headless browser of the page tests: MLSERVE_CHROMIUM
// if set, else Debian's chromium (scripts/setup.sh installs it) or another
// Chromium or Chrome on the PATH.
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MLSERVE_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			Missing(t, "Chromium: MLSERVE_CHROMIUM: %v", err)
		}
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	Missing(t, "Chromium: no chromium on the PATH (Debian: apt-get install chromium)")
	return ""
}
