package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/mlserve/mlserve/inference/clip"
	"github.com/mlserve/mlserve/inference/imaging/imagingtest"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/onnx"
	"github.com/mlserve/mlserve/search"
)

const testModel = "ViT-B-32__openai"

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// clipDir writes a CLIP model folder as Immich's cache holds it, with a
// generated visual graph, and returns it.
func clipDir(t testing.TB, m onnx.Model) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "clip", testModel)
	writeCLIPDir(t, dir, m)
	return dir
}

func writeCLIPDir(t testing.TB, dir string, m onnx.Model) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "visual"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile(filepath.Join(dir, "visual", "model.onnx")); err != nil {
		t.Fatal(err)
	}
	cfg := `{"size": [224, 224], "mode": "RGB", "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}`
	if err := os.WriteFile(filepath.Join(dir, "visual", "preprocess_cfg.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// smallCLIP is the generated CLIP image graph the tests embed with.
func smallCLIP() onnx.Model { return modelgen.CLIPVisual{Size: 224, Dim: 512, Seed: 7}.Model() }

// loadVisual loads the CLIP image encoder of dir on the shared test runtime.
func loadVisual(t testing.TB, dir string) *clip.Visual {
	t.Helper()
	v, err := clip.LoadVisual(dir, testenv.Runtime(t), clip.VisualOptions{}, nil)
	if err != nil {
		t.Fatalf("LoadVisual: %v", err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// genImages writes n distinct images (JPEG, PNG and WebP in turn) under
// dir, some in sub-folders, and returns their paths.
func genImages(t testing.TB, dir string, n int, seed uint64) []string {
	t.Helper()
	var paths []string
	for i := range n {
		r := mrand.New(mrand.NewPCG(seed, uint64(i)))
		w, h := 160+r.IntN(200), 120+r.IntN(160)
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		bg := color.RGBA{uint8(r.IntN(256)), uint8(r.IntN(256)), uint8(r.IntN(256)), 255}
		for y := range h {
			for x := range w {
				img.Set(x, y, bg)
			}
		}
		for range 6 {
			c := color.RGBA{uint8(r.IntN(256)), uint8(r.IntN(256)), uint8(r.IntN(256)), 255}
			x0, y0 := r.IntN(w), r.IntN(h)
			x1, y1 := x0+r.IntN(w/2+1), y0+r.IntN(h/2+1)
			for y := y0; y < min(y1, h); y++ {
				for x := x0; x < min(x1, w); x++ {
					img.Set(x, y, c)
				}
			}
		}
		sub := dir
		if i%3 == 1 {
			sub = filepath.Join(dir, "sub", fmt.Sprintf("d%d", i%2))
		}
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		var ext string
		switch i % 3 {
		case 0:
			ext = ".jpg"
			if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
				t.Fatal(err)
			}
		case 1:
			ext = ".png"
			if err := png.Encode(&buf, img); err != nil {
				t.Fatal(err)
			}
		case 2:
			ext = ".webp"
			b := img.Bounds()
			rgb := make([]byte, 0, b.Dx()*b.Dy()*3)
			for y := b.Min.Y; y < b.Max.Y; y++ {
				for x := b.Min.X; x < b.Max.X; x++ {
					c := img.RGBAAt(x, y)
					rgb = append(rgb, c.R, c.G, c.B)
				}
			}
			data, err := imagingtest.WebP(rgb, b.Dx(), b.Dy(), 100) // imencode's default quality
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(data)
		}
		p := filepath.Join(sub, fmt.Sprintf("img%03d%s", i, ext))
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func uniqueName(t testing.TB, prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "_"))
	if len(name) > 40 {
		name = name[:40]
	}
	return prefix + name + "_" + hex.EncodeToString(b[:])
}

// testSchema is a schema of the shared test database for t alone, dropped
// at the end.
func testSchema(t testing.TB) string {
	t.Helper()
	url := testenv.DatabaseURL(t)
	schema := uniqueName(t, "j_")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Logf("drop schema: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Logf("drop schema: %v", err)
		}
	})
	return schema
}

// visualStore loads the small CLIP model and opens a store of the test's
// own schema with the model registered.
func visualStore(t testing.TB) (*clip.Visual, *search.Store) {
	t.Helper()
	v := loadVisual(t, clipDir(t, smallCLIP()))
	store := openStore(t, testenv.DatabaseURL(t), testSchema(t))
	if _, err := store.EnsureModel(ctxT(t), testModel, v.Dim()); err != nil {
		t.Fatal(err)
	}
	return v, store
}

func openStore(t testing.TB, url, schema string) *search.Store {
	t.Helper()
	s, err := search.Open(ctxT(t), search.Options{URL: url, Schema: schema}, nil)
	if err != nil {
		t.Fatalf("search.Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func redisClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newRedisQueue is a queue with a name of its own on the test Redis; its
// keys are deleted at the end.
func newRedisQueue(t testing.TB, c *redis.Client, opts RedisOptions) *Redis {
	t.Helper()
	opts.Client = c
	if opts.Name == "" {
		opts.Name = uniqueName(t, "mlserve-test:")
	}
	q, err := NewRedis(ctxT(t), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Keys(ctx, "{"+opts.Name+"}*").Result()
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
	return q
}
