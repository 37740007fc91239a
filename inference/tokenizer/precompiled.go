package tokenizer

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/rivo/uniseg"
)

// precompiled is SentencePiece's normalization rule set as stored in a
// model's precompiled_charsmap: a little-endian uint32 trie size in bytes,
// the darts-clone double-array trie (uint32 units) that maps UTF-8 byte
// sequences to offsets, and a blob of NUL-terminated replacement strings.
type precompiled struct {
	units      []uint32
	normalized string
}

func parsePrecompiled(b64 string) (*precompiled, error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%w: precompiled_charsmap: %w", ErrInvalid, err)
	}
	return decodeCharsmap(raw)
}

func decodeCharsmap(raw []byte) (*precompiled, error) {
	if len(raw) < 4 {
		return nil, fmt.Errorf("%w: precompiled_charsmap of %d bytes", ErrInvalid, len(raw))
	}
	size := uint64(binary.LittleEndian.Uint32(raw))
	if size%4 != 0 || size == 0 || size > uint64(len(raw)-4) {
		return nil, fmt.Errorf("%w: precompiled_charsmap trie size %d of %d bytes", ErrInvalid, size, len(raw))
	}
	units := make([]uint32, size/4)
	for i := range units {
		units[i] = binary.LittleEndian.Uint32(raw[4+4*i:])
	}
	rest := raw[4+size:]
	if !utf8.Valid(rest) {
		return nil, fmt.Errorf("%w: precompiled_charsmap replacements are not UTF-8", ErrInvalid)
	}
	return &precompiled{units: units, normalized: string(rest)}, nil
}

// darts-clone unit layout.
func unitHasLeaf(u uint32) bool  { return (u>>8)&1 == 1 }
func unitValue(u uint32) uint32  { return u & (1<<31 - 1) }
func unitLabel(u uint32) uint32  { return u & (1<<31 | 0xFF) }
func unitOffset(u uint32) uint32 { return (u >> 10) << ((u & (1 << 9)) >> 6) }

// firstPrefix returns the value of the shortest key that is a prefix of
// key, as spm_precompiled's first_prefix_value does. Out-of-range positions
// (a damaged trie) end the search instead of panicking.
func (p *precompiled) firstPrefix(key string) (uint32, bool) {
	if len(p.units) == 0 {
		return 0, false
	}
	pos := uint64(unitOffset(p.units[0]))
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c == 0 {
			break
		}
		pos ^= uint64(c)
		if pos >= uint64(len(p.units)) {
			return 0, false
		}
		u := p.units[pos]
		if unitLabel(u) != uint32(c) {
			return 0, false
		}
		pos ^= uint64(unitOffset(u))
		if unitHasLeaf(u) {
			if pos >= uint64(len(p.units)) {
				return 0, false
			}
			return unitValue(p.units[pos]), true
		}
	}
	return 0, false
}

// transform is the replacement of the shortest rule that is a prefix of
// chunk; the caller replaces the whole chunk with it.
func (p *precompiled) transform(chunk string) (string, bool) {
	v, ok := p.firstPrefix(chunk)
	if !ok || uint64(v) > uint64(len(p.normalized)) {
		return "", false
	}
	tail := p.normalized[v:]
	if i := strings.IndexByte(tail, 0); i >= 0 {
		tail = tail[:i]
	}
	return tail, true
}

// normalize follows the Rust library (spm_precompiled's normalize_string):
// each grapheme cluster shorter than 6 bytes is looked up whole; otherwise,
// or when it has no rule, each character is looked up alone. This differs
// from SentencePiece's own longest-match normaliser on purpose: it is what
// the Python service runs.
func (p *precompiled) normalize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	g := uniseg.NewGraphemes(s)
	for g.Next() {
		gr := g.Str()
		if len(gr) < 6 {
			if rep, ok := p.transform(gr); ok {
				b.WriteString(rep)
				continue
			}
		}
		for i, r := range gr {
			n := utf8.RuneLen(r)
			if r == utf8.RuneError && (n < 0 || i+n > len(gr)) {
				n = 1
			}
			part := gr[i : i+n]
			if rep, ok := p.transform(part); ok {
				b.WriteString(rep)
			} else {
				b.WriteString(part)
			}
		}
	}
	return b.String()
}
