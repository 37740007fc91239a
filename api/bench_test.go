package api_test

import (
	"bytes"
	"context"
	"image"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"testing"

	"gocv.io/x/gocv"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/clip"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/inference/imaging/imagingtest"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/pool"
)

// previewJPEG makes an Immich-like preview: a real photo scaled to 1440 px
// on its long side, JPEG quality 80.
func previewJPEG(b *testing.B) []byte {
	b.Helper()
	raw, err := os.ReadFile(testenv.TestData(b, "photos/sample1.jpg"))
	if err != nil {
		b.Fatal(err)
	}
	im, err := imaging.Decode(raw)
	if err != nil {
		b.Fatal(err)
	}
	m, err := im.Mat()
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	w, h := m.Cols(), m.Rows()
	if w >= h {
		w, h = 1440, h*1440/w
	} else {
		w, h = w*1440/h, 1440
	}
	small := gocv.NewMat()
	defer small.Close()
	gocv.Resize(m, &small, image.Pt(w, h), 0, 0, gocv.InterpolationArea)
	buf, err := imagingtest.JPEG(small.ToBytes(), w, h, 3, 80)
	if err != nil {
		b.Fatal(err)
	}
	return buf
}

// vitB32Cache lays out ViT-B-32__openai in a cache folder with the
// ViT-B/32-architecture graph (random weights, the real model's cost),
// generated once into the system temp folder.
func vitB32Cache(b *testing.B) (cache, model string) {
	b.Helper()
	model, err := modelgen.BenchFile("vit-b-32-visual.onnx", modelgen.ViTB32Visual().Model)
	if err != nil {
		b.Fatal(err)
	}
	cache = b.TempDir()
	vis := filepath.Join(cache, "clip", "ViT-B-32__openai", "visual")
	if err := os.MkdirAll(vis, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.Symlink(model, filepath.Join(vis, "model.onnx")); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vis, "preprocess_cfg.json"), []byte(`{"size":[224,224],"mode":"RGB","mean":[0.48145466,0.4578275,0.40821073],"std":[0.26862954,0.26130258,0.27577711],"interpolation":"bicubic","resize_mode":"shortest","fill_color":0}`), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "clip", "ViT-B-32__openai", "config.json"), []byte(`{"embed_dim":512}`), 0o644); err != nil {
		b.Fatal(err)
	}
	return cache, model
}

// BenchmarkPredictVisual compares, on the ViT-B/32 image tower, one
// /predict request of a 1440-px JPEG over HTTP (multipart parsing, decode,
// PIL-exact resize, normalisation, inference, JSON) with a bare
// session.Run of the same graph on the same threads. The ratio of the two
// is the service's overhead.
func BenchmarkPredictVisual(b *testing.B) {
	cache, model := vitB32Cache(b)
	img := previewJPEG(b)
	rt := testenv.Runtime(b)

	b.Run("session.Run", func(b *testing.B) {
		s, err := rt.NewSession(model, inference.SessionOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		x := inference.F32(make([]float32, 3*224*224), 1, 3, 224, 224)
		if _, err := s.Run(context.Background(), x); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := s.Run(context.Background(), x); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("preprocess", func(b *testing.B) {
		v, err := clip.LoadVisual(filepath.Join(cache, "clip", "ViT-B-32__openai"), rt, clip.VisualOptions{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer v.Close()
		dst := make([]float32, 3*224*224)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			im, err := imaging.Decode(img)
			if err != nil {
				b.Fatal(err)
			}
			v.Preprocess(im, dst)
		}
	})

	b.Run("predict-http", func(b *testing.B) {
		st := startBenchStack(b, cache)
		body, ctype := benchForm(b, `{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}`, img)
		post := func() {
			resp, err := http.Post(st+"/predict", ctype, bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
		post()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			post()
		}
	})
}

// startBenchStack serves from a prepared cache: the hub is never asked.
func startBenchStack(b *testing.B, cache string) string {
	b.Helper()
	return startStackWith(b, stackOptions{cache: cache, service: pool.ServiceOptions{Workers: pool.WorkersOptions{Workers: 1}}}).url
}

func benchForm(b *testing.B, entries string, img []byte) ([]byte, string) {
	b.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	_ = w.WriteField("entries", entries)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="image"; filename="blob"`)
	h.Set("Content-Type", "application/octet-stream")
	p, _ := w.CreatePart(h)
	_, _ = p.Write(img)
	w.Close()
	return buf.Bytes(), w.FormDataContentType()
}
