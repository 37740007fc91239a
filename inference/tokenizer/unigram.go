package tokenizer

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"unicode/utf8"
)

// unkPenalty is how much worse than the worst piece an unknown character
// scores (K_UNK_PENALTY).
const unkPenalty = 10.0

// unigram is SentencePiece's unigram model: the Viterbi segmentation that
// maximises the sum of piece scores, as the Rust library's
// encode_optimized computes it.
type unigram struct {
	pieces       []string
	scores       []float64
	ids          map[string]int32
	unkID        int32 // -1: none
	byteFallback bool
	minScore     float64
	byteIDs      [256]int32
	// sorted holds the piece indices ordered by bytes: a compact trie for
	// common-prefix search (no per-node maps for 250k pieces).
	sorted []int32
	cache  wordCache[[]string]
}

func parseUnigram(raw json.RawMessage) (*unigram, error) {
	var v struct {
		Vocab        [][2]json.RawMessage `json:"vocab"`
		UnkID        *int                 `json:"unk_id"`
		ByteFallback bool                 `json:"byte_fallback"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%w: Unigram model: %w", ErrInvalid, err)
	}
	m := &unigram{
		pieces:       make([]string, len(v.Vocab)),
		scores:       make([]float64, len(v.Vocab)),
		ids:          make(map[string]int32, len(v.Vocab)),
		unkID:        -1,
		byteFallback: v.ByteFallback,
		minScore:     math.Inf(1),
	}
	for i, e := range v.Vocab {
		if err := json.Unmarshal(e[0], &m.pieces[i]); err != nil {
			return nil, fmt.Errorf("%w: Unigram piece %d: %w", ErrInvalid, i, err)
		}
		if err := json.Unmarshal(e[1], &m.scores[i]); err != nil {
			return nil, fmt.Errorf("%w: Unigram score %d: %w", ErrInvalid, i, err)
		}
		m.ids[m.pieces[i]] = int32(i)
		if m.scores[i] < m.minScore {
			m.minScore = m.scores[i]
		}
	}
	if v.UnkID != nil {
		if len(v.Vocab) == 0 {
			return nil, fmt.Errorf("%w: Unigram vocabulary is empty", ErrInvalid)
		}
		if *v.UnkID < 0 || *v.UnkID >= len(v.Vocab) {
			return nil, fmt.Errorf("%w: Unigram unk_id %d outside the vocabulary", ErrInvalid, *v.UnkID)
		}
		m.unkID = int32(*v.UnkID)
	}
	for b := range m.byteIDs {
		m.byteIDs[b] = -1
		if id, ok := m.ids[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteIDs[b] = id
		}
	}
	m.sorted = make([]int32, 0, len(m.pieces))
	for i, p := range m.pieces {
		// Duplicates: the map (and so the Rust trie lookup) keeps the last.
		if p != "" && m.ids[p] == int32(i) {
			m.sorted = append(m.sorted, int32(i))
		}
	}
	sort.Slice(m.sorted, func(a, b int) bool { return m.pieces[m.sorted[a]] < m.pieces[m.sorted[b]] })
	return m, nil
}

func (m *unigram) vocab() map[string]int32 { return m.ids }

// prefixes calls f(id, length) for every piece that is a prefix of s,
// shortest first (the order the Rust trie yields them in).
func (m *unigram) prefixes(s string, f func(id int32, n int)) {
	lo, hi := 0, len(m.sorted)
	for k := 0; k < len(s) && lo < hi; k++ {
		c := s[k]
		// Narrow [lo,hi) to the pieces whose byte k is c; all share s[:k].
		lo = lo + sort.Search(hi-lo, func(i int) bool {
			p := m.pieces[m.sorted[lo+i]]
			return len(p) > k && p[k] >= c
		})
		hi = lo + sort.Search(hi-lo, func(i int) bool {
			p := m.pieces[m.sorted[lo+i]]
			return len(p) > k && p[k] > c
		})
		if lo < hi {
			if id := m.sorted[lo]; len(m.pieces[id]) == k+1 {
				f(id, k+1)
			}
		}
	}
}

// encode segments s into piece strings, fusing runs of unknown characters.
func (m *unigram) encode(s string) ([]string, error) {
	type node struct {
		id     int32
		score  float64
		starts int // -1: unreached
	}
	unkScore := m.minScore - unkPenalty
	best := make([]node, len(s)+1)
	for i := range best {
		best[i].starts = -1
	}
	for start := 0; start < len(s); {
		here := best[start].score
		_, mblen := utf8.DecodeRuneInString(s[start:])
		single := false
		m.prefixes(s[start:], func(id int32, n int) {
			t := &best[start+n]
			cand := m.scores[id] + here
			if t.starts < 0 || cand > t.score {
				*t = node{id: id, score: cand, starts: start}
			}
			if n == mblen {
				single = true
			}
		})
		if !single {
			if m.unkID < 0 {
				return nil, fmt.Errorf("%w: unknown character but no unk_id", ErrInvalid)
			}
			t := &best[start+mblen]
			cand := unkScore + here
			if t.starts < 0 || cand > t.score {
				*t = node{id: m.unkID, score: cand, starts: start}
			}
		}
		start += mblen
	}
	var out []string
	unkEnd := -1 // end of the run of unknown pieces being fused
	for end := len(s); end > 0; {
		n := best[end]
		if n.starts < 0 {
			return nil, fmt.Errorf("%w: unigram lattice has no path", ErrInvalid)
		}
		if m.unkID >= 0 && n.id == m.unkID {
			if unkEnd < 0 {
				unkEnd = end
			}
		} else {
			if unkEnd >= 0 {
				out = append(out, s[end:unkEnd])
				unkEnd = -1
			}
			out = append(out, s[n.starts:end])
		}
		end = n.starts
	}
	if unkEnd >= 0 {
		out = append(out, s[:unkEnd])
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

func (m *unigram) tokenize(s string) ([]token, error) {
	if s == "" {
		return nil, nil
	}
	strs, ok := m.cache.get(s)
	if !ok {
		var err error
		if strs, err = m.encode(s); err != nil {
			return nil, err
		}
		m.cache.put(s, strs)
	}
	out := make([]token, 0, len(strs))
	for _, str := range strs {
		if id, ok := m.ids[str]; ok {
			out = append(out, token{id, str})
			continue
		}
		if m.byteFallback {
			all := true
			for i := 0; i < len(str); i++ {
				if m.byteIDs[str[i]] < 0 {
					all = false
					break
				}
			}
			if all {
				for i := 0; i < len(str); i++ {
					out = append(out, token{m.byteIDs[str[i]], fmt.Sprintf("<0x%02X>", str[i])})
				}
				continue
			}
		}
		if m.unkID < 0 {
			return nil, fmt.Errorf("%w: unknown piece but no unk_id", ErrInvalid)
		}
		out = append(out, token{m.unkID, str})
	}
	return out, nil
}

// wordPiece is BERT's greedy longest-match-first model (LaBSE).
type wordPiece struct {
	ids      map[string]int32
	unk      string
	prefix   string
	maxChars int
	// maxLen is the longest vocabulary entry in bytes: no match can be
	// longer, so the greedy search starts there rather than at the end of
	// the word (which would be quadratic in a long word when
	// max_input_chars_per_word allows one).
	maxLen int
}

func parseWordPiece(raw json.RawMessage) (*wordPiece, error) {
	v := struct {
		Vocab    map[string]int32 `json:"vocab"`
		Unk      string           `json:"unk_token"`
		Prefix   string           `json:"continuing_subword_prefix"`
		MaxChars int              `json:"max_input_chars_per_word"`
	}{Unk: "[UNK]", Prefix: "##", MaxChars: 100}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%w: WordPiece model: %w", ErrInvalid, err)
	}
	if v.Vocab == nil {
		return nil, fmt.Errorf("%w: WordPiece model without vocab", ErrInvalid)
	}
	m := &wordPiece{ids: v.Vocab, unk: v.Unk, prefix: v.Prefix, maxChars: v.MaxChars}
	for tok := range v.Vocab {
		m.maxLen = max(m.maxLen, len(tok))
	}
	return m, nil
}

func (m *wordPiece) vocab() map[string]int32 { return m.ids }

func (m *wordPiece) tokenize(s string) ([]token, error) {
	unk := func() ([]token, error) {
		id, ok := m.ids[m.unk]
		if !ok {
			return nil, fmt.Errorf("%w: WordPiece unk_token %q not in vocabulary", ErrInvalid, m.unk)
		}
		return []token{{id, m.unk}}, nil
	}
	if utf8.RuneCountInString(s) > m.maxChars {
		return unk()
	}
	var out []token
	for start := 0; start < len(s); {
		end := min(len(s), start+m.maxLen)
		for end > start && end < len(s) && !utf8.RuneStart(s[end]) {
			end-- // back to a character boundary
		}
		found := false
		for start < end {
			sub := s[start:end]
			if start > 0 {
				sub = m.prefix + sub
			}
			if id, ok := m.ids[sub]; ok {
				out = append(out, token{id, sub})
				found = true
				break
			}
			_, n := utf8.DecodeLastRuneInString(s[start:end])
			end -= n
		}
		if !found {
			return unk()
		}
		start = end
	}
	return out, nil
}
