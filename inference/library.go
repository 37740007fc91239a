package inference

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LibraryName is the file name of the ONNX Runtime shared library.
const LibraryName = "libonnxruntime.so.1"

// LibraryOptions say where [FindLibrary] looks.
type LibraryOptions struct {
	// Configured is MLSERVE_ORT_LIBRARY: used as it is when set.
	Configured string
	// Executable is the running binary's path (os.Executable); its
	// folder, and the .deps/onnxruntime of the repository it was built
	// in, are searched.
	Executable string
	// WorkDir is the working folder; its .deps/onnxruntime is searched.
	WorkDir string
}

// Library is where FindLibrary found the library, or the name the
// dynamic loader is to look for.
type Library struct {
	// Path is the library to load: a path, or LibraryName alone for the
	// system library path.
	Path string
	// From says how it was found: "MLSERVE_ORT_LIBRARY", "next to the
	// binary", ".deps/onnxruntime" or "the system library path".
	From string
	// Searched are the paths looked at before, for an error message.
	Searched []string
}

// FindLibrary looks for ONNX Runtime's library: MLSERVE_ORT_LIBRARY if
// set; else next to the binary; else in .deps/onnxruntime (where
// `make setup` puts it) of the repository the binary lives in and of the
// working folder; else it leaves the dynamic loader to search the system
// library path (LD_LIBRARY_PATH, ldconfig's cache). It only looks at the
// file system; loading happens in [New].
func FindLibrary(opts LibraryOptions) Library {
	if opts.Configured != "" {
		return Library{Path: opts.Configured, From: "MLSERVE_ORT_LIBRARY"}
	}
	var lib Library
	try := func(p, from string) bool {
		if p == "" {
			return false
		}
		lib.Searched = append(lib.Searched, p)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			lib.Path, lib.From = p, from
			return true
		}
		return false
	}
	if opts.Executable != "" {
		exe := opts.Executable
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		dir := filepath.Dir(exe)
		if try(filepath.Join(dir, LibraryName), "next to the binary") ||
			try(filepath.Join(dir, "lib", LibraryName), "next to the binary") {
			return lib
		}
		// bin/mlserve (make build) or mlserve (go build) in a checkout:
		// the repository's .deps.
		for _, d := range []string{filepath.Dir(dir), dir} {
			if try(filepath.Join(d, ".deps", "onnxruntime", LibraryName), ".deps/onnxruntime") {
				return lib
			}
		}
	}
	if opts.WorkDir != "" && try(filepath.Join(opts.WorkDir, ".deps", "onnxruntime", LibraryName), ".deps/onnxruntime") {
		return lib
	}
	lib.Path, lib.From = LibraryName, "the system library path"
	return lib
}

// LibraryError explains a library that did not load: where it was looked
// for and what to do. It wraps err (ErrLibrary).
func (l Library) LibraryError(err error) error {
	if !errors.Is(err, ErrLibrary) {
		return err
	}
	if l.From == "MLSERVE_ORT_LIBRARY" {
		return fmt.Errorf("%w (MLSERVE_ORT_LIBRARY=%s; unset it to search the usual places, or run `make setup`)", err, l.Path)
	}
	var where string
	if len(l.Searched) > 0 {
		where = " in " + strings.Join(l.Searched, ", ") + " or"
	}
	cause := strings.TrimPrefix(err.Error(), ErrLibrary.Error())
	cause = strings.TrimPrefix(strings.TrimPrefix(cause, " "), fmt.Sprintf("%q: ", l.Path))
	return fmt.Errorf("%w: not found%s in the system library path (%s); set MLSERVE_ORT_LIBRARY to the path of %s, or run `make setup` in mlserve's checkout to install it into .deps/onnxruntime",
		ErrLibrary, where, cause, LibraryName)
}
