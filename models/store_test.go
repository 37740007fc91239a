package models

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/models/hubtest"
)

const clipName = "ViT-B-32__openai"

// clipRepo is a repo laid out like immich-app/ViT-B-32__openai, with
// generated graphs of the real signatures and the ARM NN/RKNN files a real
// repo also has.
func clipRepo() map[string][]byte { return maps.Clone(clipRepoOnce()) }

var clipRepoOnce = sync.OnceValue(func() map[string][]byte {
	return map[string][]byte{
		"config.json":                     []byte(`{"embed_dim": 512, "vision_cfg": {"image_size": 28}, "text_cfg": {"context_length": 77}}`),
		"visual/model.onnx":               modelgen.CLIPVisual{Size: 28, Dim: 512, Seed: 1}.Model().Marshal(),
		"visual/preprocess_cfg.json":      []byte(`{"size": [28, 28], "mode": "RGB", "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic", "resize_mode": "shortest"}`),
		"textual/model.onnx":              modelgen.CLIPTextual{Context: 77, Vocab: 500, Dim: 512, Seed: 1}.Model().Marshal(),
		"textual/tokenizer.json":          []byte(`{"version": "1.0", "model": {"type": "BPE"}}`),
		"textual/tokenizer_config.json":   []byte(`{"pad_token": "<|endoftext|>"}`),
		"textual/special_tokens_map.json": []byte(`{}`),
		"visual/model.armnn":              bytes.Repeat([]byte{1}, 3000),
		"visual/fp16/model.armnn":         bytes.Repeat([]byte{2}, 3000),
		"visual/rknpu/rk3588/model.rknn":  bytes.Repeat([]byte{3}, 3000),
		".gitattributes":                  []byte("*.onnx filter=lfs diff=lfs merge=lfs -text\n"),
		"README.md":                       []byte("# ViT-B-32__openai\n"),
	}
})

func faceRepo() map[string][]byte {
	return map[string][]byte{
		"detection/model.onnx":   modelgen.Busy{Steps: 1, Size: 8}.Model().Marshal(),
		"recognition/model.onnx": modelgen.Busy{Steps: 2, Size: 8}.Model().Marshal(),
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newStore returns a Store on a fresh cache folder talking to hub, with
// fast retries.
func newStore(t *testing.T, hub *hubtest.Server, mod func(*StoreOptions)) *Store {
	t.Helper()
	opts := StoreOptions{
		CacheDir:     t.TempDir(),
		HFEndpoint:   hub.URL(),
		OCRBaseURL:   hub.URL() + "/ocr",
		Retries:      3,
		MinBackoff:   time.Millisecond,
		MaxBackoff:   10 * time.Millisecond,
		StallTimeout: 5 * time.Second,
	}
	if mod != nil {
		mod(&opts)
	}
	s, err := NewStore(opts, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// listFiles returns every path under dir, relative and slash-separated.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	slices.Sort(out)
	return out
}

func mustEqualFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the %d served", path, len(got), len(want))
	}
}

func TestEnsureCLIPFromHub(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	files := clipRepo()
	hub.AddRepo("immich-app/"+clipName, files)
	s := newStore(t, hub, nil)

	dir, err := s.Ensure(context.Background(), TaskCLIP, TypeVisual, "ViT-B-32::openai")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(s.cacheDir, "clip", clipName); dir != want {
		t.Fatalf("dir = %s, want %s", dir, want)
	}
	got := listFiles(t, dir)
	want := []string{ManifestFile, "README.md", "config.json", "textual/model.onnx", "textual/special_tokens_map.json",
		"textual/tokenizer.json", "textual/tokenizer_config.json", "visual/model.onnx", "visual/preprocess_cfg.json"}
	if !slices.Equal(got, want) {
		t.Fatalf("cache holds %v, want %v (ARM NN, RKNN and git files skipped, nothing partial)", got, want)
	}
	for _, f := range want[1:] {
		mustEqualFile(t, filepath.Join(dir, f), files[f])
	}
	if leaks := hub.AuthLeaks(); len(leaks) != 0 {
		t.Fatalf("authorization sent to the CDN: %v", leaks)
	}
	// LFS files came through the CDN redirect, small files from resolve.
	if n := hub.Requests(hubtest.CDNKey("immich-app/"+clipName, "visual/model.onnx")); n != 1 {
		t.Fatalf("CDN requests for visual/model.onnx = %d, want 1", n)
	}

	// Cached: the other type and a repeat need no network at all.
	before := hub.Total()
	for _, typ := range []Type{TypeTextual, TypeVisual} {
		if d, err := s.Ensure(context.Background(), TaskCLIP, typ, clipName); err != nil || d != dir {
			t.Fatalf("Ensure(%s) = %s, %v", typ, d, err)
		}
	}
	if hub.Total() != before {
		t.Fatalf("%d requests for a cached model", hub.Total()-before)
	}
}

// The downloaded files are real models: ONNX Runtime loads them.
func TestEnsuredModelLoads(t *testing.T) {
	rt := testenv.Runtime(t)
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddRepo("immich-app/"+clipName, clipRepo())
	s := newStore(t, hub, nil)
	dir, err := s.Ensure(context.Background(), TaskCLIP, TypeVisual, clipName)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := rt.NewSession(filepath.Join(dir, "visual", ModelFile), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if in := sess.Inputs(); len(in) != 1 || in[0].Name != "image" {
		t.Fatalf("inputs %v", in)
	}
}

func TestEnsureFaces(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	files := faceRepo()
	hub.AddRepo("immich-app/buffalo_l", files)
	s := newStore(t, hub, nil)
	for _, typ := range []Type{TypeRecognition, TypeDetection} {
		dir, err := s.Ensure(context.Background(), TaskFacialRecognition, typ, "buffalo_l")
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(s.cacheDir, "facial-recognition", "buffalo_l", string(typ)); dir != want {
			t.Fatalf("dir = %s, want %s", dir, want)
		}
		mustEqualFile(t, filepath.Join(dir, ModelFile), files[string(typ)+"/model.onnx"])
	}
	// One snapshot brought both types.
	if n := hub.Requests("api/models/immich-app/buffalo_l/revision/main"); n != 1 {
		t.Fatalf("revision requests = %d, want 1", n)
	}
}

// An existing Immich cache volume (files only, no hub metadata) is used as
// is, even with the hub unreachable.
func TestExistingImmichCache(t *testing.T) {
	cache := t.TempDir()
	files := clipRepo()
	for _, f := range []string{"config.json", "visual/model.onnx", "visual/preprocess_cfg.json", "textual/model.onnx",
		"textual/tokenizer.json", "textual/tokenizer_config.json"} {
		p := filepath.Join(cache, "clip", clipName, filepath.FromSlash(f))
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, files[f], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"facial-recognition/buffalo_l/detection/model.onnx", "facial-recognition/buffalo_l/recognition/model.onnx",
		"ocr/PP-OCRv5_mobile/detection/model.onnx", "ocr/EN__PP-OCRv5_mobile/recognition/model.onnx"} {
		p = filepath.Join(cache, filepath.FromSlash(p))
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// 127.0.0.1:1 refuses connections: any network use would fail.
	s, err := NewStore(StoreOptions{CacheDir: cache, HFEndpoint: "http://127.0.0.1:1", OCRBaseURL: "http://127.0.0.1:1", Retries: -1}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		task Task
		typ  Type
		name string
	}{
		{TaskCLIP, TypeVisual, clipName}, {TaskCLIP, TypeTextual, clipName},
		{TaskFacialRecognition, TypeDetection, "buffalo_l"}, {TaskFacialRecognition, TypeRecognition, "buffalo_l"},
		{TaskOCR, TypeDetection, "EN__PP-OCRv5_mobile"}, {TaskOCR, TypeRecognition, "EN__PP-OCRv5_mobile"},
	} {
		if _, err := s.Ensure(context.Background(), c.task, c.typ, c.name); err != nil {
			t.Errorf("Ensure(%s, %s, %s): %v", c.task, c.typ, c.name, err)
		}
		if ok, err := s.Cached(c.task, c.typ, c.name); !ok || err != nil {
			t.Errorf("Cached(%s, %s, %s) = %v, %v", c.task, c.typ, c.name, ok, err)
		}
	}
	// Missing: recognition of another language needs the network.
	if _, err := s.Ensure(context.Background(), TaskOCR, TypeRecognition, "TH__PP-OCRv5_mobile"); !errors.Is(err, ErrDownload) {
		t.Fatalf("missing model with the source down: err = %v, want ErrDownload", err)
	}
}

func TestOffline(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddRepo("immich-app/"+clipName, clipRepo())
	online := newStore(t, hub, nil)
	if _, err := online.Ensure(context.Background(), TaskCLIP, TypeVisual, clipName); err != nil {
		t.Fatal(err)
	}
	before := hub.Total()
	off := newStore(t, hub, func(o *StoreOptions) { o.CacheDir = online.cacheDir; o.Offline = true })
	if _, err := off.Ensure(context.Background(), TaskCLIP, TypeTextual, clipName); err != nil {
		t.Fatalf("offline, cached: %v", err)
	}
	if _, err := off.Ensure(context.Background(), TaskFacialRecognition, TypeDetection, "buffalo_l"); !errors.Is(err, ErrOffline) {
		t.Fatalf("offline, missing: err = %v, want ErrOffline", err)
	}
	if hub.Total() != before {
		t.Fatalf("offline store made %d requests", hub.Total()-before)
	}
}

func TestMirrorOrganizationRevisionToken(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{Token: "hf_secret", TreePageSize: 2})
	files := clipRepo()
	files["visual/model.onnx"] = modelgen.CLIPVisual{Size: 28, Dim: 512, Seed: 9}.Model().Marshal()
	hub.AddRepo("my-org/"+clipName, clipRepo()) // "main" differs from v2
	hub.AddRevision("my-org/"+clipName, "v2", files)
	s := newStore(t, hub, func(o *StoreOptions) {
		o.Organization, o.Revision, o.HFToken = "my-org", "v2", "hf_secret"
	})
	dir, err := s.Ensure(context.Background(), TaskCLIP, TypeVisual, clipName)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualFile(t, filepath.Join(dir, "visual", ModelFile), files["visual/model.onnx"])
	if n := hub.Requests("api/models/my-org/" + clipName + "/revision/v2"); n != 1 {
		t.Fatalf("revision v2 requests = %d, want 1", n)
	}
	if leaks := hub.AuthLeaks(); len(leaks) != 0 {
		t.Fatalf("token sent to the CDN: %v", leaks)
	}

	// Without the token the hub hides the repo, as huggingface.co does.
	anon := newStore(t, hub, func(o *StoreOptions) { o.Organization, o.Revision = "my-org", "v2" })
	if _, err := anon.Ensure(context.Background(), TaskCLIP, TypeVisual, clipName); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no token: err = %v, want ErrNotFound", err)
	}
}

// A mirror without the tree API: names from the revision's siblings, sizes
// and sha256 from the resolve headers.
func TestMirrorWithoutTreeAPI(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{NoTreeAPI: true})
	files := clipRepo()
	hub.AddRepo("immich-app/"+clipName, files)
	s := newStore(t, hub, nil)
	dir, err := s.Ensure(context.Background(), TaskCLIP, TypeTextual, clipName)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualFile(t, filepath.Join(dir, "textual", ModelFile), files["textual/model.onnx"])

	// The X-Linked-Etag sha256 is checked.
	hub.AddRepo("immich-app/buffalo_s", faceRepo())
	hub.Fail(hubtest.CDNKey("immich-app/buffalo_s", "detection/model.onnx"), hubtest.Fault{Corrupt: true})
	if _, err := s.Ensure(context.Background(), TaskFacialRecognition, TypeDetection, "buffalo_s"); !errors.Is(err, ErrChecksum) {
		t.Fatalf("corrupt file from a mirror: err = %v, want ErrChecksum", err)
	}
}

func TestDownloadFaults(t *testing.T) {
	const repo = "immich-app/" + clipName
	vis := clipRepo()["visual/model.onnx"]
	visKey := hubtest.CDNKey(repo, "visual/model.onnx")
	cfgKey := hubtest.FileKey(repo, "config.json")

	tests := []struct {
		name    string
		key     string
		faults  []hubtest.Fault
		err     error // nil: success
		minReqs int   // requests on key
		typ     Type  // what to Ensure; default visual
	}{
		{"truncated once then resumed", visKey, []hubtest.Fault{{Times: 1, Truncate: true, TruncateAt: len(vis) / 2}}, nil, 2, ""},
		{"truncated at zero bytes twice", visKey, []hubtest.Fault{{Times: 2, Truncate: true}}, nil, 3, ""},
		{"small file truncated once", cfgKey, []hubtest.Fault{{Times: 1, Truncate: true, TruncateAt: 5}}, nil, 2, ""},
		{"server ignores Range on resume", visKey, []hubtest.Fault{{Times: 1, Truncate: true, TruncateAt: 100}, {Times: 1, IgnoreRange: true}}, nil, 2, ""},
		{"5xx then success", visKey, []hubtest.Fault{{Times: 2, Status: 503}}, nil, 3, ""},
		{"429 with Retry-After", cfgKey, []hubtest.Fault{{Times: 1, Status: 429, RetryAfter: 1}}, nil, 2, ""},
		{"api 502 then success", "api/models/" + repo + "/revision/main", []hubtest.Fault{{Times: 1, Status: 502}}, nil, 2, ""},
		{"tree 500 then success", "tree", []hubtest.Fault{{Times: 1, Status: 500}}, nil, 2, ""},
		{"truncated for good", visKey, []hubtest.Fault{{Truncate: true, TruncateAt: 10}}, ErrDownload, 4, ""},
		{"5xx for good", cfgKey, []hubtest.Fault{{Status: 500}}, ErrDownload, 4, TypeTextual},
		{"5xx for good on a file visual does not need", cfgKey, []hubtest.Fault{{Status: 500}}, nil, 4, TypeVisual},
		{"404 on a listed file", hubtest.FileKey(repo, "visual/model.onnx"), []hubtest.Fault{{Status: 404}}, ErrNotFound, 1, ""},
		{"403", cfgKey, []hubtest.Fault{{Status: 403}}, ErrDownload, 1, TypeTextual},
		{"corrupt body", visKey, []hubtest.Fault{{Corrupt: true}}, ErrChecksum, 1, ""},
		{"corrupt small file (git blob id)", cfgKey, []hubtest.Fault{{Corrupt: true}}, ErrChecksum, 1, TypeTextual},
		{"stalled then success", visKey, []hubtest.Fault{{Times: 1, Stall: 10 * time.Second, StallAt: 1000}}, nil, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := hubtest.New(t, hubtest.Options{})
			files := clipRepo()
			commit := hub.AddRepo(repo, files)
			if tt.key == "tree" {
				tt.key = "api/models/" + repo + "/tree/" + commit
			}
			hub.Fail(tt.key, tt.faults...)
			s := newStore(t, hub, func(o *StoreOptions) { o.StallTimeout = 300 * time.Millisecond })
			typ := cmpOr(tt.typ, TypeVisual)
			dir, err := s.Ensure(context.Background(), TaskCLIP, typ, clipName)
			if n := hub.Requests(tt.key); n < tt.minReqs || (tt.err == nil && n != tt.minReqs) {
				t.Errorf("requests on %s = %d, want %d", tt.key, n, tt.minReqs)
			}
			model := filepath.Join(s.cacheDir, "clip", clipName)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				// Nothing that looks complete: no model.onnx unless it verified.
				for _, f := range listFiles(t, model) {
					if !strings.HasSuffix(f, ".partial") && !bytes.Equal(mustRead(t, filepath.Join(model, f)), files[f]) {
						t.Fatalf("unverified file %s left in the cache", f)
					}
				}
				if ok, _ := s.Cached(TaskCLIP, typ, clipName); ok {
					t.Fatal("failed download reported as cached")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			info, _ := Lookup(TaskCLIP, typ, clipName)
			for _, f := range info.Files(typ) {
				mustEqualFile(t, filepath.Join(dir, f), files[f])
			}
			for _, f := range listFiles(t, model) {
				if strings.HasSuffix(f, ".partial") && tt.name != "5xx for good on a file visual does not need" {
					t.Fatalf("partial file %s left after success", f)
				}
			}
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
