package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

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

// TestDefaultStartOnCPU starts the built binary as a fresh CPU-only
// install does: no MLSERVE_* variable at all (default providers
// CUDA,OpenVINO,CPU, ONNX Runtime found beside the binary). It logs no
// warning (the GPU providers missing from a CPU build is not one), and
// every model runs on the CPU device: the response header, readiness
// (model and device list, no fallback), `mlserve ps` and the metrics say
// so.
func TestDefaultStartOnCPU(t *testing.T) {
	if os.Getenv("MLSERVE_EXPECT_GPU") != "" {
		t.Skip("needs the CPU-only ONNX Runtime build")
	}
	port := freePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "MACHINE_LEARNING_CACHE_FOLDER=" + cliCache(t),
		"IMMICH_HOST=127.0.0.1", "IMMICH_PORT=" + strconv.Itoa(port)}
	cmd := exec.Command(builtBinary(t), "serve")
	cmd.Env = env
	cmd.Dir = t.TempDir()
	var log syncWriter
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			if err := <-exited; err != nil {
				t.Logf("serve, killed: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("serve's log:\n%s", log.String())
		}
	})
	waitPing(t, base, exited)

	_, photos := cliPhotos(t, 1)
	img, err := os.ReadFile(photos[0])
	if err != nil {
		t.Fatal(err)
	}
	body, ct := predictForm(t, img)
	resp, err := http.Post(base+"/predict", ct, body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Mlserve-Provider") != "clip/visual=CPU" {
		t.Fatalf("/predict: %d, X-Mlserve-Provider %q", resp.StatusCode, resp.Header.Get("X-Mlserve-Provider"))
	}

	resp, err = http.Get(base + "/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Status string
		Models []struct {
			Provider, Device string
			Replicas         []struct{ Provider, Device string }
			Fallback         any
		}
		Devices []struct {
			Name, Provider            string
			Models                    int
			OutOfMemory, CPUFallbacks int64
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil || doc.Status != "ready" || len(doc.Models) != 1 {
		t.Fatalf("/health/ready: %v %+v", err, doc)
	}
	m := doc.Models[0]
	if m.Provider != "CPU" || m.Device != "CPU" || m.Fallback != nil || len(m.Replicas) != 1 || m.Replicas[0].Device != "CPU" {
		t.Errorf("model %+v", m)
	}
	if len(doc.Devices) != 1 || doc.Devices[0].Name != "CPU" || doc.Devices[0].Provider != "CPU" || doc.Devices[0].Models != 1 ||
		doc.Devices[0].OutOfMemory != 0 || doc.Devices[0].CPUFallbacks != 0 {
		t.Errorf("devices %+v", doc.Devices)
	}
	r := runBinary(t, env, "ps", "--url", base).must(t, "ps")
	if !strings.Contains(r.stdout, "CPU") || !strings.Contains(r.stdout, "device CPU (CPU): 1 model") {
		t.Errorf("ps:\n%s", r.stdout)
	}
	if v := metricValue(t, base, `mlserve_device_models{device="CPU",provider="CPU"}`); v != 1 {
		t.Errorf("mlserve_device_models on the CPU: %v", v)
	}

	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("serve exited: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop on SIGINT")
	}
	out := log.String()
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("a default CPU start logged: %s", line)
		}
	}
	if !strings.Contains(out, "listening on 127.0.0.1:"+strconv.Itoa(port)) || !strings.Contains(out, "providers=CPU") {
		t.Errorf("no banner naming the CPU provider:\n%s", out)
	}
}
