package pool

// These tests place models on FakeDevices: simulated GPUs with no
// hardware behind them (inference.FakeDevice). Their sessions are real
// ONNX Runtime CPU sessions; only the device memory is simulated (a load
// takes the model file's size, a run its inputs' size × RunFactor), and
// out-of-memory errors come on demand or when the simulated memory runs
// out. No GPU exists on the machines these tests run on.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/models"
)

// Visual model names of the catalogue, each laid out with the same small
// ViT, so that they all take the same device memory.
var gpuNames = []string{"ViT-B-32__openai", "ViT-B-16__openai", "RN101__openai", "ViT-B-32__laion2b_e16", "ViT-B-16__laion400m_e31"}

// gpuCache lays out a small CLIP image encoder under each name and
// returns the cache and the model file's size.
func gpuCache(t testing.TB, names ...string) (string, int64) {
	t.Helper()
	cache := t.TempDir()
	model := modelgen.ViT{ImageSize: 64, Patch: 16, Width: 64, Layers: 2, Heads: 4, MLP: 128, Dim: 32, Seed: 5}.Model().Marshal()
	for _, name := range names {
		dir := filepath.Join(cache, "clip", name, "visual")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "model.onnx"), model, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "preprocess_cfg.json"), []byte(`{"size":[64,64],"mean":[0.48145466,0.4578275,0.40821073],"std":[0.26862954,0.26130258,0.27577711]}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return cache, int64(len(model))
}

// fakeGPUs starts a runtime whose devices are devs.
func fakeGPUs(t testing.TB, allowCPU bool, devs ...*inference.FakeDevice) *inference.Runtime {
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

// fakeGPU is a FakeDevice of total bytes whose runs take almost nothing,
// so that the memory left is the models' alone.
func fakeGPU(total int64) *inference.FakeDevice {
	return &inference.FakeDevice{Total: total, RunFactor: 0.001}
}

// gpuService is a service on rt that estimates a new model at its file's
// size (what a FakeDevice takes) and keeps no headroom.
func gpuService(t testing.TB, cache string, rt *inference.Runtime, opts ServiceOptions) (*Service, *recorder) {
	t.Helper()
	store, err := models.NewStore(models.StoreOptions{CacheDir: cache, Offline: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Devices.LoadFactor == 0 {
		opts.Devices.LoadFactor = 1
	}
	if opts.Devices.Headroom == 0 {
		opts.Devices.Headroom = -1
	}
	if opts.Devices.ReplicaAfter == 0 {
		opts.Devices.ReplicaAfter = -1
	}
	if opts.Cache.FailureHoldOff == 0 {
		opts.Cache.FailureHoldOff = time.Millisecond
	}
	rec := &recorder{}
	opts.Metrics = rec
	s, err := NewService(opts, store, rt, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, rec
}

// recorder is an Observer and DeviceObserver that keeps what it is told.
type recorder struct {
	mu                           sync.Mutex
	placed, ooms, fellBack, gone []string
}

func (r *recorder) add(to *[]string, s string) {
	r.mu.Lock()
	*to = append(*to, s)
	r.mu.Unlock()
}

func (r *recorder) get(from *[]string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(*from)
}

func (r *recorder) ModelLoaded(Key, time.Duration)              {}
func (r *recorder) ModelUnloaded(k Key)                         { r.add(&r.gone, k.Name) }
func (r *recorder) Inference(Key, string, time.Duration, error) {}
func (r *recorder) ModelPlaced(k Key, device string, n int64) {
	r.add(&r.placed, fmt.Sprintf("%s@%s:%d", k.Name, device, n))
}
func (r *recorder) DeviceOutOfMemory(k Key, device, op string) {
	r.add(&r.ooms, k.Name+"@"+device+":"+op)
}
func (r *recorder) ModelFellBack(k Key, device string, cause error) {
	r.add(&r.fellBack, k.Name+"@"+device)
}

func visualKey(name string) Key { return Key{Task: "clip", Type: "visual", Name: name} }

// testImage is a small decoded image.
func testImage() *imaging.Image {
	img := &imaging.Image{W: 80, H: 60, Pix: make([]byte, 80*60*3)}
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	return img
}

// testPNG is testImage encoded as PNG, for Predict.
func testPNG(t testing.TB) []byte {
	t.Helper()
	src := testImage()
	img := image.NewRGBA(image.Rect(0, 0, src.W, src.H))
	for i := 0; i < src.W*src.H; i++ {
		copy(img.Pix[4*i:], src.Pix[3*i:3*i+3])
		img.Pix[4*i+3] = 255
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// embed runs one image through the model.
func embed(t testing.TB, s *Service, name string) []float32 {
	t.Helper()
	out, err := s.EmbedImages(context.Background(), name, []*imaging.Image{testImage()})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out[0]
}

// where returns the loaded models by name.
func where(s *Service) map[string]Loaded {
	out := map[string]Loaded{}
	for _, l := range s.Loaded() {
		out[l.Key.Name] = l
	}
	return out
}

// loadedOf returns the loaded model of key.
func loadedOf(s *Service, key Key) Loaded {
	for _, l := range s.Loaded() {
		if l.Key == key {
			return l
		}
	}
	return Loaded{}
}

func free(d *inference.FakeDevice) int64 { return d.Memory().Free }

// TestPlacementAcrossDevices: models go to the device with the most
// memory available, so they alternate between two equal devices; each
// runs there, with the results of a CPU session, and readiness and the
// device status say where.
func TestPlacementAcrossDevices(t *testing.T) {
	cache, size := gpuCache(t, gpuNames[:4]...)
	d0, d1 := fakeGPU(10*size), fakeGPU(10*size)
	s, rec := gpuService(t, cache, fakeGPUs(t, false, d0, d1), ServiceOptions{})
	want := map[string]string{gpuNames[0]: "FakeGPU:0", gpuNames[1]: "FakeGPU:1", gpuNames[2]: "FakeGPU:0", gpuNames[3]: "FakeGPU:1"}
	var first []float32
	for _, name := range gpuNames[:4] {
		e := embed(t, s, name)
		if first == nil {
			first = e
		} else {
			sameBits(t, name, e, first) // the same graph everywhere
		}
	}
	ref, _ := gpuService(t, cache, testenv.Runtime(t), ServiceOptions{})
	sameBits(t, "CPU session", embed(t, ref, gpuNames[0]), first)
	got := where(s)
	for name, dev := range want {
		l := got[name]
		if l.Device != dev || l.Provider != inference.FakeGPU || l.DeviceMemory != size || l.Fallback != nil || !slices.Equal(l.Devices, []string{dev}) {
			t.Errorf("%s: %+v, want on %s with %d bytes", name, l, dev, size)
		}
	}
	for i, d := range []*inference.FakeDevice{d0, d1} {
		if d.Sessions() != 2 || free(d) > 8*size || free(d) < 8*size-1024 {
			t.Errorf("device %d: %d sessions, %d free (models %d)", i, d.Sessions(), free(d), 2*size)
		}
	}
	st := s.Devices()
	if len(st) != 2 || st[0].Name != "FakeGPU:0" || st[0].Models != 2 || st[0].ModelMemory != 2*size || !st[0].Budgeted ||
		st[1].Models != 2 || st[1].Total != 10*size || st[1].Slots != 2 {
		t.Errorf("Devices = %+v", st)
	}
	if p := rec.get(&rec.placed); len(p) != 4 || p[1] != fmt.Sprintf("%s@FakeGPU:1:%d", gpuNames[1], size) {
		t.Errorf("placed %v", p)
	}
}

// TestMemoryBudgetPerDevice: with devices that hold one model each, a
// third model unloads the least recently used idle model and goes on its
// device; the other device's model stays. A model in use is never
// unloaded: with every device's model in use, a load fails with the
// device's memory in its error, and nothing is unloaded; once one is
// released, the load succeeds. Unloads give the device its memory back.
func TestMemoryBudgetPerDevice(t *testing.T) {
	cache, size := gpuCache(t, gpuNames[:3]...)
	for _, tc := range []struct {
		name  string
		total int64
		opts  DeviceOptions
		msg   []string
	}{
		{"device memory", size + size/2, DeviceOptions{},
			[]string{"FakeGPU:", "free of", "load retried", "(in use or preloaded) took", "CPU fallback not allowed"}},
		{"budget", 100 * size, DeviceOptions{Budget: size + size/2},
			[]string{ErrOverBudget.Error(), "FakeGPU:0", "(in use or preloaded) took"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d0, d1 := fakeGPU(tc.total), fakeGPU(tc.total)
			s, rec := gpuService(t, cache, fakeGPUs(t, false, d0, d1), ServiceOptions{Devices: tc.opts, Cache: CacheOptions{MaxLoaded: 8}})
			a, b, c := gpuNames[0], gpuNames[1], gpuNames[2]
			embed(t, s, a)
			embed(t, s, b)
			if got := where(s); got[a].Device != "FakeGPU:0" || got[b].Device != "FakeGPU:1" {
				t.Fatalf("placed %+v", got)
			}
			free1 := free(d1)
			embed(t, s, c) // a is the least recently used
			got := where(s)
			if _, ok := got[a]; ok || got[c].Device != "FakeGPU:0" || got[b].Device != "FakeGPU:1" {
				t.Fatalf("after the third model: %+v", got)
			}
			if d0.Sessions() != 1 || tc.total-free(d0) > size+1024 || free(d1) != free1 {
				t.Fatalf("device 0: %d sessions, %d used; device 1: %d free, was %d", d0.Sessions(), tc.total-free(d0), free(d1), free1)
			}
			if g := rec.get(&rec.gone); !slices.Equal(g, []string{a}) {
				t.Fatalf("unloaded %v", g)
			}

			// c in use: b, now the least recently used, makes room for a.
			hc, err := s.cache.Acquire(context.Background(), visualKey(c))
			if err != nil {
				t.Fatal(err)
			}
			embed(t, s, a)
			got = where(s)
			if _, ok := got[b]; ok || got[a].Device != "FakeGPU:1" || got[c].Device != "FakeGPU:0" {
				t.Fatalf("with c in use: %+v", got)
			}

			// Both in use: b has nowhere to go.
			ha, err := s.cache.Acquire(context.Background(), visualKey(a))
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.EmbedImages(context.Background(), b, []*imaging.Image{testImage()})
			if !errors.Is(err, inference.ErrOutOfMemory) || !errors.Is(err, ErrLoadFailed) {
				t.Fatalf("load with every model in use: %v", err)
			}
			for _, want := range tc.msg {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			var merr *DeviceMemoryError
			if !errors.As(err, &merr) || !strings.HasPrefix(merr.Device, "FakeGPU:") || merr.Need != size || merr.Total != tc.total ||
				merr.Budget != tc.opts.Budget || tc.opts.Budget > 0 && merr.BudgetLeft >= size {
				t.Errorf("memory error %+v", merr)
			}
			if got := where(s); len(got) != 2 || got[a].InUse != 1 || got[c].InUse != 1 {
				t.Fatalf("after the failed load: %+v", got)
			}
			if g := rec.get(&rec.fellBack); len(g) != 0 {
				t.Fatalf("fell back: %v", g)
			}
			hc.Release()
			embed(t, s, b) // c is idle again: it goes
			got = where(s)
			if _, ok := got[c]; ok || got[b].Device != "FakeGPU:0" || got[a].Device != "FakeGPU:1" {
				t.Fatalf("after release: %+v", got)
			}
			ha.Release()
			s.Close()
			if free(d0) != tc.total || free(d1) != tc.total || d0.Sessions()+d1.Sessions() != 0 {
				t.Fatalf("after close: %d and %d free of %d", free(d0), free(d1), tc.total)
			}
		})
	}
}

// TestMaxLoadedStillCaps: with room on the devices, the count cap still
// unloads the least recently used model.
func TestMaxLoadedStillCaps(t *testing.T) {
	cache, size := gpuCache(t, gpuNames[:3]...)
	d0 := fakeGPU(100 * size)
	s, _ := gpuService(t, cache, fakeGPUs(t, false, d0), ServiceOptions{Cache: CacheOptions{MaxLoaded: 2}})
	for _, name := range gpuNames[:3] {
		embed(t, s, name)
	}
	// The model the cap pushed out is closed just after the load.
	for deadline := time.Now().Add(5 * time.Second); d0.Sessions() > 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if got := where(s); len(got) != 2 || d0.Sessions() != 2 || free(d0) < 98*size-1024 {
		t.Fatalf("loaded %v, %d sessions, %d free", got, d0.Sessions(), free(d0))
	}
}

// TestOutOfMemoryOnLoad: a load that runs out of device memory unloads the
// idle models on that device and loads again, once; a second failure is
// an error naming the device and its memory, and the model never goes to
// the CPU unless the fallback is allowed; then it does, and readiness and
// the observer say so. After an out-of-memory error the device still
// loads and runs models, and its memory comes back whole.
func TestOutOfMemoryOnLoad(t *testing.T) {
	cache, size := gpuCache(t, gpuNames...)
	total := 10 * size
	t.Run("not allowed", func(t *testing.T) {
		d0, d1 := fakeGPU(total), fakeGPU(total)
		s, rec := gpuService(t, cache, fakeGPUs(t, false, d0, d1), ServiceOptions{})
		for _, name := range gpuNames[:4] {
			embed(t, s, name) // 0 and 2 on FakeGPU:0, 1 and 3 on FakeGPU:1
		}
		d0.FailLoads(1)
		embed(t, s, gpuNames[4]) // FakeGPU:0: fails, unloads 0 and 2 there, loads
		got := where(s)
		if _, ok := got[gpuNames[0]]; ok || len(got) != 3 || got[gpuNames[4]].Device != "FakeGPU:0" || got[gpuNames[3]].Device != "FakeGPU:1" {
			t.Fatalf("after a failed load and its retry: %+v", got)
		}
		if o := rec.get(&rec.ooms); !slices.Equal(o, []string{gpuNames[4] + "@FakeGPU:0:load"}) {
			t.Fatalf("out-of-memory observations %v", o)
		}
		if d0.Sessions() != 1 || free(d0) < total-size-1024 || d1.Sessions() != 2 {
			t.Fatalf("device 0: %d sessions, %d free; device 1: %d sessions", d0.Sessions(), free(d0), d1.Sessions())
		}

		// Twice: an error, on the device, with its numbers.
		d0.FailLoads(2)
		_, err := s.EmbedImages(context.Background(), gpuNames[0], []*imaging.Image{testImage()})
		if !errors.Is(err, inference.ErrOutOfMemory) {
			t.Fatalf("second failure: %v", err)
		}
		var derr *inference.DeviceError
		if !errors.As(err, &derr) || derr.Device != "FakeGPU:0" || derr.Total != total || derr.Op != "load" {
			t.Fatalf("error %v (%+v)", err, derr)
		}
		// The figures an operator reads, typed: the device, what the
		// model needs (its file's size here), the device's memory.
		var merr *DeviceMemoryError
		if !errors.As(err, &merr) || merr.Device != "FakeGPU:0" || merr.Op != "load" || merr.Key != visualKey(gpuNames[0]) ||
			merr.Need != size || merr.Total != total || merr.Free != derr.Free || merr.Budget != 0 {
			t.Fatalf("memory error %+v", merr)
		}
		for _, want := range []string{"FakeGPU:0", "free of", "unloaded and the load retried", "CPU fallback not allowed"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		if g := rec.get(&rec.fellBack); len(g) != 0 {
			t.Fatalf("fell back: %v", g)
		}
		if _, ok := where(s)[gpuNames[0]]; ok {
			t.Fatal("the model is loaded after its load failed")
		}

		// The device is usable: the model loads and runs once the
		// failures are over (the failure is remembered briefly).
		time.Sleep(5 * time.Millisecond)
		embed(t, s, gpuNames[0])
		s.Close()
		if free(d0) != total || free(d1) != total || d0.Sessions()+d1.Sessions() != 0 {
			t.Fatalf("after close: %d and %d free of %d", free(d0), free(d1), total)
		}
	})
	t.Run("allowed", func(t *testing.T) {
		d0 := fakeGPU(total)
		s, rec := gpuService(t, cache, fakeGPUs(t, true, d0), ServiceOptions{})
		d0.FailLoads(2)
		e := embed(t, s, gpuNames[0])
		l := where(s)[gpuNames[0]]
		if l.Device != inference.CPU || l.Provider != inference.CPU || !errors.Is(l.Fallback, inference.ErrOutOfMemory) || l.DeviceMemory != 0 {
			t.Fatalf("after two failures with the fallback allowed: %+v", l)
		}
		if g := rec.get(&rec.fellBack); !slices.Equal(g, []string{gpuNames[0] + "@FakeGPU:0"}) {
			t.Fatalf("fell back: %v", g)
		}
		if st := s.Devices(); st[0].Fallbacks != 1 || st[0].OutOfMemory != 2 || st[0].Models != 0 {
			t.Fatalf("Devices = %+v", st)
		}
		if free(d0) != total || d0.Sessions() != 0 {
			t.Fatalf("device holds %d bytes, %d sessions", total-free(d0), d0.Sessions())
		}
		embed(t, s, gpuNames[1]) // the device still works
		if l := where(s)[gpuNames[1]]; l.Device != "FakeGPU:0" {
			t.Fatalf("next model on %s", l.Device)
		}
		sameBits(t, "CPU fallback", e, embed(t, s, gpuNames[1]))
	})
}

// TestOutOfMemoryOnRun: a batch that runs out of device memory unloads the
// idle models on its device and runs again, once; a second failure is an
// error with the device's numbers and the model stays on its device (the
// next run works); with the fallback allowed the model moves to the CPU
// and the batch succeeds there. The same holds for models run per request
// (a face detector: two sessions).
func TestOutOfMemoryOnRun(t *testing.T) {
	cache, size := gpuCache(t, gpuNames[:2]...)
	faceCache(t, cache)
	total := 100 * size
	img := photos(t)[4]
	t.Run("not allowed", func(t *testing.T) {
		d0 := fakeGPU(total)
		s, rec := gpuService(t, cache, fakeGPUs(t, false, d0), ServiceOptions{})
		a, b := gpuNames[0], gpuNames[1]
		embed(t, s, a)
		want := embed(t, s, b)
		d0.FailRuns(1)
		sameBits(t, "after one failure", embed(t, s, b), want)
		if got := where(s); len(got) != 1 || got[b].Device != "FakeGPU:0" {
			t.Fatalf("after a failed run and its retry: %+v", got)
		}
		if o := rec.get(&rec.ooms); !slices.Equal(o, []string{b + "@FakeGPU:0:run"}) {
			t.Fatalf("out-of-memory observations %v", o)
		}
		d0.FailRuns(2)
		_, err := s.EmbedImages(context.Background(), b, []*imaging.Image{testImage()})
		var derr *inference.DeviceError
		if !errors.Is(err, inference.ErrOutOfMemory) || !errors.As(err, &derr) || derr.Device != "FakeGPU:0" || derr.Op != "run" || derr.Total != total {
			t.Fatalf("second failure: %v", err)
		}
		var merr *DeviceMemoryError
		if !errors.As(err, &merr) || merr.Device != "FakeGPU:0" || merr.Op != "run" || merr.Need != derr.Requested || merr.Need <= 0 || merr.Total != total {
			t.Fatalf("memory error %+v", merr)
		}
		for _, want := range []string{"FakeGPU:0", "free of", "run retried", "CPU fallback not allowed"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		if l := where(s)[b]; l.Device != "FakeGPU:0" || l.Fallback != nil {
			t.Fatalf("after the error: %+v", l)
		}
		sameBits(t, "after the error", embed(t, s, b), want)

		// A detector: its first run fails, its idle neighbours go, it
		// runs again.
		faces, err := s.Faces(context.Background(), "antelopev2", img, 0.5)
		if err != nil || len(faces) != 5 {
			t.Fatalf("faces: %d, %v", len(faces), err)
		}
		embed(t, s, a) // idle on the device again
		d0.FailRuns(1)
		again, err := s.Faces(context.Background(), "antelopev2", img, 0.5)
		if err != nil || len(again) != 5 || again[0].Box != faces[0].Box {
			t.Fatalf("faces after a failed detection: %d, %v", len(again), err)
		}
		if o := rec.get(&rec.ooms); o[len(o)-1] != "antelopev2@FakeGPU:0:run" {
			t.Fatalf("out-of-memory observations %v", o)
		}
		if _, ok := where(s)[a]; ok {
			t.Fatal("the idle model stayed on the device after the detector ran out of memory")
		}
		s.Close()
		if free(d0) != total || d0.Sessions() != 0 {
			t.Fatalf("after close: %d free of %d, %d sessions", free(d0), total, d0.Sessions())
		}
	})
	t.Run("allowed", func(t *testing.T) {
		d0 := fakeGPU(total)
		s, rec := gpuService(t, cache, fakeGPUs(t, true, d0), ServiceOptions{})
		b := gpuNames[1]
		want := embed(t, s, b)
		d0.FailRuns(2)
		sameBits(t, "on the CPU", embed(t, s, b), want)
		l := where(s)[b]
		if l.Device != inference.CPU || !errors.Is(l.Fallback, inference.ErrOutOfMemory) {
			t.Fatalf("after two failures: %+v", l)
		}
		if g := rec.get(&rec.fellBack); !slices.Equal(g, []string{b + "@FakeGPU:0"}) {
			t.Fatalf("fell back: %v", g)
		}
		if free(d0) != total || d0.Sessions() != 0 {
			t.Fatalf("device holds %d bytes, %d sessions after the model left", total-free(d0), d0.Sessions())
		}
		// The detector: two sessions, both move.
		d0.FailRuns(2)
		faces, err := s.Faces(context.Background(), "antelopev2", img, 0.5)
		if err != nil || len(faces) != 5 {
			t.Fatalf("faces: %d, %v", len(faces), err)
		}
		if l := loadedOf(s, Key{Task: "facial-recognition", Type: "detection", Name: "antelopev2"}); l.Device != inference.CPU || l.Fallback == nil || len(l.Devices) != 1 {
			t.Fatalf("detector %+v", l)
		}
	})
}

// TestDeviceGates: each device has its own run slots: with device 0's
// slots all taken, a model on device 1 runs, and one on device 0 waits
// until they are free.
func TestDeviceGates(t *testing.T) {
	cache, size := gpuCache(t, gpuNames[:2]...)
	s, _ := gpuService(t, cache, fakeGPUs(t, false, fakeGPU(10*size), fakeGPU(10*size)), ServiceOptions{})
	a, b := gpuNames[0], gpuNames[1]
	embed(t, s, a)
	embed(t, s, b)
	if got := where(s); got[a].Device != "FakeGPU:0" || got[b].Device != "FakeGPU:1" {
		t.Fatalf("placed %+v", got)
	}
	slot := s.devices.slot("FakeGPU:0")
	if slot == s.devices.slot("FakeGPU:1") || slot == s.devices.slot(inference.CPU) {
		t.Fatal("devices share a gate")
	}
	for range cap(slot) {
		slot <- struct{}{}
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.EmbedImages(context.Background(), a, []*imaging.Image{testImage()})
		done <- err
	}()
	for batchStats(s, visualKey(a)).Queued == 0 {
		select {
		case err := <-done:
			t.Fatalf("ran on a full device: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	embed(t, s, b) // device 1 is free
	select {
	case err := <-done:
		t.Fatalf("ran on a full device: %v", err)
	default:
	}
	for range cap(slot) {
		<-slot
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestReplicaForBusyModel: a model whose queue stays backed up gets a
// second session on the other device, and its batches run there while
// its first device is busy; when room is needed on that device and the
// model is idle, the replica goes and the model stays on its first
// device. The replica's memory comes back.
func TestReplicaForBusyModel(t *testing.T) {
	cache, size := gpuCache(t, gpuNames[:2]...)
	d0, d1 := fakeGPU(10*size), fakeGPU(size+size/2)
	s, rec := gpuService(t, cache, fakeGPUs(t, false, d0, d1), ServiceOptions{
		Devices: DeviceOptions{ReplicaAfter: time.Nanosecond},
		Batch:   BatchOptions{Max: 2},
	})
	a, b := gpuNames[0], gpuNames[1]
	want := embed(t, s, a)
	if l := where(s)[a]; l.Device != "FakeGPU:0" {
		t.Fatalf("placed on %s", l.Device)
	}
	slot := s.devices.slot("FakeGPU:0")
	for range cap(slot) {
		slot <- struct{}{}
	}
	imgs := make([]*imaging.Image, 8)
	for i := range imgs {
		imgs[i] = testImage()
	}
	out, err := s.EmbedImages(context.Background(), a, imgs) // device 0 is held: they run on the replica
	for range cap(slot) {
		<-slot
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range out {
		sameBits(t, "replica", e, want)
	}
	l := where(s)[a]
	if !slices.Equal(l.Devices, []string{"FakeGPU:0", "FakeGPU:1"}) || l.DeviceMemory != 2*size || d1.Sessions() != 1 ||
		!slices.Equal(l.Replicas, []Where{{Provider: inference.FakeGPU, Device: "FakeGPU:0"}, {Provider: inference.FakeGPU, Device: "FakeGPU:1"}}) {
		t.Fatalf("replicas %+v, device 1 sessions %d", l, d1.Sessions())
	}
	// A request says which replica ran it: with device 0 held, the
	// replica on device 1.
	for range cap(slot) {
		slot <- struct{}{}
	}
	res, err := s.Predict(context.Background(), &Request{Entries: []Entry{{Task: "clip", Type: "visual", ModelName: a}}, Image: testPNG(t)})
	for range cap(slot) {
		<-slot
	}
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Ran["clip/visual"]; !slices.Equal(r, []Where{{Provider: inference.FakeGPU, Device: "FakeGPU:1"}}) || res.Providers["clip/visual"] != inference.FakeGPU {
		t.Fatalf("ran on %+v (%v)", r, res.Providers)
	}
	res, err = s.Predict(context.Background(), &Request{Entries: []Entry{{Task: "clip", Type: "visual", ModelName: a}}, Image: testPNG(t)})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Ran["clip/visual"]; len(r) != 1 || r[0].Provider != inference.FakeGPU || r[0].Fallback {
		t.Fatalf("ran on %+v", r)
	}
	// The observer hears of the replica once it serves.
	for deadline := time.Now().Add(5 * time.Second); len(rec.get(&rec.placed)) < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if p := rec.get(&rec.placed); len(p) != 2 || !strings.HasPrefix(p[1], a+"@FakeGPU:1") {
		t.Fatalf("placed %v", p)
	}

	// With a budget of one model per device, b needs room: the idle
	// model's replica goes (before any whole model), the model stays.
	s.placer.mu.Lock()
	s.placer.opts.Budget = size + size/2
	s.placer.mu.Unlock()
	embed(t, s, b)
	got := where(s)
	if !slices.Equal(got[a].Devices, []string{"FakeGPU:0"}) || got[b].Device != "FakeGPU:1" {
		t.Fatalf("after room was made: %+v", got)
	}
	if d1.Sessions() != 1 || free(d1) < size/2-1024 {
		t.Fatalf("device 1: %d sessions, %d free", d1.Sessions(), free(d1))
	}
	sameBits(t, "after the replica left", embed(t, s, a), want)
}

// TestIdleUnloadReturnsDeviceMemory: the idle TTL unloads models, and
// their devices get all their memory back, arenas included.
func TestIdleUnloadReturnsDeviceMemory(t *testing.T) {
	cache, size := gpuCache(t, gpuNames[:2]...)
	d0, d1 := &inference.FakeDevice{Total: 10 * size}, &inference.FakeDevice{Total: 10 * size} // runs keep arenas
	s, rec := gpuService(t, cache, fakeGPUs(t, false, d0, d1), ServiceOptions{Cache: CacheOptions{TTL: time.Millisecond}})
	embed(t, s, gpuNames[0])
	embed(t, s, gpuNames[1])
	if free(d0) >= 10*size-size || free(d1) >= 10*size-size {
		t.Fatalf("loaded: %d and %d free", free(d0), free(d1))
	}
	time.Sleep(5 * time.Millisecond)
	if n := s.cache.Sweep(); n != 2 {
		t.Fatalf("swept %d", n)
	}
	if free(d0) != 10*size || free(d1) != 10*size || d0.Sessions()+d1.Sessions() != 0 {
		t.Fatalf("after the idle unload: %d and %d free of %d", free(d0), free(d1), 10*size)
	}
	if g := rec.get(&rec.gone); len(g) != 2 {
		t.Fatalf("unloaded %v", g)
	}
}

// TestDevicesUnderChurn: concurrent requests for more models than two
// small devices hold, with replicas on, load, unload and run models at
// once. Every request either succeeds or fails for want of device memory
// (every model on the devices in use), nothing deadlocks, and once the
// service closes the devices have all their memory back.
func TestDevicesUnderChurn(t *testing.T) {
	cache, size := gpuCache(t, gpuNames...)
	total := 2*size + size/2
	d0, d1 := &inference.FakeDevice{Total: total, RunFactor: 0.01}, &inference.FakeDevice{Total: total, RunFactor: 0.01}
	s, _ := gpuService(t, cache, fakeGPUs(t, false, d0, d1), ServiceOptions{
		Devices: DeviceOptions{ReplicaAfter: time.Nanosecond},
		Batch:   BatchOptions{Max: 2},
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, oom := 0, 0
	for g := range 6 {
		wg.Go(func() {
			imgs := []*imaging.Image{testImage(), testImage(), testImage()}
			for i := range 12 {
				name := gpuNames[(g+i*(g+1))%len(gpuNames)]
				_, err := s.EmbedImages(context.Background(), name, imgs)
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, inference.ErrOutOfMemory):
					oom++
				default:
					t.Errorf("%s: %v", name, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d requests served, %d refused for memory", ok, oom)
	if ok == 0 {
		t.Fatal("nothing served")
	}
	s.Close()
	if free(d0) != total || free(d1) != total || d0.Sessions()+d1.Sessions() != 0 {
		t.Fatalf("after close: %d and %d free of %d, %d sessions", free(d0), free(d1), total, d0.Sessions()+d1.Sessions())
	}
}

// TestModelBiggerThanDevice: a model whose weights alone exceed the
// device's memory is refused at once with the numbers, without unloading
// the idle models there or trying the load; the device keeps serving.
// With the fallback allowed it runs on the CPU.
func TestModelBiggerThanDevice(t *testing.T) {
	cache, size := gpuCache(t, gpuNames[:2]...)
	const big = "ViT-L-14__openai"
	dir := filepath.Join(cache, "clip", big, "visual")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	vit := modelgen.ViT{ImageSize: 64, Patch: 16, Width: 192, Layers: 4, Heads: 4, MLP: 768, Dim: 32, Seed: 8}
	if err := vit.Model().WriteFile(filepath.Join(dir, "model.onnx")); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(cache, "clip", gpuNames[0], "visual", "preprocess_cfg.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "preprocess_cfg.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	total := 3 * size
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("fallback %v", allow), func(t *testing.T) {
			d0 := fakeGPU(total)
			s, rec := gpuService(t, cache, fakeGPUs(t, allow, d0), ServiceOptions{})
			embed(t, s, gpuNames[0])
			_, err := s.EmbedImages(context.Background(), big, []*imaging.Image{testImage()})
			if allow {
				if err != nil {
					t.Fatal(err)
				}
				if l := where(s)[big]; l.Device != inference.CPU || !errors.Is(l.Fallback, inference.ErrOutOfMemory) {
					t.Fatalf("big model %+v", l)
				}
			} else {
				if !errors.Is(err, inference.ErrOutOfMemory) || !strings.Contains(err.Error(), "needs at least") || !strings.Contains(err.Error(), "FakeGPU:0") {
					t.Fatalf("big model: %v", err)
				}
				var merr *DeviceMemoryError
				if !errors.As(err, &merr) || merr.Device != "FakeGPU:0" || merr.Total != total || merr.Need <= total || merr.Free <= 0 || merr.Free >= total {
					t.Fatalf("memory error %+v", merr)
				}
			}
			if _, ok := where(s)[gpuNames[0]]; !ok || d0.OutOfMemory() != 0 || len(rec.get(&rec.ooms)) != 0 {
				t.Fatalf("the refusal cost the device: loaded %v, %d out-of-memory errors", where(s), d0.OutOfMemory())
			}
			embed(t, s, gpuNames[1])
			if l := where(s)[gpuNames[1]]; l.Device != "FakeGPU:0" {
				t.Fatalf("next model on %s", l.Device)
			}
			s.Close()
			if free(d0) != total || d0.Sessions() != 0 {
				t.Fatalf("after close: %d free of %d", free(d0), total)
			}
		})
	}
}
