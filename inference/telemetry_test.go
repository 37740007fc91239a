package inference_test

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"go.uber.org/goleak"
)

// childEnv makes this test binary, started again, run one model and exit
// (TestNoTelemetryFiles): ONNX Runtime reads HOME and TMPDIR when its
// environment starts, once per process.
const childEnv = "MLSERVE_INFERENCE_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m)
}

// runChild starts a runtime, builds a session, runs it and closes
// everything: the life of a short mlserve process.
func runChild() int {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	rt, err := inference.New(inference.Options{LibraryPath: os.Getenv("MLSERVE_ORT_LIBRARY"), Providers: []string{inference.CPU}}, logger)
	if err != nil {
		logger.Error("runtime", "err", err)
		return 3
	}
	defer rt.Close()
	rt.ProviderStatus() // loads the GPU providers' libraries where present, as mlserve serve does
	path := filepath.Join(os.Getenv(childEnv), "model.onnx")
	if err := (modelgen.Busy{Steps: 2, Size: 16}).Model().WriteFile(path); err != nil {
		logger.Error("model", "err", err)
		return 3
	}
	s, err := rt.NewSession(path, inference.SessionOptions{})
	if err != nil {
		logger.Error("session", "err", err)
		return 3
	}
	defer s.Close()
	for range 10 {
		if _, err := s.Run(context.Background(), inference.F32(make([]float32, 256), 16, 16)); err != nil {
			logger.Error("run", "err", err)
			return 3
		}
	}
	return 0
}

// TestNoTelemetryFiles runs a model in a child process whose HOME,
// XDG_CACHE_HOME and TMPDIR are empty folders, and checks that nothing was
// written there: ONNX Runtime's telemetry (on by default in some builds)
// keeps its events under ~/.cache/Microsoft/DeveloperTools/.onnxruntime and
// files in $TMPDIR.
func TestNoTelemetryFiles(t *testing.T) {
	lib := testenv.ORTLibrary(t)
	base := t.TempDir()
	work := filepath.Join(base, "work")
	dirs := map[string]string{
		"HOME":           filepath.Join(base, "home"),
		"XDG_CACHE_HOME": filepath.Join(base, "xdg-cache"),
		"TMPDIR":         filepath.Join(base, "tmp"),
	}
	env := []string{childEnv + "=" + work, "MLSERVE_ORT_LIBRARY=" + lib}
	for _, d := range append([]string{work}, mapValues(dirs)...) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for k, d := range dirs {
		env = append(env, k+"="+d)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for k, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && p != d {
				t.Errorf("%s: ONNX Runtime wrote %s", k, p)
			}
			return nil
		})
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
