package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// piece is one split of the text on its way to the model. atStart tells
// whether it begins where the input began (Metaspace's "first" scheme).
type piece struct {
	s       string
	atStart bool
}

// preTokenizer splits pieces further (and may rewrite them, as ByteLevel
// and Metaspace do). Empty pieces are dropped by the caller.
type preTokenizer interface {
	split(p piece) []piece
}

type preTokenizerSeq []preTokenizer

func (q preTokenizerSeq) split(p piece) []piece {
	ps := []piece{p}
	for _, t := range q {
		ps = applyPre(t, ps)
	}
	return ps
}

// applyPre runs t on every piece and drops empty results.
func applyPre(t preTokenizer, in []piece) []piece {
	out := make([]piece, 0, len(in))
	for _, p := range in {
		for _, q := range t.split(p) {
			if q.s != "" {
				out = append(out, q)
			}
		}
	}
	return out
}

// splitPieces turns sub-strings of p.s into pieces; only the first can
// still be at the start of the input.
func splitPieces(p piece, parts []string) []piece {
	out := make([]piece, len(parts))
	for i, s := range parts {
		out[i] = piece{s: s, atStart: p.atStart && i == 0 && strings.HasPrefix(p.s, s)}
	}
	return out
}

type spanSplitter struct {
	spans    func(string) []span
	behavior splitBehavior
	invert   bool
}

func (t spanSplitter) split(p piece) []piece {
	sp := t.spans(p.s)
	if t.invert {
		for i := range sp {
			sp[i].match = !sp[i].match
		}
	}
	return splitPieces(p, splitSpans(p.s, sp, t.behavior))
}

func regexSplitter(m *matcher, b splitBehavior, invert bool) spanSplitter {
	return spanSplitter{
		spans:    func(s string) []span { return matchSpans(s, m.findAll(s)) },
		behavior: b,
		invert:   invert,
	}
}

func runeSplitter(is func(rune) bool, b splitBehavior) spanSplitter {
	return spanSplitter{spans: func(s string) []span { return runeSpans(s, is) }, behavior: b}
}

// byteLevel maps every byte to GPT-2's printable alphabet, after an
// optional prefix space and GPT-2's word split.
type byteLevel struct {
	addPrefixSpace bool
	useRegex       bool
}

// gpt2Pattern is the regular expression the ByteLevel pre-tokenizer uses.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

var gpt2Matcher = func() *matcher {
	m, err := compilePattern(gpt2Pattern)
	if err != nil {
		panic(err) // a constant; covered by tests
	}
	return m
}()

// byteChars is GPT-2's bytes_to_unicode() table.
var byteChars = func() [256]string {
	var t [256]string
	printable := func(b int) bool {
		return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
	}
	n := 0
	for b := 0; b < 256; b++ {
		if printable(b) {
			t[b] = string(rune(b))
		} else {
			t[b] = string(rune(256 + n))
			n++
		}
	}
	return t
}()

func byteLevelString(s string) string {
	var b strings.Builder
	b.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		b.WriteString(byteChars[s[i]])
	}
	return b.String()
}

func (t byteLevel) split(p piece) []piece {
	s := p.s
	if t.addPrefixSpace && !strings.HasPrefix(s, " ") {
		s = " " + s
	}
	parts := []string{s}
	if t.useRegex {
		parts = splitSpans(s, matchSpans(s, gpt2Matcher.findAll(s)), splitIsolated)
	}
	out := splitPieces(piece{s: s, atStart: p.atStart}, parts)
	for i := range out {
		out[i].s = byteLevelString(out[i].s)
	}
	return out
}

// metaspace replaces spaces with "▁", may prepend one, and splits before
// each.
type metaspace struct {
	replacement string
	prepend     string // "always", "first" or "never"
	splitOn     bool
}

func (t metaspace) split(p piece) []piece {
	s := strings.ReplaceAll(p.s, " ", t.replacement)
	if !strings.HasPrefix(s, t.replacement) && s != "" {
		if t.prepend == "always" || (t.prepend == "first" && p.atStart) {
			s = t.replacement + s
		}
	}
	q := piece{s: s, atStart: p.atStart}
	if !t.splitOn {
		return []piece{q}
	}
	r, _ := utf8.DecodeRuneInString(t.replacement)
	return splitPieces(q, splitSpans(s, runeSpans(s, func(c rune) bool { return c == r }), splitMergedWithNext))
}

// Whitespace's fixed pattern `\w+|[^\w\s]+`, with Rust regex's Unicode \w.
var whitespaceMatcher = func() *matcher {
	m, err := compilePattern(`\w+|[^\w\s]+`)
	if err != nil {
		panic(err) // a constant; covered by tests
	}
	return m
}()

// isBertPunct is BertPreTokenizer's punctuation: ASCII punctuation or any
// Unicode P category.
func isBertPunct(r rune) bool {
	return (r < 0x80 && unicode.IsPunct(r)) || (r < 0x80 && unicode.IsSymbol(r)) || unicode.IsPunct(r)
}

// parsePreTokenizer builds a pre-tokenizer from its JSON; null gives nil.
func parsePreTokenizer(raw json.RawMessage) (preTokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("%w: pre_tokenizer: %w", ErrInvalid, err)
	}
	switch head.Type {
	case "Sequence":
		var v struct {
			PreTokenizers []json.RawMessage `json:"pretokenizers"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: Sequence pre_tokenizer: %w", ErrInvalid, err)
		}
		var seq preTokenizerSeq
		for _, r := range v.PreTokenizers {
			t, err := parsePreTokenizer(r)
			if err != nil {
				return nil, err
			}
			if t != nil {
				seq = append(seq, t)
			}
		}
		return seq, nil
	case "Split":
		var v struct {
			Pattern  patternJSON `json:"pattern"`
			Behavior string      `json:"behavior"`
			Invert   bool        `json:"invert"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: Split pre_tokenizer: %w", ErrInvalid, err)
		}
		m, err := v.Pattern.compile()
		if err != nil {
			return nil, err
		}
		b, err := parseBehavior(v.Behavior)
		if err != nil {
			return nil, err
		}
		return regexSplitter(m, b, v.Invert), nil
	case "ByteLevel":
		v := struct {
			AddPrefixSpace bool `json:"add_prefix_space"`
			UseRegex       bool `json:"use_regex"`
		}{AddPrefixSpace: true, UseRegex: true}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: ByteLevel pre_tokenizer: %w", ErrInvalid, err)
		}
		return byteLevel{addPrefixSpace: v.AddPrefixSpace, useRegex: v.UseRegex}, nil
	case "Metaspace":
		var v struct {
			Replacement    string  `json:"replacement"`
			AddPrefixSpace *bool   `json:"add_prefix_space"`
			PrependScheme  *string `json:"prepend_scheme"`
			Split          *bool   `json:"split"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: Metaspace pre_tokenizer: %w", ErrInvalid, err)
		}
		if utf8.RuneCountInString(v.Replacement) != 1 {
			return nil, fmt.Errorf("%w: Metaspace replacement %q is not one character", ErrInvalid, v.Replacement)
		}
		t := metaspace{replacement: v.Replacement, prepend: "always", splitOn: true}
		if v.PrependScheme != nil {
			t.prepend = *v.PrependScheme
		}
		switch t.prepend {
		case "always", "first", "never":
		default:
			return nil, fmt.Errorf("%w: Metaspace prepend_scheme %q", ErrInvalid, t.prepend)
		}
		if v.AddPrefixSpace != nil && !*v.AddPrefixSpace {
			if t.prepend != "never" && v.PrependScheme != nil {
				return nil, fmt.Errorf("%w: Metaspace add_prefix_space does not match prepend_scheme", ErrInvalid)
			}
			t.prepend = "never"
		}
		if v.Split != nil {
			t.splitOn = *v.Split
		}
		return t, nil
	case "Whitespace":
		return regexSplitter(whitespaceMatcher, splitRemoved, true), nil
	case "WhitespaceSplit":
		return runeSplitter(unicode.IsSpace, splitRemoved), nil
	case "BertPreTokenizer":
		return preTokenizerSeq{
			runeSplitter(unicode.IsSpace, splitRemoved),
			runeSplitter(isBertPunct, splitIsolated),
		}, nil
	case "Punctuation":
		v := struct {
			Behavior string `json:"behavior"`
		}{Behavior: "Isolated"}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: Punctuation pre_tokenizer: %w", ErrInvalid, err)
		}
		b, err := parseBehavior(v.Behavior)
		if err != nil {
			return nil, err
		}
		return runeSplitter(isBertPunct, b), nil
	case "Digits":
		var v struct {
			Individual bool `json:"individual_digits"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: Digits pre_tokenizer: %w", ErrInvalid, err)
		}
		b := splitContiguous
		if v.Individual {
			b = splitIsolated
		}
		return runeSplitter(unicode.IsNumber, b), nil
	case "CharDelimiterSplit":
		var v struct {
			Delimiter string `json:"delimiter"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: CharDelimiterSplit pre_tokenizer: %w", ErrInvalid, err)
		}
		if utf8.RuneCountInString(v.Delimiter) != 1 {
			return nil, fmt.Errorf("%w: CharDelimiterSplit delimiter %q", ErrInvalid, v.Delimiter)
		}
		d, _ := utf8.DecodeRuneInString(v.Delimiter)
		return runeSplitter(func(r rune) bool { return r == d }, splitRemoved), nil
	}
	return nil, fmt.Errorf("%w: pre_tokenizer type %q", ErrUnsupported, head.Type)
}
