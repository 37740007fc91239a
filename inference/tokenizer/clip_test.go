package tokenizer_test

import (
	"path/filepath"
	"slices"
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
