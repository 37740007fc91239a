package pool

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference/clip"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/internal/testenv"
)

// clipStd is the std of ViT-B-32__openai's preprocess_cfg.json (benchCache
// writes it): a tensor difference times std times 255 is a difference in
// 8-bit levels.
var clipStd = [3]float64{0.26862954, 0.26130258, 0.27577711}

// Fidelity targets of MLSERVE_PREPROCESS=fast against exact (issue 9).
const (
	fastMaxMeanDiff = 1.0   // mean |fast - exact| per tensor element, in 1/255
	fastMinCosine   = 0.999 // embedding cosine
)

// fidelity is fast against exact for one image.
type fidelity struct {
	exactW, exactH, fastW, fastH int
	meanDiff, maxDiff            float64 // in 1/255
	cosine                       float64
}

// measureFidelity decodes data both ways for v, preprocesses both and
// embeds both.
func measureFidelity(t testing.TB, v *clip.Visual, data []byte) fidelity {
	t.Helper()
	exact, w0, h0, err := NewDecoder(imaging.DecodeOptions{}, PreprocessExact)(data, v.Size())
	if err != nil {
		t.Fatal(err)
	}
	fast, w1, h1, err := NewDecoder(imaging.DecodeOptions{}, PreprocessFast)(data, v.Size())
	if err != nil {
		t.Fatal(err)
	}
	if w0 != exact.W || h0 != exact.H || w1 != w0 || h1 != h0 {
		t.Fatalf("original size: exact %d×%d (image %d×%d), fast %d×%d", w0, h0, exact.W, exact.H, w1, h1)
	}
	te, tf := v.Preprocess(exact, nil), v.Preprocess(fast, nil)
	n := len(te) / 3
	f := fidelity{exactW: exact.W, exactH: exact.H, fastW: fast.W, fastH: fast.H}
	for i := range te {
		d := math.Abs(float64(te[i])-float64(tf[i])) * clipStd[i/n] * 255
		f.meanDiff += d
		f.maxDiff = max(f.maxDiff, d)
	}
	f.meanDiff /= float64(len(te))
	ee, err := v.EmbedPrepared(context.Background(), te, 1)
	if err != nil {
		t.Fatal(err)
	}
	ef, err := v.EmbedPrepared(context.Background(), tf, 1)
	if err != nil {
		t.Fatal(err)
	}
	f.cosine = cosine(ee[0], ef[0])
	return f
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

// loadBenchVisual loads the ViT-B/32-architecture graph (generated,
// random weights) with ViT-B-32__openai's preprocessing.
func loadBenchVisual(t testing.TB) *clip.Visual {
	t.Helper()
	cache := benchCache(t, false)
	v, err := clip.LoadVisual(filepath.Join(cache, "clip", "ViT-B-32__openai"), testenv.Runtime(t), clip.VisualOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// TestPreprocessFidelity measures MLSERVE_PREPROCESS=fast against exact on
// the six sample photos at Immich's preview size (shorter side 1440, JPEG
// q80), for ViT-B-32__openai's 224-pixel input: the difference of the
// model inputs in 8-bit levels, and the cosine of the embeddings of the
// ViT-B/32-architecture graph. The graph's weights are random, so the
// cosine tells how much the graph's output moves with the input, not
// what the real model's search results do. `go test -run
// PreprocessFidelity -v ./pool` prints the table.
func TestPreprocessFidelity(t *testing.T) {
	v := loadBenchVisual(t)
	t.Logf("%-8s %-10s %-9s %14s %13s %9s", "photo", "preview", "fast", "mean diff/255", "max diff/255", "cosine")
	for i, data := range previews(t) {
		f := measureFidelity(t, v, data)
		t.Logf("sample%d  %-10s %-9s %14.3f %13.1f %9.6f", i+1, fmt.Sprintf("%d×%d", f.exactW, f.exactH),
			fmt.Sprintf("%d×%d", f.fastW, f.fastH), f.meanDiff, f.maxDiff, f.cosine)
		if min(f.fastW, f.fastH) < v.Size() || f.fastW >= f.exactW {
			t.Errorf("sample%d: fast decoded %d×%d from %d×%d; want smaller, shorter side at least %d",
				i+1, f.fastW, f.fastH, f.exactW, f.exactH, v.Size())
		}
		if f.meanDiff > fastMaxMeanDiff || f.cosine < fastMinCosine {
			t.Errorf("sample%d: mean difference %.3f/255 (want ≤ %g), cosine %.6f (want ≥ %g)",
				i+1, f.meanDiff, fastMaxMeanDiff, f.cosine, fastMinCosine)
		}
	}
}

// BenchmarkDecodePreprocess is /predict's CPU work for CLIP on the six
// previews, one image at a time on one core: decode, then resize and
// normalise for a 224-pixel model, with MLSERVE_PREPROCESS=exact and
// fast. The decoded pixels are recycled as the service does. It reports
// the decode and the preprocessing apart (decode-ms, pre-ms per image).
// `go test -run '^$' -bench DecodePreprocess ./pool`.
func BenchmarkDecodePreprocess(b *testing.B) {
	imgs := previews(b)
	v := loadBenchVisual(b)
	for _, mode := range []Preprocess{PreprocessExact, PreprocessFast} {
		b.Run(string(mode), func(b *testing.B) {
			bufs := new(imaging.Buffers)
			dec := NewDecoder(imaging.DecodeOptions{Buffers: bufs}, mode)
			var dst []float32
			var decode, pre time.Duration
			b.ResetTimer()
			for i := range b.N {
				t0 := time.Now()
				img, _, _, err := dec(imgs[i%len(imgs)], v.Size())
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				dst = v.Preprocess(img, dst)
				pre += time.Since(t1)
				decode += t1.Sub(t0)
				bufs.Put(img)
			}
			b.ReportMetric(float64(decode.Microseconds())/1e3/float64(b.N), "decode-ms")
			b.ReportMetric(float64(pre.Microseconds())/1e3/float64(b.N), "pre-ms")
		})
	}
}

// TestPreprocessModes checks the wiring of MLSERVE_PREPROCESS through
// /predict: exact (the default) embeds the image decoded at full size,
// fast the image decoded smaller for the model's input; both report the
// original size.
func TestPreprocessModes(t *testing.T) {
	cache := engineCache(t)
	data := previews(t)[0]
	full, err := imaging.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	req := &Request{Image: data, Entries: []Entry{{Task: "clip", Type: "visual", ModelName: "ViT-B-32__openai"}}}
	embs := map[Preprocess][]float32{}
	for _, mode := range []Preprocess{"", PreprocessExact, PreprocessFast} {
		s := engineService(t, cache, ServiceOptions{Preprocess: mode})
		res, err := s.Predict(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if !res.HasImage || res.ImageWidth != full.W || res.ImageHeight != full.H {
			t.Fatalf("%q: image size %d×%d, want %d×%d", mode, res.ImageWidth, res.ImageHeight, full.W, full.H)
		}
		emb := res.Output("clip").(*CLIPResult).Embedding
		m, release, err := s.acquireModel(context.Background(), "clip", "visual", "ViT-B-32__openai")
		if err != nil {
			t.Fatal(err)
		}
		v := m.model.(*clip.Visual)
		img := full
		if mode == PreprocessFast {
			if img, _, _, err = NewDecoder(imaging.DecodeOptions{}, PreprocessFast)(data, v.Size()); err != nil {
				t.Fatal(err)
			}
			if img.W >= full.W || min(img.W, img.H) < v.Size() {
				t.Fatalf("fast decoded %d×%d from %d×%d for a %d-pixel model", img.W, img.H, full.W, full.H, v.Size())
			}
		}
		want, err := v.Embed(context.Background(), img)
		release()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(emb, want) {
			t.Fatalf("%q: /predict's embedding differs from the model's on the %d×%d decode", mode, img.W, img.H)
		}
		embs[mode] = emb
	}
	if !slices.Equal(embs[""], embs[PreprocessExact]) || slices.Equal(embs[PreprocessExact], embs[PreprocessFast]) {
		t.Fatal("the default is not exact, or fast changed nothing")
	}
	if c := cosine(embs[PreprocessExact], embs[PreprocessFast]); c < fastMinCosine {
		t.Errorf("cosine %.6f between exact and fast", c)
	}
	if _, err := NewService(ServiceOptions{Preprocess: "quick"}, nil, testenv.Runtime(t), nil); err == nil {
		t.Fatal("an unknown preprocess mode was accepted")
	}
	for in, want := range map[string]Preprocess{"": PreprocessExact, "EXACT": PreprocessExact, "fast": PreprocessFast} {
		if got, err := ParsePreprocess(in); err != nil || got != want {
			t.Errorf("ParsePreprocess(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParsePreprocess("pil"); err == nil {
		t.Error("ParsePreprocess accepted pil")
	}
}
