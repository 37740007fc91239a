package tokenizer

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Oniguruma (the engine the Rust library compiles tokenizer.json patterns
// with, Ruby syntax, UTF-8) gives \s, \d and \w their Unicode meaning; RE2's
// are ASCII-only. These classes are Oniguruma's, written for RE2.
const (
	onigSpaceClass = `\t-\r\x{85}\p{Z}` // = White_Space = unicode.IsSpace
	onigDigitClass = `\p{Nd}`
	onigWordClass  = `\p{L}\p{M}\p{Nd}\p{Pc}`
)

// wsLookahead is GPT-2's idiom for "a run of whitespace, less its last
// character when a non-space follows": RE2 has no look-ahead, so it is
// emulated by matcher.
const wsLookahead = `\s+(?!\S)`

// matcher finds the non-overlapping matches of an Oniguruma pattern.
type matcher struct {
	re *regexp.Regexp // whole pattern, or the alternatives before the idiom
	// anchored is re anchored at the start, used with the idiom.
	anchored *regexp.Regexp
	// idiom: the pattern ended with `\s+(?!\S)|\s+`.
	idiom bool
}

// compilePattern translates an Oniguruma pattern.
func compilePattern(pat string) (*matcher, error) {
	alts, err := splitAlternatives(pat)
	if err != nil {
		return nil, err
	}
	m := &matcher{}
	n := len(alts)
	if n >= 2 && alts[n-2] == wsLookahead && alts[n-1] == `\s+` {
		m.idiom = true
		alts = alts[:n-2]
	}
	if len(alts) == 0 {
		if !m.idiom {
			return nil, fmt.Errorf("%w: empty pattern", ErrUnsupported)
		}
		return m, nil
	}
	var b strings.Builder
	for i, a := range alts {
		if i > 0 {
			b.WriteByte('|')
		}
		t, err := translateOnig(a)
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %w", pat, err)
		}
		b.WriteString(t)
	}
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("%w: pattern %q: %w", ErrUnsupported, pat, err)
	}
	m.re = re
	if m.idiom {
		m.anchored = regexp.MustCompile(`^(?:` + b.String() + `)`)
	}
	return m, nil
}

// literalMatcher matches s literally (a String pattern).
func literalMatcher(s string) *matcher {
	return &matcher{re: regexp.MustCompile(regexp.QuoteMeta(s))}
}

// findAll returns [start,end) byte ranges of the matches, leftmost-first as
// Oniguruma's search does.
func (m *matcher) findAll(s string) [][2]int {
	if !m.idiom {
		if s == "" {
			return nil
		}
		idx := m.re.FindAllStringIndex(s, -1)
		out := make([][2]int, len(idx))
		for i, p := range idx {
			out[i] = [2]int{p[0], p[1]}
		}
		return out
	}
	var out [][2]int
	p := 0
	for p < len(s) {
		if m.anchored != nil {
			if loc := m.anchored.FindStringIndex(s[p:]); loc != nil && loc[1] > 0 {
				out = append(out, [2]int{p, p + loc[1]})
				p += loc[1]
				continue
			}
		}
		r, size := utf8.DecodeRuneInString(s[p:])
		if !unicode.IsSpace(r) {
			p += size
			continue
		}
		// A run of whitespace: `\s+(?!\S)` takes it all when it ends the
		// string or is followed by whitespace (impossible: the run is
		// maximal), else all but its last character; when that leaves
		// nothing, `\s+` takes the single character.
		end := p
		last := p
		for end < len(s) {
			r, sz := utf8.DecodeRuneInString(s[end:])
			if !unicode.IsSpace(r) {
				break
			}
			last = end
			end += sz
		}
		if end < len(s) && last > p {
			end = last
		}
		out = append(out, [2]int{p, end})
		p = end
	}
	return out
}

// splitAlternatives splits a pattern at its top-level '|'.
func splitAlternatives(pat string) ([]string, error) {
	var alts []string
	depth, class := 0, 0
	start := 0
	for i := 0; i < len(pat); i++ {
		switch c := pat[i]; {
		case c == '\\':
			i++
		case class > 0:
			switch c {
			case '[':
				class++
			case ']':
				class--
			}
		case c == '[':
			class = 1
			// A ']' right after '[' or '[^' is a literal.
			if i+1 < len(pat) && pat[i+1] == '^' {
				i++
			}
			if i+1 < len(pat) && pat[i+1] == ']' {
				i++
			}
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == '|' && depth == 0:
			alts = append(alts, pat[start:i])
			start = i + 1
		}
	}
	if depth != 0 || class != 0 {
		return nil, fmt.Errorf("%w: unbalanced pattern %q", ErrInvalid, pat)
	}
	return append(alts, pat[start:]), nil
}

// translateOnig rewrites Oniguruma syntax that RE2 reads differently, and
// refuses what RE2 cannot do.
func translateOnig(pat string) (string, error) {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(pat); i++ {
		c := pat[i]
		switch {
		case c == '\\' && i+1 < len(pat):
			e := pat[i+1]
			i++
			switch e {
			case 's':
				if inClass {
					b.WriteString(onigSpaceClass)
				} else {
					b.WriteString("[" + onigSpaceClass + "]")
				}
			case 'S', 'W':
				if inClass {
					return "", fmt.Errorf("%w: \\%c inside a character class", ErrUnsupported, e)
				}
				cls := onigSpaceClass
				if e == 'W' {
					cls = onigWordClass
				}
				b.WriteString("[^" + cls + "]")
			case 'd':
				b.WriteString(onigDigitClass)
			case 'D':
				b.WriteString(`\P{Nd}`)
			case 'w':
				if inClass {
					b.WriteString(onigWordClass)
				} else {
					b.WriteString("[" + onigWordClass + "]")
				}
			case 'h', 'H', 'G', 'K', 'R', 'X', 'k', 'g':
				return "", fmt.Errorf("%w: \\%c", ErrUnsupported, e)
			case 'p', 'P', 'x':
				// \p{...}, \x{...}: copy through the closing brace.
				b.WriteByte('\\')
				b.WriteByte(e)
				if i+1 < len(pat) && pat[i+1] == '{' {
					j := strings.IndexByte(pat[i+1:], '}')
					if j < 0 {
						return "", fmt.Errorf("%w: unterminated \\%c{", ErrInvalid, e)
					}
					b.WriteString(pat[i+1 : i+2+j])
					i += 1 + j
				}
			default:
				if e >= '1' && e <= '9' && !inClass {
					return "", fmt.Errorf("%w: back-reference", ErrUnsupported)
				}
				b.WriteByte('\\')
				b.WriteByte(e)
			}
		case inClass:
			if c == '[' {
				return "", fmt.Errorf("%w: nested character class", ErrUnsupported)
			}
			if c == '&' && i+1 < len(pat) && pat[i+1] == '&' {
				return "", fmt.Errorf("%w: class intersection", ErrUnsupported)
			}
			if c == ']' {
				inClass = false
			}
			b.WriteByte(c)
		case c == '[':
			inClass = true
			b.WriteByte(c)
			if i+1 < len(pat) && pat[i+1] == '^' {
				b.WriteByte('^')
				i++
			}
			if i+1 < len(pat) && pat[i+1] == ']' {
				b.WriteString(`\]`)
				i++
			}
		case c == '(' && i+2 < len(pat) && pat[i+1] == '?':
			switch pat[i+2] {
			case '=', '!', '>', '<':
				// (?<name> is a named group in Oniguruma, RE2 spells it (?P<name>.
				if pat[i+2] == '<' && i+3 < len(pat) && pat[i+3] != '=' && pat[i+3] != '!' {
					b.WriteString("(?P<")
					i += 2
					continue
				}
				return "", fmt.Errorf("%w: look-around or atomic group", ErrUnsupported)
			}
			b.WriteByte(c)
		case (c == '+' || c == '?' || c == '*') && i+1 < len(pat) && pat[i+1] == '+':
			return "", fmt.Errorf("%w: possessive quantifier", ErrUnsupported)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// splitBehavior is what Split and friends do with the matched delimiters.
type splitBehavior int

const (
	splitRemoved splitBehavior = iota
	splitIsolated
	splitMergedWithPrevious
	splitMergedWithNext
	splitContiguous
)

func parseBehavior(s string) (splitBehavior, error) {
	switch s {
	case "Removed":
		return splitRemoved, nil
	case "Isolated":
		return splitIsolated, nil
	case "MergedWithPrevious":
		return splitMergedWithPrevious, nil
	case "MergedWithNext":
		return splitMergedWithNext, nil
	case "Contiguous":
		return splitContiguous, nil
	}
	return 0, fmt.Errorf("%w: split behavior %q", ErrInvalid, s)
}

// span is a piece of a string and whether it matched the delimiter.
type span struct {
	start, end int
	match      bool
}

// matchSpans covers s with alternating non-match and match spans, as the
// Rust Pattern::find_matches does (empty matches included).
func matchSpans(s string, matches [][2]int) []span {
	if s == "" {
		return []span{{0, 0, false}}
	}
	out := make([]span, 0, 2*len(matches)+1)
	prev := 0
	for _, m := range matches {
		if prev != m[0] {
			out = append(out, span{prev, m[0], false})
		}
		out = append(out, span{m[0], m[1], true})
		prev = m[1]
	}
	if prev != len(s) {
		out = append(out, span{prev, len(s), false})
	}
	return out
}

// runeSpans marks each rune of s for which is returns true as a match, as
// the Rust Pattern for Fn(char) -> bool does.
func runeSpans(s string, is func(rune) bool) []span {
	if s == "" {
		return []span{{0, 0, false}}
	}
	var out []span
	last := 0
	for i, r := range s {
		if is(r) {
			if last < i {
				out = append(out, span{last, i, false})
			}
			n := i + utf8.RuneLen(r)
			if r == utf8.RuneError && n > len(s) {
				n = len(s)
			}
			out = append(out, span{i, n, true})
			last = n
		}
	}
	if last < len(s) {
		out = append(out, span{last, len(s), false})
	}
	return out
}

// splitSpans applies a behavior to spans and returns the non-empty pieces.
func splitSpans(s string, spans []span, b splitBehavior) []string {
	type part struct {
		start, end int
		remove     bool
	}
	var parts []part
	switch b {
	case splitIsolated:
		for _, sp := range spans {
			parts = append(parts, part{sp.start, sp.end, false})
		}
	case splitRemoved:
		for _, sp := range spans {
			parts = append(parts, part{sp.start, sp.end, sp.match})
		}
	case splitContiguous:
		prev := false
		for i, sp := range spans {
			if i > 0 && sp.match == prev {
				parts[len(parts)-1].end = sp.end
			} else if i == 0 && sp.match == prev {
				parts = append(parts, part{sp.start, sp.end, false})
			} else {
				parts = append(parts, part{sp.start, sp.end, false})
			}
			prev = sp.match
		}
	case splitMergedWithPrevious:
		prev := false
		for _, sp := range spans {
			if sp.match && !prev && len(parts) > 0 {
				parts[len(parts)-1].end = sp.end
			} else {
				parts = append(parts, part{sp.start, sp.end, false})
			}
			prev = sp.match
		}
	case splitMergedWithNext:
		prev := false
		for i := len(spans) - 1; i >= 0; i-- {
			sp := spans[i]
			if sp.match && !prev && len(parts) > 0 {
				parts[len(parts)-1].start = sp.start
			} else {
				parts = append(parts, part{sp.start, sp.end, false})
			}
			prev = sp.match
		}
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
	}
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		if !p.remove && p.end > p.start {
			out = append(out, s[p.start:p.end])
		}
	}
	return out
}
