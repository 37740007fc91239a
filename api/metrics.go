package api

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
)

// Metrics are the service's Prometheus metrics, registered on an injected
// registerer. They implement pool.Observer.
type Metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	loadSeconds *prometheus.HistogramVec
	inferSecs   *prometheus.HistogramVec
	inferErrors *prometheus.CounterVec
	unloads     *prometheus.CounterVec
	hangups     prometheus.Counter
	rejected    *prometheus.CounterVec
	downloaded  prometheus.Counter
	downloads   *prometheus.CounterVec
	reg         prometheus.Registerer
	// recent counts successful requests and inferences per second for the
	// status panel (status.go).
	recent *rates
}

var (
	_ pool.Observer           = (*Metrics)(nil)
	_ models.DownloadObserver = (*Metrics)(nil)
)

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reg:    reg,
		recent: newRates(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlserve_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mlserve_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
		loadSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mlserve_model_load_seconds", Help: "Time to make a model ready (download included).",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"task", "type", "model"}),
		inferSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mlserve_inference_seconds", Help: "Time to run one entry (pre/post-processing included) by model and execution provider.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"task", "type", "model", "provider"}),
		inferErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlserve_inference_errors_total", Help: "Entries that failed, by model.",
		}, []string{"task", "type", "model"}),
		unloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlserve_model_unloads_total", Help: "Models unloaded (idle TTL, cap, shutdown).",
		}, []string{"task", "type", "model"}),
		hangups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mlserve_http_client_hangups_total", Help: "Requests whose client hung up before the answer; their work was cancelled.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlserve_http_rejected_total",
			Help: "Requests refused without being served, by route and reason: overloaded (503: full queue, byte budget, draining), too_large (413), timeout (408), denied (401, 403).",
		}, []string{"route", "reason"}),
		downloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mlserve_model_download_bytes_total", Help: "Model file bytes received from the hub or the OCR source.",
		}),
		downloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlserve_model_downloads_total", Help: "Model downloads finished, by result (ok, error).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.requests, m.duration, m.loadSeconds, m.inferSecs, m.inferErrors, m.unloads, m.hangups,
		m.rejected, m.downloaded, m.downloads)
	return m
}

// BuildInfo registers mlserve_build_info, a constant 1 labelled with the
// build's version, Go's and ONNX Runtime's.
func (m *Metrics) BuildInfo(version, goVersion, ortVersion string) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "mlserve_build_info",
		Help:        "A constant 1 labelled with the versions of mlserve, Go and ONNX Runtime.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": goVersion, "onnxruntime": ortVersion},
	}, func() float64 { return 1 }))
}

// DownloadStarted implements models.DownloadObserver.
func (m *Metrics) DownloadStarted(string, int, int64) {}

// DownloadProgress implements models.DownloadObserver.
func (m *Metrics) DownloadProgress(p models.FileProgress) {
	if p.Received > 0 {
		m.downloaded.Add(float64(p.Received))
	}
}

// DownloadFinished implements models.DownloadObserver.
func (m *Metrics) DownloadFinished(_ string, err error) {
	if err != nil {
		m.downloads.WithLabelValues("error").Inc()
		return
	}
	m.downloads.WithLabelValues("ok").Inc()
}

// placement is where a loaded model runs (its first replica): its
// execution provider and device ("CPU", "CUDA:0"), as the service or the
// model tells.
func placement(l pool.Loaded) (provider, device string) {
	provider, device = l.Provider, l.Device
	if p, ok := l.Model.(interface{ Provider() string }); ok && provider == "" {
		provider = p.Provider()
	}
	if d, ok := l.Model.(interface{ Device() string }); ok && device == "" {
		device = d.Device()
	}
	if device == "" && provider == "CPU" {
		device = "CPU"
	}
	return provider, device
}

// loadedCollector exports one mlserve_model_loaded series per model in
// memory and device it runs on (a busy model has a replica on several),
// labelled with the provider and device, and one mlserve_model_cpu_fallback
// series per model that runs on the CPU because its device failed; read
// at scrape time.
type loadedCollector struct {
	h        Health
	desc     *prometheus.Desc
	fallback *prometheus.Desc
}

func (c loadedCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.fallback
}

func (c loadedCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[[5]string]bool{}
	fell := map[[4]string]bool{}
	for _, l := range c.h.Loaded() {
		for _, r := range replicasOf(l) {
			k := [5]string{l.Key.Task, l.Key.Type, l.Key.Name, r.Provider, r.Device}
			if seen[k] { // an evicted copy still in use beside the new one
				continue
			}
			seen[k] = true
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, k[0], k[1], k[2], k[3], k[4])
		}
		if l.Fallback != nil {
			from, _ := fallbackOf(l.Fallback)
			k := [4]string{l.Key.Task, l.Key.Type, l.Key.Name, from}
			if !fell[k] {
				fell[k] = true
				ch <- prometheus.MustNewConstMetric(c.fallback, prometheus.GaugeValue, 1, k[0], k[1], k[2], k[3])
			}
		}
	}
}

// observeServer adds the HTTP layer's gauges, read at scrape time.
func (m *Metrics) observeServer(s *Server) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mlserve_http_connections", Help: "Open HTTP connections."},
			func() float64 {
				if l := s.ln.Load(); l != nil {
					return float64(l.open.Load())
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mlserve_http_accept_errors_total", Help: "Failed accepts (out of file descriptors…), retried after a backoff."},
			func() float64 {
				if l := s.ln.Load(); l != nil {
					return float64(l.acceptErrors.Load())
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mlserve_http_inflight_body_bytes", Help: "Request body bytes held by the requests in progress (capped by MLSERVE_MAX_INFLIGHT_BYTES)."},
			func() float64 { return float64(s.budget.used.Load()) }),
	)
	if st, ok := s.adm.(interface{ Stats() pool.AdmissionStats }); ok {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mlserve_requests_admitted", Help: "Requests inside the service (receiving, waiting for a model or a worker, running)."},
			func() float64 { return float64(st.Stats().InUse) }))
	}
}

func (m *Metrics) clientGone() { m.hangups.Inc() }

// observeService adds gauges read from the service at scrape time.
func (m *Metrics) observeService(h Health) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mlserve_queue_depth", Help: "Requests waiting for a worker."},
			func() float64 { return float64(h.Stats().Waiting) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mlserve_workers_busy", Help: "Workers processing a request."},
			func() float64 { return float64(h.Stats().Busy) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mlserve_workers", Help: "Worker slots."},
			func() float64 { return float64(h.Stats().Workers) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mlserve_models_loaded", Help: "Models in memory."},
			func() float64 { return float64(len(h.Loaded())) }),
		loadedCollector{h: h,
			desc: prometheus.NewDesc("mlserve_model_loaded",
				"A model in memory (1), labelled with its task, type, name, execution provider and device: one series per device a replica of it runs on.",
				[]string{"task", "type", "model", "provider", "device"}, nil),
			fallback: prometheus.NewDesc("mlserve_model_cpu_fallback",
				"A model that runs on the CPU because its device failed (1; MLSERVE_ALLOW_CPU_FALLBACK), labelled with the device it left.",
				[]string{"task", "type", "model", "from"}, nil)},
	)
	if r, ok := h.(deviceReporter); ok {
		m.reg.MustRegister(newDeviceCollector(r))
	}
}

func (m *Metrics) request(route string, code int, took time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(route).Observe(took.Seconds())
	if reason := rejectReason(code); reason != "" {
		m.rejected.WithLabelValues(route, reason).Inc()
	}
	if code < 300 && (route == "/predict" || route == "/search") {
		m.recent.add("route:" + route)
	}
}

// rejectReason names why a request with this status was refused, or ""
// for a request that was served (or failed for a reason of its own).
func rejectReason(code int) string {
	switch code {
	case 503:
		return "overloaded"
	case 413:
		return "too_large"
	case 408:
		return "timeout"
	case 401, 403:
		return "denied"
	}
	return ""
}

// ModelLoaded implements pool.Observer.
func (m *Metrics) ModelLoaded(k pool.Key, took time.Duration) {
	m.loadSeconds.WithLabelValues(k.Task, k.Type, k.Name).Observe(took.Seconds())
}

// ModelUnloaded implements pool.Observer.
func (m *Metrics) ModelUnloaded(k pool.Key) {
	m.unloads.WithLabelValues(k.Task, k.Type, k.Name).Inc()
}

// Inference implements pool.Observer.
func (m *Metrics) Inference(k pool.Key, provider string, took time.Duration, err error) {
	if err != nil {
		m.inferErrors.WithLabelValues(k.Task, k.Type, k.Name).Inc()
		return
	}
	m.inferSecs.WithLabelValues(k.Task, k.Type, k.Name, provider).Observe(took.Seconds())
	m.recent.add(modelRateKey(k.Task, k.Type, k.Name))
}
