package tokenizer_test

import (
	"testing"
	"unicode/utf8"

	"github.com/mlserve/mlserve/inference/tokenizer"
)

// FuzzEncodeCLIP: any text encodes without error or panic, to exactly the
// context length, with every id in the vocabulary.
func FuzzEncodeCLIP(f *testing.F) {
	for _, s := range []string{"", "a photo of a cat", "Hello World!", "<|endoftext|>x", "🏳️‍🌈 \t\n ΟΔΟΣ", "\xff\xfe broken utf-8", "e\u0301\u0301\u0301"} {
		f.Add(s)
	}
	tok, err := loadCLIP(f).WithFixedLength(77, "<|endoftext|>")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc, err := tok.Encode(s, true)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if len(enc.IDs) != 77 || len(enc.AttentionMask) != 77 || enc.IDs[0] != 49406 {
			t.Fatalf("%q: %d ids, first %d", s, len(enc.IDs), enc.IDs[0])
		}
		for _, id := range enc.IDs {
			if id < 0 || int(id) >= tok.VocabSize() {
				t.Fatalf("%q: id %d outside the vocabulary", s, id)
			}
		}
	})
}

// FuzzEncodeSentencePiece does the same on the Unigram fixture, whose
// precompiled charsmap is SentencePiece's real nmt_nfkc.
func FuzzEncodeSentencePiece(f *testing.F) {
	for _, s := range []string{"", "ｆｕｌｌｗｉｄｔｈ", "\r\n", "a\u0301", "unknown ✨ chars", "\xc3"} {
		f.Add(s)
	}
	tok, err := loadFixture(f, "xlmr").WithFixedLength(16, "<pad>")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc, err := tok.Encode(s, true)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if len(enc.IDs) != 16 {
			t.Fatalf("%q: %d ids", s, len(enc.IDs))
		}
		for i, id := range enc.IDs {
			if id < 0 || int(id) >= tok.VocabSize() || !utf8.ValidString(enc.Tokens[i]) {
				t.Fatalf("%q: id %d (%q)", s, id, enc.Tokens[i])
			}
		}
	})
}

// FuzzParse: no input makes the parser (and encoding with what it
// accepts) panic.
func FuzzParse(f *testing.F) {
	seeds := []string{
		`{}`,
		`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}`,
		`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]], "end_of_word_suffix": "</w>", "unk_token": "a"}}`,
		`{"model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0], ["a", -1], ["▁", -2]]}, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁"}}`,
		`{"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1, "##b": 2}}, "normalizer": {"type": "BertNormalizer"}, "pre_tokenizer": {"type": "BertPreTokenizer"}}`,
		`{"normalizer": {"type": "Precompiled", "precompiled_charsmap": "AAAAAA=="}, "model": {"type": "Unigram", "vocab": [["a", 0]]}}`,
		`{"normalizer": {"type": "Replace", "pattern": {"Regex": "(?!x)"}, "content": ""}, "model": {"type": "Unigram", "vocab": []}}`,
		`{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false}, "model": {"vocab": [["a", 0]]}}`,
		`{"added_tokens": [{"id": 5, "content": "x", "lstrip": true, "rstrip": true, "single_word": true}], "model": {"type": "BPE", "vocab": {}, "merges": []}, "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "x"}}, {"Sequence": {"id": "A"}}], "special_tokens": {"x": {"id": "x", "ids": [5], "tokens": ["x"]}}}}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s), "a b x ab")
	}
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		tok, err := tokenizer.Parse(data)
		if err != nil {
			return
		}
		enc, err := tok.Encode(text, true)
		if err != nil {
			return
		}
		for _, id := range enc.IDs {
			if id < 0 {
				t.Fatalf("negative id %d", id)
			}
		}
	})
}
