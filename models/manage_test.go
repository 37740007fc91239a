package models

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/models/hubtest"
)

// observed records what a DownloadObserver hears.
type observed struct {
	mu       sync.Mutex
	started  map[string]int64
	have     map[string]int64 // file → latest Have
	received int64
	finished map[string]error
}

func newObserved() *observed {
	return &observed{started: map[string]int64{}, have: map[string]int64{}, finished: map[string]error{}}
}

func (o *observed) DownloadStarted(model string, files int, bytes int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.started[model] = bytes
}

func (o *observed) DownloadProgress(p FileProgress) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.have[p.Model+":"+p.File] = p.Have
	o.received += p.Received
}

func (o *observed) DownloadFinished(model string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.finished[model] = err
}

func TestPullListVerifyRemove(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	files := clipRepo()
	hub.AddRepo("immich-app/"+clipName, files)
	obs := newObserved()
	s := newStore(t, hub, func(o *StoreOptions) { o.Observer = obs })
	ctx := context.Background()

	p, err := s.Pull(ctx, "ViT-B-32::openai")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.cacheDir, "clip", clipName)
	if len(p.Folders) != 1 || p.Folders[0] != dir {
		t.Fatalf("pulled %v", p.Folders)
	}
	// The observer saw every byte of what was fetched (the ARM NN, RKNN
	// and git files are not fetched).
	var want int64
	for name, b := range files {
		if !ignoredRepoFile(name) {
			want += int64(len(b))
		}
	}
	if obs.started["clip/"+clipName] != want || obs.received != want || obs.finished["clip/"+clipName] != nil {
		t.Fatalf("observer: started %v, received %d of %d, finished %v", obs.started, obs.received, want, obs.finished)
	}
	var have int64
	for _, n := range obs.have {
		have += n
	}
	if have != want {
		t.Fatalf("observer's files add up to %d, want %d", have, want)
	}

	// The manifest holds the hub's sizes and digests.
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := readManifest(root)
	root.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 8 || m.Commit == "" || !strings.HasSuffix(m.Source, "/immich-app/"+clipName) {
		t.Fatalf("manifest %+v", m)
	}
	for _, e := range m.Files {
		if e.Size != int64(len(files[e.Path])) || e.SHA256 == "" && e.GitOID == "" || e.Computed {
			t.Errorf("manifest entry %+v", e)
		}
	}

	// List sees it, complete for both types, with its manifest.
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Folder != clipName || !slices.Equal(list[0].Types, []Type{TypeTextual, TypeVisual}) ||
		!list[0].Manifest || !list[0].Known || list[0].Files != 8 || list[0].Bytes != want {
		t.Fatalf("list %+v", list)
	}

	// Verify: all good, then a flipped byte, a truncated file and a
	// missing one are each found.
	v, err := s.Verify(ctx, "clip/"+clipName)
	if err != nil || !v.OK() || v.Source != "manifest" || len(v.Files) != 8 {
		t.Fatalf("verify: %+v, %v", v, err)
	}
	flip := filepath.Join(dir, "visual", ModelFile)
	b := mustRead(t, flip)
	b[len(b)/2] ^= 1
	_ = os.WriteFile(flip, b, 0o644)
	_ = os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o644)
	_ = os.Remove(filepath.Join(dir, "textual", "tokenizer.json"))
	v, err = s.Verify(ctx, "clip/"+clipName)
	if err != nil || v.OK() {
		t.Fatalf("verify after damage: %+v, %v", v, err)
	}
	problems := map[string]string{}
	for _, f := range v.Files {
		if f.Problem != "" {
			problems[f.Path] = f.Problem
		}
	}
	if len(problems) != 3 || !strings.HasPrefix(problems["visual/model.onnx"], "sha256 ") ||
		!strings.HasPrefix(problems["config.json"], "size 2, want") || problems["textual/tokenizer.json"] != "missing" {
		t.Fatalf("problems %v", problems)
	}

	// Pull again fetches the files of a wrong size or missing; the
	// flipped byte kept the size (pull compares sizes, verify digests),
	// so it comes back once removed.
	if _, err := s.Pull(ctx, clipName); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Verify(ctx, "clip/"+clipName); v.OK() || len(v.Files) != 8 || v.Files[6].Path != "visual/model.onnx" || v.Files[6].Problem == "" {
		t.Fatalf("verify after the second pull: %+v", v)
	}
	_ = os.Remove(flip)
	if _, err := s.Pull(ctx, clipName); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Verify(ctx, "clip/"+clipName); err != nil || !v.OK() {
		t.Fatalf("verify after the third pull: %+v, %v", v, err)
	}

	// Remove, then it is gone and a second remove says so.
	removed, err := s.Remove(clipName)
	if err != nil || len(removed) != 1 || removed[0] != dir {
		t.Fatalf("remove: %v, %v", removed, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("folder still there: %v", err)
	}
	if _, err := s.Remove(clipName); !errors.Is(err, ErrNotCached) {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := s.Verify(ctx, "clip/"+clipName); !errors.Is(err, ErrNotCached) {
		t.Fatalf("verify a removed model: %v", err)
	}
	if _, err := s.Verify(ctx, "clip/../x"); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("verify a hostile key: %v", err)
	}
}

// A mirror that lists no sizes or digests: the manifest records what was
// downloaded, marked as computed, and verify checks against it.
func TestPullFromMirrorWithoutTreeAPI(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{NoTreeAPI: true})
	hub.AddRepo("immich-app/buffalo_s", faceRepo())
	s := newStore(t, hub, nil)
	if _, err := s.Pull(context.Background(), "buffalo_s"); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(filepath.Join(s.cacheDir, "facial-recognition", "buffalo_s"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := readManifest(root)
	root.Close()
	if err != nil || len(m.Files) != 2 {
		t.Fatalf("manifest %+v, %v", m, err)
	}
	for _, e := range m.Files {
		if e.Size <= 0 || len(e.SHA256) != 64 {
			t.Errorf("entry %+v", e)
		}
	}
	if v, err := s.Verify(context.Background(), "facial-recognition/buffalo_s"); err != nil || !v.OK() {
		t.Fatalf("verify %+v, %v", v, err)
	}
}

// Offline, pull succeeds for a model in the cache and fails for others;
// a folder Immich downloaded (no manifest) is listed and reported as
// unverifiable.
func TestPullOfflineAndImmichCache(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	s := newStore(t, hub, func(o *StoreOptions) { o.Offline = true })
	dir := filepath.Join(s.cacheDir, "facial-recognition", "buffalo_l")
	for name, b := range faceRepo() {
		p := filepath.Join(dir, filepath.FromSlash(name))
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Pull(context.Background(), "buffalo_l"); err != nil {
		t.Fatalf("offline pull of a cached model: %v", err)
	}
	if _, err := s.Pull(context.Background(), "buffalo_s"); !errors.Is(err, ErrOffline) {
		t.Fatalf("offline pull of a missing model: %v", err)
	}
	if hub.Total() != 0 {
		t.Fatalf("%d requests offline", hub.Total())
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].Manifest || len(list[0].Types) != 2 {
		t.Fatalf("list %+v, %v", list, err)
	}
	v, err := s.Verify(context.Background(), "facial-recognition/buffalo_l")
	if err != nil || v.OK() || v.Source != "" {
		t.Fatalf("verify without a manifest: %+v, %v", v, err)
	}
}

// OCR: both files pulled, each recorded in its folder's manifest (the
// detector's folder is shared between languages); an OCR folder without
// a manifest is checked against the pinned digests.
func TestPullOCR(t *testing.T) {
	det := modelgen.Busy{Steps: 1, Size: 4}.Model().Marshal()
	rec := modelgen.Busy{Steps: 3, Size: 4}.Model().Marshal()
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddFile("ocr/onnx/PP-OCRv5/det/ch_PP-OCRv5_det_mobile.onnx", det)
	hub.AddFile("ocr/onnx/PP-OCRv5/rec/en_PP-OCRv5_rec_mobile.onnx", rec)
	s := newStore(t, hub, nil)
	table := map[string]OCRFile{}
	for k, v := range ocrFiles {
		table[k] = v
	}
	table["ch_PP-OCRv5_det_mobile"] = OCRFile{Path: "onnx/PP-OCRv5/det/ch_PP-OCRv5_det_mobile.onnx", SHA256: hubtest.SHA256(det)}
	table["en_PP-OCRv5_rec_mobile"] = OCRFile{Path: "onnx/PP-OCRv5/rec/en_PP-OCRv5_rec_mobile.onnx", SHA256: hubtest.SHA256(rec)}
	s.ocrFiles = table

	p, err := s.Pull(context.Background(), "EN__PP-OCRv5_mobile")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Folders) != 2 {
		t.Fatalf("folders %v", p.Folders)
	}
	keys, _ := Folders("EN__PP-OCRv5_mobile")
	if !slices.Equal(keys, []string{"ocr/PP-OCRv5_mobile", "ocr/EN__PP-OCRv5_mobile"}) {
		t.Fatalf("folders %v", keys)
	}
	for _, k := range keys {
		v, err := s.Verify(context.Background(), k)
		if err != nil || !v.OK() || v.Source != "manifest" || len(v.Files) != 1 {
			t.Fatalf("verify %s: %+v, %v", k, v, err)
		}
		_ = os.Remove(filepath.Join(v.Path, ManifestFile))
		v, err = s.Verify(context.Background(), k)
		if err != nil || !v.OK() || v.Source != "pinned" {
			t.Fatalf("verify %s without a manifest: %+v, %v", k, v, err)
		}
	}
}

func TestCheckCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "cache")
	if err := CheckCache(dir, true); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left %v behind", entries)
	}
	file := filepath.Join(t.TempDir(), "file")
	_ = os.WriteFile(file, nil, 0o644)
	if err := CheckCache(file, true); err == nil {
		t.Fatal("a file as the cache folder was accepted")
	}
	if err := CheckCache(file, false); err == nil {
		t.Fatal("a file as the cache folder was accepted offline")
	}
	if err := CheckCache(filepath.Join(t.TempDir(), "absent"), false); err != nil {
		t.Fatalf("offline, a missing folder: %v", err)
	}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := t.TempDir()
		_ = os.Chmod(ro, 0o555)
		if err := CheckCache(ro, true); err == nil || !strings.Contains(err.Error(), "HF_HUB_OFFLINE") {
			t.Fatalf("read-only folder: %v", err)
		}
		if err := CheckCache(ro, false); err != nil {
			t.Fatalf("read-only folder offline: %v", err)
		}
	}
}
