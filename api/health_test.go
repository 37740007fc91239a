package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/mlserve/mlserve/pool"
)

// TestHealthAndMetrics: readiness lists the loaded models and their
// provider; /metrics exposes requests, latency, queue depth, model load
// and inference time per model and provider, and loaded models.
func TestHealthAndMetrics(t *testing.T) {
	g := loadGolden(t, "in/photo_28.jpg")
	repo, _, _ := clipRepo(t, g)
	st := startStack(t, map[string]map[string][]byte{"immich-app/ViT-B-32__openai": repo}, pool.ServiceOptions{})
	img, _ := os.ReadFile(g.Input)
	immichJSON(t, st.url, `{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}`, img, nil)
	immichRequest(t, st.url, `{"clip":{"visual":{"modelName":"nope"}}}`, img, nil).Body.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get(st.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/health/live"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("live: %d %s", code, body)
	}
	code, body := get("/health/ready")
	if code != 200 {
		t.Fatalf("ready: %d %s", code, body)
	}
	var ready struct {
		Status string
		Models []struct{ Task, Type, Model, Provider string }
	}
	if err := json.Unmarshal([]byte(body), &ready); err != nil {
		t.Fatal(err)
	}
	if ready.Status != "ready" || len(ready.Models) != 1 || ready.Models[0].Provider != "CPU" || ready.Models[0].Model != "ViT-B-32__openai" {
		t.Fatalf("ready body %s", body)
	}
	code, body = get("/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`mlserve_http_requests_total{code="200",route="/predict"} 1`,
		`mlserve_http_requests_total{code="400",route="/predict"} 1`,
		`mlserve_http_request_duration_seconds_count{route="/predict"} 2`,
		`mlserve_inference_seconds_count{model="ViT-B-32__openai",provider="CPU",task="clip",type="visual"} 1`,
		`mlserve_model_load_seconds_count{model="ViT-B-32__openai",task="clip",type="visual"} 1`,
		`mlserve_models_loaded 1`,
		`mlserve_queue_depth 0`,
		`mlserve_workers 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// After shutdown begins, readiness says so.
	st.svc.Close()
	if code, body := get("/health/ready"); code != 503 || !strings.Contains(body, "not ready") {
		t.Fatalf("ready after close: %d %s", code, body)
	}
}
