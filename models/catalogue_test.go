package models

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestCatalogueCounts(t *testing.T) {
	count := map[Source]int{}
	dims := map[int]int{}
	names := map[string]bool{}
	for _, m := range All() {
		if names[m.Name] {
			t.Errorf("duplicate name %q", m.Name)
		}
		names[m.Name] = true
		count[m.Source]++
		if m.Task == TaskCLIP {
			dims[m.Dim]++
		}
		if c, err := CleanName(m.Name); err != nil || c != m.Name {
			t.Errorf("catalogue name %q does not survive cleaning: %q, %v", m.Name, c, err)
		}
	}
	want := map[Source]int{SourceOpenCLIP: 54, SourceMCLIP: 4, SourceInsightFace: 4, SourcePaddle: 10}
	for src, n := range want {
		if count[src] != n {
			t.Errorf("%s: %d models, want %d", src, count[src], n)
		}
	}
	// Per-dimension counts of CLIP_MODEL_INFO (OpenCLIP + M-CLIP).
	wantDims := map[int]int{512: 12, 640: 4, 768: 18, 1024: 14, 1152: 8, 1536: 2}
	for d, n := range wantDims {
		if dims[d] != n {
			t.Errorf("dim %d: %d CLIP models, want %d", d, dims[d], n)
		}
	}
	if len(All()) != 72 {
		t.Errorf("All() has %d models, want 72", len(All()))
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		task Task
		typ  Type
		name string
		dim  int
		err  error
	}{
		{TaskCLIP, TypeVisual, "ViT-B-32__openai", 512, nil},
		{TaskCLIP, TypeTextual, "ViT-B-32::openai", 512, nil},
		{TaskCLIP, TypeTextual, "immich-app/ViT-SO400M-16-SigLIP2-384__webli", 1152, nil},
		{TaskCLIP, TypeVisual, "XLM-Roberta-Large-Vit-B-16Plus", 640, nil},
		{TaskCLIP, TypeTextual, "LABSE-Vit-L-14", 768, nil},
		{TaskCLIP, TypeVisual, "ViT-gopt-16-SigLIP2-384__webli", 1536, nil},
		{TaskFacialRecognition, TypeDetection, "buffalo_l", 512, nil},
		{TaskFacialRecognition, TypeRecognition, "antelopev2", 512, nil},
		{TaskOCR, TypeDetection, "EN__PP-OCRv5_mobile", 0, nil},
		{TaskOCR, TypeRecognition, "PP-OCRv5_server", 0, nil},
		{TaskFacialRecognition, TypeTextual, "buffalo_l", 0, ErrUnsupported},
		{TaskCLIP, TypeDetection, "ViT-B-32__openai", 0, ErrUnsupported},
		{TaskCLIP, TypeVisual, "buffalo_l", 0, ErrUnsupported},
		{TaskOCR, TypeRecognition, "ViT-B-32__openai", 0, ErrUnsupported},
		{Task("faces"), TypeDetection, "buffalo_l", 0, ErrUnsupported},
		{TaskCLIP, Type("image"), "ViT-B-32__openai", 0, ErrUnsupported},
		{TaskCLIP, TypeVisual, "ViT-B-32__nope", 0, ErrUnknownModel},
		{TaskCLIP, TypeVisual, "vit-b-32__openai", 0, ErrUnknownModel}, // case matters, as in Immich
		{TaskCLIP, TypeVisual, "../ViT-B-32__openai", 0, ErrInvalidName},
		{TaskCLIP, TypeVisual, "", 0, ErrInvalidName},
	}
	for _, tt := range tests {
		t.Run(string(tt.task)+"/"+string(tt.typ)+"/"+tt.name, func(t *testing.T) {
			info, err := Lookup(tt.task, tt.typ, tt.name)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Dim != tt.dim || info.Task != tt.task {
				t.Fatalf("got %+v", info)
			}
		})
	}
}

func TestCLIPDimAndParsers(t *testing.T) {
	if d, ok := CLIPDim("ViT-B-32::openai"); !ok || d != 512 {
		t.Errorf("CLIPDim(ViT-B-32::openai) = %d, %v", d, ok)
	}
	if d, ok := CLIPDim("nllb-clip-large-siglip__v1"); !ok || d != 1152 {
		t.Errorf("CLIPDim(nllb-clip-large-siglip__v1) = %d, %v", d, ok)
	}
	if _, ok := CLIPDim("buffalo_l"); ok {
		t.Error("CLIPDim(buffalo_l) ok")
	}
	for _, s := range []string{"clip", "facial-recognition", "ocr"} {
		if task, ok := ValidTask(s); !ok || string(task) != s {
			t.Errorf("ValidTask(%q)", s)
		}
	}
	for _, s := range []string{"visual", "textual", "detection", "recognition"} {
		if typ, ok := ValidType(s); !ok || string(typ) != s {
			t.Errorf("ValidType(%q)", s)
		}
	}
	for _, s := range []string{"", "CLIP", "facial_recognition", "image"} {
		if _, ok := ValidTask(s); ok {
			t.Errorf("ValidTask(%q) ok", s)
		}
		if _, ok := ValidType(s); ok {
			t.Errorf("ValidType(%q) ok", s)
		}
	}
}

func TestDirLayout(t *testing.T) {
	cache := filepath.FromSlash("/cache")
	tests := []struct {
		task Task
		typ  Type
		name string
		want string
	}{
		{TaskCLIP, TypeVisual, "ViT-B-32::openai", "/cache/clip/ViT-B-32__openai"},
		{TaskCLIP, TypeTextual, "ViT-B-32__openai", "/cache/clip/ViT-B-32__openai"},
		{TaskFacialRecognition, TypeDetection, "buffalo_l", "/cache/facial-recognition/buffalo_l/detection"},
		{TaskFacialRecognition, TypeRecognition, "buffalo_l", "/cache/facial-recognition/buffalo_l/recognition"},
		{TaskOCR, TypeDetection, "EN__PP-OCRv5_mobile", "/cache/ocr/PP-OCRv5_mobile/detection"},
		{TaskOCR, TypeRecognition, "EN__PP-OCRv5_mobile", "/cache/ocr/EN__PP-OCRv5_mobile/recognition"},
		{TaskOCR, TypeDetection, "PP-OCRv5_server", "/cache/ocr/PP-OCRv5_server/detection"},
		{TaskOCR, TypeDetection, "CH__PP-OCRv5_server", "/cache/ocr/PP-OCRv5_server/detection"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			info, err := Lookup(tt.task, tt.typ, tt.name)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Dir(cache, info, tt.typ)
			if err != nil || got != filepath.FromSlash(tt.want) {
				t.Fatalf("Dir = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestOCRSource(t *testing.T) {
	tests := []struct {
		name string
		typ  Type
		key  string
	}{
		{"PP-OCRv5_mobile", TypeDetection, "ch_PP-OCRv5_det_mobile"},
		{"PP-OCRv5_server", TypeDetection, "ch_PP-OCRv5_det_server"},
		{"EN__PP-OCRv5_mobile", TypeDetection, "ch_PP-OCRv5_det_mobile"},
		{"PP-OCRv5_mobile", TypeRecognition, "ch_PP-OCRv5_rec_mobile"},
		{"PP-OCRv5_server", TypeRecognition, "ch_PP-OCRv5_rec_server"},
		{"CH__PP-OCRv5_server", TypeRecognition, "ch_PP-OCRv5_rec_server"},
		{"EN__PP-OCRv5_mobile", TypeRecognition, "en_PP-OCRv5_rec_mobile"},
		{"EL__PP-OCRv5_mobile", TypeRecognition, "el_PP-OCRv5_rec_mobile"},
		{"ESLAV__PP-OCRv5_mobile", TypeRecognition, "eslav_PP-OCRv5_rec_mobile"},
		{"KOREAN__PP-OCRv5_mobile", TypeRecognition, "korean_PP-OCRv5_rec_mobile"},
		{"LATIN__PP-OCRv5_mobile", TypeRecognition, "latin_PP-OCRv5_rec_mobile"},
		{"TH__PP-OCRv5_mobile", TypeRecognition, "th_PP-OCRv5_rec_mobile"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+string(tt.typ), func(t *testing.T) {
			info, err := Lookup(TaskOCR, tt.typ, tt.name)
			if err != nil {
				t.Fatal(err)
			}
			src, err := OCRSource(info, tt.typ)
			if err != nil {
				t.Fatal(err)
			}
			if src.Key != tt.key || src.Path == "" || !reHex64.MatchString(src.SHA256) {
				t.Fatalf("got %+v, want key %s", src, tt.key)
			}
			if want := "onnx/PP-OCRv5/" + map[Type]string{TypeDetection: "det", TypeRecognition: "rec"}[tt.typ] + "/" + tt.key + ".onnx"; src.Path != want {
				t.Fatalf("path %q, want %q", src.Path, want)
			}
		})
	}
	clip, _ := Lookup(TaskCLIP, TypeVisual, "ViT-B-32__openai")
	if _, err := OCRSource(clip, TypeVisual); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("OCRSource(clip) err = %v", err)
	}
}
