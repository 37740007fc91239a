package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

type checkOptions struct {
	MLServe, Models, Tokenizer, Out, LogDir, Python string
	CUDA, Full                                      bool
	BenchFor, Budget                                time.Duration
	Port                                            int
}

// Thresholds of issue 10's "done when".
const (
	minCosine      = 0.999
	minBatchedGain = 5.0  // throughput at concurrency 32 over concurrency 1, ViT-B/32
	maxUnloadDrift = 0.10 // GPU memory after unload vs before load
)

// summary is the JSON the check writes.
type summary struct {
	Started   time.Time          `json:"started"`
	Seconds   float64            `json:"seconds"`
	Device    string             `json:"device"` // CUDA or CPU (dry run)
	Full      bool               `json:"full_models"`
	GPU       []gpuInfo          `json:"gpu,omitempty"`
	Env       map[string]string  `json:"env"`
	Cosine    map[string]cosines `json:"cosine"`
	Providers map[string]string  `json:"providers_reported"`
	Ready     map[string]any     `json:"health_ready_loaded,omitempty"`
	Metrics   []string           `json:"metrics_provider_lines,omitempty"`
	Bench     map[string][]bench `json:"bench"`
	Gain      float64            `json:"clip_visual_batched_over_batch1"`
	VRAM      *vram              `json:"vram_mib,omitempty"`
	Notes     []string           `json:"notes,omitempty"`
	Passed    bool               `json:"passed"`
	Failed    []string           `json:"failed,omitempty"`
}

type cosines struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
}

type bench struct {
	Concurrency int     `json:"concurrency"`
	RPS         float64 `json:"req_per_s"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	Refused     int     `json:"refused_503"`
	Errors      int     `json:"errors"`
	Raw         string  `json:"raw,omitempty"`
}

type vram struct {
	BeforeStart     int `json:"gpu_used_before_server"`
	ServerNoModel   int `json:"gpu_used_server_no_model"`
	Loaded          int `json:"gpu_used_loaded"`
	LoadedProcess   int `json:"process_loaded"`
	AfterUnload     int `json:"gpu_used_after_unload"`
	AfterUnloadProc int `json:"process_after_unload"`
	// RetainedFraction is (after unload − before load) / (loaded − before load).
	RetainedFraction float64 `json:"retained_fraction_after_unload"`
	OOMStatus        int     `json:"oom_request_status,omitempty"`
	OOMBody          string  `json:"oom_request_body,omitempty"`
	AfterOOMStatus   int     `json:"request_after_oom_status,omitempty"`
	AfterOOMProv     string  `json:"request_after_oom_provider,omitempty"`
	AfterOOM         int     `json:"gpu_used_after_oom_recovery,omitempty"`
	OOMSkipped       string  `json:"oom_skipped,omitempty"`
}

type gpuInfo struct {
	Index          int    `json:"index"`
	Name           string `json:"name"`
	Driver         string `json:"driver"`
	MemoryTotalMiB int    `json:"memory_total_mib"`
}

// outputs are the answers of one server to the fixed set of requests.
type outputs struct {
	visual, textual [][]float64
	faces           [][]faceOut
	providers       map[string]string
}

func check(ctx context.Context, o checkOptions, log io.Writer) (*summary, error) {
	start := time.Now()
	s := &summary{Started: start, Full: o.Full, Device: "CPU", Cosine: map[string]cosines{}, Providers: map[string]string{},
		Bench: map[string][]bench{}, Env: map[string]string{}}
	if o.CUDA {
		s.Device = "CUDA"
	}
	for _, k := range []string{"MLSERVE_ORT_LIBRARY", "LD_LIBRARY_PATH"} {
		s.Env[k] = os.Getenv(k)
	}
	fail := func(format string, args ...any) { s.Failed = append(s.Failed, fmt.Sprintf(format, args...)) }
	note := func(format string, args ...any) {
		s.Notes = append(s.Notes, fmt.Sprintf(format, args...))
		fmt.Fprintf(log, "gpucheck: "+format+"\n", args...)
	}
	defer func() {
		s.Seconds = time.Since(start).Seconds()
		s.Passed = len(s.Failed) == 0
	}()
	if err := os.MkdirAll(o.LogDir, 0o755); err != nil {
		return nil, err
	}
	note("generating models into %s (full architectures: %v)", o.Models, o.Full)
	if err := writeModels(o.Models, o.Tokenizer, o.Full); err != nil {
		return nil, err
	}
	img := testImages()
	faceImg := faceImage()
	texts := []string{"a photo of a dog", "sunset over the sea", "Geburtstagsfeier mit Kuchen", "東京の夜景", "x"}

	// Reference on CPU.
	note("reference outputs on CPU")
	cpu, err := startServer(ctx, o.MLServe, o.Models, "CPU", o.Port, filepath.Join(o.LogDir, "mlserve-cpu.log"), "MACHINE_LEARNING_MODEL_TTL=0")
	if err != nil {
		return s, err
	}
	ref, err := collect(cpu.url, img, texts, faceImg)
	cpu.stop()
	if err != nil {
		return s, fmt.Errorf("CPU reference: %w", err)
	}

	// The device under test.
	providers := "CPU"
	if o.CUDA {
		providers = "CUDA"
		if gpus, err := gpuList(); err != nil {
			note("nvidia-smi: %v", err)
		} else {
			s.GPU = gpus
		}
		s.VRAM = &vram{BeforeStart: gpuUsed()}
	}
	dev, err := startServer(ctx, o.MLServe, o.Models, providers, o.Port+1, filepath.Join(o.LogDir, "mlserve-device.log"),
		"MACHINE_LEARNING_MODEL_TTL=20", "MACHINE_LEARNING_MODEL_TTL_POLL_S=1")
	if err != nil {
		return s, err
	}
	defer dev.stop()
	if s.VRAM != nil {
		s.VRAM.ServerNoModel = gpuUsed()
	}
	note("outputs on %s", providers)
	got, err := collect(dev.url, img, texts, faceImg)
	if err != nil {
		return s, fmt.Errorf("%s outputs: %w", providers, err)
	}
	s.Providers = got.providers
	for task, p := range got.providers {
		if o.CUDA && !strings.Contains(p, "CUDA") {
			fail("%s ran on %q, not CUDA", task, p)
		}
	}
	compare := func(name string, a, b [][]float64) {
		c := cosines{N: len(a), Min: 1}
		if len(a) != len(b) || len(a) == 0 {
			fail("%s: %d reference vectors, %d on the device", name, len(a), len(b))
			return
		}
		for i := range a {
			v := cosine(a[i], b[i])
			c.Min = math.Min(c.Min, v)
			c.Mean += v / float64(len(a))
		}
		s.Cosine[name] = c
		if c.Min < minCosine {
			fail("%s: cosine %.6f < %.3f", name, c.Min, minCosine)
		}
	}
	compare("clip_visual", ref.visual, got.visual)
	compare("clip_textual", ref.textual, got.textual)
	var ra, rb [][]float64
	for i := range ref.faces {
		if len(ref.faces[i]) != len(got.faces[i]) {
			fail("faces: image %d: %d faces on CPU, %d on the device", i, len(ref.faces[i]), len(got.faces[i]))
			continue
		}
		for j := range ref.faces[i] {
			ra, rb = append(ra, ref.faces[i][j].Embedding), append(rb, got.faces[i][j].Embedding)
		}
	}
	if len(ra) == 0 {
		fail("faces: the detector found no face to compare")
	} else {
		compare("faces_recognition", ra, rb)
	}
	if st, err := getJSON(dev.url + "/health/ready"); err == nil {
		s.Ready = st
	}
	s.Metrics = metricLines(dev.url)
	if s.VRAM != nil {
		s.VRAM.Loaded, s.VRAM.LoadedProcess = gpuUsed(), processUsed(dev.pid())
	}

	// Throughput: concurrency 1 is batch 1; at 8 and 32 the server may batch.
	faceFile := filepath.Join(o.LogDir, "faces.jpg")
	if err := os.WriteFile(faceFile, faceImg, 0o644); err != nil {
		return s, err
	}
	for _, task := range []string{"clip-visual", "faces"} {
		dur := o.BenchFor
		if task == "faces" {
			dur /= 2
		}
		for _, c := range []int{1, 8, 32} {
			if time.Since(start) > o.Budget {
				note("budget spent: %s at concurrency %d skipped", task, c)
				continue
			}
			args := []string{"bench", "--url", dev.url, "--task", task, "--clip-model", clipModel, "--face-model", faceModel,
				"--concurrency", strconv.Itoa(c), "--duration", dur.String()}
			if task == "faces" {
				args = append(args, "--image", faceFile, "--face-min-score", "0.5")
			}
			out, err := exec.CommandContext(ctx, o.MLServe, args...).CombinedOutput()
			b, perr := parseBench(string(out))
			b.Concurrency = c
			if err != nil || perr != nil {
				fail("bench %s -concurrency %d: %v %v: %s", task, c, err, perr, trunc(string(out), 400))
				continue
			}
			s.Bench[task] = append(s.Bench[task], b)
		}
	}
	if bs := s.Bench["clip-visual"]; len(bs) == 3 && bs[0].RPS > 0 {
		s.Gain = bs[2].RPS / bs[0].RPS
		if o.CUDA && o.Full && s.Gain < minBatchedGain {
			fail("clip-visual: %.1f× the batch-1 throughput at concurrency 32, want ≥ %.0f×", s.Gain, minBatchedGain)
		}
	}

	if s.VRAM != nil {
		// Unload: the device server's TTL is 20 s, polled every second.
		note("waiting for the idle TTL to unload the models")
		unloaded := false
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
			st, err := getJSON(dev.url + "/health/ready")
			if err == nil {
				if m, _ := st["models"].([]any); len(m) == 0 {
					unloaded = true
					break
				}
			}
		}
		if !unloaded {
			fail("models still loaded 60 s after the 20 s TTL")
		}
		time.Sleep(2 * time.Second)
		v := s.VRAM
		v.AfterUnload, v.AfterUnloadProc = gpuUsed(), processUsed(dev.pid())
		// Within 10% of the memory before loading; when that was about
		// nothing (the CUDA context is made with the first model, and a
		// process keeps it), at most 10% of what loading took is kept.
		before, retained, took := float64(v.ServerNoModel), float64(v.AfterUnload-v.ServerNoModel), float64(v.Loaded-v.ServerNoModel)
		if took > 0 {
			v.RetainedFraction = retained / took
		}
		if !(before > 0 && math.Abs(retained) <= maxUnloadDrift*before) && !(took > 0 && retained <= maxUnloadDrift*took) {
			fail("GPU memory after unload %d MiB, before load %d MiB, loaded %d MiB: %.0f%% of the models' memory kept",
				v.AfterUnload, v.ServerNoModel, v.Loaded, 100*v.RetainedFraction)
		}
		forceOOM(ctx, o, dev, v, img[0], note, fail)
	}
	return s, nil
}

// collect sends the fixed requests and keeps the answers.
func collect(url string, imgs [][]byte, texts []string, faceImg []byte) (*outputs, error) {
	o := &outputs{providers: map[string]string{}}
	for _, im := range imgs {
		r, err := predict(url, clipVisualEntries(), im, "")
		if err := replyErr(r, err); err != nil {
			return nil, fmt.Errorf("clip visual: %w", err)
		}
		v, err := embedding(r.Body)
		if err != nil {
			return nil, err
		}
		o.visual = append(o.visual, v)
		o.providers["clip_visual"] = r.Provider
	}
	for _, t := range texts {
		r, err := predict(url, clipTextualEntries(), nil, t)
		if err := replyErr(r, err); err != nil {
			return nil, fmt.Errorf("clip textual: %w", err)
		}
		v, err := embedding(r.Body)
		if err != nil {
			return nil, err
		}
		o.textual = append(o.textual, v)
		o.providers["clip_textual"] = r.Provider
	}
	r, err := predict(url, faceEntries(0.5), faceImg, "")
	if err := replyErr(r, err); err != nil {
		return nil, fmt.Errorf("faces: %w", err)
	}
	fs, err := faces(r.Body)
	if err != nil {
		return nil, err
	}
	sort.Slice(fs, func(i, j int) bool {
		if fs[i].Box[1] != fs[j].Box[1] {
			return fs[i].Box[1] < fs[j].Box[1]
		}
		return fs[i].Box[0] < fs[j].Box[0]
	})
	o.faces = append(o.faces, fs)
	o.providers["faces"] = r.Provider
	return o, nil
}

// forceOOM holds all but 256 MiB of the GPU's free memory from another
// process, asks for a model that is not loaded (the TTL unloaded them),
// expects a clear error rather than a crash or a silent CPU answer, frees
// the memory and expects the same request to succeed on CUDA without a
// restart.
func forceOOM(ctx context.Context, o checkOptions, dev *server, v *vram, img []byte, note func(string, ...any), fail func(string, ...any)) {
	const hog = `import sys, time, torch
free, total = torch.cuda.mem_get_info()
x = torch.empty(max(free - (256 << 20), 0), dtype=torch.uint8, device="cuda")
print("held", x.numel() >> 20, "MiB", flush=True)
sys.stdin.readline()
`
	cmd := exec.CommandContext(ctx, o.Python, "-c", hog)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		v.OOMSkipped = err.Error()
		return
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		v.OOMSkipped = err.Error()
		return
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		v.OOMSkipped = fmt.Sprintf("%s: %v", o.Python, err)
		note("forced OOM skipped: %s", v.OOMSkipped)
		return
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Wait()
		v.OOMSkipped = "PyTorch could not hold the GPU's memory: " + trunc(stderr.String(), 300)
		note("forced OOM skipped: %s", v.OOMSkipped)
		return
	}
	note("another process %s", strings.TrimSpace(line))
	r, err := predict(dev.url, clipVisualEntries(), img, "")
	v.OOMStatus, v.OOMBody = r.Status, trunc(string(r.Body), 500)
	if err != nil {
		fail("request during OOM: %v (did the server crash? log: %s)", err, tail(dev.log, 500))
	} else if r.Status == 200 {
		fail("request during OOM answered 200 by %q: a model fitted in 256 MiB or fell back to CPU", r.Provider)
	}
	stdin.Close()
	_ = cmd.Wait()
	time.Sleep(time.Second)
	r, err = predict(dev.url, clipVisualEntries(), img, "")
	v.AfterOOMStatus, v.AfterOOMProv = r.Status, r.Provider
	if err != nil || r.Status != 200 || !strings.Contains(r.Provider, "CUDA") {
		fail("after the OOM: status %d on %q (%v): the device needs a restart", r.Status, r.Provider, err)
	}
	v.AfterOOM = gpuUsed()
}

// parseBench reads the first row of the concurrency table that `mlserve
// bench` prints (cmd/mlserve/bench.go, levelResult.row): conc, img/s, p50,
// p95, p99, 503s, errors, …
func parseBench(out string) (bench, error) {
	b := bench{Raw: strings.TrimSpace(out)}
	header := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "conc" && f[1] == "img/s" {
			header = true
			continue
		}
		if !header || len(f) < 7 {
			continue
		}
		conc, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		rps, err1 := strconv.ParseFloat(f[1], 64)
		p50, err2 := time.ParseDuration(f[2])
		p99, err3 := time.ParseDuration(f[4])
		refused, err4 := strconv.Atoi(f[5])
		errs, err5 := strconv.Atoi(f[6])
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			return b, fmt.Errorf("concurrency row %q: %w", line, err)
		}
		b.Concurrency, b.RPS, b.Refused, b.Errors = conc, rps, refused, errs
		b.P50ms, b.P99ms = float64(p50)/1e6, float64(p99)/1e6
		return b, nil
	}
	return b, fmt.Errorf("no concurrency table in the output")
}

func cosine(a, b []float64) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return 0
	}
	var ab, aa, bb float64
	for i := range a {
		ab += a[i] * b[i]
		aa += a[i] * a[i]
		bb += b[i] * b[i]
	}
	if aa == 0 || bb == 0 {
		return 0
	}
	return ab / math.Sqrt(aa*bb)
}

// nvidia-smi readings in MiB; -1 when unavailable.
func gpuUsed() int {
	out, err := exec.Command("nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits").Output()
	if err != nil {
		return -1
	}
	total := 0
	for _, l := range strings.Fields(string(out)) {
		n, _ := strconv.Atoi(l)
		total += n
	}
	return total
}

func processUsed(pid int) int {
	out, err := exec.Command("nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits").Output()
	if err != nil {
		return -1
	}
	total := 0
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Split(l, ",")
		if len(f) == 2 && strings.TrimSpace(f[0]) == strconv.Itoa(pid) {
			n, _ := strconv.Atoi(strings.TrimSpace(f[1]))
			total += n
		}
	}
	return total
}

func gpuList() ([]gpuInfo, error) {
	out, err := exec.Command("nvidia-smi", "--query-gpu=index,name,driver_version,memory.total", "--format=csv,noheader,nounits").Output()
	if err != nil {
		return nil, err
	}
	var gs []gpuInfo
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(l, ",")
		if len(f) != 4 {
			continue
		}
		i, _ := strconv.Atoi(strings.TrimSpace(f[0]))
		m, _ := strconv.Atoi(strings.TrimSpace(f[3]))
		gs = append(gs, gpuInfo{Index: i, Name: strings.TrimSpace(f[1]), Driver: strings.TrimSpace(f[2]), MemoryTotalMiB: m})
	}
	return gs, nil
}

// testImages are photo-like JPEGs (gradients, discs, noise-free) of a few
// sizes and aspect ratios, the same on every machine.
func testImages() [][]byte {
	var out [][]byte
	for i, sz := range [][2]int{{640, 480}, {480, 640}, {1024, 768}, {300, 300}, {1440, 1080}} {
		m := image.NewRGBA(image.Rect(0, 0, sz[0], sz[1]))
		for y := 0; y < sz[1]; y++ {
			for x := 0; x < sz[0]; x++ {
				fx, fy := float64(x)/float64(sz[0]), float64(y)/float64(sz[1])
				r := 128 + 100*math.Sin(6*fx+float64(i))
				g := 128 + 100*math.Cos(5*fy+2*float64(i))
				b := 255 * fx * fy
				dx, dy := fx-0.3-0.1*float64(i), fy-0.5
				if dx*dx+dy*dy < 0.02 {
					r, g, b = 250, 240, 30
				}
				m.SetRGBA(x, y, color.RGBA{uint8(r), uint8(g), uint8(b), 255})
			}
		}
		out = append(out, encodeJPEG(m))
	}
	return out
}

// faceImage is what the SCRFD-signature graph detects: bright squares on
// black, of side 4×stride centred on anchor centres (see modelgen.SCRFD).
func faceImage() []byte {
	m := image.NewRGBA(image.Rect(0, 0, 640, 640))
	for i := 3; i < len(m.Pix); i += 4 {
		m.Pix[i] = 255
	}
	for _, sq := range [][3]int{{96, 96, 32}, {320, 160, 32}, {480, 400, 64}, {160, 448, 128}} {
		cx, cy, side := sq[0], sq[1], sq[2]
		for y := cy - side/2; y < cy+side/2; y++ {
			for x := cx - side/2; x < cx+side/2; x++ {
				m.SetRGBA(x, y, color.RGBA{235, 225, 215, 255})
			}
		}
	}
	return encodeJPEG(m)
}

func encodeJPEG(m image.Image) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 92}); err != nil {
		panic(err) // an in-memory RGBA image always encodes
	}
	return buf.Bytes()
}
