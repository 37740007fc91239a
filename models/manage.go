package models

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// ErrNotCached: the model is not in the cache folder.
var ErrNotCached = errors.New("models: not in the cache")

// CheckCache checks the cache folder at start: with writable (downloads
// allowed) it creates the folder if needed and writes and removes a file
// in it; without, it only checks that the folder, if there, is a folder
// (a read-only volume of models pulled beforehand is fine offline).
func CheckCache(dir string, writable bool) error {
	if !writable {
		st, err := os.Stat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return errors.New("not a folder")
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create it: %w", err)
	}
	f, err := os.CreateTemp(dir, ".mlserve-write-check-*")
	if err != nil {
		return fmt.Errorf("not writable (downloads need it; with HF_HUB_OFFLINE=1 a read-only cache is fine): %w", err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// Folders returns the model folders a model name uses, as
// "<task>/<folder>" keys: one for CLIP and face models, one per type for
// OCR (whose detection folder is shared by every language).
func Folders(name string) ([]string, error) {
	info, err := Find(name)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, typ := range info.Types {
		if k := folderKey(info, typ); !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// Pulled is what [Store.Pull] fetched.
type Pulled struct {
	Info Info
	// Folders are the model's folders, as absolute paths.
	Folders []string
}

// Pull makes every file of a model present and verified, and records its
// manifest: a CLIP or face model's whole hub repo (minus ARM NN and RKNN
// files), both OCR files. Unlike [Store.Ensure] it asks the hub even when
// the files are there (so the manifest is written), fetching only what is
// missing or of the wrong size. Offline, it succeeds only for a model
// already in the cache.
func (s *Store) Pull(ctx context.Context, name string) (Pulled, error) {
	info, err := Find(name)
	if err != nil {
		return Pulled{}, err
	}
	types := info.Types
	if info.Task != TaskOCR {
		types = types[:1] // one repo holds every type
	}
	out := Pulled{Info: info}
	for _, typ := range types {
		dir, err := Dir(s.cacheDir, info, typ)
		if err != nil {
			return Pulled{}, err
		}
		if s.offline {
			if !present(dir, info.Files(typ)) {
				return Pulled{}, fmt.Errorf("%w: %s/%s %q (looked in %s)", ErrOffline, info.Task, typ, info.Name, dir)
			}
		} else if err := s.fetch(ctx, info, typ); err != nil {
			return Pulled{}, err
		}
		folder := filepath.Join(s.cacheDir, filepath.FromSlash(folderKey(info, typ)))
		if !slices.Contains(out.Folders, folder) {
			out.Folders = append(out.Folders, folder)
		}
	}
	for _, typ := range info.Types {
		dir, _ := Dir(s.cacheDir, info, typ)
		if files := info.Files(typ); !present(dir, files) {
			return Pulled{}, fmt.Errorf("%w: %s/%s %q: the downloaded model lacks %s", ErrNotFound, info.Task, typ, info.Name, strings.Join(files, ", "))
		}
	}
	return out, nil
}

// CachedModel is one model folder of the cache.
type CachedModel struct {
	// Task and Folder name it: <cache>/<task>/<folder>.
	Task   Task
	Folder string
	Path   string
	// Types are the types whose files are all present (a loader of them
	// needs no download).
	Types []Type
	// Files and Bytes count the regular files below the folder.
	Files int
	Bytes int64
	// Modified is the latest modification time of those files.
	Modified time.Time
	// Manifest tells whether a download recorded the folder's files
	// (Verify can check them).
	Manifest bool
	// Known tells whether the folder is one of the catalogue's.
	Known bool
}

// List returns the model folders in the cache, by task then folder
// name. Folders that are not models of the catalogue are listed too,
// unknown.
func (s *Store) List() ([]CachedModel, error) {
	var out []CachedModel
	for _, task := range []Task{TaskCLIP, TaskFacialRecognition, TaskOCR} {
		entries, err := os.ReadDir(filepath.Join(s.cacheDir, string(task)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			p := filepath.Join(s.cacheDir, string(task), e.Name())
			if st, err := os.Stat(p); err != nil || !st.IsDir() {
				continue
			}
			out = append(out, s.describe(task, e.Name()))
		}
	}
	return out, nil
}

// describe reads one model folder.
func (s *Store) describe(task Task, folder string) CachedModel {
	m := CachedModel{Task: task, Folder: folder, Path: filepath.Join(s.cacheDir, string(task), folder)}
	for _, info := range catalogue.all {
		if info.Task != task {
			continue
		}
		for _, typ := range info.Types {
			if info.Folder(typ) != folder {
				continue
			}
			m.Known = true
			dir, err := Dir(s.cacheDir, info, typ)
			if err == nil && present(dir, info.Files(typ)) && !slices.Contains(m.Types, typ) {
				m.Types = append(m.Types, typ)
			}
		}
	}
	sort.Slice(m.Types, func(i, j int) bool { return m.Types[i] < m.Types[j] })
	_ = filepath.WalkDir(m.Path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil //nolint:nilerr // an entry that cannot be read adds nothing to the size; the listing goes on
		}
		if d.Name() == ManifestFile && filepath.Dir(p) == m.Path {
			m.Manifest = true
			return nil
		}
		if info, err := d.Info(); err == nil {
			m.Files++
			m.Bytes += info.Size()
			if info.ModTime().After(m.Modified) {
				m.Modified = info.ModTime()
			}
		}
		return nil
	})
	return m
}

// Remove deletes a model's folders from the cache: the one folder of a
// CLIP or face model; for OCR the name's own folder (its recognizer, and
// the detector when the name has no language prefix), never the detector
// folder other languages share. It returns the folders removed, and
// ErrNotCached when there were none. ErrBusy while the model downloads.
func (s *Store) Remove(name string) ([]string, error) {
	info, err := Find(name)
	if err != nil {
		return nil, err
	}
	key := string(info.Task) + "/" + info.Name
	p := filepath.Join(s.cacheDir, filepath.FromSlash(key))
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (%s)", ErrNotCached, info.Name, p)
	}
	if err := s.clearFolder(key); err != nil {
		return nil, err
	}
	return []string{p}, nil
}

// FileCheck is the verification of one file.
type FileCheck struct {
	Path string
	// Problem is "" for a file that matches, else what is wrong: missing,
	// a size or a digest that differs.
	Problem string
}

// Verification is the result of verifying one model folder.
type Verification struct {
	Task   Task
	Folder string
	Path   string
	// Source is what the files were checked against: "manifest" (what the
	// hub listed at download), "pinned" (RapidOCR's digests, for an OCR
	// folder without a manifest), or "" when there was nothing to check
	// against (a folder downloaded by Immich or an older mlserve: pull it
	// to record a manifest).
	Source string
	Files  []FileCheck
}

// OK tells whether the folder was checked and every file matches.
func (v Verification) OK() bool {
	if v.Source == "" {
		return false
	}
	for _, f := range v.Files {
		if f.Problem != "" {
			return false
		}
	}
	return true
}

// Verify checks a model folder ("<task>/<folder>", see [Folders]) against
// its manifest: every file recorded must be there with its size and
// digest (every byte is read). ErrNotCached when the folder is not there.
func (s *Store) Verify(ctx context.Context, key string) (Verification, error) {
	task, folder, ok := strings.Cut(key, "/")
	if _, valid := ValidTask(task); !ok || !valid || !validRepoPath(folder) || strings.Contains(folder, "/") {
		return Verification{}, fmt.Errorf("%w: model folder %q", ErrInvalidName, key)
	}
	v := Verification{Task: Task(task), Folder: folder, Path: filepath.Join(s.cacheDir, task, folder)}
	root, err := os.OpenRoot(v.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return v, fmt.Errorf("%w: %s", ErrNotCached, v.Path)
	}
	if err != nil {
		return v, err
	}
	defer root.Close()
	var want []ManifestEntry
	m, err := readManifest(root)
	switch {
	case err == nil:
		v.Source, want = "manifest", m.Files
	case errors.Is(err, fs.ErrNotExist):
		if v.Task == TaskOCR {
			v.Source, want = "pinned", s.pinnedOCR(root, folder)
		}
	default:
		return v, err
	}
	for _, e := range want {
		if err := ctx.Err(); err != nil {
			return v, err
		}
		v.Files = append(v.Files, FileCheck{Path: e.Path, Problem: checkFile(root, e)})
	}
	return v, nil
}

// pinnedOCR lists the OCR files a folder may hold with their pinned
// digests (sizes unknown), for the types whose file is there.
func (s *Store) pinnedOCR(root *os.Root, folder string) []ManifestEntry {
	var out []ManifestEntry
	seen := map[string]bool{}
	for _, info := range catalogue.all {
		if info.Task != TaskOCR {
			continue
		}
		for _, typ := range info.Types {
			p := string(typ) + "/" + ModelFile
			if info.Folder(typ) != folder || seen[p] {
				continue
			}
			if _, err := root.Stat(p); err != nil {
				continue
			}
			src, err := ocrSource(s.ocrFiles, info, typ)
			if err != nil {
				continue
			}
			seen[p] = true
			out = append(out, ManifestEntry{Path: p, Size: -1, SHA256: src.SHA256})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// checkFile compares one file with its entry: "" when it matches.
func checkFile(root *os.Root, e ManifestEntry) string {
	st, err := root.Stat(e.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return "missing"
	}
	if err != nil {
		return err.Error()
	}
	if !st.Mode().IsRegular() {
		return "not a regular file"
	}
	if e.Size >= 0 && st.Size() != e.Size {
		return fmt.Sprintf("size %d, want %d", st.Size(), e.Size)
	}
	switch {
	case e.SHA256 != "":
		sum, _, err := hashFile(root, e.Path)
		if err != nil {
			return err.Error()
		}
		if sum != e.SHA256 {
			return "sha256 " + sum + ", want " + e.SHA256
		}
	case e.GitOID != "":
		id, err := gitBlobID(root, e.Path, st.Size())
		if err != nil {
			return err.Error()
		}
		if id != e.GitOID {
			return "git blob id " + id + ", want " + e.GitOID
		}
	}
	return ""
}
