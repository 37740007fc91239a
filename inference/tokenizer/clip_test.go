package tokenizer_test

import (
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mlserve/mlserve/inference/tokenizer"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
)

var clipOnce struct {
	sync.Once
	dir string
	err error
}

// clipDir writes the real OpenAI CLIP tokenizer files once per test binary.
func clipDir(t testing.TB) string {
	t.Helper()
	merges := testenv.TestData(t, "clip/bpe_simple_vocab_16e6.txt")
	clipOnce.Do(func() {
		dir, err := mkdirTemp()
		if err != nil {
			clipOnce.err = err
			return
		}
		clipOnce.dir = dir
		clipOnce.err = modelgen.CLIPTokenizer{Merges: merges}.WriteDir(dir)
	})
	if clipOnce.err != nil {
		t.Fatal(clipOnce.err)
	}
	return clipOnce.dir
}

func loadCLIP(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Load(filepath.Join(clipDir(t), "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestCLIPKnownIDs(t *testing.T) {
	tok := loadCLIP(t)
	cases := []struct {
		text string
		want []int32
	}{
		{"a photo of a cat", []int32{320, 1125, 539, 320, 2368}},
		{"Hello World!", []int32{3306, 1002, 256}},
		{"dog on the beach at sunset", []int32{1929, 525, 518, 2117, 536, 3424}},
	}
	for _, c := range cases {
		t.Run(c.text, func(t *testing.T) {
			enc, err := tok.Encode(c.text, false)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(enc.IDs, c.want) {
				t.Errorf("ids %v (%q), want %v", enc.IDs, enc.Tokens, c.want)
			}
			enc, err = tok.Encode(c.text, true)
			if err != nil {
				t.Fatal(err)
			}
			want := append(append([]int32{49406}, c.want...), 49407)
			if !slices.Equal(enc.IDs, want) {
				t.Errorf("with special tokens: %v, want %v", enc.IDs, want)
			}
		})
	}
	if n := tok.VocabSize(); n != modelgen.CLIPVocabSize {
		t.Errorf("vocab size %d, want %d", n, modelgen.CLIPVocabSize)
	}
}

func loadCLIPFrom(t testing.TB, dir string) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestConcurrentEncode shares one Tokenizer between goroutines (the word
// caches are written concurrently); run with -race.
func TestConcurrentEncode(t *testing.T) {
	tok := loadCLIP(t)
	texts := []string{"a photo of a cat", "dog on the beach at sunset", "Hello World!", "猫の写真", "🐱🐶 emoji"}
	want := make([][]int32, len(texts))
	for i, s := range texts {
		enc, err := tok.Encode(s, true)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = enc.IDs
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				k := (g + i) % len(texts)
				enc, err := tok.Encode(texts[k]+strings.Repeat(" x", i%7), true)
				if err != nil {
					t.Error(err)
					return
				}
				if !slices.Equal(enc.IDs[:len(want[k])-1], want[k][:len(want[k])-1]) {
					t.Errorf("%q: %v, want prefix %v", texts[k], enc.IDs, want[k])
					return
				}
			}
		})
	}
	wg.Wait()
}
