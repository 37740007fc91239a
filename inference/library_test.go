package inference_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mlserve/mlserve/inference"
)

func touch(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFindLibrary(t *testing.T) {
	repo := t.TempDir()
	exe := filepath.Join(repo, "bin", "mlserve")
	touch(t, exe)
	work := t.TempDir()

	// Nothing anywhere: the system library path, after the usual places.
	lib := inference.FindLibrary(inference.LibraryOptions{Executable: exe, WorkDir: work})
	if lib.Path != inference.LibraryName || lib.From != "the system library path" || len(lib.Searched) < 3 {
		t.Fatalf("nothing installed: %+v", lib)
	}

	// The working folder's .deps.
	inWork := filepath.Join(work, ".deps", "onnxruntime", inference.LibraryName)
	touch(t, inWork)
	if lib := inference.FindLibrary(inference.LibraryOptions{Executable: exe, WorkDir: work}); lib.Path != inWork {
		t.Fatalf("working folder: %+v", lib)
	}

	// The binary's repository wins over the working folder.
	inRepo := filepath.Join(repo, ".deps", "onnxruntime", inference.LibraryName)
	touch(t, inRepo)
	if lib := inference.FindLibrary(inference.LibraryOptions{Executable: exe, WorkDir: work}); lib.Path != inRepo || lib.From != ".deps/onnxruntime" {
		t.Fatalf("repository: %+v", lib)
	}

	// Next to the binary wins over both, through a symlink to it.
	next := filepath.Join(repo, "bin", inference.LibraryName)
	touch(t, next)
	link := filepath.Join(t.TempDir(), "mlserve")
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	if lib := inference.FindLibrary(inference.LibraryOptions{Executable: link, WorkDir: work}); lib.Path != next || lib.From != "next to the binary" {
		t.Fatalf("next to the binary: %+v", lib)
	}

	// MLSERVE_ORT_LIBRARY wins over everything.
	if lib := inference.FindLibrary(inference.LibraryOptions{Configured: "/opt/ort/lib.so", Executable: exe}); lib.Path != "/opt/ort/lib.so" || lib.From != "MLSERVE_ORT_LIBRARY" {
		t.Fatalf("configured: %+v", lib)
	}
}

// A library that is nowhere: the error names the places searched,
// MLSERVE_ORT_LIBRARY and make setup.
func TestLibraryErrorSaysWhatToDo(t *testing.T) {
	lib := inference.FindLibrary(inference.LibraryOptions{Executable: filepath.Join(t.TempDir(), "mlserve"), WorkDir: t.TempDir()})
	lib.Path = "libonnxruntime-absent.so.1" // not on this machine's loader path either
	_, err := inference.New(inference.Options{LibraryPath: lib.Path}, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Skip("an ONNX Runtime environment exists in this process already")
	}
	if errors.Is(err, inference.ErrRuntimeExists) {
		t.Skip("an ONNX Runtime environment exists in this process already")
	}
	err = lib.LibraryError(err)
	if !errors.Is(err, inference.ErrLibrary) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"MLSERVE_ORT_LIBRARY", "make setup", lib.Searched[0], "system library path"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	t.Log(err)
}
