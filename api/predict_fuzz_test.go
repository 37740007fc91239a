package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlserve/mlserve/api"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
)

// FuzzPredict sends any multipart body to /predict in process (app.Test),
// on a real service whose model cache is empty and offline: every request
// that gets as far as a model ends in Immich's load failure. Whatever the
// body, the answer comes, with a JSON body and one of the statuses the
// contract allows; a 500 is only the load failure, in Immich's words and
// without the cache's path; a 422 for a missing entries field is FastAPI's
// exact body.
func FuzzPredict(f *testing.F) {
	cache := f.TempDir()
	store, err := models.NewStore(models.StoreOptions{CacheDir: cache, Offline: true, HFEndpoint: "http://127.0.0.1:9"}, nil)
	if err != nil {
		f.Fatal(err)
	}
	svc, err := pool.NewService(pool.ServiceOptions{}, store, testenv.Runtime(f), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(svc.Close)
	srv := api.New(api.Options{Predictor: svc, MaxBodyBytes: 1 << 20, MaxInflightBytes: 1 << 20, RequestTimeout: 10 * time.Second}, nil)
	app := srv.App()

	add := func(parts ...[3]string) {
		var b strings.Builder
		for _, p := range parts {
			b.WriteString("--B\r\nContent-Disposition: form-data; name=\"" + p[0] + "\"")
			if p[1] != "" {
				b.WriteString("; filename=\"" + p[1] + "\"\r\nContent-Type: application/octet-stream")
			}
			b.WriteString("\r\n\r\n" + p[2] + "\r\n")
		}
		b.WriteString("--B--\r\n")
		f.Add([]byte(b.String()))
	}
	add([3]string{"entries", "", `{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}`}, [3]string{"image", "blob", "\xff\xd8\xff\xe0garbage"})
	add([3]string{"entries", "", `{"clip":{"textual":{"modelName":"ViT-B-32__openai","options":{"language":"en"}}}}`}, [3]string{"text", "", "a dog"})
	add([3]string{"entries", "", `{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":{"minScore":0.7}},"recognition":{"modelName":"buffalo_l"}}}`}, [3]string{"image", "blob", ""})
	add([3]string{"entries", "", `{"ocr":{"detection":{"modelName":"PP-OCRv5_mobile","options":{"minScore":null}}}}`}, [3]string{"image", "", "x"})
	add([3]string{"text", "", "no entries"})
	add([3]string{"entries", "e.json", `{"clip":{"visual":{"modelName":"../../etc"}}}`})
	add([3]string{"entries", "", `{}`}, [3]string{"image", "blob", "GIF89a"})
	f.Add([]byte("--B\r\n\r\n--B--"))
	f.Add([]byte{})

	allowed := map[int]bool{200: true, 400: true, 408: true, 413: true, 422: true, 500: true, 503: true}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/predict", bytes.NewReader(body))
		req.Header.Set("Content-Type", "multipart/form-data; boundary=B")
		req.Header.Set("Content-Length", strconv.Itoa(len(body)))
		resp, err := app.Test(req, -1)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !allowed[resp.StatusCode] {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		if !json.Valid(b) {
			t.Fatalf("status %d, body not JSON: %q", resp.StatusCode, b)
		}
		var d struct{ Detail any }
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("status %d, body not a JSON object: %q", resp.StatusCode, b)
		}
		msg, _ := d.Detail.(string)
		switch resp.StatusCode {
		case 500:
			if !strings.HasPrefix(msg, "Failed to load model") || strings.Contains(msg, cache) || strings.Contains(msg, "http") {
				t.Fatalf("500 %s", b)
			}
		case 422:
			if msg == "" && !bytes.Contains(b, []byte(`"loc":["body","entries"]`)) {
				t.Fatalf("422 %s", b)
			}
		}
	})
}
