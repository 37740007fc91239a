package modelgen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// CLIPTokenizer builds the tokenizer files of OpenAI CLIP as Hugging Face's
// CLIPTokenizerFast for openai/clip-vit-base-patch32 has them, and as
// Immich's exporter saved them next to every OpenAI/LAION textual model
// (AutoTokenizer.save_pretrained): tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, vocab.json and merges.txt.
//
// The vocabulary is the one OpenAI's simple_tokenizer.py derives from its
// merges file: the 256 byte-level characters, the same with "</w>", one
// token per merge for the first 49152-256-2 = 48894 merges, then
// <|startoftext|> and <|endoftext|>: 49408 ids.
type CLIPTokenizer struct {
	// Merges is the path of OpenAI's bpe_simple_vocab_16e6.txt (the
	// "#version" line first, then one merge per line).
	Merges string
	// PadToken goes into tokenizer_config.json; empty means
	// "<|endoftext|>", as in the Hugging Face repository.
	PadToken string
	// OmitPadToken leaves pad_token out of tokenizer_config.json, for
	// tests of the "missing pad token" error.
	OmitPadToken bool
}

// CLIPVocabSize is the number of ids of the OpenAI CLIP vocabulary.
const CLIPVocabSize = 49408

// clipMerges is how many merges OpenAI's tokenizer uses.
const clipMerges = 49152 - 256 - 2

// Files returns the five files by name.
func (c CLIPTokenizer) Files() (map[string][]byte, error) {
	merges, err := readCLIPMerges(c.Merges)
	if err != nil {
		return nil, err
	}
	vocab := clipVocab(merges)
	pad := c.PadToken
	if pad == "" {
		pad = "<|endoftext|>"
	}

	var tj bytes.Buffer
	if err := writeCLIPTokenizerJSON(&tj, vocab, merges); err != nil {
		return nil, err
	}

	var vj bytes.Buffer
	vj.WriteByte('{')
	for id, tok := range vocab {
		if id > 0 {
			vj.WriteByte(',')
		}
		vj.Write(jsonString(tok))
		fmt.Fprintf(&vj, ":%d", id)
	}
	vj.WriteString("}")

	var mt bytes.Buffer
	mt.WriteString("#version: 0.2\n")
	for _, m := range merges {
		mt.WriteString(m[0] + " " + m[1] + "\n")
	}

	addedToken := func(content string, normalized bool) map[string]any {
		return map[string]any{
			"content": content, "lstrip": false, "normalized": normalized,
			"rstrip": false, "single_word": false, "special": true,
		}
	}
	cfg := map[string]any{
		"add_prefix_space": false,
		"added_tokens_decoder": map[string]any{
			"49406": addedToken("<|startoftext|>", true),
			"49407": addedToken("<|endoftext|>", false),
		},
		"bos_token":                    "<|startoftext|>",
		"clean_up_tokenization_spaces": true,
		"do_lower_case":                true,
		"eos_token":                    "<|endoftext|>",
		"errors":                       "replace",
		"model_max_length":             77,
		"pad_token":                    pad,
		"tokenizer_class":              "CLIPTokenizer",
		"unk_token":                    "<|endoftext|>",
	}
	if c.OmitPadToken {
		delete(cfg, "pad_token")
	}
	special := map[string]any{
		"bos_token": map[string]any{"content": "<|startoftext|>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false},
		"eos_token": map[string]any{"content": "<|endoftext|>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false},
		"pad_token": pad,
		"unk_token": map[string]any{"content": "<|endoftext|>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false},
	}
	cfgJSON, err := indentJSON(cfg)
	if err != nil {
		return nil, err
	}
	specialJSON, err := indentJSON(special)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		"tokenizer.json":          tj.Bytes(),
		"tokenizer_config.json":   cfgJSON,
		"special_tokens_map.json": specialJSON,
		"vocab.json":              vj.Bytes(),
		"merges.txt":              mt.Bytes(),
	}, nil
}

// WriteDir writes the files into dir (a model's "textual" folder), which
// must exist.
func (c CLIPTokenizer) WriteDir(dir string) error {
	files, err := c.Files()
	if err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// readCLIPMerges reads the merges CLIP uses from OpenAI's file.
func readCLIPMerges(path string) ([][2]string, error) {
	if path == "" {
		return nil, errors.New("modelgen: CLIPTokenizer.Merges is empty")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	merges := make([][2]string, 0, clipMerges)
	first := true
	for len(merges) < clipMerges {
		line, err := r.ReadString('\n')
		if err != nil && (err != io.EOF || line == "") {
			return nil, fmt.Errorf("modelgen: %s: %d merges, want %d: %w", path, len(merges), clipMerges, err)
		}
		line = strings.TrimRight(line, "\r\n")
		if first {
			first = false
			if strings.HasPrefix(line, "#version") {
				continue
			}
		}
		a, b, ok := strings.Cut(line, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return nil, fmt.Errorf("modelgen: %s: bad merge line %q", path, line)
		}
		merges = append(merges, [2]string{a, b})
	}
	return merges, nil
}

// clipVocab lays out the ids as OpenAI's simple_tokenizer.py does.
func clipVocab(merges [][2]string) []string {
	bytesChars := byteLevelAlphabet()
	vocab := make([]string, 0, CLIPVocabSize)
	vocab = append(vocab, bytesChars...)
	for _, c := range bytesChars {
		vocab = append(vocab, c+"</w>")
	}
	for _, m := range merges {
		vocab = append(vocab, m[0]+m[1])
	}
	return append(vocab, "<|startoftext|>", "<|endoftext|>")
}

// byteLevelAlphabet is GPT-2's bytes_to_unicode() values in its order: the
// printable bytes keep their own character, the other 68 are moved above
// U+00FF so that no byte reads as whitespace or a control character.
func byteLevelAlphabet() []string {
	var bs []int
	for b := '!'; b <= '~'; b++ {
		bs = append(bs, int(b))
	}
	for b := 0xA1; b <= 0xAC; b++ {
		bs = append(bs, b)
	}
	for b := 0xAE; b <= 0xFF; b++ {
		bs = append(bs, b)
	}
	printable := make(map[int]bool, len(bs))
	for _, b := range bs {
		printable[b] = true
	}
	out := make([]string, 0, 256)
	for _, b := range bs {
		out = append(out, string(rune(b)))
	}
	n := 0
	for b := 0; b < 256; b++ {
		if !printable[b] {
			out = append(out, string(rune(256+n)))
			n++
		}
	}
	return out
}

// writeCLIPTokenizerJSON writes tokenizer.json with the vocabulary in id
// order, as the tokenizers library serialises it.
func writeCLIPTokenizerJSON(w *bytes.Buffer, vocab []string, merges [][2]string) error {
	const head = `{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [
    {
      "id": 49406,
      "content": "<|startoftext|>",
      "single_word": false,
      "lstrip": false,
      "rstrip": false,
      "normalized": true,
      "special": true
    },
    {
      "id": 49407,
      "content": "<|endoftext|>",
      "single_word": false,
      "lstrip": false,
      "rstrip": false,
      "normalized": false,
      "special": true
    }
  ],
  "normalizer": {
    "type": "Sequence",
    "normalizers": [
      {
        "type": "NFC"
      },
      {
        "type": "Replace",
        "pattern": {
          "Regex": "\\s+"
        },
        "content": " "
      },
      {
        "type": "Lowercase"
      }
    ]
  },
  "pre_tokenizer": {
    "type": "Sequence",
    "pretokenizers": [
      {
        "type": "Split",
        "pattern": {
          "Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"
        },
        "behavior": "Removed",
        "invert": true
      },
      {
        "type": "ByteLevel",
        "add_prefix_space": false,
        "trim_offsets": true,
        "use_regex": false
      }
    ]
  },
  "post_processor": {
    "type": "RobertaProcessing",
    "sep": [
      "<|endoftext|>",
      49407
    ],
    "cls": [
      "<|startoftext|>",
      49406
    ],
    "trim_offsets": false,
    "add_prefix_space": false
  },
  "decoder": {
    "type": "ByteLevel",
    "add_prefix_space": true,
    "trim_offsets": true,
    "use_regex": true
  },
  "model": {
    "type": "BPE",
    "dropout": null,
    "unk_token": "<|endoftext|>",
    "continuing_subword_prefix": null,
    "end_of_word_suffix": "</w>",
    "fuse_unk": false,
    "byte_fallback": false,
    "vocab": {
`
	w.WriteString(head)
	for id, tok := range vocab {
		w.WriteString("      ")
		w.Write(jsonString(tok))
		fmt.Fprintf(w, ": %d", id)
		if id < len(vocab)-1 {
			w.WriteByte(',')
		}
		w.WriteByte('\n')
	}
	w.WriteString("    },\n    \"merges\": [\n")
	for i, m := range merges {
		w.WriteString("      ")
		w.Write(jsonString(m[0] + " " + m[1]))
		if i < len(merges)-1 {
			w.WriteByte(',')
		}
		w.WriteByte('\n')
	}
	w.WriteString("    ]\n  }\n}")
	return nil
}

// jsonString encodes s as serde_json does: no HTML escaping, non-ASCII
// kept as UTF-8.
func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return bytes.TrimRight(b.Bytes(), "\n")
}

func indentJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
