package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites a piece of text before pre-tokenization. Offsets are
// not tracked: only the resulting ids matter here.
type normalizer interface {
	normalize(s string) string
}

type normalizerFunc func(string) string

func (f normalizerFunc) normalize(s string) string { return f(s) }

type normalizerSeq []normalizer

func (q normalizerSeq) normalize(s string) string {
	for _, n := range q {
		s = n.normalize(s)
	}
	return s
}

// patternJSON is a Replace/Split pattern: {"String": "..."} or {"Regex": "..."}.
type patternJSON struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func (p patternJSON) compile() (*matcher, error) {
	switch {
	case p.String != nil:
		return literalMatcher(*p.String), nil
	case p.Regex != nil:
		return compilePattern(*p.Regex)
	}
	return nil, fmt.Errorf("%w: pattern without String or Regex", ErrInvalid)
}

// parseNormalizer builds a normalizer from its JSON; null gives nil.
func parseNormalizer(raw json.RawMessage) (normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("%w: normalizer: %w", ErrInvalid, err)
	}
	switch head.Type {
	case "Sequence":
		var v struct {
			Normalizers []json.RawMessage `json:"normalizers"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: Sequence normalizer: %w", ErrInvalid, err)
		}
		var seq normalizerSeq
		for _, r := range v.Normalizers {
			n, err := parseNormalizer(r)
			if err != nil {
				return nil, err
			}
			if n != nil {
				seq = append(seq, n)
			}
		}
		return seq, nil
	case "NFC":
		return normalizerFunc(norm.NFC.String), nil
	case "NFD":
		return normalizerFunc(norm.NFD.String), nil
	case "NFKC":
		return normalizerFunc(norm.NFKC.String), nil
	case "NFKD":
		return normalizerFunc(norm.NFKD.String), nil
	case "Lowercase":
		return normalizerFunc(rustLower), nil
	case "StripAccents":
		return normalizerFunc(stripMarks), nil
	case "Strip":
		var v struct {
			Left  bool `json:"strip_left"`
			Right bool `json:"strip_right"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: Strip normalizer: %w", ErrInvalid, err)
		}
		return normalizerFunc(func(s string) string {
			if v.Left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if v.Right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}), nil
	case "Prepend":
		var v struct {
			Prepend string `json:"prepend"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: Prepend normalizer: %w", ErrInvalid, err)
		}
		// NormalizedString::prepend does nothing to an empty string.
		return normalizerFunc(func(s string) string {
			if s == "" {
				return s
			}
			return v.Prepend + s
		}), nil
	case "Replace":
		var v struct {
			Pattern patternJSON `json:"pattern"`
			Content string      `json:"content"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: Replace normalizer: %w", ErrInvalid, err)
		}
		m, err := v.Pattern.compile()
		if err != nil {
			return nil, err
		}
		return replaceNormalizer{m: m, content: v.Content}, nil
	case "BertNormalizer":
		v := bertNormalizer{CleanText: true, HandleChinese: true, Lowercase: true}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: BertNormalizer: %w", ErrInvalid, err)
		}
		return v, nil
	case "Precompiled":
		var v struct {
			Charsmap *string `json:"precompiled_charsmap"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: Precompiled normalizer: %w", ErrInvalid, err)
		}
		if v.Charsmap == nil || *v.Charsmap == "" {
			// Some converters write an empty charsmap for "identity".
			return nil, nil
		}
		return parsePrecompiled(*v.Charsmap)
	case "Nmt":
		return normalizerFunc(nmt), nil
	}
	return nil, fmt.Errorf("%w: normalizer type %q", ErrUnsupported, head.Type)
}

type replaceNormalizer struct {
	m       *matcher
	content string
}

func (r replaceNormalizer) normalize(s string) string {
	ms := r.m.findAll(s)
	if len(ms) == 0 {
		return s
	}
	var b strings.Builder
	prev := 0
	for _, m := range ms {
		b.WriteString(s[prev:m[0]])
		b.WriteString(r.content)
		prev = m[1]
	}
	b.WriteString(s[prev:])
	return b.String()
}

// rustLower lowercases character by character as Rust's char::to_lowercase
// does: full mappings (İ gives "i̇") but, unlike str::to_lowercase, no
// final-sigma rule (Σ is always σ).
func rustLower(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r == 'İ' {
			b.WriteString("i\u0307")
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// stripMarks removes nonspacing marks (Mn), as StripAccents does; it is
// meant to follow NFD.
func stripMarks(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.Is(unicode.Mn, r) {
			return -1
		}
		return r
	}, s)
}

// nmt is the Nmt normalizer: drops some control characters and maps some
// separators to a space.
func nmt(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 0x0001 && r <= 0x0008, r == 0x000B, r >= 0x000E && r <= 0x001F, r == 0x007F, r == 0x008F, r == 0x009F:
			return -1
		case r == 0x0009, r == 0x000A, r == 0x000C, r == 0x000D, r == 0x1680,
			r >= 0x200B && r <= 0x200F, r == 0x2028, r == 0x2029, r == 0x2581, r == 0xFEFF, r == 0xFFFD:
			return ' '
		}
		return r
	}, s)
}

// bertNormalizer is BERT's cleaning (LaBSE and other WordPiece models).
type bertNormalizer struct {
	CleanText     bool  `json:"clean_text"`
	HandleChinese bool  `json:"handle_chinese_chars"`
	StripAccents  *bool `json:"strip_accents"`
	Lowercase     bool  `json:"lowercase"`
}

func (n bertNormalizer) normalize(s string) string {
	if n.CleanText {
		s = strings.Map(func(r rune) rune {
			switch {
			case r == 0 || r == 0xFFFD || (r != '\t' && r != '\n' && r != '\r' && isOther(r)):
				return -1
			case r == '\t' || r == '\n' || r == '\r' || unicode.IsSpace(r):
				return ' '
			}
			return r
		}, s)
	}
	if n.HandleChinese {
		var b strings.Builder
		for _, r := range s {
			if isChineseChar(r) {
				b.WriteByte(' ')
				b.WriteRune(r)
				b.WriteByte(' ')
			} else {
				b.WriteRune(r)
			}
		}
		s = b.String()
	}
	strip := n.Lowercase
	if n.StripAccents != nil {
		strip = *n.StripAccents
	}
	if strip {
		s = stripMarks(norm.NFD.String(s))
	}
	if n.Lowercase {
		s = rustLower(s)
	}
	return s
}

// isOther is Unicode's "Other" category (Cc, Cf, Cn, Co, Cs) as the Rust
// unicode_categories crate reads it.
func isOther(r rune) bool {
	if !utf8.ValidRune(r) {
		return true
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs) || !isAssigned(r)
}

// isAssigned: Go's tables have no Cn, so a rune in none of the major
// categories is unassigned.
func isAssigned(r rune) bool {
	return unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.C)
}

func isChineseChar(r rune) bool {
	switch {
	case r >= 0x4E00 && r <= 0x9FFF, r >= 0x3400 && r <= 0x4DBF, r >= 0x20000 && r <= 0x2A6DF,
		r >= 0x2A700 && r <= 0x2B73F, r >= 0x2B740 && r <= 0x2B81F, r >= 0x2B920 && r <= 0x2CEAF,
		r >= 0xF900 && r <= 0xFAFF, r >= 0x2F800 && r <= 0x2FA1F:
		return true
	}
	return false
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}
