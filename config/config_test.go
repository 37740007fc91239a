package config

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func env(kv ...string) LookupFunc {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	c, err := Load(env())
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr() != "0.0.0.0:3003" || c.ModelTTL != 300*time.Second || c.MaxBatchOCR != 6 ||
		c.ModelOrganization != "immich-app" || c.ModelRevision != "main" || c.LogLevel != slog.LevelInfo ||
		c.HFEndpoint != "https://huggingface.co" || !c.Arena || c.MaxUploadBytes != 100<<20 ||
		strings.Join(c.Providers, ",") != "CUDA,OpenVINO,CPU" || c.WorkerTimeout != 300*time.Second {
		t.Fatalf("defaults %+v", c)
	}
	if len(c.Table()) < 30 {
		t.Fatalf("table has %d entries", len(c.Table()))
	}
}

func TestImmichVariables(t *testing.T) {
	c, err := Load(env(
		"IMMICH_HOST", "::", "IMMICH_PORT", "3004", "IMMICH_LOG_LEVEL", "verbose",
		"MACHINE_LEARNING_CACHE_FOLDER", "/cache", "MACHINE_LEARNING_MODEL_TTL", "0",
		"MACHINE_LEARNING_PRELOAD__CLIP__TEXTUAL", "ViT-B-32__openai, XLM-Roberta-Large-Vit-B-32",
		"MACHINE_LEARNING_PRELOAD__FACIAL_RECOGNITION__DETECTION", "buffalo_l",
		"MACHINE_LEARNING_MAX_BATCH_SIZE__FACIAL_RECOGNITION", "8",
		"MACHINE_LEARNING_DEVICE_IDS", "1,0", "MLSERVE_PROVIDERS", "cudaexecutionprovider, cpu",
		"HF_HUB_OFFLINE", "1", "HF_TOKEN", "hf_secret", "MACHINE_LEARNING_OPENVINO_PRECISION", "fp16",
	))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr() != "[::]:3004" || c.LogLevel != slog.LevelDebug || c.CacheFolder != "/cache" || c.ModelTTL != 0 {
		t.Fatalf("%+v", c)
	}
	if len(c.Preload) != 2 || c.Preload[0].Task != "clip" || c.Preload[0].Type != "textual" ||
		strings.Join(c.Preload[0].Names, "|") != "ViT-B-32__openai|XLM-Roberta-Large-Vit-B-32" ||
		c.Preload[1].Task != "facial-recognition" || c.Preload[1].Names[0] != "buffalo_l" {
		t.Fatalf("preload %+v", c.Preload)
	}
	if c.MaxBatchFace != 8 || c.DeviceID != 1 || strings.Join(c.Providers, ",") != "CUDA,CPU" || !c.HFOffline || c.OpenVINOPrecision != "FP16" {
		t.Fatalf("%+v", c)
	}
	for _, e := range c.Table() {
		if strings.Contains(e.Value, "hf_secret") {
			t.Fatal("HF_TOKEN appears in the logged table")
		}
	}
}

func TestInvalidValuesNameTheVariable(t *testing.T) {
	for _, kv := range [][2]string{
		{"IMMICH_PORT", "abc"}, {"IMMICH_PORT", "70000"}, {"IMMICH_LOG_LEVEL", "loud"},
		{"MACHINE_LEARNING_MODEL_TTL", "5m"}, {"MACHINE_LEARNING_MODEL_ARENA", "maybe"},
		{"MLSERVE_PROVIDERS", "TPU"}, {"MACHINE_LEARNING_MAX_BATCH_SIZE__OCR", "0"},
		{"MACHINE_LEARNING_OPENVINO_PRECISION", "INT4"}, {"MLSERVE_MAX_QUEUE", "-1"},
	} {
		_, err := Load(env(kv[0], kv[1]))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), kv[0]) {
			t.Errorf("%s=%s: err = %v", kv[0], kv[1], err)
		}
	}
	// Several mistakes are reported together.
	_, err := Load(env("IMMICH_PORT", "x", "MLSERVE_MAX_QUEUE", "y"))
	if err == nil || !strings.Contains(err.Error(), "IMMICH_PORT") || !strings.Contains(err.Error(), "MLSERVE_MAX_QUEUE") {
		t.Fatalf("err = %v", err)
	}
}
