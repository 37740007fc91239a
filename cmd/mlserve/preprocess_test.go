package main

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"log/slog"
	"testing"

	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/internal/testenv"
)

// TestIndexDecoder: the indexer decodes with the service's decoder, so
// MLSERVE_PREPROCESS=fast decodes a JPEG smaller for the CLIP model's
// 224-pixel input, unless faces or OCR run on the image too.
func TestIndexDecoder(t *testing.T) {
	t.Setenv("MACHINE_LEARNING_CACHE_FOLDER", cliCache(t))
	t.Setenv("HF_HUB_OFFLINE", "true")
	t.Setenv("MLSERVE_PROVIDERS", "CPU")
	t.Setenv("MLSERVE_ORT_LIBRARY", testenv.ORTLibrary(t))
	img := image.NewRGBA(image.Rect(0, 0, 1000, 800))
	for y := range 800 {
		for x := range 1000 {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mode string
		full bool
		w, h int
	}{
		{"exact", false, 1000, 800},
		{"fast", false, 375, 300}, // 3/8: the smallest eighth with both sides ≥ 224
		{"fast", true, 1000, 800},
	} {
		t.Setenv("MLSERVE_PREPROCESS", c.mode)
		cfg, err := config.FromEnv()
		if err != nil {
			t.Fatal(err)
		}
		logger := slog.New(slog.DiscardHandler)
		rt, err := newRuntime(cfg, logger)
		if err != nil {
			t.Fatal(err)
		}
		svc, err := newService(cfg, rt, nil, logger)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decoder(context.Background(), svc, "ViT-B-32__openai", c.full)(buf.Bytes())
		svc.Close()
		rt.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got.W != c.w || got.H != c.h {
			t.Errorf("%s (full %v): decoded %d×%d, want %d×%d", c.mode, c.full, got.W, got.H, c.w, c.h)
		}
	}
}
