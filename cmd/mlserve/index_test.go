package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/search"
)

// cliCache writes a model cache with a generated ViT-B-32__openai: the
// visual and textual graphs have Immich's signatures, the tokenizer is
// OpenAI CLIP's.
func cliCache(t *testing.T) string {
	t.Helper()
	cache := t.TempDir()
	dir := filepath.Join(cache, "clip", "ViT-B-32__openai")
	for _, sub := range []string{"visual", "textual"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := (modelgen.CLIPVisual{Size: 224, Dim: 512, Seed: 1}).Model().WriteFile(filepath.Join(dir, "visual", "model.onnx")); err != nil {
		t.Fatal(err)
	}
	pre := `{"size": [224, 224], "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}`
	if err := os.WriteFile(filepath.Join(dir, "visual", "preprocess_cfg.json"), []byte(pre), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := (modelgen.CLIPTextual{Context: 77, Vocab: modelgen.CLIPVocabSize, Dim: 512, Seed: 2}).Model().WriteFile(filepath.Join(dir, "textual", "model.onnx")); err != nil {
		t.Fatal(err)
	}
	if err := (modelgen.CLIPTokenizer{Merges: testenv.TestData(t, "clip/bpe_simple_vocab_16e6.txt")}).WriteDir(filepath.Join(dir, "textual")); err != nil {
		t.Fatal(err)
	}
	cfg := `{"embed_dim": 512, "text_cfg": {"context_length": 77, "width": 512, "heads": 8, "layers": 12}, "vision_cfg": {"image_size": 224}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return cache
}

func cliPhotos(t *testing.T, n int) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i := range n {
		img := image.NewRGBA(image.Rect(0, 0, 200, 150))
		for y := range 150 {
			for x := range 200 {
				img.Set(x, y, color.RGBA{uint8(x*i*7 + y), uint8(y * (i + 3)), uint8(i * 40), 255})
			}
		}
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, img, nil); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("photo%02d.jpg", i))
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return dir, paths
}

func cliSchema(t *testing.T) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	schema := "cli_" + hex.EncodeToString(b[:])
	url := testenv.DatabaseURL(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, url); err == nil {
			_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			conn.Close(ctx)
		}
	})
	return schema
}

func cliEnv(t *testing.T, redisURL string) {
	t.Setenv("MACHINE_LEARNING_CACHE_FOLDER", cliCache(t))
	t.Setenv("HF_HUB_OFFLINE", "true")
	t.Setenv("MLSERVE_PROVIDERS", "CPU")
	t.Setenv("MLSERVE_ORT_LIBRARY", testenv.ORTLibrary(t))
	t.Setenv("MLSERVE_DATABASE_URL", testenv.DatabaseURL(t))
	t.Setenv("MLSERVE_REDIS_URL", redisURL)
	t.Setenv("IMMICH_LOG_LEVEL", "warn")
}

func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("mlserve %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errb.String())
	}
	return out.String()
}

func searchJSON(t *testing.T, args ...string) []search.Hit {
	t.Helper()
	var hits []search.Hit
	out := runCLI(t, append([]string{"search", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &hits); err != nil {
		t.Fatalf("search output %q: %v", out, err)
	}
	return hits
}

func TestCLIIndexAndSearchInProcess(t *testing.T) {
	cliEnv(t, "")
	schema := cliSchema(t)
	dir, photos := cliPhotos(t, 6)
	out := runCLI(t, "index", "--schema", schema, "--batch", "4", "--progress", "50ms", dir)
	if !strings.Contains(out, "indexed 6 of 6 images (0 failed)") || !strings.Contains(out, "models loaded in") {
		t.Fatalf("index output:\n%s", out)
	}
	hits := searchJSON(t, "--schema", schema, "--image", photos[2], "--limit", "3")
	if len(hits) != 3 || hits[0].Path != photos[2] || hits[0].Distance > 1e-4 {
		t.Fatalf("search by example: %+v", hits)
	}
	hits = searchJSON(t, "--schema", schema, "a photo of a dog on the beach")
	if len(hits) != 6 {
		t.Fatalf("text search: %+v", hits)
	}
	out = runCLI(t, "search", "--schema", schema, "--limit", "2", "sunset")
	if !strings.Contains(out, "DISTANCE") || strings.Count(out, "photo") != 2 {
		t.Fatalf("table output:\n%s", out)
	}
	// Nothing changed: nothing to do.
	out = runCLI(t, "index", "--schema", schema, dir)
	if strings.Contains(out, "indexed") && !strings.Contains(out, "indexed 0 of 0") {
		t.Fatalf("second index run:\n%s", out)
	}
}

func TestCLIIndexWithRedisWorker(t *testing.T) {
	redisURL := testenv.RedisURL(t)
	cliEnv(t, redisURL)
	schema := cliSchema(t)
	dir, photos := cliPhotos(t, 5)
	queue := "mlserve-cli-test:" + schema
	cfg, err := config.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	var werr error
	var wout bytes.Buffer
	// Start the worker once the queue exists (index creates it); the
	// worker must not race index for the schema's first migration either,
	// which the advisory lock makes safe anyway.
	wg.Go(func() {
		werr = runWorker(ctx, workerOptions{db: dbFlags{schema: schema, immichSchema: "public"}, queue: queue, batch: 2,
			workers: 1, visibility: 2 * time.Minute, attempts: 3}, &wout, cfg, nil)
	})
	out := runCLI(t, "index", "--schema", schema, "--queue", queue, "--progress", "100ms", dir)
	stop()
	wg.Wait()
	if werr != nil {
		t.Fatalf("worker: %v", werr)
	}
	if !strings.Contains(out, "indexed 5 of 5 images") {
		t.Fatalf("index output:\n%s", out)
	}
	if !strings.Contains(wout.String(), "worker: 5 images") {
		t.Fatalf("worker output:\n%s", wout.String())
	}
	hits := searchJSON(t, "--schema", schema, "--image", photos[4], "--limit", "1")
	if len(hits) != 1 || hits[0].Path != photos[4] {
		t.Fatalf("search: %+v", hits)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	cliEnv(t, "")
	for _, args := range [][]string{
		{"index"},                         // no folder
		{"index", "--immich", "/x"},       // both
		{"index", "--force", "/x"},        // force without immich
		{"search"},                        // no text
		{"search", "--image", "x", "txt"}, // both
		{"search", "--limit", "0", "x"},
		{"worker"}, // no Redis
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(args, &out, &errb); code == 0 {
				t.Fatalf("exit 0; stdout %s", out.String())
			}
		})
	}
}

// TestCLIIndexRetryFailed: a file that does not decode fails the run
// (exit 1, its path listed); a second run leaves it alone while it is
// unchanged and says so; --retry-failed tries it again.
func TestCLIIndexRetryFailed(t *testing.T) {
	cliEnv(t, "")
	schema := cliSchema(t)
	dir, _ := cliPhotos(t, 2)
	bad := filepath.Join(dir, "broken.jpg")
	if err := os.WriteFile(bad, []byte("not a JPEG"), 0o600); err != nil {
		t.Fatal(err)
	}
	index := func(extra ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"index", "--schema", schema, dir}, extra...), &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := index(); code != 1 || !strings.Contains(out, "failed: "+bad) || !strings.Contains(out, "indexed 2 of 3 images (1 failed)") {
		t.Fatalf("first run: exit %d\n%s", code, out)
	}
	if code, out := index(); code != 0 || !strings.Contains(out, "1 skipped as failed before") {
		t.Fatalf("second run: exit %d\n%s", code, out)
	}
	if code, out := index("--retry-failed"); code != 1 || !strings.Contains(out, "failed: "+bad) {
		t.Fatalf("--retry-failed: exit %d\n%s", code, out)
	}
}
