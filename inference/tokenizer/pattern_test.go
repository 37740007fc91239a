package tokenizer

import (
	"errors"
	"slices"
	"testing"
)

func TestCompilePattern(t *testing.T) {
	cases := []struct {
		pat  string
		in   string
		want []string
	}{
		// Oniguruma's \s is Unicode White_Space (RE2's is ASCII).
		{`\s+`, "a\u00a0\u3000b c", []string{"\u00a0\u3000", " "}},
		{`[^\s\p{L}]+`, "ab12 ?!\u2003x", []string{"12", "?!"}},
		{`\d+`, "x١٢٣y42", []string{"١٢٣", "42"}},
		{`\w+`, "héllo_wörld 42!", []string{"héllo_wörld", "42"}},
		{`\p{L}+|\x{2581}`, "ab▁c", []string{"ab", "▁", "c"}},
		// GPT-2's look-ahead idiom.
		{gpt2Pattern, "a   b", []string{"a", "  ", " b"}},
		{gpt2Pattern, "a\t\tb", []string{"a", "\t", "\t", "b"}},
		{gpt2Pattern, "a  ", []string{"a", "  "}},
		{gpt2Pattern, "I'm  here\n", []string{"I", "'m", " ", " here", "\n"}},
	}
	for _, c := range cases {
		m, err := compilePattern(c.pat)
		if err != nil {
			t.Fatalf("%q: %v", c.pat, err)
		}
		var got []string
		for _, r := range m.findAll(c.in) {
			got = append(got, c.in[r[0]:r[1]])
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%q on %q: %q, want %q", c.pat, c.in, got, c.want)
		}
	}
	for _, bad := range []string{`(?<=a)b`, `a(?=b)`, `a(?!b)`, `(?>ab)`, `a++`, `(a)\1`, `[a[b]]`, `[a&&b]`, `\h`} {
		if _, err := compilePattern(bad); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%q: %v, want ErrUnsupported", bad, err)
		}
	}
	if _, err := compilePattern(`(a`); err == nil {
		t.Error("unbalanced pattern accepted")
	}
}

func TestSplitBehaviors(t *testing.T) {
	// The Rust documentation's example: "the-final--countdown" on '-'.
	s := "the-final--countdown"
	spans := runeSpans(s, func(r rune) bool { return r == '-' })
	cases := map[splitBehavior][]string{
		splitRemoved:            {"the", "final", "countdown"},
		splitIsolated:           {"the", "-", "final", "-", "-", "countdown"},
		splitMergedWithPrevious: {"the-", "final-", "-", "countdown"},
		splitMergedWithNext:     {"the", "-final", "-", "-countdown"},
		splitContiguous:         {"the", "-", "final", "--", "countdown"},
	}
	for b, want := range cases {
		if got := splitSpans(s, spans, b); !slices.Equal(got, want) {
			t.Errorf("behavior %d: %q, want %q", b, got, want)
		}
	}
}

func TestPrecompiledErrors(t *testing.T) {
	for _, b64 := range []string{"not base64!", "AAAA", "CAAAAAAAAAA=", "BQAAAAAAAAAA"} {
		if _, err := parsePrecompiled(b64); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", b64, err)
		}
	}
	// A trie of one root unit whose offset points outside: lookups stop.
	p, err := decodeCharsmap([]byte{4, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 'x', 0})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.normalize("abc\r\n"); got != "abc\r\n" {
		t.Errorf("damaged trie rewrote the text: %q", got)
	}
}
