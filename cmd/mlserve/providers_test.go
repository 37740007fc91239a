package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/mlserve/mlserve/internal/testenv"
)

// TestServeRefusesWithoutUsableProvider starts `mlserve serve` with only
// GPU providers listed on the CPU-only ONNX Runtime build: it exits with
// an error naming the variable, each provider and what it lacks, and how
// to serve from the CPU.
func TestServeRefusesWithoutUsableProvider(t *testing.T) {
	if os.Getenv("MLSERVE_EXPECT_GPU") != "" {
		t.Skip("needs the CPU-only ONNX Runtime build")
	}
	t.Setenv("MLSERVE_ORT_LIBRARY", testenv.ORTLibrary(t))
	t.Setenv("MACHINE_LEARNING_CACHE_FOLDER", t.TempDir())
	t.Setenv("IMMICH_HOST", "127.0.0.1")
	t.Setenv("IMMICH_PORT", strconv.Itoa(freePort(t)))
	t.Setenv("MLSERVE_PROVIDERS", "CUDA,OpenVINO")
	var out, errb bytes.Buffer
	if code := run([]string{"serve"}, &out, &errb); code == 0 {
		t.Fatalf("serve started without a usable provider:\n%s", errb.String())
	}
	for _, want := range []string{"MLSERVE_PROVIDERS=CUDA,OpenVINO", "no usable execution provider",
		"CUDA: not in this ONNX Runtime build (libonnxruntime_providers_cuda.so is missing)",
		"OpenVINO: not in this ONNX Runtime build", "MLSERVE_ALLOW_CPU_FALLBACK=true"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
	if strings.Contains(errb.String(), "onnxruntime_src") {
		t.Errorf("ONNX Runtime's source paths in the output:\n%s", errb.String())
	}
}
