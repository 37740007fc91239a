package models

import (
	"fmt"
	"slices"
	"strings"
)

// Task is Immich's ModelTask: the top-level key of /predict entries and the
// first folder under the cache root.
type Task string

// The tasks Immich knows.
const (
	TaskCLIP              Task = "clip"
	TaskFacialRecognition Task = "facial-recognition"
	TaskOCR               Task = "ocr"
)

// Type is Immich's ModelType: the second-level key of /predict entries and
// the folder of one model file inside a model's folder.
type Type string

// The types Immich knows.
const (
	TypeVisual      Type = "visual"
	TypeTextual     Type = "textual"
	TypeDetection   Type = "detection"
	TypeRecognition Type = "recognition"
)

// Source is where a model comes from and which code runs it (Immich's
// ModelSource).
type Source string

// The sources Immich knows.
const (
	SourceOpenCLIP    Source = "openclip"
	SourceMCLIP       Source = "mclip"
	SourceInsightFace Source = "insightface"
	SourcePaddle      Source = "paddle"
)

// ValidTask parses a task as it appears in /predict entries.
func ValidTask(s string) (Task, bool) {
	switch t := Task(s); t {
	case TaskCLIP, TaskFacialRecognition, TaskOCR:
		return t, true
	}
	return "", false
}

// ValidType parses a type as it appears in /predict entries.
func ValidType(s string) (Type, bool) {
	switch t := Type(s); t {
	case TypeVisual, TypeTextual, TypeDetection, TypeRecognition:
		return t, true
	}
	return "", false
}

// Info describes one model name Immich accepts.
type Info struct {
	// Name is the cleaned name, e.g. "ViT-B-32__openai".
	Name   string
	Task   Task
	Source Source
	// Types are the types Immich accepts for the name under Task.
	Types []Type
	// Dim is the embedding size (CLIP and faces); 0 for OCR.
	Dim int
	// Default marks Immich's default model of its task.
	Default bool
	// Language is the RapidOCR recognition language (LangRec value, "ch",
	// "en", ...), from the name's "LANG__" prefix; "ch" without one. OCR only.
	Language string
	// Variant is "mobile" or "server" (OCR only; detection and the Chinese
	// recognizer come in both sizes).
	Variant string
}

// Supports reports whether Immich accepts typ for this model.
func (i Info) Supports(typ Type) bool { return slices.Contains(i.Types, typ) }

// Folder returns the folder name under <cache>/<task> that holds the files
// of typ: the name itself, except for OCR detection, which Immich shares
// between languages and keys by the name without its "LANG__" prefix.
func (i Info) Folder(typ Type) string {
	if i.Task == TaskOCR && typ == TypeDetection {
		if k := strings.LastIndex(i.Name, "__"); k >= 0 {
			return i.Name[k+2:]
		}
	}
	return i.Name
}

// clipDims is server/src/constants.ts CLIP_MODEL_INFO (which equals the
// ML service's _OPENCLIP_MODELS ∪ _MCLIP_MODELS), grouped by dimension.
var clipDims = map[int][]string{
	512: {
		"RN101__openai", "RN101__yfcc15m", "ViT-B-16__laion400m_e31", "ViT-B-16__laion400m_e32",
		"ViT-B-16__openai", "ViT-B-32__laion2b-s34b-b79k", "ViT-B-32__laion2b_e16",
		"ViT-B-32__laion400m_e31", "ViT-B-32__laion400m_e32", "ViT-B-32__openai",
		"XLM-Roberta-Base-ViT-B-32__laion5b_s13b_b90k",
	},
	640: {"RN50x4__openai", "ViT-B-16-plus-240__laion400m_e31", "ViT-B-16-plus-240__laion400m_e32"},
	768: {
		"RN50x16__openai", "ViT-B-16-SigLIP-256__webli", "ViT-B-16-SigLIP-384__webli",
		"ViT-B-16-SigLIP-512__webli", "ViT-B-16-SigLIP-i18n-256__webli", "ViT-B-16-SigLIP__webli",
		"ViT-L-14-336__openai", "ViT-L-14-quickgelu__dfn2b", "ViT-L-14__laion2b-s32b-b82k",
		"ViT-L-14__laion400m_e31", "ViT-L-14__laion400m_e32", "ViT-L-14__openai",
		"nllb-clip-base-siglip__mrl", "nllb-clip-base-siglip__v1", "ViT-B-16-SigLIP2__webli",
		"ViT-B-32-SigLIP2-256__webli",
	},
	1024: {
		"RN50__cc12m", "RN50__openai", "RN50__yfcc15m", "RN50x64__openai",
		"ViT-H-14-378-quickgelu__dfn5b", "ViT-H-14-quickgelu__dfn5b", "ViT-H-14__laion2b-s32b-b79k",
		"ViT-L-16-SigLIP-256__webli", "ViT-L-16-SigLIP-384__webli", "ViT-g-14__laion2b-s12b-b42k",
		"XLM-Roberta-Large-ViT-H-14__frozen_laion5b_s13b_b90k", "ViT-L-16-SigLIP2-256__webli",
		"ViT-L-16-SigLIP2-384__webli", "ViT-L-16-SigLIP2-512__webli",
	},
	1152: {
		"ViT-SO400M-14-SigLIP-384__webli", "nllb-clip-large-siglip__mrl", "nllb-clip-large-siglip__v1",
		"ViT-SO400M-14-SigLIP2__webli", "ViT-SO400M-14-SigLIP2-378__webli",
		"ViT-SO400M-16-SigLIP2-256__webli", "ViT-SO400M-16-SigLIP2-384__webli",
		"ViT-SO400M-16-SigLIP2-512__webli",
	},
	1536: {"ViT-gopt-16-SigLIP2-256__webli", "ViT-gopt-16-SigLIP2-384__webli"},
}

// mclipDims: M-CLIP models (textual encoder M-CLIP, visual OpenCLIP).
var mclipDims = map[string]int{
	"XLM-Roberta-Large-Vit-B-32":     512,
	"XLM-Roberta-Large-Vit-B-16Plus": 640,
	"LABSE-Vit-L-14":                 768,
	"XLM-Roberta-Large-Vit-L-14":     768,
}

// faceDim: every InsightFace pack gives 512-d ArcFace embeddings.
const faceDim = 512

var facePacks = []string{"antelopev2", "buffalo_s", "buffalo_m", "buffalo_l"}

// ocrNames: Immich's _PADDLE_MODELS. The prefix before "__" is the RapidOCR
// LangRec member name; no prefix means CH.
var ocrNames = []string{
	"PP-OCRv5_server", "PP-OCRv5_mobile", "CH__PP-OCRv5_server", "CH__PP-OCRv5_mobile",
	"EL__PP-OCRv5_mobile", "EN__PP-OCRv5_mobile", "ESLAV__PP-OCRv5_mobile",
	"KOREAN__PP-OCRv5_mobile", "LATIN__PP-OCRv5_mobile", "TH__PP-OCRv5_mobile",
}

// catalogue is built once; it is read-only afterwards, so sharing it between
// goroutines is safe. It is not a mutable global: nothing writes to it.
var catalogue = buildCatalogue()

type catalogueIndex struct {
	all    []Info
	byName map[string]int
}

func buildCatalogue() catalogueIndex {
	var all []Info
	for dim, names := range clipDims {
		for _, n := range names {
			all = append(all, Info{Name: n, Task: TaskCLIP, Source: SourceOpenCLIP,
				Types: []Type{TypeVisual, TypeTextual}, Dim: dim, Default: n == "ViT-B-32__openai"})
		}
	}
	for n, dim := range mclipDims {
		all = append(all, Info{Name: n, Task: TaskCLIP, Source: SourceMCLIP,
			Types: []Type{TypeVisual, TypeTextual}, Dim: dim})
	}
	for _, n := range facePacks {
		all = append(all, Info{Name: n, Task: TaskFacialRecognition, Source: SourceInsightFace,
			Types: []Type{TypeDetection, TypeRecognition}, Dim: faceDim, Default: n == "buffalo_l"})
	}
	for _, n := range ocrNames {
		lang := "ch"
		if k := strings.Index(n, "__"); k >= 0 {
			lang = strings.ToLower(n[:k])
		}
		variant := "server"
		if strings.Contains(n, "mobile") { // Immich: "mobile" in name → MOBILE, else SERVER
			variant = "mobile"
		}
		all = append(all, Info{Name: n, Task: TaskOCR, Source: SourcePaddle,
			Types: []Type{TypeDetection, TypeRecognition}, Language: lang, Variant: variant,
			Default: n == "PP-OCRv5_mobile"})
	}
	slices.SortFunc(all, func(a, b Info) int {
		if c := strings.Compare(string(a.Task), string(b.Task)); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	idx := catalogueIndex{all: all, byName: make(map[string]int, len(all))}
	for i, m := range all {
		idx.byName[m.Name] = i
	}
	return idx
}

// All returns every model Immich accepts, sorted by task then name. The
// slice is a copy; its Types slices must not be modified.
func All() []Info { return slices.Clone(catalogue.all) }

// Find returns the catalogue entry of a raw or cleaned name, whatever its
// task. Errors wrap ErrInvalidName or ErrUnknownModel.
func Find(name string) (Info, error) {
	clean, err := CleanName(name)
	if err != nil {
		return Info{}, err
	}
	i, ok := catalogue.byName[clean]
	if !ok {
		return Info{}, fmt.Errorf("%w: %q", ErrUnknownModel, clean)
	}
	return catalogue.all[i], nil
}

// Lookup resolves a /predict entry the way Immich's get_model_class does:
// the name is cleaned and validated (ErrInvalidName), must be in the
// catalogue (ErrUnknownModel), and must belong to task with typ among its
// types (ErrUnsupported, e.g. textual on a face pack or a CLIP name under
// "ocr"). Immich answers both of the last two with 500; we keep them apart
// so the API can answer 4xx.
func Lookup(task Task, typ Type, name string) (Info, error) {
	info, err := Find(name)
	if err != nil {
		return Info{}, err
	}
	if _, ok := ValidTask(string(task)); !ok {
		return Info{}, fmt.Errorf("%w: unknown task %q", ErrUnsupported, task)
	}
	if _, ok := ValidType(string(typ)); !ok {
		return Info{}, fmt.Errorf("%w: unknown type %q", ErrUnsupported, typ)
	}
	if info.Task != task || !info.Supports(typ) {
		return Info{}, fmt.Errorf("%w: %s/%s with %s model %q", ErrUnsupported, task, typ, info.Task, info.Name)
	}
	return info, nil
}

// CLIPDim returns the embedding size of a CLIP model (raw or cleaned name),
// as the Immich server's CLIP_MODEL_INFO gives it.
func CLIPDim(name string) (int, bool) {
	info, err := Find(name)
	if err != nil || info.Task != TaskCLIP {
		return 0, false
	}
	return info.Dim, true
}
