package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/onnx"
)

// Model names the check asks for: Immich's defaults, so that the requests
// are exactly what an Immich server sends.
const (
	clipModel = "ViT-B-32__openai"
	faceModel = "buffalo_l"
)

// writeModels lays out an Immich model cache in dir with generated graphs:
// clip/ViT-B-32__openai (visual and textual towers, the tokenizer files
// from tokDir) and facial-recognition/buffalo_l (a SCRFD-signature
// detector that finds bright squares, and a recognizer). full selects the
// real architectures (ViT-B/32 image tower, IResNet-50 recogniser: the
// real models' cost, hundreds of MB, for the GPU machine); otherwise small
// graphs with the same signatures (for the dry run on CPU). Files already
// there are kept (a rerun on a warm machine skips the work).
func writeModels(dir, tokDir string, full bool) error {
	clip := filepath.Join(dir, "clip", clipModel)
	visual := modelgen.CLIPVisual{Size: 224, Dim: 512, Seed: 11}.Model
	recognizer := modelgen.ArcFace{Seed: 2}.Model
	if full {
		visual = modelgen.ViTB32Visual().Model
		recognizer = modelgen.ArcFaceR50{Seed: 2}.Model
	}
	graphs := map[string]func() onnx.Model{
		filepath.Join(clip, "visual", "model.onnx"):                                      visual,
		filepath.Join(clip, "textual", "model.onnx"):                                     modelgen.CLIPTextual{Context: 77, Vocab: modelgen.CLIPVocabSize, Dim: 512, Seed: 12}.Model,
		filepath.Join(dir, "facial-recognition", faceModel, "detection", "model.onnx"):   modelgen.SCRFD{}.Model,
		filepath.Join(dir, "facial-recognition", faceModel, "recognition", "model.onnx"): recognizer,
	}
	for path, build := range graphs {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if _, err := modelgen.WriteOnce(path, build); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	pre, err := json.Marshal(map[string]any{
		"size": []int{224, 224}, "mode": "RGB",
		"mean": []float64{0.48145466, 0.4578275, 0.40821073}, "std": []float64{0.26862954, 0.26130258, 0.27577711},
		"interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0,
	})
	if err != nil {
		return err
	}
	files := map[string][]byte{
		filepath.Join(clip, "visual", "preprocess_cfg.json"): pre,
		filepath.Join(clip, "config.json"): []byte(`{"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32}, ` +
			`"text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}`),
	}
	entries, err := os.ReadDir(tokDir)
	if err != nil {
		return fmt.Errorf("tokenizer files: %w", err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(tokDir, e.Name()))
		if err != nil {
			return err
		}
		files[filepath.Join(clip, "textual", e.Name())] = b
	}
	for path, b := range files {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeTokenizer writes the CLIP tokenizer files (built from OpenAI's
// merges file) into dir, for the bundle: the GPU machine has no test data.
func writeTokenizer(merges, dir string) error {
	files, err := modelgen.CLIPTokenizer{Merges: merges}.Files()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
