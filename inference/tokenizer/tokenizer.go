package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

var (
	// ErrInvalid: the tokenizer.json is malformed or inconsistent.
	ErrInvalid = errors.New("tokenizer: invalid tokenizer.json")
	// ErrUnsupported: the file uses a component or option this package
	// does not implement (rather than guess, it refuses to load).
	ErrUnsupported = errors.New("tokenizer: unsupported tokenizer.json component")
	// ErrPadToken: the requested pad token is not in the vocabulary.
	ErrPadToken = errors.New("tokenizer: pad token not in vocabulary")
)

// Encoding is the result of encoding one text.
type Encoding struct {
	IDs           []int32
	Tokens        []string
	AttentionMask []int32 // 1 for real tokens, 0 for padding
}

// Tokenizer encodes text as a tokenizer.json describes. It is immutable
// and safe for concurrent use (the model caches are locked).
type Tokenizer struct {
	norm   normalizer
	pre    preTokenizer
	model  model
	post   processor
	added  addedVocab
	nVocab int

	truncate  int  // max length with special tokens; 0: off
	truncLeft bool // cut from the left
	padLength int  // fixed length; 0: off
	padID     int32
	padToken  string
	padLeft   bool
}

// Load reads a tokenizer.json file.
func Load(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

type fileJSON struct {
	AddedTokens   []addedTokenJSON `json:"added_tokens"`
	Normalizer    json.RawMessage  `json:"normalizer"`
	PreTokenizer  json.RawMessage  `json:"pre_tokenizer"`
	PostProcessor json.RawMessage  `json:"post_processor"`
	Model         json.RawMessage  `json:"model"`
	Truncation    *struct {
		MaxLength int    `json:"max_length"`
		Direction string `json:"direction"`
	} `json:"truncation"`
	Padding *struct {
		Strategy  json.RawMessage `json:"strategy"`
		Direction string          `json:"direction"`
		PadID     int32           `json:"pad_id"`
		PadToken  string          `json:"pad_token"`
	} `json:"padding"`
}

type addedTokenJSON struct {
	ID         int32  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized *bool  `json:"normalized"`
	Special    bool   `json:"special"`
}

// Parse reads the contents of a tokenizer.json.
func Parse(data []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	t := &Tokenizer{}
	var err error
	if t.norm, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	if t.pre, err = parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, err
	}
	if t.post, err = parseProcessor(f.PostProcessor); err != nil {
		return nil, err
	}
	if t.model, err = parseModel(f.Model); err != nil {
		return nil, err
	}
	for _, id := range t.model.vocab() {
		if int(id) >= t.nVocab {
			t.nVocab = int(id) + 1
		}
	}
	if err := t.added.build(f.AddedTokens, t.model.vocab(), t.norm); err != nil {
		return nil, err
	}
	for _, a := range t.added.tokens {
		if int(a.id) >= t.nVocab {
			t.nVocab = int(a.id) + 1
		}
	}
	if f.Truncation != nil {
		t.truncate = f.Truncation.MaxLength
		t.truncLeft = f.Truncation.Direction == "Left"
	}
	if p := f.Padding; p != nil {
		var fixed struct {
			Fixed int `json:"Fixed"`
		}
		if json.Unmarshal(p.Strategy, &fixed) == nil && fixed.Fixed > 0 {
			t.padLength = fixed.Fixed
			t.padID, t.padToken = p.PadID, p.PadToken
			t.padLeft = p.Direction == "Left"
		}
	}
	return t, nil
}

func parseModel(raw json.RawMessage) (model, error) {
	if isNull(raw) {
		return nil, fmt.Errorf("%w: no model", ErrInvalid)
	}
	var head struct {
		Type   string          `json:"type"`
		Vocab  json.RawMessage `json:"vocab"`
		Merges json.RawMessage `json:"merges"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("%w: model: %w", ErrInvalid, err)
	}
	typ := head.Type
	if typ == "" {
		// Files from old versions of the library have no type; the
		// shape of the vocabulary tells.
		switch {
		case strings.HasPrefix(strings.TrimSpace(string(head.Vocab)), "["):
			typ = "Unigram"
		case head.Merges != nil:
			typ = "BPE"
		default:
			typ = "WordPiece"
		}
	}
	switch typ {
	case "BPE":
		return parseBPE(raw)
	case "Unigram":
		return parseUnigram(raw)
	case "WordPiece":
		return parseWordPiece(raw)
	}
	return nil, fmt.Errorf("%w: model type %q", ErrUnsupported, typ)
}

// WithFixedLength returns a copy that truncates every encoding to length
// ids (special tokens included) and pads shorter ones to length with
// padToken, as Immich sets up its CLIP tokenizers (enable_truncation and
// enable_padding). The pad token must be in the vocabulary.
func (t *Tokenizer) WithFixedLength(length int, padToken string) (*Tokenizer, error) {
	if length <= 0 {
		return nil, fmt.Errorf("%w: context length %d", ErrInvalid, length)
	}
	if t.post != nil && t.post.added() >= length {
		return nil, fmt.Errorf("%w: context length %d leaves no room beside %d special tokens", ErrInvalid, length, t.post.added())
	}
	id, ok := t.TokenToID(padToken)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrPadToken, padToken)
	}
	c := *t
	c.truncate, c.truncLeft = length, false
	c.padLength, c.padID, c.padToken, c.padLeft = length, id, padToken, false
	return &c, nil
}

// TokenToID looks a token up among the added tokens, then in the model's
// vocabulary.
func (t *Tokenizer) TokenToID(tok string) (int32, bool) {
	if id, ok := t.added.ids[tok]; ok {
		return id, true
	}
	id, ok := t.model.vocab()[tok]
	return id, ok
}

// VocabSize is one more than the largest id the tokenizer can produce.
func (t *Tokenizer) VocabSize() int { return t.nVocab }

// Encode encodes text, adding the post-processor's special tokens when
// addSpecialTokens is set (Python's encode() default), then truncating and
// padding as configured.
func (t *Tokenizer) Encode(text string, addSpecialTokens bool) (Encoding, error) {
	text = strings.ToValidUTF8(text, "\uFFFD")
	max := -1 // ids kept by truncation; -1: all
	if t.truncate > 0 {
		max = t.truncate
		if addSpecialTokens && t.post != nil {
			max -= t.post.added()
		}
		if max < 0 {
			max = 0
		}
	}
	// With truncation on the right, the model stops once it has produced
	// the ids that are kept: a piece's tokens never depend on the pieces
	// after it, so the result is the same, and a long text costs the
	// normalizer and the pre-tokenizer only.
	full := func(ids []int32) bool { return max >= 0 && !t.truncLeft && len(ids) >= max }
	var ids []int32
	var toks []string
	segs := t.segments(text)
	for _, seg := range segs {
		if full(ids) {
			break
		}
		if seg.id >= 0 {
			ids = append(ids, seg.id)
			toks = append(toks, seg.s)
			continue
		}
		pieces := []piece{{s: seg.s, atStart: seg.atStart}}
		if t.pre != nil {
			pieces = applyPre(t.pre, pieces)
		}
		for _, p := range pieces {
			if full(ids) {
				break
			}
			ts, err := t.model.tokenize(p.s)
			if err != nil {
				return Encoding{}, err
			}
			for _, tk := range ts {
				ids = append(ids, tk.id)
				toks = append(toks, tk.value)
			}
		}
	}

	if max >= 0 {
		if len(ids) > max {
			if t.truncLeft {
				ids, toks = ids[len(ids)-max:], toks[len(toks)-max:]
			} else {
				ids, toks = ids[:max], toks[:max]
			}
		}
	}
	if addSpecialTokens && t.post != nil {
		ids, toks = t.post.process(ids, toks)
	}
	mask := make([]int32, len(ids))
	for i := range mask {
		mask[i] = 1
	}
	if n := t.padLength - len(ids); n > 0 {
		padIDs := make([]int32, n)
		padToks := make([]string, n)
		for i := range padIDs {
			padIDs[i], padToks[i] = t.padID, t.padToken
		}
		zeros := make([]int32, n)
		if t.padLeft {
			ids, toks, mask = append(padIDs, ids...), append(padToks, toks...), append(zeros, mask...)
		} else {
			ids, toks, mask = append(ids, padIDs...), append(toks, padToks...), append(mask, zeros...)
		}
	}
	return Encoding{IDs: ids, Tokens: toks, AttentionMask: mask}, nil
}

// segment is a part of the text: an added token (id >= 0) or text for the
// model (id < 0), normalized.
type segment struct {
	s       string
	id      int32
	atStart bool
}

// segments extracts the added tokens: first those matched on the raw text
// (normalized: false), then, after normalizing each remaining part, those
// matched on normalized text, as AddedVocabulary::extract_and_normalize.
func (t *Tokenizer) segments(text string) []segment {
	var out []segment
	for _, raw := range t.added.split(text, false, true) {
		if raw.id >= 0 {
			out = append(out, raw)
			continue
		}
		s := raw.s
		if t.norm != nil {
			s = t.norm.normalize(s)
		}
		for _, n := range t.added.split(s, true, raw.atStart) {
			if n.s != "" {
				out = append(out, n)
			}
		}
	}
	return out
}

// addedVocab holds the added tokens and matches them in text.
type addedVocab struct {
	tokens []addedToken
	ids    map[string]int32
	// byFirst[b] lists the indices of the patterns starting with byte b,
	// longest first.
	byFirst [2][256][]int
}

type addedToken struct {
	addedTokenJSON
	id      int32
	pattern string // content, normalized when Normalized
	norm    bool
}

func (v *addedVocab) build(list []addedTokenJSON, vocab map[string]int32, n normalizer) error {
	v.ids = make(map[string]int32, len(list))
	for _, a := range list {
		if a.Content == "" {
			continue
		}
		id := a.ID
		if mid, ok := vocab[a.Content]; ok {
			id = mid // the Rust library takes the model's id when there is one
		}
		if id < 0 {
			return fmt.Errorf("%w: added token %q has id %d", ErrInvalid, a.Content, id)
		}
		normalized := !a.Special
		if a.Normalized != nil {
			normalized = *a.Normalized
		}
		pat := a.Content
		if normalized && n != nil {
			pat = n.normalize(a.Content)
		}
		v.ids[a.Content] = id
		if pat == "" {
			continue
		}
		v.tokens = append(v.tokens, addedToken{addedTokenJSON: a, id: id, pattern: pat, norm: normalized})
	}
	for i, a := range v.tokens {
		k := 0
		if a.norm {
			k = 1
		}
		b := a.pattern[0]
		v.byFirst[k][b] = append(v.byFirst[k][b], i)
	}
	for k := range v.byFirst {
		for b := range v.byFirst[k] {
			l := v.byFirst[k][b]
			sort.SliceStable(l, func(i, j int) bool { return len(v.tokens[l[i]].pattern) > len(v.tokens[l[j]].pattern) })
		}
	}
	return nil
}

// split cuts s at the added tokens of one kind (normalized or not),
// leftmost-longest, honouring single_word, lstrip and rstrip.
func (v *addedVocab) split(s string, normalized, atStart bool) []segment {
	k := 0
	if normalized {
		k = 1
	}
	var out []segment
	last := 0 // end of the previous split
	for i := 0; i < len(s); {
		idx := -1
		for _, j := range v.byFirst[k][s[i]] {
			if strings.HasPrefix(s[i:], v.tokens[j].pattern) {
				idx = j
				break
			}
		}
		if idx < 0 {
			i++
			continue
		}
		a := v.tokens[idx]
		start, stop := i, i+len(a.pattern)
		i = stop
		if a.SingleWord {
			startOK := start == 0 || !endsWithWord(s[:start])
			stopOK := stop == len(s) || !startsWithWord(s[stop:])
			if !startOK || !stopOK {
				continue
			}
		}
		if a.LStrip {
			ns := len(strings.TrimRightFunc(s[:start], unicode.IsSpace))
			start = max(ns, last)
		}
		if a.RStrip {
			stop = len(s) - len(strings.TrimLeftFunc(s[stop:], unicode.IsSpace))
			i = stop
		}
		if last < start {
			out = append(out, segment{s: s[last:start], id: -1, atStart: atStart && last == 0})
		}
		out = append(out, segment{s: s[start:stop], id: a.id})
		last = stop
	}
	if last < len(s) || len(out) == 0 {
		out = append(out, segment{s: s[last:], id: -1, atStart: atStart && last == 0})
	}
	return out
}

// isWordRune is the Rust regex crate's Unicode \w.
func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.Is(unicode.Nd, r) ||
		unicode.Is(unicode.Pc, r) || unicode.Is(unicode.Nl, r) || r == 0x200C || r == 0x200D
}

func endsWithWord(s string) bool {
	r, n := utf8.DecodeLastRuneInString(s)
	return n > 0 && isWordRune(r)
}

func startsWithWord(s string) bool {
	for _, r := range s {
		return isWordRune(r)
	}
	return false
}
