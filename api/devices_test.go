package api

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/pool"
)

// TestDeviceErrorStatus: the device errors the pool and inference return
// become 503 (out of memory) or 500 (another device failure), naming the
// device and its memory, never the model's path or ONNX Runtime's message;
// found with errors.As through the pool's wrapping, not by their text.
func TestDeviceErrorStatus(t *testing.T) {
	const path = "/srv/cache/clip/ViT-B-32__openai/visual/model.onnx"
	oom := &inference.DeviceError{Op: "run", Model: path, Device: "CUDA:1", Provider: inference.CUDA,
		Total: 24 << 30, Free: 300 << 20, Requested: 3 << 29, Err: inference.ErrOutOfMemory, Detail: "CUDA failure 2: out of memory"}
	broken := &inference.DeviceError{Op: "load", Model: path, Device: "CUDA:0", Provider: inference.TensorRT,
		Err: inference.ErrDevice, Detail: "TensorRT EP failed to build engine at " + path}
	loadFailed := fmt.Errorf("%w '%s': %w", pool.ErrLoadFailed, "ViT-B-32__openai", broken)
	for _, tc := range []struct {
		name string
		err  error
		code int
		msg  string
	}{
		{"run out of memory", fmt.Errorf("clip/visual ViT-B-32__openai: %w", oom), 503,
			"CUDA:1 out of memory running the model: it asked for 1.5 GiB, 300.0 MiB free of 24.0 GiB"},
		{"device failure on load", loadFailed, 500,
			"CUDA:0 failed loading model 'ViT-B-32__openai' (TensorRT error; see the server's log)"},
		{"device failure on run", fmt.Errorf("x: %w", &inference.DeviceError{Op: "run", Model: path, Device: "OpenVINO:GPU.0", Provider: inference.OpenVINO, Err: inference.ErrDevice}), 500,
			"OpenVINO:GPU.0 failed running the model (OpenVINO error; see the server's log)"},
		{"pool memory error", fmt.Errorf("%w '%s': %w", pool.ErrLoadFailed, "ViT-L-14__openai",
			&pool.DeviceMemoryError{Key: pool.Key{Task: "clip", Type: "visual", Name: "ViT-L-14__openai"}, Op: "load", Device: "CUDA:0",
				Need: 1288490189, Free: 322122547, Total: 24 << 30}), 503,
			"CUDA:0 out of memory: model 'ViT-L-14__openai' needs ~1.2 GiB, 307.2 MiB free of 24.0 GiB"},
		{"over the budget", &pool.DeviceMemoryError{Key: pool.Key{Name: "m"}, Op: "load", Device: "CUDA:0", Need: 2 << 30, Budget: 4 << 30, BudgetLeft: 1 << 30}, 503,
			"CUDA:0 out of memory: model 'm' needs ~2.0 GiB, the budget of 4.0 GiB per device leaves 1.0 GiB"},
		{"not a device error", errors.New("device failure on CUDA:0 out of memory"), 500, "Internal Server Error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := statusOf(tc.err)
			if code != tc.code || msg != tc.msg {
				t.Errorf("got %d %q\nwant %d %q", code, msg, tc.code, tc.msg)
			}
			if strings.Contains(msg, "/srv") || strings.Contains(msg, ".onnx") {
				t.Errorf("%q names a path", msg)
			}
		})
	}
	from, reason := fallbackOf(oom)
	if from != "CUDA:1" || !strings.HasPrefix(reason, "CUDA:1 out of memory") {
		t.Errorf("fallbackOf = %q, %q", from, reason)
	}
	if from, reason := fallbackOf(errors.New("?")); from != "" || reason == "" {
		t.Errorf("fallbackOf(unknown) = %q, %q", from, reason)
	}
}

// TestProviderHeader: X-Mlserve-Provider names, per entry, the provider
// and device of every replica that ran it.
func TestProviderHeader(t *testing.T) {
	res := &pool.Response{
		Providers: map[string]string{"clip/visual": "CUDA", "facial-recognition/recognition": "CUDA", "facial-recognition/detection": "CPU", "ocr/detection": "CPU", "ocr/recognition": "X"},
		Ran: map[string][]pool.Where{
			"clip/visual":                    {{Provider: "CUDA", Device: "CUDA:1"}},
			"facial-recognition/recognition": {{Provider: "CUDA", Device: "CUDA:0"}, {Provider: "CUDA", Device: "CUDA:1"}},
			"facial-recognition/detection":   {{Provider: "CPU", Device: "CPU", Fallback: true}},
			"ocr/detection":                  {{Provider: "CPU", Device: "CPU"}},
		},
	}
	want := "clip/visual=CUDA@CUDA:1, facial-recognition/detection=CPU (fallback), " +
		"facial-recognition/recognition=CUDA@CUDA:0+CUDA@CUDA:1, ocr/detection=CPU, ocr/recognition=X"
	if got := providerHeader(res); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
