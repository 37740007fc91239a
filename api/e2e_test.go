package api_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mlserve/mlserve/api"
	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/models/hubtest"
	"github.com/mlserve/mlserve/pool"
)

// goldenCase is one entry of inference/clip/testdata/golden.json: an input
// image and the tensor PIL + numpy make of it with Immich's steps.
type goldenCase struct {
	W, H   int
	Size   int
	Mean   [3]float32
	Std    [3]float32
	Input  string
	Tensor string
}

func loadGolden(t testing.TB, input string) goldenCase {
	t.Helper()
	dir := filepath.Join(testenv.Root(), "inference", "clip", "testdata")
	raw, err := os.ReadFile(filepath.Join(dir, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Cases []goldenCase }
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, c := range doc.Cases {
		if c.Input == input && c.Tensor != "" {
			c.Input = filepath.Join(dir, c.Input)
			c.Tensor = filepath.Join(dir, c.Tensor)
			return c
		}
	}
	t.Fatalf("no golden case with a tensor for %s", input)
	return goldenCase{}
}

func readF32(t testing.TB, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// clipRepo builds the files of an Immich CLIP repository on Hugging Face
// with generated weights: the visual tower sized for the golden case, the
// textual tower on the real OpenAI vocabulary.
func clipRepo(t testing.TB, g goldenCase) (files map[string][]byte, visual, textual []byte) {
	t.Helper()
	files, err := modelgen.CLIPTokenizer{Merges: testenv.TestData(t, "clip/bpe_simple_vocab_16e6.txt")}.Files()
	if err != nil {
		t.Fatal(err)
	}
	repo := map[string][]byte{}
	for name, data := range files {
		repo["textual/"+name] = data
	}
	visual = modelgen.CLIPVisual{Size: g.Size, Dim: 512, Seed: 11}.Model().Marshal()
	textual = modelgen.CLIPTextual{Context: 77, Vocab: modelgen.CLIPVocabSize, Dim: 512, Seed: 12}.Model().Marshal()
	repo["visual/model.onnx"] = visual
	repo["textual/model.onnx"] = textual
	pre, _ := json.Marshal(map[string]any{
		"size": []int{g.Size, g.Size}, "mode": "RGB", "mean": g.Mean, "std": g.Std,
		"interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0,
	})
	repo["visual/preprocess_cfg.json"] = pre
	repo["config.json"] = []byte(`{"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}`)
	// The hub also holds files mlserve must not download.
	repo["visual/model.armnn"] = []byte("armnn weights")
	repo["visual/rknpu/rk3588/model.rknn"] = []byte("rknn weights")
	return repo, visual, textual
}

type stack struct {
	url   string
	hub   *hubtest.Server
	svc   *pool.Service
	cache string
}

func startStack(t testing.TB, repos map[string]map[string][]byte, opts pool.ServiceOptions) *stack {
	t.Helper()
	return startStackWith(t, stackOptions{repos: repos, service: opts})
}

type stackOptions struct {
	repos   map[string]map[string][]byte
	service pool.ServiceOptions
	maxBody int64  // upload limit; 0 is the default
	cache   string // model cache; empty is a new temporary folder
	// rt runs the models; nil is the shared CPU runtime.
	rt *inference.Runtime
}

// startStackWith starts a fake hub, the model store, the service and the
// HTTP server on a loopback port; all stop when the test ends.
func startStackWith(t testing.TB, o stackOptions) *stack {
	t.Helper()
	rt := o.rt
	if rt == nil {
		rt = testenv.Runtime(t)
	}
	hub := hubtest.New(t, hubtest.Options{})
	for name, files := range o.repos {
		hub.AddRepo(name, files)
	}
	cache := o.cache
	if cache == "" {
		cache = t.TempDir()
	}
	store, err := models.NewStore(models.StoreOptions{
		CacheDir: cache, HFEndpoint: hub.URL(), HTTPClient: hub.Client(),
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts := o.service
	reg := prometheus.NewRegistry()
	metrics := api.NewMetrics(reg)
	opts.Metrics = metrics
	if opts.Workers.Workers == 0 {
		opts.Workers = pool.WorkersOptions{Workers: 2, Queue: 8}
	}
	svc, err := pool.NewService(opts, store, rt, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Admission as mlserve serve wires it: the CPU workers plus the queue.
	adm := pool.NewAdmission(pool.AdmissionOptions{Limit: opts.Workers.Workers + opts.Workers.Queue})
	srv := api.New(api.Options{Predictor: svc, Admission: adm, Health: svc, MaxBodyBytes: o.maxBody, Registry: reg, Metrics: metrics}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ctx, ln) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		svc.Close()
	})
	return &stack{url: "http://" + ln.Addr().String(), hub: hub, svc: svc, cache: cache}
}

// immichRequest builds the body exactly as the Immich server's
// machine-learning repository does with undici's FormData: "entries"
// first, then the image as a Blob (filename "blob", octet-stream), or
// the text field.
func immichRequest(t testing.TB, url, entries string, img []byte, text *string) *http.Response {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if err := w.WriteField("entries", entries); err != nil {
		t.Fatal(err)
	}
	if img != nil {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="image"; filename="blob"`)
		h.Set("Content-Type", "application/octet-stream")
		p, err := w.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = p.Write(img)
	}
	if text != nil {
		_ = w.WriteField("text", *text)
	}
	w.Close()
	resp, err := http.Post(url+"/predict", w.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func decodeBody(t testing.TB, resp *http.Response) map[string]json.RawMessage {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return m
}

// immichJSON sends an Immich request and decodes its answer, which must be
// a 200.
func immichJSON(t testing.TB, url, entries string, img []byte, text *string) map[string]json.RawMessage {
	t.Helper()
	resp := immichRequest(t, url, entries, img, text)
	defer resp.Body.Close()
	return decodeBody(t, resp)
}

// embeddingString reads Immich's embedding: a JSON string of a JSON array.
func embeddingString(t testing.TB, raw json.RawMessage) []float32 {
	t.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("embedding is not a JSON string: %s", raw)
	}
	if strings.Contains(s, " ") {
		t.Errorf("embedding string has spaces")
	}
	var v []float32
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func runGraph(t testing.TB, model []byte, in ...inference.Tensor) []float32 {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.onnx")
	if err := os.WriteFile(p, model, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := testenv.Runtime(t).NewSession(p, inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Run(context.Background(), in...)
	if err != nil {
		t.Fatal(err)
	}
	return out[0].Float32
}

func assertClose(t testing.TB, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("length %d, want %d", len(got), len(want))
	}
	worst := 0.0
	for i := range got {
		worst = math.Max(worst, math.Abs(float64(got[i])-float64(want[i])))
	}
	if worst > tol {
		t.Fatalf("max abs difference %g > %g", worst, tol)
	}
	t.Logf("max abs difference to the reference: %g", worst)
}

// TestImmichServerCLIP drives the service as the Immich server does:
// download from the hub → load → preprocess → infer → response, for the
// visual and the textual encoder. The visual embedding must equal the
// graph's output on the tensor PIL and numpy computed for the same image.
func TestImmichServerCLIP(t *testing.T) {
	g := loadGolden(t, "in/photo_28.jpg")
	repo, visual, textual := clipRepo(t, g)
	st := startStack(t, map[string]map[string][]byte{"immich-app/ViT-B-32__openai": repo}, pool.ServiceOptions{})
	img, err := os.ReadFile(g.Input)
	if err != nil {
		t.Fatal(err)
	}

	// Visual, with the legacy name Immich still accepts.
	resp := immichRequest(t, st.url, `{"clip":{"visual":{"modelName":"ViT-B-32::openai"}}}`, img, nil)
	if p := resp.Header.Get("X-Mlserve-Provider"); p != "clip/visual=CPU" {
		t.Errorf("provider header %q", p)
	}
	if st := resp.Header.Get("Server-Timing"); !strings.Contains(st, "infer;dur=") {
		t.Errorf("Server-Timing %q", st)
	}
	body := decodeBody(t, resp)
	if string(body["imageWidth"]) != fmt.Sprint(g.W) || string(body["imageHeight"]) != fmt.Sprint(g.H) {
		t.Errorf("image size %s×%s, want %d×%d", body["imageWidth"], body["imageHeight"], g.W, g.H)
	}
	got := embeddingString(t, body["clip"])
	want := runGraph(t, visual, inference.F32(readF32(t, g.Tensor), 1, 3, int64(g.Size), int64(g.Size)))
	assertClose(t, got, want, 1e-5)

	// Textual: the ids fed to the graph are OpenAI CLIP's for the query.
	q := "a photo of a cat"
	body = immichJSON(t, st.url, `{"clip":{"textual":{"modelName":"ViT-B-32__openai","options":{"language":"en"}}}}`, nil, &q)
	if _, ok := body["imageWidth"]; ok {
		t.Error("text response has image dimensions")
	}
	ids := make([]int32, 77)
	copy(ids, []int32{49406, 320, 1125, 539, 320, 2368, 49407})
	for i := 7; i < 77; i++ {
		ids[i] = 49407 // pad token <|endoftext|>
	}
	assertClose(t, embeddingString(t, body["clip"]), runGraph(t, textual, inference.I32(ids, 1, 77)), 1e-6)

	// Downloads skipped what Immich skips, and the layout is Immich's.
	for _, f := range []string{"config.json", "visual/model.onnx", "visual/preprocess_cfg.json", "textual/model.onnx", "textual/tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(st.cache, "clip", "ViT-B-32__openai", f)); err != nil {
			t.Errorf("cache layout: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(st.cache, "clip", "ViT-B-32__openai", "visual", "model.armnn")); err == nil {
		t.Error("downloaded an ARM NN file")
	}
	// A second request is served from memory: no new hub traffic.
	before := st.hub.Total()
	immichJSON(t, st.url, `{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}`, img, nil)
	if after := st.hub.Total(); after != before {
		t.Errorf("hub requests went from %d to %d for a loaded model", before, after)
	}
}
