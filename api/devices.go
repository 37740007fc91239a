package api

import (
	"errors"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/pool"
)

// Where models run, for readiness and metrics: each loaded model's
// replicas (provider and device), a model that moved to the CPU because
// its device failed and why, and each device's memory, models, runs,
// out-of-memory errors and CPU fallbacks.

// deviceReporter is a Health that also reports the devices models are
// placed on (a *pool.Service).
type deviceReporter interface {
	Devices() []pool.DeviceStatus
}

// fallbackOf tells, for a model's fallback cause, the device it left and
// why, in words fit for a client: the device's figures, never a path.
func fallbackOf(err error) (from, reason string) {
	var merr *pool.DeviceMemoryError
	var derr *inference.DeviceError
	switch {
	case errors.As(err, &merr):
		from = merr.Device
	case errors.As(err, &derr):
		from = derr.Device
	}
	reason, _, ok := deviceFailure(err)
	if !ok {
		reason = "its device failed (see the server's log)"
	}
	return from, reason
}

// replicasOf lists where a loaded model runs, one entry per replica, the
// first one first; a model that does not tell runs where placement says.
func replicasOf(l pool.Loaded) []pool.Where {
	if len(l.Replicas) > 0 {
		return l.Replicas
	}
	provider, device := placement(l)
	if provider == "" && device == "" {
		return nil
	}
	return []pool.Where{{Provider: provider, Device: device, Fallback: l.Fallback != nil}}
}

// readyModel is one loaded model in /health/ready: where it runs (every
// replica), the device memory it took, and when it runs on the CPU
// because its device failed, the device it left and why.
func readyModel(l pool.Loaded) fiber.Map {
	m := fiber.Map{"task": l.Key.Task, "type": l.Key.Type, "model": l.Key.Name, "inUse": l.InUse,
		"preloaded": l.Pinned, "idleSeconds": int(l.IdleFor.Seconds())}
	if p, d := placement(l); p != "" {
		m["provider"], m["device"] = p, d
	}
	if rs := replicasOf(l); len(rs) > 0 {
		reps := make([]fiber.Map, len(rs))
		for i, r := range rs {
			reps[i] = fiber.Map{"provider": r.Provider, "device": r.Device}
			if r.Fallback {
				reps[i]["fallback"] = true
			}
		}
		m["replicas"] = reps
	}
	if l.DeviceMemory > 0 {
		m["deviceMemoryBytes"] = l.DeviceMemory
	}
	if l.Fallback != nil {
		from, reason := fallbackOf(l.Fallback)
		m["fallback"] = fiber.Map{"from": from, "reason": reason}
	}
	return m
}

// readyDevice is one device in /health/ready.
func readyDevice(d pool.DeviceStatus) fiber.Map {
	m := fiber.Map{"name": d.Name, "provider": d.Provider, "models": d.Models, "runs": d.Runs, "slots": d.Slots,
		"outOfMemory": d.OutOfMemory, "cpuFallbacks": d.Fallbacks}
	if d.Total > 0 {
		m["memoryTotalBytes"], m["memoryFreeBytes"] = d.Total, d.Free
	}
	if d.ModelMemory > 0 {
		m["modelMemoryBytes"] = d.ModelMemory
	}
	return m
}

// deviceCollector exports the devices' state, read at scrape time.
type deviceCollector struct {
	r                                   deviceReporter
	models, modelMem, total, free, runs *prometheus.Desc
	slots, ooms, fallbacks              *prometheus.Desc
}

func newDeviceCollector(r deviceReporter) deviceCollector {
	labels := []string{"device", "provider"}
	return deviceCollector{
		r: r,
		models: prometheus.NewDesc("mlserve_device_models",
			"Loaded models (each replica counted) running on the device.", labels, nil),
		modelMem: prometheus.NewDesc("mlserve_device_model_memory_bytes",
			"Device memory the loaded models' sessions took at load.", labels, nil),
		total: prometheus.NewDesc("mlserve_device_memory_total_bytes",
			"The device's memory (devices that report it).", labels, nil),
		free: prometheus.NewDesc("mlserve_device_memory_free_bytes",
			"The device's free memory (devices that report it).", labels, nil),
		runs: prometheus.NewDesc("mlserve_device_runs",
			"Model runs in progress on the device.", labels, nil),
		slots: prometheus.NewDesc("mlserve_device_run_slots",
			"Model runs the device may have in progress at once.", labels, nil),
		ooms: prometheus.NewDesc("mlserve_device_out_of_memory_total",
			"Out-of-memory errors on the device (loads and runs; each is retried once after idle models there are unloaded).", labels, nil),
		fallbacks: prometheus.NewDesc("mlserve_device_cpu_fallbacks_total",
			"Models that moved from the device to the CPU because it failed (MLSERVE_ALLOW_CPU_FALLBACK).", labels, nil),
	}
}

func (c deviceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.models, c.modelMem, c.total, c.free, c.runs, c.slots, c.ooms, c.fallbacks} {
		ch <- d
	}
}

func (c deviceCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range c.r.Devices() {
		l := []string{d.Name, d.Provider}
		ch <- prometheus.MustNewConstMetric(c.models, prometheus.GaugeValue, float64(d.Models), l...)
		ch <- prometheus.MustNewConstMetric(c.modelMem, prometheus.GaugeValue, float64(d.ModelMemory), l...)
		if d.Total > 0 {
			ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(d.Total), l...)
			ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(d.Free), l...)
		}
		ch <- prometheus.MustNewConstMetric(c.runs, prometheus.GaugeValue, float64(d.Runs), l...)
		ch <- prometheus.MustNewConstMetric(c.slots, prometheus.GaugeValue, float64(d.Slots), l...)
		ch <- prometheus.MustNewConstMetric(c.ooms, prometheus.CounterValue, float64(d.OutOfMemory), l...)
		ch <- prometheus.MustNewConstMetric(c.fallbacks, prometheus.CounterValue, float64(d.Fallbacks), l...)
	}
}
