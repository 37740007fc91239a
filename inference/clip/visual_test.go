package clip

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/onnx"
)

// visualGolden is one case of testdata/golden.json or photos.json, written
// by scripts/golden_clip.py with PIL and numpy.
type visualGolden struct {
	Input, File  string // input file (testdata-relative, or .deps/testdata-relative)
	Crop, Tensor string // optional: the uint8 crop as PNG, the float32 tensor
	W, H, Size   int
	Mean, Std    []float64
	Resized      [2]int
	CropSha256   string `json:"crop_sha256"`
	TensorSha256 string `json:"tensor_sha256"`
}

func visualReadGoldens(t testing.TB, name string) []visualGolden {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var g struct{ Cases []visualGolden }
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	return g.Cases
}

func visualCfgJSON(size any, mean, std []float64) []byte {
	b, _ := json.Marshal(map[string]any{
		"size": size, "mode": "RGB", "mean": mean, "std": std,
		"interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0,
	})
	return b
}

func visualTestPreprocess(t testing.TB, size int, mean, std []float64) *visualPreprocess {
	t.Helper()
	p, err := visualParsePreprocess(visualCfgJSON([]int{size, size}, mean, std), "test")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func visualDecodeFile(t testing.TB, path string) *imaging.Image {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	im, err := imaging.Decode(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return im
}

func visualSha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func visualF32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func visualReadF32(t testing.TB, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// visualCheckCase runs Immich's steps on one golden case and returns the
// largest differences found: in 8-bit levels on the crop, and on the
// normalised tensor.
func visualCheckCase(t *testing.T, c visualGolden, im *imaging.Image) (cropErr int, tensorErr float64) {
	if im.W != c.W || im.H != c.H {
		t.Fatalf("decoded %d×%d, PIL %d×%d", im.W, im.H, c.W, c.H)
	}
	rw, rh := VisualResizeDims(im.W, im.H, c.Size)
	if [2]int{rw, rh} != c.Resized {
		t.Fatalf("resize_pil geometry %d×%d, Immich %v", rw, rh, c.Resized)
	}
	p := visualTestPreprocess(t, c.Size, c.Mean, c.Std)
	var s visualScratch
	tensor := p.preprocess(&s, im, nil)
	crop := s.crop
	if crop.W != c.Size || crop.H != c.Size {
		t.Fatalf("crop %d×%d", crop.W, crop.H)
	}
	if visualSha(crop.Pix) != c.CropSha256 {
		cropErr = 256 // unknown unless the golden crop is committed
		if c.Crop != "" {
			want := visualDecodeFile(t, filepath.Join("testdata", c.Crop))
			cropErr = 0
			for i := range want.Pix {
				cropErr = max(cropErr, int(math.Abs(float64(int(want.Pix[i])-int(crop.Pix[i])))))
			}
		}
		t.Errorf("uint8 crop differs from PIL's: max %d levels", cropErr)
	}
	if visualSha(visualF32Bytes(tensor)) != c.TensorSha256 {
		tensorErr = math.Inf(1)
		if c.Tensor != "" {
			want := visualReadF32(t, filepath.Join("testdata", c.Tensor))
			tensorErr = 0
			for i := range want {
				tensorErr = max(tensorErr, math.Abs(float64(want[i]-tensor[i])))
			}
		}
		t.Errorf("tensor differs from numpy's: max |Δ| %g", tensorErr)
	}
	return cropErr, tensorErr
}

// TestPreprocessMatchesPIL: decode, resize_pil, crop_pil and normalisation
// give exactly the bytes and floats of Immich's PIL + numpy code, for every
// committed case (sizes, aspect ratios, alpha, grey, palette, CMYK, 16-bit).
func TestPreprocessMatchesPIL(t *testing.T) {
	cases := visualReadGoldens(t, "golden.json")
	if len(cases) < 15 {
		t.Fatalf("only %d cases", len(cases))
	}
	worstCrop, worstTensor := 0, 0.0
	for _, c := range cases {
		t.Run(filepath.Base(c.Input), func(t *testing.T) {
			cropErr, tensorErr := visualCheckCase(t, c, visualDecodeFile(t, filepath.Join("testdata", c.Input)))
			worstCrop, worstTensor = max(worstCrop, cropErr), max(worstTensor, tensorErr)
		})
	}
	t.Logf("%d cases: max crop error %d/255, max tensor error %g", len(cases), worstCrop, worstTensor)
}

// TestPreprocessPhotos: the same on the real photos (not committed), at
// 224 with OpenAI's constants and 384 with SigLIP's.
func TestPreprocessPhotos(t *testing.T) {
	decoded := map[string]*imaging.Image{}
	for _, c := range visualReadGoldens(t, "photos.json") {
		t.Run(fmt.Sprintf("%s/%d", filepath.Base(c.File), c.Size), func(t *testing.T) {
			if decoded[c.File] == nil {
				decoded[c.File] = visualDecodeFile(t, testenv.TestData(t, c.File))
			}
			visualCheckCase(t, c, decoded[c.File])
		})
	}
}

func TestVisualResizeGeometry(t *testing.T) {
	for _, tc := range []struct {
		w, h, size, rw, rh int
	}{
		{1440, 1080, 224, 298, 224},
		{1080, 1440, 224, 224, 298},
		{224, 224, 224, 224, 224},
		{1, 1, 224, 224, 224},
		{1, 300, 32, 32, 9600},
		{49, 54, 49, 49, 53}, // 54/49*49 is 53.99999999999999 in float64
	} {
		rw, rh := VisualResizeDims(tc.w, tc.h, tc.size)
		if rw != tc.rw || rh != tc.rh {
			t.Errorf("%d×%d → %d: got %d×%d, want %d×%d", tc.w, tc.h, tc.size, rw, rh, tc.rw, tc.rh)
		}
		r := imaging.CenterRect(rw, rh, tc.size)
		if r.Dx() != tc.size || r.Dy() != tc.size || r.Min.X < 0 || r.Min.Y < 0 || r.Max.X > rw || r.Max.Y > rh {
			t.Errorf("%d×%d → %d: crop %v outside %d×%d", tc.w, tc.h, tc.size, r, rw, rh)
		}
	}
}

// visualModelDir writes a model folder as Immich's cache holds it.
func visualModelDir(t testing.TB, m onnx.Model, cfg []byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "clip", "ViT-B-32__openai")
	if err := os.MkdirAll(filepath.Join(dir, "visual"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile(filepath.Join(dir, "visual", "model.onnx")); err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		if err := os.WriteFile(filepath.Join(dir, "visual", "preprocess_cfg.json"), cfg, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var (
	visualOpenAIMean = []float64{0.48145466, 0.4578275, 0.40821073}
	visualOpenAIStd  = []float64{0.26862954, 0.26130258, 0.27577711}
)

// TestVisualEmbedEqualsGoldenTensor is the "done when" for the
// visual side: the embedding of an image through LoadVisual and Embed is
// the one the same graph gives for the tensor PIL and numpy computed.
func TestVisualEmbedEqualsGoldenTensor(t *testing.T) {
	rt := testenv.Runtime(t)
	dir := visualModelDir(t, modelgen.CLIPVisual{Size: 28, Dim: 64, Seed: 11}.Model(),
		visualCfgJSON([]int{28, 28}, visualOpenAIMean, visualOpenAIStd))
	v, err := LoadVisual(dir, rt, VisualOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.Size() != 28 || v.Dim() != 64 || v.Provider() != inference.CPU {
		t.Fatalf("Size %d Dim %d Provider %q", v.Size(), v.Dim(), v.Provider())
	}
	direct, err := rt.NewSession(filepath.Join(dir, "visual", "model.onnx"), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	ctx := context.Background()
	n := 0
	var imgs []*imaging.Image
	var wants [][]float32
	for _, c := range visualReadGoldens(t, "golden.json") {
		if c.Tensor == "" {
			continue
		}
		n++
		t.Run(filepath.Base(c.Input), func(t *testing.T) {
			golden := visualReadF32(t, filepath.Join("testdata", c.Tensor))
			out, err := direct.Run(ctx, inference.F32(golden, 1, 3, 28, 28))
			if err != nil {
				t.Fatal(err)
			}
			want := out[0].Float32
			img := visualDecodeFile(t, filepath.Join("testdata", c.Input))
			got, err := v.Embed(ctx, img)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 64 || visualSha(visualF32Bytes(got)) != visualSha(visualF32Bytes(want)) {
				t.Fatalf("embedding differs from the golden tensor's:\n got %v\nwant %v", got[:4], want[:4])
			}
			if norm := visualL2(got); math.Abs(norm-1) > 1e-5 {
				t.Errorf("norm %v", norm)
			}
			imgs, wants = append(imgs, img), append(wants, want)
		})
	}
	if n < 5 {
		t.Fatalf("only %d cases with a golden tensor", n)
	}
	// A batch (dynamic batch dimension: one run) gives the same vectors.
	got, err := v.EmbedBatch(ctx, imgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(imgs) {
		t.Fatalf("%d embeddings for %d images", len(got), len(imgs))
	}
	for i := range got {
		for j := range got[i] {
			if math.Abs(float64(got[i][j]-wants[i][j])) > 1e-6 {
				t.Fatalf("batch embedding %d differs at %d: %v vs %v", i, j, got[i][j], wants[i][j])
			}
		}
	}
}

func visualL2(v []float32) float64 {
	s := 0.0
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

// visualFixedBatchModel is a graph with a fixed batch of 1 ([1,3,S,S] →
// per-channel means [1,3]): EmbedBatch must then run images one by one.
func visualFixedBatchModel(size int) onnx.Model {
	g := onnx.NewGraph("fixed")
	x := g.Input("image", onnx.Float, onnx.D(1, 3, size, size))
	m := g.Op("ReduceMean", []string{x}, onnx.Attrs{"axes": []int64{2, 3}, "keepdims": 0})
	g.Output("embedding", m, onnx.Float, onnx.D(1, 3))
	return onnx.Model{Graph: g}
}

func TestVisualFixedBatchAndSmallBatches(t *testing.T) {
	rt := testenv.Runtime(t)
	ctx := context.Background()
	var imgs []*imaging.Image
	for _, name := range []string{"photo_28.jpg", "tall.png", "rgba.png", "cmyk.jpg", "webp.webp"} {
		imgs = append(imgs, visualDecodeFile(t, filepath.Join("testdata", "in", name)))
	}
	cfg := visualCfgJSON(28, visualOpenAIMean, visualOpenAIStd) // size as a plain integer
	for _, tc := range []struct {
		name string
		m    onnx.Model
		opts VisualOptions
	}{
		{"fixed batch", visualFixedBatchModel(28), VisualOptions{}},
		{"dynamic, batches of 2, parallel resize", modelgen.CLIPVisual{Size: 28, Dim: 16, Seed: 5}.Model(), VisualOptions{MaxBatch: 2, ResizeWorkers: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := LoadVisual(visualModelDir(t, tc.m, cfg), rt, tc.opts, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			batch, err := v.EmbedBatch(ctx, imgs)
			if err != nil {
				t.Fatal(err)
			}
			for i, img := range imgs {
				one, err := v.Embed(ctx, img)
				if err != nil {
					t.Fatal(err)
				}
				for j := range one {
					if math.Abs(float64(one[j]-batch[i][j])) > 1e-6 {
						t.Fatalf("image %d: batch %v, alone %v", i, batch[i], one)
					}
				}
			}
			if empty, err := v.EmbedBatch(ctx, nil); err != nil || len(empty) != 0 {
				t.Fatalf("empty batch: %v, %v", empty, err)
			}
		})
	}
}

func TestVisualErrors(t *testing.T) {
	rt := testenv.Runtime(t)
	model := modelgen.CLIPVisual{Size: 28, Dim: 8, Seed: 1}.Model()
	good := visualCfgJSON([]int{28, 28}, visualOpenAIMean, visualOpenAIStd)
	for _, tc := range []struct {
		name string
		cfg  []byte
		m    onnx.Model
		want error
	}{
		{"no preprocess_cfg.json", nil, model, fs.ErrNotExist},
		{"not json", []byte("{"), model, ErrPreprocessConfig},
		{"no size", []byte(`{"mean":[0.5],"std":[0.5]}`), model, ErrPreprocessConfig},
		{"size 0", visualCfgJSON(0, visualOpenAIMean, visualOpenAIStd), model, ErrPreprocessConfig},
		{"fractional size", visualCfgJSON(28.5, visualOpenAIMean, visualOpenAIStd), model, ErrPreprocessConfig},
		{"empty size list", visualCfgJSON([]int{}, visualOpenAIMean, visualOpenAIStd), model, ErrPreprocessConfig},
		{"two means", visualCfgJSON(28, []float64{0.5, 0.5}, visualOpenAIStd), model, ErrPreprocessConfig},
		{"zero std", visualCfgJSON(28, visualOpenAIMean, []float64{0.2, 0, 0.2}), model, ErrPreprocessConfig},
		{"size differs from the graph", visualCfgJSON(32, visualOpenAIMean, visualOpenAIStd), model, inference.ErrInput},
		{"text model", good, modelgen.CLIPTextual{Context: 77, Vocab: 100, Dim: 8}.Model(), inference.ErrInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := LoadVisual(visualModelDir(t, tc.m, tc.cfg), rt, VisualOptions{}, nil)
			if err == nil {
				v.Close()
				t.Fatal("loaded")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %q is not %v", err, tc.want)
			}
		})
	}

	v, err := LoadVisual(visualModelDir(t, model, good), rt, VisualOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ctx := context.Background()
	for _, img := range []*imaging.Image{nil, {}, {W: 3, H: 0}} {
		if _, err := v.Embed(ctx, img); !errors.Is(err, imaging.ErrEmpty) {
			t.Errorf("empty image: %v", err)
		}
	}
	if _, err := v.Embed(ctx, &imaging.Image{W: 2, H: 2, Pix: make([]byte, 3)}); !errors.Is(err, inference.ErrInput) {
		t.Errorf("short pixel buffer: %v", err)
	}
	if _, err := v.EmbedBatch(ctx, []*imaging.Image{imaging.New(4, 4), nil}); !errors.Is(err, imaging.ErrEmpty) {
		t.Errorf("batch with an empty image: %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := v.Embed(canceled, imaging.New(30, 30)); !errors.Is(err, inference.ErrCanceled) {
		t.Errorf("canceled: %v", err)
	}
	if _, err := v.EmbedBatch(canceled, []*imaging.Image{imaging.New(30, 30)}); !errors.Is(err, inference.ErrCanceled) {
		t.Errorf("canceled batch: %v", err)
	}
	// Preprocess never fails: an empty image is black.
	if got := v.Preprocess(nil, nil); len(got) != 3*28*28 {
		t.Errorf("Preprocess(nil): %d values", len(got))
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Embed(ctx, imaging.New(30, 30)); !errors.Is(err, inference.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// TestVisualPreprocessAllocs: a warm Preprocess into a caller's buffer
// allocates nothing.
func TestVisualPreprocessAllocs(t *testing.T) {
	// The scratch is passed directly: under the race detector sync.Pool
	// drops some of what it is given, on purpose.
	p := visualTestPreprocess(t, 224, visualOpenAIMean, visualOpenAIStd)
	var s visualScratch
	img := visualDecodeFile(t, filepath.Join("testdata", "in", "photo.jpg"))
	dst := p.preprocess(&s, img, nil)
	if n := testing.AllocsPerRun(10, func() { dst = p.preprocess(&s, img, dst) }); n > 0 {
		t.Errorf("Preprocess: %v allocations", n)
	}
}

func FuzzVisualPreprocessConfig(f *testing.F) {
	f.Add(visualCfgJSON([]int{224, 224}, visualOpenAIMean, visualOpenAIStd))
	f.Add(visualCfgJSON(384, []float64{0.5}, []float64{0.5}))
	f.Add([]byte(`{"size": [1e300], "mean": [1,2,3], "std": [1e-45, 1, 1]}`))
	f.Add([]byte(`{"size": "224", "mean": null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := visualParsePreprocess(data, "fuzz")
		if err != nil {
			if !errors.Is(err, ErrPreprocessConfig) {
				t.Fatalf("error outside ErrPreprocessConfig: %v", err)
			}
			return
		}
		if p.size < 1 || p.size > visualMaxSize {
			t.Fatalf("size %d accepted", p.size)
		}
	})
}

// BenchmarkVisualPreprocess: Immich's preprocessing of a 1440×1080 preview
// (the server's default preview size) for a 224 model, with and without
// the JPEG decode.
func BenchmarkVisualPreprocess(b *testing.B) {
	data, err := os.ReadFile(testenv.TestData(b, "photos/sample1.jpg"))
	if err != nil {
		b.Fatal(err)
	}
	full, err := imaging.Decode(data)
	if err != nil {
		b.Fatal(err)
	}
	img := imaging.Resize(full, 1440, 960, imaging.Bicubic)
	p := visualTestPreprocess(b, 224, visualOpenAIMean, visualOpenAIStd)
	v := &Visual{pre: p}
	v.scratch.New = func() any { return &visualScratch{} }
	var dst []float32
	b.Run("preprocess", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			dst = v.Preprocess(img, dst)
		}
	})
}
