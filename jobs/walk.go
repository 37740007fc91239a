package jobs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultExtensions are the image files `mlserve index` picks up: the
// formats Immich's previews and most cameras use that the decoder reads.
// HEIC/HEIF are added only when the decoder can read them
// (WalkOptions.HEIC).
var DefaultExtensions = []string{".jpg", ".jpeg", ".png", ".webp"}

// WalkOptions configure Walk.
type WalkOptions struct {
	// Extensions are the file name endings to pick (case-insensitive);
	// DefaultExtensions when empty.
	Extensions []string
	// HEIC adds .heic and .heif (only when the image decoder reads them).
	HEIC bool
}

// File is an image file found by Walk.
type File struct {
	Path    string // absolute
	Size    int64
	ModTime time.Time
}

// WalkStats counts what a walk saw.
type WalkStats struct {
	Files   int64 // image files found
	Skipped int64 // other files (extension not picked)
	HEIC    int64 // HEIC/HEIF files skipped because they cannot be decoded
	Errors  int64 // entries that could not be read
}

// Walk calls fn for every image file under roots (files may be given
// directly), in lexical order, with absolute paths. Hidden entries (".x")
// and Synology's @eaDir are skipped; symbolic links to files are followed,
// to directories not (no loops). An unreadable entry is counted and
// skipped; an error from fn stops the walk.
func Walk(ctx context.Context, roots []string, opts WalkOptions, fn func(File) error) (WalkStats, error) {
	exts := opts.Extensions
	if len(exts) == 0 {
		exts = DefaultExtensions
	}
	want := map[string]bool{}
	for _, e := range exts {
		want[strings.ToLower(e)] = true
	}
	heic := map[string]bool{".heic": true, ".heif": true}
	if opts.HEIC {
		want[".heic"], want[".heif"] = true, true
	}
	var st WalkStats
	visit := func(path string, info fs.FileInfo) error {
		ext := strings.ToLower(filepath.Ext(path))
		switch {
		case want[ext]:
		case heic[ext]:
			st.HEIC++
			return nil
		default:
			st.Skipped++
			return nil
		}
		st.Files++
		return fn(File{Path: path, Size: info.Size(), ModTime: info.ModTime()})
	}
	for _, root := range roots {
		abs, err := filepath.Abs(root)
		if err != nil {
			return st, fmt.Errorf("walk %s: %w", root, err)
		}
		info, err := os.Stat(abs)
		if err != nil {
			return st, fmt.Errorf("walk: %w", err)
		}
		if !info.IsDir() {
			if err := visit(abs, info); err != nil {
				return st, err
			}
			continue
		}
		err = filepath.WalkDir(abs, func(path string, d fs.DirEntry, err error) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				st.Errors++
				if d != nil && d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			name := d.Name()
			if path != abs && (strings.HasPrefix(name, ".") || name == "@eaDir") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				return nil
			}
			info, err := os.Stat(path) // follows a link to a file
			if err != nil {
				st.Errors++
				return nil //nolint:nilerr // counted in st.Errors; the walk goes on with the next file
			}
			if !info.Mode().IsRegular() {
				return nil
			}
			return visit(path, info)
		})
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return st, err
			}
			return st, fmt.Errorf("walk %s: %w", root, err)
		}
	}
	return st, nil
}
