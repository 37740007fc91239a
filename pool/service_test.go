package pool_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/models/hubtest"
	"github.com/mlserve/mlserve/pool"
)

func visualRepo() map[string][]byte {
	return map[string][]byte{
		"visual/model.onnx":          modelgen.CLIPVisual{Size: 56, Dim: 512}.Model().Marshal(),
		"visual/preprocess_cfg.json": []byte(`{"size":[56,56],"mean":[0.48145466,0.4578275,0.40821073],"std":[0.26862954,0.26130258,0.27577711]}`),
		"config.json":                []byte(`{"embed_dim":512}`),
	}
}

func newService(t *testing.T, hub *hubtest.Server, cache string, opts pool.ServiceOptions) *pool.Service {
	t.Helper()
	store, err := models.NewStore(models.StoreOptions{CacheDir: cache, HFEndpoint: hub.URL(), HTTPClient: hub.Client(), MinBackoff: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := pool.NewService(opts, store, testenv.Runtime(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

func jpeg(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.Root(), "inference", "clip", "testdata", "in", "photo_28.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var visualEntry = []pool.Entry{{Task: "clip", Type: "visual", ModelName: "ViT-B-32__openai"}}

// TestCorruptModelIsFetchedAgain: a model file in the cache that does not
// load is cleared and downloaded once more, as Immich does.
func TestCorruptModelIsFetchedAgain(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddRepo("immich-app/ViT-B-32__openai", visualRepo())
	cache := t.TempDir()
	dir := filepath.Join(cache, "clip", "ViT-B-32__openai")
	if err := os.MkdirAll(filepath.Join(dir, "visual"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "visual", "model.onnx"), []byte("half a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "visual", "preprocess_cfg.json"), visualRepo()["visual/preprocess_cfg.json"], 0o644); err != nil {
		t.Fatal(err)
	}
	// Something next to the model folder that must survive the clearing.
	if err := os.MkdirAll(filepath.Join(cache, "clip", "other"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "clip", "other", "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	svc := newService(t, hub, cache, pool.ServiceOptions{})
	res, err := svc.Predict(context.Background(), &pool.Request{Entries: visualEntry, Image: jpeg(t)})
	if err != nil {
		t.Fatal(err)
	}
	if emb := res.Output("clip").(*pool.CLIPResult).Embedding; len(emb) != 512 {
		t.Fatalf("embedding of %d", len(emb))
	}
	if hub.Total() == 0 {
		t.Fatal("the corrupt model was not downloaded again")
	}
	if _, err := os.Stat(filepath.Join(cache, "clip", "other", "keep")); err != nil {
		t.Fatalf("clearing removed a neighbour: %v", err)
	}
}

// TestBrokenModelFailsWithoutHammeringTheHub: a model that stays broken
// after a fresh download fails with ErrLoadFailed, and further requests
// within the hold-off fail at once without new downloads.
func TestBrokenModelFailsWithoutHammeringTheHub(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	repo := visualRepo()
	repo["visual/model.onnx"] = []byte("not onnx")
	hub.AddRepo("immich-app/ViT-B-32__openai", repo)
	svc := newService(t, hub, t.TempDir(), pool.ServiceOptions{})
	_, err := svc.Predict(context.Background(), &pool.Request{Entries: visualEntry, Image: jpeg(t)})
	if !errors.Is(err, pool.ErrLoadFailed) {
		t.Fatalf("err = %v", err)
	}
	n := hub.Total()
	for i := 0; i < 3; i++ {
		if _, err := svc.Predict(context.Background(), &pool.Request{Entries: visualEntry, Image: jpeg(t)}); !errors.Is(err, pool.ErrLoadFailed) {
			t.Fatalf("err = %v", err)
		}
	}
	if hub.Total() != n {
		t.Fatalf("hub requests went from %d to %d during the hold-off", n, hub.Total())
	}
}

// TestPreloadedModelsStay: preloaded models survive the idle TTL; others
// are unloaded by it.
func TestPreloadedModelsStay(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddRepo("immich-app/ViT-B-32__openai", visualRepo())
	hub.AddRepo("immich-app/ViT-B-16__openai", visualRepo())
	svc := newService(t, hub, t.TempDir(), pool.ServiceOptions{Cache: pool.CacheOptions{TTL: 50 * time.Millisecond}})
	if err := svc.Preload(context.Background(), "clip", "visual", []string{"ViT-B-32::openai"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Predict(context.Background(), &pool.Request{
		Entries: []pool.Entry{{Task: "clip", Type: "visual", ModelName: "ViT-B-16__openai"}}, Image: jpeg(t),
	}); err != nil {
		t.Fatal(err)
	}
	if n := len(svc.Loaded()); n != 2 {
		t.Fatalf("%d loaded", n)
	}
	time.Sleep(100 * time.Millisecond)
	svc.Cache().Sweep()
	loaded := svc.Loaded()
	if len(loaded) != 1 || loaded[0].Key.Name != "ViT-B-32__openai" || !loaded[0].Pinned {
		t.Fatalf("after the TTL: %+v", loaded)
	}
	if err := svc.Preload(context.Background(), "clip", "visual", []string{"no-such-model"}); !errors.Is(err, models.ErrUnknownModel) {
		t.Fatalf("preloading an unknown model: %v", err)
	}
}
