package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mlserve/mlserve/config"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestServeSearch indexes a folder with `mlserve index`, then starts
// `mlserve serve` with the database and searches over HTTP, by text and by
// example image (the example's own file comes first, at distance 0).
func TestServeSearch(t *testing.T) {
	cliEnv(t, "")
	schema := cliSchema(t)
	dir, photos := cliPhotos(t, 5)
	runCLI(t, "index", "--schema", schema, "--batch", "4", dir)

	port := freePort(t)
	t.Setenv("IMMICH_HOST", "127.0.0.1")
	t.Setenv("IMMICH_PORT", strconv.Itoa(port))
	t.Setenv("MLSERVE_SEARCH_SCHEMA", schema)
	cfg, err := config.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/ping")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("serve did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}

	type result struct {
		Results []struct {
			Path     string
			Distance float64
		}
	}
	get := func(q string) result {
		resp, err := http.Get(base + "/search?limit=3&q=" + url.QueryEscape(q))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /search: %d %s", resp.StatusCode, b)
		}
		var r result
		json.Unmarshal(b, &r)
		return r
	}
	if r := get("a dog on the beach"); len(r.Results) != 3 {
		t.Fatalf("text search: %+v", r)
	}
	img, _ := os.ReadFile(photos[3])
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	p, _ := w.CreateFormFile("image", "blob")
	p.Write(img)
	w.WriteField("limit", "2")
	w.Close()
	resp, err := http.Post(base+"/search", w.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var r result
	json.Unmarshal(b, &r)
	if resp.StatusCode != 200 || len(r.Results) != 2 || r.Results[0].Path != photos[3] || r.Results[0].Distance > 1e-4 {
		t.Fatalf("POST /search: %d %s", resp.StatusCode, b)
	}
	resp, _ = http.Get(base + "/search")
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("GET /search without q: %d", resp.StatusCode)
	}
}
