package tokenizer_test

import (
	"math/rand"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/mlserve/mlserve/inference/tokenizer"
)

// longInputs are single words and runs that have made tokenizers
// super-linear: one letter repeated (BPE merges), random letters, a
// character outside the vocabulary repeated (fused unknown pieces), one
// base letter with thousands of combining marks (a single grapheme
// cluster), digits, punctuation, whitespace, CJK, and ordinary words.
func longInputs(n int) map[string]string {
	rng := rand.New(rand.NewSource(int64(n)))
	letters := make([]byte, n)
	for i := range letters {
		letters[i] = byte('a' + rng.Intn(26))
	}
	return map[string]string{
		"one letter":  strings.Repeat("a", n),
		"letters":     string(letters),
		"é":           strings.Repeat("é", n/2),
		"emoji":       strings.Repeat("🙂", n/4),
		"combining":   "e" + strings.Repeat("\u0301", n/2),
		"digits":      strings.Repeat("1234567890", n/10),
		"punctuation": strings.Repeat("!", n),
		"spaces":      "a" + strings.Repeat(" ", n) + "b",
		"cjk":         strings.Repeat("猫", n/3),
		"words":       strings.Repeat("photo of a cat ", n/15),
	}
}

var families struct {
	sync.Mutex
	toks map[string]*tokenizer.Tokenizer
}

// allFamilies loads every tokenizer family once for the tests of this
// file (a Tokenizer is safe for concurrent use).
func allFamilies(t testing.TB) map[string]*tokenizer.Tokenizer {
	families.Lock()
	defer families.Unlock()
	if families.toks == nil {
		toks := map[string]*tokenizer.Tokenizer{"clip": loadCLIP(t)}
		for _, f := range []string{"xlmr", "t5", "gemma", "nllb", "labse", "bytelevel"} {
			toks[f] = loadFixture(t, f)
		}
		families.toks = toks
	}
	return families.toks
}

func allocated(f func()) uint64 {
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	f()
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}

// TestLongInputsScaleLinearly encodes each long input at two sizes with
// every tokenizer family, without truncation (the whole text through the
// model), and checks that the bytes allocated grow in proportion: a
// quadratic path (such as fusing a run of unknown characters by string
// concatenation, which made a 128 KB word allocate 4.4 GB) shows as a
// ratio near 16 instead of 4, already at these sizes. Allocation counts, unlike timings, do not
// depend on the machine's load.
func TestLongInputsScaleLinearly(t *testing.T) {
	const n = 1 << 10
	small, large := longInputs(n), longInputs(4*n)
	for fam, tok := range allFamilies(t) {
		for kind := range small {
			a := allocated(func() { _, _ = tok.Encode(small[kind], false) })
			b := allocated(func() { _, _ = tok.Encode(large[kind], false) })
			if b > 6*a+512<<10 {
				t.Errorf("%s, %s: %d KB for %d bytes, %d KB for %d bytes: not linear", fam, kind, a>>10, len(small[kind]), b>>10, len(large[kind]))
			}
		}
	}
}

// TestTruncationStopsEarly: with a fixed length, Encode stops the model
// once it has the ids it keeps, and the ids are those of the full
// encoding, cut; a 1 MB text then allocates about what the normalizer and
// pre-tokenizer need, not what the model would.
func TestTruncationStopsEarly(t *testing.T) {
	texts := longInputs(4 << 10)
	texts["sentence"] = "A photo of my dog playing on the beach at sunset, with the waves behind him. " + strings.Repeat("And more words after that. ", 200)
	for fam, tok := range allFamilies(t) {
		fixed, err := tok.WithFixedLength(16, padTokenOf(t, fam))
		if err != nil {
			t.Fatal(err)
		}
		for kind, s := range texts {
			all, err := tok.Encode(s, false)
			if err != nil {
				t.Fatalf("%s, %s: %v", fam, kind, err)
			}
			cut, err := fixed.Encode(s, false)
			if err != nil {
				t.Fatalf("%s, %s: %v", fam, kind, err)
			}
			k := min(16, len(all.IDs))
			if !slices.Equal(cut.IDs[:k], all.IDs[:k]) {
				t.Errorf("%s, %s: truncated ids %v, the full encoding starts %v", fam, kind, cut.IDs[:k], all.IDs[:k])
			}
		}
	}
}

// padTokenOf is a token of each family's vocabulary to pad with.
func padTokenOf(t testing.TB, fam string) string {
	switch fam {
	case "clip", "bytelevel":
		return map[string]string{"clip": "<|endoftext|>", "bytelevel": "<|endoftext|>"}[fam]
	case "labse":
		return "[PAD]"
	}
	return "<pad>"
}

// TestLongWordPrefix: with the BPE and WordPiece models, a word far
// longer than any text a model reads gives the same first tokens as its
// first 4 KB: a word's tokens are merged (or matched) locally. This is
// what lets the CLIP text encoder cap its input before tokenizing. The
// Unigram model is different: its Viterbi segmentation of a piece is
// global, and the first tokens of a long run of one character depend on
// the run's length (xlmr and t5 split "猫"×21845 and "猫"×87381
// differently from the start), which is why that cap cuts at a space
// when it can.
func TestLongWordPrefix(t *testing.T) {
	const cap = 4 << 10
	fams := allFamilies(t)
	for kind, s := range longInputs(16 << 10) {
		if kind == "spaces" || kind == "words" {
			continue // spaces: no tokens (the cap counts cleaned text, where a run is one); words: many pieces
		}
		cut := cap
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		for _, fam := range []string{"clip", "gemma", "labse"} { // byte-level BPE, SentencePiece BPE, WordPiece
			fixed, err := fams[fam].WithFixedLength(77, padTokenOf(t, fam))
			if err != nil {
				t.Fatal(err)
			}
			a, err := fixed.Encode(s, true)
			if err != nil {
				t.Fatal(err)
			}
			b, err := fixed.Encode(s[:cut], true)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a.IDs, b.IDs) {
				t.Errorf("%s, %s: %d bytes give %v, the first %d %v", fam, kind, len(s), a.IDs[:8], cut, b.IDs[:8])
			}
		}
	}
}
