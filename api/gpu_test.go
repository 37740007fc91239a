package api_test

// These tests serve from inference.FakeDevice: simulated GPUs with no
// hardware behind them (real ONNX Runtime CPU sessions, simulated device
// memory, out-of-memory errors on demand). No GPU exists on the machines
// they run on; what they check is what the HTTP surface makes of the
// pool's placement and its typed device errors.

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/pool"
)

// fakeRuntime starts a runtime whose devices are devs.
func fakeRuntime(t testing.TB, allowCPU bool, devs ...*inference.FakeDevice) *inference.Runtime {
	t.Helper()
	rt, err := inference.New(inference.Options{
		LibraryPath:      testenv.ORTLibrary(t),
		Providers:        []string{inference.FakeGPU},
		FakeDevices:      devs,
		AllowCPUFallback: allowCPU,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	return rt
}

// gpuStack serves the CLIP repository of the golden case from rt, placing
// a model at its files' size and keeping no headroom, so that the fake
// devices' memory is the models' alone.
func gpuStack(t testing.TB, rt *inference.Runtime) (*stack, []byte, int64) {
	t.Helper()
	g := loadGolden(t, "in/photo_28.jpg")
	repo, visual, _ := clipRepo(t, g)
	img, err := os.ReadFile(g.Input)
	if err != nil {
		t.Fatal(err)
	}
	st := startStackWith(t, stackOptions{rt: rt, repos: map[string]map[string][]byte{"immich-app/ViT-B-32__openai": repo},
		service: pool.ServiceOptions{
			Devices: pool.DeviceOptions{LoadFactor: 1, Headroom: -1, ReplicaAfter: -1},
			Cache:   pool.CacheOptions{FailureHoldOff: time.Millisecond},
		}})
	return st, img, int64(len(visual))
}

const textualEntries = `{"clip":{"textual":{"modelName":"ViT-B-32__openai","options":{"language":"en"}}}}`

// answer reads a response: status, Retry-After, the provider header and
// the body.
type answer struct {
	code              int
	retry, provider   string
	detail, rawDetail string
}

// ask sends a /predict request as the Immich server does and reads the
// answer.
func ask(t testing.TB, base, entries string, img []byte, text *string) answer {
	t.Helper()
	resp := immichRequest(t, base, entries, img, text)
	defer resp.Body.Close()
	return read(t, resp)
}

func read(t testing.TB, resp *http.Response) answer {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{code: resp.StatusCode, retry: resp.Header.Get("Retry-After"), provider: resp.Header.Get("X-Mlserve-Provider"), rawDetail: string(b)}
	var d struct{ Detail string }
	if json.Unmarshal(b, &d) == nil {
		a.detail = d.Detail
	}
	return a
}

func getBody(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// readyDoc is /health/ready's body.
type readyDoc struct {
	Status string
	Models []struct {
		Task, Type, Model, Provider, Device string
		DeviceMemoryBytes                   int64
		Replicas                            []struct {
			Provider, Device string
			Fallback         bool
		}
		Fallback *struct{ From, Reason string }
	}
	Devices []struct {
		Name, Provider                    string
		Models                            int
		MemoryTotalBytes, MemoryFreeBytes int64
		ModelMemoryBytes                  int64
		OutOfMemory, CPUFallbacks         int64
		Runs, Slots                       int
	}
}

func ready(t testing.TB, base string) readyDoc {
	t.Helper()
	var doc readyDoc
	body := getBody(t, base+"/health/ready")
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return doc
}

func wantMetrics(t testing.TB, base string, want ...string) {
	t.Helper()
	body := getBody(t, base+"/metrics")
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
}

// noPath fails when a client-facing message names a file.
func noPath(t testing.TB, what, msg, cache string) {
	t.Helper()
	if strings.Contains(msg, cache) || strings.Contains(msg, ".onnx") || strings.Contains(msg, "/") || strings.Contains(msg, ".cc") {
		t.Errorf("%s names a path: %q", what, msg)
	}
}

// TestDeviceOutOfMemoryHTTP: a model that cannot load on its (fake) GPU,
// even after the idle models there were unloaded and the load retried,
// answers 503 with Retry-After and the device's numbers, so that Immich
// moves to its next machine-learning URL; so does a run. The device then
// serves again without a restart, and readiness and metrics tell where
// each model runs and count the out-of-memory errors.
func TestDeviceOutOfMemoryHTTP(t *testing.T) {
	d0 := &inference.FakeDevice{Total: 64 << 20, RunFactor: 0.001}
	st, img, size := gpuStack(t, fakeRuntime(t, false, d0))

	a := ask(t, st.url, visualEntries, img, nil)
	if a.code != 200 || a.provider != "clip/visual=FakeGPU@FakeGPU:0" {
		t.Fatalf("visual: %d %q %s", a.code, a.provider, a.rawDetail)
	}
	doc := ready(t, st.url)
	if len(doc.Models) != 1 || doc.Models[0].Provider != "FakeGPU" || doc.Models[0].Device != "FakeGPU:0" ||
		doc.Models[0].DeviceMemoryBytes != size || doc.Models[0].Fallback != nil ||
		len(doc.Models[0].Replicas) != 1 || doc.Models[0].Replicas[0].Device != "FakeGPU:0" {
		t.Fatalf("ready models %+v", doc.Models)
	}
	if len(doc.Devices) != 1 || doc.Devices[0].Name != "FakeGPU:0" || doc.Devices[0].MemoryTotalBytes != 64<<20 ||
		doc.Devices[0].MemoryFreeBytes != d0.Memory().Free || doc.Devices[0].ModelMemoryBytes != size || doc.Devices[0].Models != 1 || doc.Devices[0].Slots != 2 {
		t.Fatalf("ready devices %+v", doc.Devices)
	}

	// The textual tower's load fails twice: 503, the device named with
	// what the model needs and what the device has; no path.
	d0.FailLoads(2)
	q := "a photo of a cat"
	a = ask(t, st.url, textualEntries, nil, &q)
	free := inference.FormatBytes(d0.Memory().Free)
	if a.code != 503 || a.retry == "" || !strings.HasPrefix(a.detail, "FakeGPU:0 out of memory: model 'ViT-B-32__openai' needs ~") ||
		!strings.HasSuffix(a.detail, ", "+free+" free of 64.0 MiB") {
		t.Fatalf("load out of memory: %d Retry-After %q %q", a.code, a.retry, a.rawDetail)
	}
	noPath(t, "the 503", a.detail, st.cache)
	// The device is usable: once the failures are over, the load works.
	time.Sleep(5 * time.Millisecond)
	if a = ask(t, st.url, textualEntries, nil, &q); a.code != 200 || a.provider != "clip/textual=FakeGPU@FakeGPU:0" {
		t.Fatalf("textual after the failures: %d %q %s", a.code, a.provider, a.rawDetail)
	}

	// A run that fails twice: 503 too, with the allocation that failed.
	d0.FailRuns(2)
	a = ask(t, st.url, visualEntries, img, nil)
	if a.code != 503 || a.retry == "" || !strings.HasPrefix(a.detail, "FakeGPU:0 out of memory: a run of model 'ViT-B-32__openai' needs ~") ||
		!strings.Contains(a.detail, " free of 64.0 MiB") {
		t.Fatalf("run out of memory: %d Retry-After %q %q", a.code, a.retry, a.rawDetail)
	}
	noPath(t, "the 503", a.detail, st.cache)
	if a = ask(t, st.url, visualEntries, img, nil); a.code != 200 || a.provider != "clip/visual=FakeGPU@FakeGPU:0" {
		t.Fatalf("visual after the failures: %d %q %s", a.code, a.provider, a.rawDetail)
	}

	// The run's retry unloaded the idle textual tower to make room.
	doc = ready(t, st.url)
	if len(doc.Models) != 1 || doc.Devices[0].OutOfMemory != 4 || doc.Devices[0].CPUFallbacks != 0 || doc.Devices[0].Models != 1 {
		t.Fatalf("ready after the failures %+v", doc)
	}
	wantMetrics(t, st.url,
		`mlserve_device_out_of_memory_total{device="FakeGPU:0",provider="FakeGPU"} 4`,
		`mlserve_device_cpu_fallbacks_total{device="FakeGPU:0",provider="FakeGPU"} 0`,
		`mlserve_device_models{device="FakeGPU:0",provider="FakeGPU"} 1`,
		`mlserve_device_memory_total_bytes{device="FakeGPU:0",provider="FakeGPU"} 6.7108864e+07`,
		`mlserve_model_loaded{device="FakeGPU:0",model="ViT-B-32__openai",provider="FakeGPU",task="clip",type="visual"} 1`,
		`mlserve_inference_seconds_count{model="ViT-B-32__openai",provider="FakeGPU",task="clip",type="visual"} 2`,
	)
}

// TestModelBiggerThanDeviceHTTP: a model whose weights exceed the whole
// device is refused at once with 503 and the figures.
func TestModelBiggerThanDeviceHTTP(t *testing.T) {
	d0 := &inference.FakeDevice{Total: 256 << 10, RunFactor: 0.001}
	st, img, size := gpuStack(t, fakeRuntime(t, false, d0))
	a := ask(t, st.url, visualEntries, img, nil)
	want := "FakeGPU:0 out of memory: model 'ViT-B-32__openai' needs ~" + inference.FormatBytes(size) + ", 256.0 KiB free of 256.0 KiB"
	if a.code != 503 || a.retry == "" || a.detail != want {
		t.Fatalf("got %d %q, want 503 %q", a.code, a.rawDetail, want)
	}
	if d0.OutOfMemory() != 0 {
		t.Fatal("the load was tried")
	}
}

// TestDeviceFallbackHTTP: with MLSERVE_ALLOW_CPU_FALLBACK, a model whose
// device runs out of memory twice serves from the CPU, and every place an
// operator looks says so: the response header, readiness (the device it
// left and why, without a path) and metrics.
func TestDeviceFallbackHTTP(t *testing.T) {
	d0 := &inference.FakeDevice{Total: 64 << 20, RunFactor: 0.001}
	st, img, _ := gpuStack(t, fakeRuntime(t, true, d0))
	d0.FailLoads(2)
	a := ask(t, st.url, visualEntries, img, nil)
	if a.code != 200 || a.provider != "clip/visual=CPU (fallback)" {
		t.Fatalf("visual: %d %q %s", a.code, a.provider, a.rawDetail)
	}
	doc := ready(t, st.url)
	if len(doc.Models) != 1 {
		t.Fatalf("ready %+v", doc)
	}
	m := doc.Models[0]
	if m.Provider != "CPU" || m.Device != "CPU" || m.Fallback == nil || m.Fallback.From != "FakeGPU:0" ||
		!strings.HasPrefix(m.Fallback.Reason, "FakeGPU:0 out of memory loading the model: it asked for ") ||
		len(m.Replicas) != 1 || !m.Replicas[0].Fallback {
		t.Fatalf("ready model %+v (fallback %+v)", m, m.Fallback)
	}
	noPath(t, "the fallback's reason", m.Fallback.Reason, st.cache)
	found := false
	for _, d := range doc.Devices {
		if d.Name == "FakeGPU:0" {
			found = true
			if d.CPUFallbacks != 1 || d.OutOfMemory != 2 || d.Models != 0 {
				t.Errorf("device %+v", d)
			}
		}
	}
	if !found {
		t.Fatalf("no FakeGPU:0 in %+v", doc.Devices)
	}
	wantMetrics(t, st.url,
		`mlserve_device_cpu_fallbacks_total{device="FakeGPU:0",provider="FakeGPU"} 1`,
		`mlserve_device_out_of_memory_total{device="FakeGPU:0",provider="FakeGPU"} 2`,
		`mlserve_model_cpu_fallback{from="FakeGPU:0",model="ViT-B-32__openai",task="clip",type="visual"} 1`,
		`mlserve_model_loaded{device="CPU",model="ViT-B-32__openai",provider="CPU",task="clip",type="visual"} 1`,
		`mlserve_device_models{device="CPU",provider="CPU"} 1`,
	)
}

// TestPlacementTwoDevicesHTTP: with two devices the second model goes on
// the emptier one, and the header, readiness and metrics name the device
// each request really ran on.
func TestPlacementTwoDevicesHTTP(t *testing.T) {
	d0 := &inference.FakeDevice{Total: 64 << 20, RunFactor: 0.001}
	d1 := &inference.FakeDevice{Total: 64 << 20, RunFactor: 0.001}
	st, img, _ := gpuStack(t, fakeRuntime(t, false, d0, d1))
	if a := ask(t, st.url, visualEntries, img, nil); a.code != 200 || a.provider != "clip/visual=FakeGPU@FakeGPU:0" {
		t.Fatalf("visual: %d %q %s", a.code, a.provider, a.rawDetail)
	}
	q := "a dog"
	if a := ask(t, st.url, textualEntries, nil, &q); a.code != 200 || a.provider != "clip/textual=FakeGPU@FakeGPU:1" {
		t.Fatalf("textual: %d %q %s", a.code, a.provider, a.rawDetail)
	}
	doc := ready(t, st.url)
	if len(doc.Devices) != 2 || doc.Devices[0].Models != 1 || doc.Devices[1].Models != 1 || doc.Devices[1].Name != "FakeGPU:1" {
		t.Fatalf("devices %+v", doc.Devices)
	}
	got := map[string]string{}
	for _, m := range doc.Models {
		got[m.Type] = m.Device
	}
	if got["visual"] != "FakeGPU:0" || got["textual"] != "FakeGPU:1" {
		t.Fatalf("models on %v", got)
	}
	wantMetrics(t, st.url,
		`mlserve_model_loaded{device="FakeGPU:1",model="ViT-B-32__openai",provider="FakeGPU",task="clip",type="textual"} 1`,
		`mlserve_device_models{device="FakeGPU:1",provider="FakeGPU"} 1`,
		`mlserve_device_run_slots{device="FakeGPU:1",provider="FakeGPU"} 2`,
		`mlserve_device_memory_free_bytes{device="FakeGPU:1",provider="FakeGPU"} `+strconv.FormatFloat(float64(d1.Memory().Free), 'g', -1, 64),
	)
}
