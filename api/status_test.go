package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/pool"
)

func pngBytes(t testing.TB, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type reply struct {
	code   int
	detail string
	header http.Header
	raw    string
}

func post(t testing.TB, url, contentType string, body []byte) reply {
	t.Helper()
	resp, err := http.Post(url+"/predict", contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{code: resp.StatusCode, header: resp.Header, raw: string(b)}
	var d struct {
		Detail any `json:"detail"`
	}
	if json.Unmarshal(b, &d) == nil {
		if s, ok := d.Detail.(string); ok {
			r.detail = s
		}
	}
	return r
}

func form(t testing.TB, fields map[string]string, img []byte) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if e, ok := fields["entries"]; ok {
		_ = w.WriteField("entries", e)
	}
	for k, v := range fields {
		if k != "entries" {
			_ = w.WriteField(k, v)
		}
	}
	if img != nil {
		p, _ := w.CreateFormFile("image", "blob")
		_, _ = p.Write(img)
	}
	w.Close()
	return buf.Bytes(), w.FormDataContentType()
}

// TestStatusCodes pins the status and detail of every refusal: Immich's
// where they make sense, 4xx instead of Immich's 500 for client mistakes.
func TestStatusCodes(t *testing.T) {
	g := loadGolden(t, "in/photo_28.jpg")
	repo, _, _ := clipRepo(t, g)
	st := startStack(t, map[string]map[string][]byte{"immich-app/ViT-B-32__openai": repo}, pool.ServiceOptions{})
	visual := `{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}`
	img := pngBytes(t, 64, 48)
	cases := []struct {
		name     string
		fields   map[string]string
		img      []byte
		code     int
		contains string
	}{
		{"no entries", map[string]string{"text": "x"}, nil, 422, ""},
		{"entries not json", map[string]string{"entries": "{nope", "text": "x"}, nil, 422, "Invalid request format."},
		{"entries an array", map[string]string{"entries": "[]", "text": "x"}, nil, 422, "Invalid request format."},
		{"entry a string", map[string]string{"entries": `{"clip":{"visual":"ViT-B-32__openai"}}`}, img, 422, "Invalid request format."},
		{"no modelName", map[string]string{"entries": `{"clip":{"visual":{}}}`}, img, 422, "Invalid request format."},
		{"empty entries", map[string]string{"entries": `{}`}, img, 422, ""},
		{"unknown task", map[string]string{"entries": `{"dogs":{"visual":{"modelName":"ViT-B-32__openai"}}}`}, img, 422, "unknown task"},
		{"unknown type", map[string]string{"entries": `{"clip":{"audio":{"modelName":"ViT-B-32__openai"}}}`}, img, 422, "unknown model type"},
		{"bad option kind", map[string]string{"entries": `{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":{"minScore":"high"}}}}`}, img, 422, "minScore"},
		{"no input", map[string]string{"entries": visual}, nil, 400, "Either image or text must be provided"},
		{"empty image", map[string]string{"entries": visual}, []byte{}, 400, "empty"},
		{"garbage image", map[string]string{"entries": visual}, []byte("not an image at all"), 400, "Invalid image"},
		{"truncated png", map[string]string{"entries": visual}, img[:40], 400, "Invalid image"},
		{"unknown model", map[string]string{"entries": `{"clip":{"visual":{"modelName":"ViT-Z-99__nobody"}}}`}, img, 400, "unknown"},
		{"path traversal", map[string]string{"entries": `{"clip":{"visual":{"modelName":"../../etc"}}}`}, img, 400, ""},
		{"face pack as clip", map[string]string{"entries": `{"clip":{"visual":{"modelName":"buffalo_l"}}}`}, img, 400, ""},
		{"textual on image", map[string]string{"entries": `{"clip":{"textual":{"modelName":"ViT-B-32__openai"}}}`}, img, 400, "needs text"},
		{"visual on text", map[string]string{"entries": visual, "text": "a dog"}, nil, 400, "needs an image"},
		{"missing dependency", map[string]string{"entries": `{"facial-recognition":{"recognition":{"modelName":"buffalo_l"}}}`}, img, 400, "depends on output of"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body, ct := form(t, c.fields, c.img)
			r := post(t, st.url, ct, body)
			if r.code != c.code {
				t.Fatalf("status %d, want %d: %s", r.code, c.code, r.raw)
			}
			if c.contains != "" && !strings.Contains(r.detail, c.contains) {
				t.Fatalf("detail %q does not contain %q", r.detail, c.contains)
			}
		})
	}
	t.Run("missing entries body is FastAPI's", func(t *testing.T) {
		body, ct := form(t, map[string]string{"text": "x"}, nil)
		r := post(t, st.url, ct, body)
		if !strings.Contains(r.raw, `"loc":["body","entries"]`) || !strings.Contains(r.raw, `"type":"missing"`) {
			t.Fatalf("body %s", r.raw)
		}
	})
	t.Run("not multipart", func(t *testing.T) {
		r := post(t, st.url, "application/json", []byte(`{"entries":{}}`))
		if r.code != 422 {
			t.Fatalf("status %d", r.code)
		}
	})
	t.Run("zero-size image", func(t *testing.T) {
		// A PNG header claiming 0×100 pixels.
		var buf bytes.Buffer
		if err := png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, 1, 100))); err != nil {
			t.Fatal(err)
		}
		b := buf.Bytes()
		copy(b[16:20], []byte{0, 0, 0, 0}) // width 0 in IHDR
		body, ct := form(t, map[string]string{"entries": visual}, b)
		r := post(t, st.url, ct, body)
		if r.code != 400 {
			t.Fatalf("status %d: %s", r.code, r.raw)
		}
	})
	t.Run("unknown path and method", func(t *testing.T) {
		resp, _ := http.Get(st.url + "/nope")
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || string(b) != `{"detail":"Not Found"}` {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		resp, _ = http.Get(st.url + "/predict")
		resp.Body.Close()
		if resp.StatusCode != 405 {
			t.Fatalf("GET /predict: %d", resp.StatusCode)
		}
	})
	t.Run("root and ping", func(t *testing.T) {
		resp, _ := http.Get(st.url + "/")
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != `{"message":"Immich ML"}` {
			t.Fatalf("/ = %s", b)
		}
		resp, _ = http.Get(st.url + "/ping")
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "pong" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("/ping = %q %q", b, resp.Header.Get("Content-Type"))
		}
	})
	// A model the hub does not have: a load failure, 500 with Immich's words.
	t.Run("model missing on the hub", func(t *testing.T) {
		body, ct := form(t, map[string]string{"entries": `{"clip":{"visual":{"modelName":"ViT-L-14__openai"}}}`}, img)
		r := post(t, st.url, ct, body)
		if r.code != 500 || !strings.Contains(r.detail, "Failed to load model 'ViT-L-14__openai'") {
			t.Fatalf("%d %q", r.code, r.raw)
		}
	})
}

func TestUploadLimit(t *testing.T) {
	// A server with a small limit refuses a larger body with 413.
	small := startSmallLimit(t, 1<<20)
	body, ct := form(t, map[string]string{"entries": `{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}`}, make([]byte, 2<<20))
	r := post(t, small, ct, body)
	if r.code != 413 {
		t.Fatalf("status %d, want 413: %.200s", r.code, r.raw)
	}
}

// TestOverloadAnswers503 fills the workers and the queue with slow
// requests: the next one is refused at once with 503 and Retry-After,
// while /ping still answers.
func TestOverloadAnswers503(t *testing.T) {
	g := loadGolden(t, "in/photo_28.jpg")
	repo, _, _ := clipRepo(t, g)
	// A visual tower that takes a while: the busy graph under Immich's names.
	repo["visual/model.onnx"] = modelgen.ViT{ImageSize: g.Size, Patch: 4, Width: 256, Layers: 8, Heads: 4, MLP: 1024, Dim: 512}.Model().Marshal()
	st := startStack(t, map[string]map[string][]byte{"immich-app/ViT-B-32__openai": repo}, pool.ServiceOptions{
		Workers: pool.WorkersOptions{Workers: 1, Queue: 1},
	})
	img, _ := os.ReadFile(g.Input)
	entries := `{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}`
	// Load the model first so that the slow part is inference.
	immichJSON(t, st.url, entries, img, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ { // one running, one queued
		wg.Go(func() {
			for ctx.Err() == nil {
				resp := immichRequest(t, st.url, entries, img, nil)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	got503 := false
	for time.Now().Before(deadline) && !got503 {
		body, ct := form(t, map[string]string{"entries": entries}, img)
		r := post(t, st.url, ct, body)
		switch r.code {
		case 503:
			got503 = true
			if r.header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		case 200:
		default:
			t.Fatalf("status %d: %s", r.code, r.raw)
		}
		start := time.Now()
		resp, err := http.Get(st.url + "/ping")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("/ping took %v under load (Immich's health check gives up after 2 s)", d)
		}
	}
	cancel()
	wg.Wait()
	if !got503 {
		t.Fatal("never refused with 503 although the only worker and the queue were busy")
	}
}

func startSmallLimit(t *testing.T, limit int64) string {
	t.Helper()
	return startStackWith(t, stackOptions{maxBody: limit}).url
}
