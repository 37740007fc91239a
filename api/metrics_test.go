package api

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mlserve/mlserve/models"
)

func TestMetricsAdditions(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.BuildInfo("v1.2.3", "go1.26", "1.30.0")

	for _, code := range []int{200, 503, 503, 413, 408, 401, 403, 400, 500} {
		m.request("/predict", code, 0)
	}
	m.DownloadProgress(models.FileProgress{Model: "clip/x", File: "a", Have: 100, Received: 100})
	m.DownloadProgress(models.FileProgress{Model: "clip/x", File: "a", Have: 0}) // a restart: nothing received
	m.DownloadProgress(models.FileProgress{Model: "clip/x", File: "a", Have: 50, Received: 50})
	m.DownloadFinished("clip/x", nil)
	m.DownloadFinished("clip/y", errors.New("boom"))

	want := `
# HELP mlserve_build_info A constant 1 labelled with the versions of mlserve, Go and ONNX Runtime.
# TYPE mlserve_build_info gauge
mlserve_build_info{goversion="go1.26",onnxruntime="1.30.0",version="v1.2.3"} 1
# HELP mlserve_http_rejected_total Requests refused without being served, by route and reason: overloaded (503: full queue, byte budget, draining), too_large (413), timeout (408), denied (401, 403).
# TYPE mlserve_http_rejected_total counter
mlserve_http_rejected_total{reason="denied",route="/predict"} 2
mlserve_http_rejected_total{reason="overloaded",route="/predict"} 2
mlserve_http_rejected_total{reason="timeout",route="/predict"} 1
mlserve_http_rejected_total{reason="too_large",route="/predict"} 1
# HELP mlserve_model_download_bytes_total Model file bytes received from the hub or the OCR source.
# TYPE mlserve_model_download_bytes_total counter
mlserve_model_download_bytes_total 150
# HELP mlserve_model_downloads_total Model downloads finished, by result (ok, error).
# TYPE mlserve_model_downloads_total counter
mlserve_model_downloads_total{result="error"} 1
mlserve_model_downloads_total{result="ok"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "mlserve_build_info", "mlserve_http_rejected_total",
		"mlserve_model_download_bytes_total", "mlserve_model_downloads_total"); err != nil {
		t.Fatal(err)
	}
}
