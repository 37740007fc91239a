package config

import (
	"errors"
	"log/slog"
	"strconv"
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

func TestProviderVariables(t *testing.T) {
	c, err := Load(env())
	if err != nil {
		t.Fatal(err)
	}
	if c.AllowCPUFallback || c.CUDAMemLimit != 0 || c.CUDAArenaExtendStrategy != "kSameAsRequested" ||
		c.CUDAConvAlgoSearch != "HEURISTIC" || !c.CUDACopyInDefaultStream || c.CUDAArenaShrink || c.TensorRTFP16 ||
		c.OpenVINODevice != "AUTO" || len(c.DeviceIDs) != 1 || c.DeviceIDs[0] != 0 || c.DeviceID != 0 {
		t.Fatalf("defaults %+v", c)
	}
	c, err = Load(env(
		"MLSERVE_PROVIDERS", "tensorrt,CUDA", "MLSERVE_ALLOW_CPU_FALLBACK", "true",
		"MLSERVE_CUDA_MEM_LIMIT", "8GiB", "MLSERVE_CUDA_ARENA_EXTEND_STRATEGY", "knextpoweroftwo",
		"MLSERVE_CUDA_CONV_ALGO_SEARCH", "exhaustive", "MLSERVE_CUDA_COPY_IN_DEFAULT_STREAM", "false",
		"MLSERVE_CUDA_ARENA_SHRINK", "1", "MLSERVE_TENSORRT_FP16", "yes", "MLSERVE_OPENVINO_DEVICE", "npu",
		"MACHINE_LEARNING_DEVICE_IDS", "2, 0,1",
	))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Providers, ",") != "TensorRT,CUDA" || !c.AllowCPUFallback || c.CUDAMemLimit != 8<<30 ||
		c.CUDAArenaExtendStrategy != "kNextPowerOfTwo" || c.CUDAConvAlgoSearch != "EXHAUSTIVE" || c.CUDACopyInDefaultStream ||
		!c.CUDAArenaShrink || !c.TensorRTFP16 || c.OpenVINODevice != "NPU" || fmtInts(c.DeviceIDs) != "2,0,1" || c.DeviceID != 2 {
		t.Fatalf("%+v", c)
	}
	// Immich's per-worker MACHINE_LEARNING_DEVICE_ID: alone, or first of
	// the list.
	for _, tc := range []struct {
		kv       []string
		ids      string
		deviceID int
	}{
		{[]string{"MACHINE_LEARNING_DEVICE_ID", "3"}, "3", 3},
		{[]string{"MACHINE_LEARNING_DEVICE_ID", "1", "MACHINE_LEARNING_DEVICE_IDS", "0,1,2"}, "1,0,2", 1},
	} {
		c, err := Load(env(tc.kv...))
		if err != nil {
			t.Fatal(err)
		}
		if fmtInts(c.DeviceIDs) != tc.ids || c.DeviceID != tc.deviceID {
			t.Errorf("%v: ids %v, id %d", tc.kv, c.DeviceIDs, c.DeviceID)
		}
	}
}

func fmtInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func TestProviderVariablesRejected(t *testing.T) {
	for _, kv := range [][]string{
		{"MLSERVE_PROVIDERS", "CUDA,TPU"}, {"MLSERVE_PROVIDERS", ","}, {"MLSERVE_PROVIDERS", "FakeGPU"},
		{"MLSERVE_ALLOW_CPU_FALLBACK", "sometimes"},
		{"MLSERVE_CUDA_MEM_LIMIT", "lots"}, {"MLSERVE_CUDA_MEM_LIMIT", "-1"}, {"MLSERVE_CUDA_MEM_LIMIT", "8XB"},
		{"MLSERVE_CUDA_MEM_LIMIT", "99999999999TiB"},
		{"MLSERVE_CUDA_ARENA_EXTEND_STRATEGY", "kDouble"}, {"MLSERVE_CUDA_CONV_ALGO_SEARCH", "FASTEST"},
		{"MLSERVE_CUDA_COPY_IN_DEFAULT_STREAM", "2"}, {"MLSERVE_CUDA_ARENA_SHRINK", "often"},
		{"MLSERVE_TENSORRT_FP16", "half"}, {"MLSERVE_OPENVINO_DEVICE", "TPU"},
		{"MACHINE_LEARNING_DEVICE_IDS", "0,x"}, {"MACHINE_LEARNING_DEVICE_IDS", "0,0"}, {"MACHINE_LEARNING_DEVICE_IDS", "-1"},
		{"MACHINE_LEARNING_DEVICE_IDS", ","},
		{"MACHINE_LEARNING_DEVICE_ID", "x"}, {"MACHINE_LEARNING_DEVICE_ID", "3", "MACHINE_LEARNING_DEVICE_IDS", "0,1"},
	} {
		_, err := Load(env(kv...))
		name := kv[0]
		if len(kv) > 2 {
			name = "MACHINE_LEARNING_DEVICE_ID="
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: err = %v", kv, err)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1024": 1024, "8GiB": 8 << 30, "8 GiB": 8 << 30, "8G": 8 << 30, "512MB": 512e6, "1.5GiB": 3 << 29,
		"2kb": 2000, "100B": 100, "1TiB": 1 << 40,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "1.2.3", "-5", "5 parsecs", "1e9"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"8GiB", "512MB", "0", "1.5 g", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseSize(s); err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}

// TestPlacementVariables: the GPU placement options, their defaults, and
// bad values refused naming the variable.
func TestPlacementVariables(t *testing.T) {
	c, err := Load(env())
	if err != nil {
		t.Fatal(err)
	}
	if c.DeviceBudget != 0 || c.DeviceHeadroom != 0 || c.ReplicaAfter != 2*time.Second {
		t.Fatalf("defaults: budget %d, headroom %d, replica after %v", c.DeviceBudget, c.DeviceHeadroom, c.ReplicaAfter)
	}
	c, err = Load(env("MLSERVE_DEVICE_MEMORY_BUDGET", "8GiB", "MLSERVE_DEVICE_MEMORY_HEADROOM", "512MiB", "MLSERVE_REPLICA_AFTER_MS", "0"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DeviceBudget != 8<<30 || c.DeviceHeadroom != 512<<20 || c.ReplicaAfter != 0 {
		t.Fatalf("budget %d, headroom %d, replica after %v", c.DeviceBudget, c.DeviceHeadroom, c.ReplicaAfter)
	}
	for v, want := range map[string]int64{"0": -1, "10%": 0, "1G": 1 << 30} {
		c, err = Load(env("MLSERVE_DEVICE_MEMORY_HEADROOM", v))
		if err != nil || c.DeviceHeadroom != want {
			t.Errorf("headroom %s: %d, %v; want %d", v, c.DeviceHeadroom, err, want)
		}
	}
	for _, kv := range [][2]string{
		{"MLSERVE_DEVICE_MEMORY_BUDGET", "lots"}, {"MLSERVE_DEVICE_MEMORY_HEADROOM", "20%"},
		{"MLSERVE_DEVICE_MEMORY_HEADROOM", "-1"}, {"MLSERVE_REPLICA_AFTER_MS", "-5"},
	} {
		_, err := Load(env(kv[0], kv[1]))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), kv[0]) {
			t.Errorf("%s=%s: err = %v", kv[0], kv[1], err)
		}
	}
}

func TestPreprocess(t *testing.T) {
	for in, want := range map[string]string{"": "exact", "exact": "exact", "FAST": "fast", "fast": "fast"} {
		kv := []string{}
		if in != "" {
			kv = []string{"MLSERVE_PREPROCESS", in}
		}
		c, err := Load(env(kv...))
		if err != nil || c.Preprocess != want {
			t.Errorf("MLSERVE_PREPROCESS=%q: %q, %v; want %q", in, c.Preprocess, err, want)
		}
	}
	for _, bad := range []string{"quick", "exact,fast", "PIL"} {
		_, err := Load(env("MLSERVE_PREPROCESS", bad))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "MLSERVE_PREPROCESS") {
			t.Errorf("MLSERVE_PREPROCESS=%q: err = %v", bad, err)
		}
	}
}
