package clip

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference/tokenizer"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
)

// immichCleanText is Immich's clean_text written as directly as Python's:
// " ".join(text.split()), then punctuation removed and lower(). The
// streaming textualCleanText must give the same bytes.
func immichCleanText(text string, canonicalize bool) string {
	text = strings.Join(strings.FieldsFunc(text, textualIsPySpace), " ")
	if canonicalize {
		text = strings.Map(func(r rune) rune {
			if r < 0x80 && strings.ContainsRune(textualPunctuation, r) {
				return -1
			}
			return r
		}, text)
		text = textualPyLower(text)
	}
	return text
}

func checkCleanText(t *testing.T, s string) {
	for _, canon := range []bool{false, true} {
		want := immichCleanText(s, canon)
		if got := textualCleanText(s, canon, 0); got != want {
			t.Fatalf("clean(%q, %v) = %q, Immich %q", s, canon, got, want)
		}
		for _, max := range []int{1, 7, 64} {
			got := textualCleanText(s, canon, max)
			if len(got) > max+8 && len(want) > 0 {
				t.Fatalf("clean(%q, %v, %d) = %q: over the limit", s, canon, max, got)
			}
			if canon && strings.ContainsAny(s, "Σ") {
				continue // the final-sigma rule looks past a word cut in two
			}
			if !strings.HasPrefix(want, got) {
				t.Fatalf("clean(%q, %v, %d) = %q, not a prefix of %q", s, canon, max, got, want)
			}
			// Cut where a word ends, unless it is the first word (a
			// leading space is no word boundary).
			if got != want && strings.LastIndexByte(got, ' ') > 0 && want[len(got)] != ' ' {
				t.Fatalf("clean(%q, %v, %d) = %q cuts a word of %q", s, canon, max, got, want)
			}
		}
	}
}

func TestTextualCleanTextStreams(t *testing.T) {
	for _, s := range []string{
		"", " ", "a", "  a  b\tc\n", "!!! a", "a !!! b", "Hello, WORLD!", "\xff\xfe broken \xc3",
		"ΟΔΟΣ ΣΟΦΙΑΣ", "İstanbul  street", "a\u00a0b\u2003c\x1fd", strings.Repeat("word ", 40),
		strings.Repeat("x", 100), "日本語のテキスト 🐱 emoji", "\u0085x\u2028y\u3000z",
	} {
		checkCleanText(t, s)
	}
}

func FuzzTextualCleanText(f *testing.F) {
	for _, s := range []string{"", "a photo  of\ta cat", "Hello, WORLD...", "\xff\xfe x", "ΟΔΟΣ", "!!! a !!! b"} {
		f.Add(s)
	}
	f.Fuzz(checkCleanText)
}

func procBytes(t testing.TB, key string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n << 10
		}
	}
	t.Skipf("no %s", key)
	return 0
}

// TestTextualLongText: a 30 MB text (3 MB under -race) embeds within a
// bounded prefix, as fast and as small as a short one, to the same
// embedding as Immich's token-level truncation gives: that of a prefix
// holding its first 77 tokens. Runs of whitespace (and punctuation, for SigLIP-style models)
// collapse before the limit is counted, so a text that starts with 30 MB
// of them embeds like the words after them.
func TestTextualLongText(t *testing.T) {
	rt := testenv.Runtime(t)
	dir := textualFolder(t, openCLIPConfig(77, ""), clipTokenizerFiles(t, modelgen.CLIPTokenizer{}),
		modelgen.CLIPTextual{Context: 77, Vocab: modelgen.CLIPVocabSize, Dim: 512, Seed: 11})
	tx, err := LoadTextual(dir, rt, TextualOptions{Name: "ViT-B-32__openai"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	files := sentencePieceFiles(t)
	tok, err := tokenizer.Parse(files["tokenizer.json"])
	if err != nil {
		t.Fatal(err)
	}
	sdir := textualFolder(t, openCLIPConfig(64, "canonicalize"), files,
		modelgen.CLIPTextual{Context: 64, Vocab: tok.VocabSize(), Dim: 768, Seed: 12})
	siglip, err := LoadTextual(sdir, rt, TextualOptions{Name: "ViT-B-16-SigLIP__webli"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer siglip.Close()

	size := 30 << 20
	if raceEnabled {
		size = 3 << 20 // the race detector makes the scan of whitespace 50 times slower
	}
	sentence := "A photo of my dog playing on the beach at sunset, with waves behind him and a red ball. "
	words := strings.Repeat(sentence, size/len(sentence))
	prefix := strings.Repeat(sentence, 12) // 1 KB, about 200 tokens
	for _, c := range []struct {
		name       string
		tx         *Textual
		long, same string
	}{
		{"30 MB of sentences", tx, words, prefix},
		{"30 MB of spaces, then words", tx, strings.Repeat(" \t\n", size/3) + "a photo of a cat", "a photo of a cat"},
		{"30 MB of punctuation, then words (canonicalize)", siglip, strings.Repeat("!?.", size/3) + " a photo of a cat", "a photo of a cat"},
		{"one 30 MB word", tx, strings.Repeat("abcdefghij", size/10), strings.Repeat("abcdefghij", 500)},
		{"30 MB of emoji", tx, strings.Repeat("🐱", size/4), strings.Repeat("🐱", 300)},
	} {
		t.Run(c.name, func(t *testing.T) {
			want, err := c.tx.Embed(context.Background(), c.same, "")
			if err != nil {
				t.Fatal(err)
			}
			runtime.GC()
			debug.FreeOSMemory()
			if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
				t.Skipf("cannot reset the peak RSS: %v", err)
			}
			base := procBytes(t, "VmRSS")
			start := time.Now()
			got, err := c.tx.Embed(context.Background(), c.long, "")
			took := time.Since(start)
			grew := procBytes(t, "VmHWM") - base
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d bytes: %v, peak RSS +%d MiB", len(c.long), took, grew>>20)
			if !slices.Equal(got, want) {
				t.Error("the embedding differs from that of the prefix that holds its first tokens")
			}
			if grew > 50<<20 && !raceEnabled {
				t.Errorf("peak RSS +%d MiB", grew>>20)
			}
		})
	}
}

// The prefix used above must really hold more than 77 tokens, or the
// equality would not show that the rest was ignored.
func TestTextualLongTextPrefixFillsContext(t *testing.T) {
	tok, err := tokenizer.Parse(clipTokenizerFiles(t, modelgen.CLIPTokenizer{})["tokenizer.json"])
	if err != nil {
		t.Fatal(err)
	}
	sentence := "A photo of my dog playing on the beach at sunset, with waves behind him and a red ball. "
	enc, err := tok.Encode(strings.Repeat(sentence, 12), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(enc.IDs) < 150 {
		t.Fatalf("only %d tokens", len(enc.IDs))
	}
}

// BenchmarkTextualCleanText30MB: the cost of reading a 30 MB text before
// tokenizing: words stop at the limit; whitespace and punctuation are
// scanned to the end. Run with
// go test -run '^$' -bench TextualCleanText ./inference/clip/
func BenchmarkTextualCleanText30MB(b *testing.B) {
	const size = 30 << 20
	for _, c := range []struct {
		name  string
		text  string
		canon bool
	}{
		{"words", strings.Repeat("a photo of a dog ", size/17), false},
		{"spaces", strings.Repeat(" \t\n", size/3) + "cat", false},
		{"punctuation canonicalize", strings.Repeat("!?.", size/3) + " cat", true},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.text)))
			for b.Loop() {
				textualCleanText(c.text, c.canon, 77*textualBytesPerToken)
			}
		})
	}
}
