package clip

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/tokenizer"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
)

// textualFolder writes a model folder: config.json, textual/model.onnx and
// the tokenizer files.
func textualFolder(t *testing.T, cfg map[string]any, tok map[string][]byte, graph modelgen.CLIPTextual) string {
	t.Helper()
	dir := t.TempDir()
	textual := filepath.Join(dir, "textual")
	if err := os.MkdirAll(textual, 0o755); err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		data, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range tok {
		if err := os.WriteFile(filepath.Join(textual, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if graph.Context > 0 {
		if err := graph.Model().WriteFile(filepath.Join(textual, "model.onnx")); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func clipTokenizerFiles(t *testing.T, c modelgen.CLIPTokenizer) map[string][]byte {
	t.Helper()
	c.Merges = testenv.TestData(t, "clip/bpe_simple_vocab_16e6.txt")
	files, err := c.Files()
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// sentencePieceFiles is a small XLM-R-style tokenizer (Unigram, Metaspace,
// <s> $A </s>), with extra added tokens (nllb's language codes).
func sentencePieceFiles(t *testing.T, extra ...string) map[string][]byte {
	t.Helper()
	type piece = [2]any
	vocab := []piece{{"<s>", 0.0}, {"<pad>", 0.0}, {"</s>", 0.0}, {"<unk>", 0.0}}
	words := []string{"▁", "▁a", "▁photo", "▁of", "▁cat", "▁test", "▁search", "▁query", "▁dog", "s", "e", "t", "a", "c", "h", "o", "p", "q", "r", "u", "y", "▁un", "known"}
	for i, w := range words {
		vocab = append(vocab, piece{w, -1.0 - float64(i)/10})
	}
	added := []map[string]any{}
	for i, c := range []string{"<s>", "<pad>", "</s>", "<unk>"} {
		added = append(added, map[string]any{"id": i, "content": c, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
	}
	for _, c := range extra {
		added = append(added, map[string]any{"id": len(vocab), "content": c, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
		vocab = append(vocab, piece{c, 0.0})
	}
	special := func(id string) map[string]any {
		return map[string]any{"SpecialToken": map[string]any{"id": id, "type_id": 0}}
	}
	tj := map[string]any{
		"version": "1.0", "truncation": nil, "padding": nil,
		"added_tokens": added,
		"normalizer": map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Replace", "pattern": map[string]any{"Regex": " {2,}"}, "content": " "},
		}},
		"pre_tokenizer": map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
		"post_processor": map[string]any{
			"type":   "TemplateProcessing",
			"single": []any{special("<s>"), map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}, special("</s>")},
			"pair":   []any{},
			"special_tokens": map[string]any{
				"<s>":  map[string]any{"id": "<s>", "ids": []int{0}, "tokens": []string{"<s>"}},
				"</s>": map[string]any{"id": "</s>", "ids": []int{2}, "tokens": []string{"</s>"}},
			},
		},
		"decoder": nil,
		"model":   map[string]any{"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": false},
	}
	data, err := json.Marshal(tj)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"tokenizer.json":        data,
		"tokenizer_config.json": []byte(`{"pad_token": "<pad>", "tokenizer_class": "XLMRobertaTokenizer"}`),
	}
}

func openCLIPConfig(context int, clean string) map[string]any {
	text := map[string]any{"width": 512, "heads": 8, "layers": 12}
	if context > 0 {
		text["context_length"] = context
	}
	if clean != "" {
		text["tokenizer_kwargs"] = map[string]any{"clean": clean}
	}
	return map[string]any{"embed_dim": 512, "text_cfg": text, "vision_cfg": map[string]any{"image_size": 224}}
}

// runDirect runs the model folder's graph on the given ids, bypassing
// Textual, to check what Embed fed it.
func runDirect(t *testing.T, dir string, inputs ...inference.Tensor) []float32 {
	t.Helper()
	s, err := testenv.Runtime(t).NewSession(filepath.Join(dir, "textual", "model.onnx"), inference.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Run(context.Background(), inputs...)
	if err != nil {
		t.Fatal(err)
	}
	return out[0].Float32
}

func pad(ids []int32, n int, id int32) []int32 {
	out := slices.Clone(ids)
	for len(out) < n {
		out = append(out, id)
	}
	return out
}

func l2(v []float32) float64 {
	s := 0.0
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func TestTextualOpenCLIP(t *testing.T) {
	rt := testenv.Runtime(t)
	dir := textualFolder(t, openCLIPConfig(77, ""), clipTokenizerFiles(t, modelgen.CLIPTokenizer{}),
		modelgen.CLIPTextual{Context: 77, Vocab: modelgen.CLIPVocabSize, Dim: 512, Seed: 3})
	tx, err := LoadTextual(dir, rt, TextualOptions{Name: "ViT-B-32__openai"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if tx.Dim() != 512 || tx.ContextLength() != 77 || tx.Provider() == "" {
		t.Fatalf("dim %d context %d provider %q", tx.Dim(), tx.ContextLength(), tx.Provider())
	}

	// Immich collapses whitespace; the tokens are then the known ids.
	want := pad([]int32{49406, 320, 1125, 539, 320, 2368, 49407}, 77, 49407)
	ids, _, err := tx.tokenize("  a photo\tof   a\ncat ", "de")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, want) {
		t.Fatalf("ids %v, want %v", ids, want)
	}
	emb, err := tx.Embed(context.Background(), "  a photo\tof   a\ncat ", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(emb) != 512 || math.Abs(l2(emb)-1) > 1e-5 {
		t.Fatalf("embedding of %d values, norm %v", len(emb), l2(emb))
	}
	if direct := runDirect(t, dir, inference.I32(want, 1, 77)); !slices.Equal(emb, direct) {
		t.Error("Embed differs from the graph run on the expected ids")
	}
	other, err := tx.Embed(context.Background(), "a photo of a dog", "")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(emb, other) {
		t.Error("different texts gave the same embedding")
	}

	// Every id of a long, varied text is in range and the graph accepts it.
	long := strings.Repeat("Ünïcödé 🐱 text, with punctuation! 12345 ", 20)
	ids, _, err = tx.tokenize(long, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 77 || ids[0] != 49406 || ids[76] != 49407 {
		t.Fatalf("long text: %d ids, first %d last %d", len(ids), ids[0], ids[76])
	}
	for _, id := range ids {
		if id < 0 || id >= modelgen.CLIPVocabSize {
			t.Fatalf("id %d out of range", id)
		}
	}
	if _, err := tx.Embed(context.Background(), long, ""); err != nil {
		t.Fatal(err)
	}
}

func TestTextualMCLIP(t *testing.T) {
	rt := testenv.Runtime(t)
	files := sentencePieceFiles(t)
	tok, err := tokenizer.Parse(files["tokenizer.json"])
	if err != nil {
		t.Fatal(err)
	}
	// M-CLIP configs have no context_length: 77.
	dir := textualFolder(t, map[string]any{"embed_dim": 512, "text_cfg": map[string]any{}}, files,
		modelgen.CLIPTextual{Context: 77, Vocab: tok.VocabSize(), Dim: 512, MCLIP: true, Seed: 5})
	tx, err := LoadTextual(dir, rt, TextualOptions{Name: "XLM-Roberta-Large-Vit-B-32"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if !tx.mclip {
		t.Fatal("M-CLIP inputs not detected")
	}
	ids, mask, err := tx.tokenize("a photo  of a cat", "")
	if err != nil {
		t.Fatal(err)
	}
	// <s> ▁a ▁photo ▁of ▁a ▁cat </s>, then <pad> with mask 0.
	wantIDs := pad([]int32{0, 5, 6, 7, 5, 8, 2}, 77, 1)
	wantMask := pad([]int32{1, 1, 1, 1, 1, 1, 1}, 77, 0)
	if !slices.Equal(ids, wantIDs) || !slices.Equal(mask, wantMask) {
		t.Fatalf("ids %v mask %v", ids, mask)
	}
	emb, err := tx.Embed(context.Background(), "a photo  of a cat", "")
	if err != nil {
		t.Fatal(err)
	}
	direct := runDirect(t, dir, inference.I32(wantIDs, 1, 77), inference.I32(wantMask, 1, 77))
	if !slices.Equal(emb, direct) || math.Abs(l2(emb)-1) > 1e-5 {
		t.Errorf("embedding differs from the graph run on the expected ids (norm %v)", l2(emb))
	}
}

func TestTextualCanonicalize(t *testing.T) {
	cases := []struct{ in, canon, plain string }{
		{"Test   Search Query!", "test search query", "Test Search Query!"},
		{"  Hello,\tWORLD...\n", "hello world", "Hello, WORLD..."},
		{"don't stop", "dont stop", "don't stop"},
		{"ΟΔΟΣ ΣΟΦΙΑΣ", "οδος σοφιας", "ΟΔΟΣ ΣΟΦΙΑΣ"},
		{"İstanbul", "i\u0307stanbul", "İstanbul"},
		{"a\u00a0b\u2003c\x1fd", "a b c d", "a b c d"},
		{"", "", ""},
	}
	for _, c := range cases {
		if got := textualCleanText(c.in, true, 0); got != c.canon {
			t.Errorf("canonicalize(%q) = %q, want %q", c.in, got, c.canon)
		}
		if got := textualCleanText(c.in, false, 0); got != c.plain {
			t.Errorf("clean(%q) = %q, want %q", c.in, got, c.plain)
		}
	}

	// A SigLIP-style model: context 64, canonicalize from config.json.
	rt := testenv.Runtime(t)
	files := sentencePieceFiles(t)
	tok, err := tokenizer.Parse(files["tokenizer.json"])
	if err != nil {
		t.Fatal(err)
	}
	dir := textualFolder(t, openCLIPConfig(64, "canonicalize"), files,
		modelgen.CLIPTextual{Context: 64, Vocab: tok.VocabSize(), Dim: 768, Seed: 7})
	tx, err := LoadTextual(dir, rt, TextualOptions{Name: "ViT-B-16-SigLIP__webli"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if !tx.canonicalize || tx.ContextLength() != 64 || tx.Dim() != 768 {
		t.Fatalf("canonicalize %v context %d dim %d", tx.canonicalize, tx.ContextLength(), tx.Dim())
	}
	a, _, err := tx.tokenize("Test   Search Query!", "")
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := tx.tokenize("test search query", "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a, b) || len(a) != 64 {
		t.Errorf("canonicalized ids %v differ from %v", a, b)
	}
}

func TestTextualNLLBPrefix(t *testing.T) {
	if len(weblateToFLORES200) != 56 {
		t.Fatalf("%d FLORES entries, want 56", len(weblateToFLORES200))
	}
	nllb := &Textual{name: "nllb-clip-base-siglip__v1", nllb: true, canonicalize: true, logger: slog.New(slog.DiscardHandler)}
	plain := &Textual{name: "ViT-B-32__openai", logger: slog.New(slog.DiscardHandler)}
	cases := []struct {
		name     string
		tx       *Textual
		language string
		want     string
	}{
		{"de", nllb, "de", "deu_Latntest search query"},
		{"de-CH falls back to de", nllb, "de-CH", "deu_Latntest search query"},
		{"pt-BR", nllb, "pt-BR", "por_Latntest search query"},
		{"zh-TW", nllb, "zh-TW", "zho_Hanttest search query"},
		{"sr-Latn falls back to eng", nllb, "sr-Latn", "eng_Latntest search query"},
		{"unknown", nllb, "xx", "eng_Latntest search query"},
		{"no language", nllb, "", "test search query"},
		{"not nllb", plain, "de", "Test Search Query!"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.tx.prepare("Test   Search Query!", c.language); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}

	// End to end: the language code is an added token of nllb's tokenizer
	// and becomes the first id after <s>.
	rt := testenv.Runtime(t)
	files := sentencePieceFiles(t, "deu_Latn", "eng_Latn")
	tok, err := tokenizer.Parse(files["tokenizer.json"])
	if err != nil {
		t.Fatal(err)
	}
	deu, _ := tok.TokenToID("deu_Latn")
	eng, _ := tok.TokenToID("eng_Latn")
	dir := textualFolder(t, map[string]any{"embed_dim": 768, "text_cfg": map[string]any{"hf_tokenizer_name": "facebook/nllb-200-distilled-600M"}}, files,
		modelgen.CLIPTextual{Context: 77, Vocab: tok.VocabSize(), Dim: 768, Seed: 9})
	tx, err := LoadTextual(dir, rt, TextualOptions{Name: "nllb-clip-base-siglip__mrl"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	for lang, want := range map[string]int32{"de": deu, "de-AT": deu, "en": eng, "tlh": eng} {
		ids, _, err := tx.tokenize("test search query", lang)
		if err != nil {
			t.Fatal(err)
		}
		if ids[0] != 0 || ids[1] != want {
			t.Errorf("%s: ids %v, want <s> then %d", lang, ids[:6], want)
		}
	}
	de, err := tx.Embed(context.Background(), "test search query", "de")
	if err != nil {
		t.Fatal(err)
	}
	en, err := tx.Embed(context.Background(), "test search query", "en")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(de, en) {
		t.Error("the language prefix did not change the embedding")
	}
}

func TestTextualErrors(t *testing.T) {
	rt := testenv.Runtime(t)
	graph := modelgen.CLIPTextual{Context: 77, Vocab: modelgen.CLIPVocabSize, Dim: 512}
	good := clipTokenizerFiles(t, modelgen.CLIPTokenizer{})
	without := func(name string) map[string][]byte {
		m := map[string][]byte{}
		for k, v := range good {
			if k != name {
				m[k] = v
			}
		}
		return m
	}
	with := func(name string, data []byte) map[string][]byte {
		m := without(name)
		m[name] = data
		return m
	}
	cases := []struct {
		name     string
		cfg      map[string]any
		files    map[string][]byte
		notExist bool
		padErr   bool
	}{
		{"no tokenizer.json", openCLIPConfig(77, ""), without("tokenizer.json"), true, false},
		{"no tokenizer_config.json", openCLIPConfig(77, ""), without("tokenizer_config.json"), true, false},
		{"no config.json", nil, good, true, false},
		{"config without text_cfg", map[string]any{"embed_dim": 512}, good, false, false},
		{"no pad token", openCLIPConfig(77, ""), clipTokenizerFiles(t, modelgen.CLIPTokenizer{OmitPadToken: true}), false, false},
		{"pad token not in vocab", openCLIPConfig(77, ""), clipTokenizerFiles(t, modelgen.CLIPTokenizer{PadToken: "<pad>"}), false, true},
		{"malformed tokenizer.json", openCLIPConfig(77, ""), with("tokenizer.json", []byte(`{"model": {"type": "BPE", "vocab": `)), false, false},
		{"unknown model type", openCLIPConfig(77, ""), with("tokenizer.json", []byte(`{"model": {"type": "Magic"}}`)), false, false},
		{"context too small", openCLIPConfig(2, ""), good, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := textualFolder(t, c.cfg, c.files, graph)
			tx, err := LoadTextual(dir, rt, TextualOptions{Name: "ViT-B-32__openai"}, nil)
			if err == nil {
				tx.Close()
				t.Fatal("loaded")
			}
			if !errors.Is(err, ErrTokenizer) {
				t.Errorf("error %v does not wrap ErrTokenizer", err)
			}
			if c.notExist != errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error %v: wraps fs.ErrNotExist = %v", err, !c.notExist)
			}
			if c.padErr && !errors.Is(err, tokenizer.ErrPadToken) {
				t.Errorf("error %v does not wrap tokenizer.ErrPadToken", err)
			}
		})
	}

	// A graph whose inputs are neither OpenCLIP's nor M-CLIP's.
	dir := textualFolder(t, openCLIPConfig(77, ""), good, graph)
	if err := (modelgen.CLIPVisual{Size: 32, Dim: 8}).Model().WriteFile(filepath.Join(dir, "textual", "model.onnx")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTextual(dir, rt, TextualOptions{}, nil); !errors.Is(err, inference.ErrInput) {
		t.Errorf("visual graph as textual: %v", err)
	}
}
