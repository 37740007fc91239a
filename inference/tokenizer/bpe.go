package tokenizer

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// token is a model's output for one piece.
type token struct {
	id    int32
	value string
}

// model turns one pre-tokenized piece into tokens.
type model interface {
	tokenize(s string) ([]token, error)
	vocab() map[string]int32
}

// Word caches, as in the Rust library: words shorter than cacheMaxLen
// bytes, at most cacheCapacity of them (then the cache stops growing).
const (
	cacheCapacity = 10000
	cacheMaxLen   = 256
)

type wordCache[V any] struct {
	mu sync.RWMutex
	m  map[string]V
}

func (c *wordCache[V]) get(k string) (V, bool) {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	return v, ok
}

func (c *wordCache[V]) put(k string, v V) {
	if len(k) >= cacheMaxLen {
		return
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]V)
	}
	if len(c.m) < cacheCapacity {
		c.m[k] = v
	}
	c.mu.Unlock()
}

type pair struct{ a, b int32 }

type merge struct {
	rank int32
	id   int32
}

// bpe is the BPE model: a vocabulary and ranked merges, with the options
// of the Rust implementation.
type bpe struct {
	ids         map[string]int32
	tokens      map[int32]string
	merges      map[pair]merge
	unk         *string
	prefix      *string // continuing_subword_prefix
	suffix      *string // end_of_word_suffix
	fuseUnk     bool
	byteFalback bool
	ignoreMerge bool
	byteIDs     [256]int32 // ids of "<0xXX>" when byteFalback, -1 if absent
	cache       wordCache[[]token]
}

type bpeJSON struct {
	Vocab        map[string]int32  `json:"vocab"`
	Merges       []json.RawMessage `json:"merges"`
	UnkToken     *string           `json:"unk_token"`
	Prefix       *string           `json:"continuing_subword_prefix"`
	Suffix       *string           `json:"end_of_word_suffix"`
	FuseUnk      *bool             `json:"fuse_unk"`
	ByteFallback *bool             `json:"byte_fallback"`
	IgnoreMerges *bool             `json:"ignore_merges"`
	Dropout      *float64          `json:"dropout"`
}

func parseBPE(raw json.RawMessage) (*bpe, error) {
	var v bpeJSON
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%w: BPE model: %w", ErrInvalid, err)
	}
	if v.Vocab == nil {
		return nil, fmt.Errorf("%w: BPE model without vocab", ErrInvalid)
	}
	if v.Dropout != nil && *v.Dropout != 0 {
		return nil, fmt.Errorf("%w: BPE dropout %v (not deterministic)", ErrUnsupported, *v.Dropout)
	}
	m := &bpe{
		ids:    v.Vocab,
		tokens: make(map[int32]string, len(v.Vocab)),
		merges: make(map[pair]merge, len(v.Merges)),
		unk:    v.UnkToken,
		prefix: v.Prefix,
		suffix: v.Suffix,
	}
	for t, id := range v.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("%w: BPE token %q has id %d", ErrInvalid, t, id)
		}
		m.tokens[id] = t
	}
	if v.FuseUnk != nil {
		m.fuseUnk = *v.FuseUnk
	}
	if v.ByteFallback != nil {
		m.byteFalback = *v.ByteFallback
	}
	if v.IgnoreMerges != nil {
		m.ignoreMerge = *v.IgnoreMerges
	}
	for b := range m.byteIDs {
		m.byteIDs[b] = -1
		if id, ok := v.Vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteIDs[b] = id
		}
	}
	prefixLen := 0
	if m.prefix != nil {
		prefixLen = len(*m.prefix)
	}
	for rank, r := range v.Merges {
		a, b, err := parseMerge(r)
		if err != nil {
			return nil, fmt.Errorf("%w: merge %d: %w", ErrInvalid, rank+1, err)
		}
		ia, ok1 := v.Vocab[a]
		ib, ok2 := v.Vocab[b]
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: merge %q %q: token out of vocabulary", ErrInvalid, a, b)
		}
		if len(b) < prefixLen {
			return nil, fmt.Errorf("%w: merge %q %q: shorter than continuing_subword_prefix", ErrInvalid, a, b)
		}
		id, ok := v.Vocab[a+b[prefixLen:]]
		if !ok {
			return nil, fmt.Errorf("%w: merge %q %q: merged token out of vocabulary", ErrInvalid, a, b)
		}
		// A repeated pair keeps its last rank, as the Rust HashMap does.
		m.merges[pair{ia, ib}] = merge{rank: int32(rank), id: id}
	}
	return m, nil
}

// parseMerge reads a merge as "a b" (legacy) or ["a", "b"].
func parseMerge(r json.RawMessage) (string, string, error) {
	var s string
	if err := json.Unmarshal(r, &s); err == nil {
		parts := strings.Split(s, " ")
		if len(parts) != 2 {
			return "", "", fmt.Errorf("%q is not two tokens", s)
		}
		return parts[0], parts[1], nil
	}
	var p []string
	if err := json.Unmarshal(r, &p); err != nil || len(p) != 2 {
		return "", "", fmt.Errorf("not a pair: %s", r)
	}
	return p[0], p[1], nil
}

func (m *bpe) vocab() map[string]int32 { return m.ids }

// symbol is a node of the doubly linked list a word is merged on.
type symbol struct {
	id         int32
	prev, next int
	size       int // bytes of the original word, 0 once merged away
}

type mergeItem struct {
	pos  int
	rank int32
	id   int32
}

type mergeQueue []mergeItem

func (q mergeQueue) Len() int { return len(q) }
func (q mergeQueue) Less(i, j int) bool {
	if q[i].rank != q[j].rank {
		return q[i].rank < q[j].rank
	}
	return q[i].pos < q[j].pos
}
func (q mergeQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *mergeQueue) Push(x any)   { *q = append(*q, x.(mergeItem)) }
func (q *mergeQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

func (m *bpe) tokenize(s string) ([]token, error) {
	if s == "" {
		return nil, nil
	}
	if m.ignoreMerge {
		if id, ok := m.ids[s]; ok {
			return []token{{id, s}}, nil
		}
	}
	if t, ok := m.cache.get(s); ok {
		return t, nil
	}
	syms, err := m.symbols(s)
	if err != nil {
		return nil, err
	}
	m.mergeAll(syms)
	out := make([]token, 0, len(syms))
	for _, sy := range syms {
		if sy.size == 0 {
			continue
		}
		out = append(out, token{sy.id, m.tokens[sy.id]})
	}
	m.cache.put(s, out)
	return out, nil
}

// symbols splits a word into characters (with prefix and suffix), looks
// each up, and falls back to bytes or to the unknown token (fused when
// fuse_unk is set), as BPE::merge_word does.
func (m *bpe) symbols(w string) ([]symbol, error) {
	syms := make([]symbol, 0, len(w))
	add := func(id int32, size int) {
		syms = append(syms, symbol{id: id, prev: len(syms) - 1, next: len(syms) + 1, size: size})
	}
	unkID, unkLen, haveUnk := int32(0), 0, false
	for i, r := range w {
		end := i + utf8.RuneLen(r) // the text is valid UTF-8 here
		c := w[i:end]
		size := len(c)
		if i > 0 && m.prefix != nil {
			c = *m.prefix + c
		}
		if end == len(w) && m.suffix != nil {
			c += *m.suffix
		}
		if id, ok := m.ids[c]; ok {
			if haveUnk {
				add(unkID, unkLen)
				haveUnk = false
			}
			add(id, size)
			continue
		}
		if m.byteFalback {
			all := true
			for j := 0; j < len(c); j++ {
				if m.byteIDs[c[j]] < 0 {
					all = false
					break
				}
			}
			if all {
				// Rust adds these without flushing a pending unknown
				// token, which then lands after them; kept as is.
				for j := 0; j < len(c); j++ {
					add(m.byteIDs[c[j]], 1)
				}
				continue
			}
		}
		if m.unk != nil {
			id, ok := m.ids[*m.unk]
			if !ok {
				return nil, fmt.Errorf("%w: unk_token %q not in vocabulary", ErrInvalid, *m.unk)
			}
			switch {
			case haveUnk && m.fuseUnk:
				unkLen += size
			case haveUnk:
				add(unkID, unkLen)
				unkID, unkLen = id, size
			default:
				unkID, unkLen, haveUnk = id, size, true
			}
		}
	}
	if haveUnk {
		add(unkID, unkLen)
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	return syms, nil
}

// mergeAll applies merges lowest rank first, leftmost first among equal
// ranks, as Word::merge_all does.
func (m *bpe) mergeAll(syms []symbol) {
	q := make(mergeQueue, 0, len(syms))
	for i := 0; i+1 < len(syms); i++ {
		if mg, ok := m.merges[pair{syms[i].id, syms[i+1].id}]; ok {
			q = append(q, mergeItem{pos: i, rank: mg.rank, id: mg.id})
		}
	}
	heap.Init(&q)
	for q.Len() > 0 {
		top := heap.Pop(&q).(mergeItem)
		cur := &syms[top.pos]
		if cur.size == 0 || cur.next == -1 {
			continue
		}
		nextPos := cur.next
		right := syms[nextPos]
		mg, ok := m.merges[pair{cur.id, right.id}]
		if !ok || mg.id != top.id {
			continue // stale entry
		}
		cur.id = top.id
		cur.size += right.size
		cur.next = right.next
		syms[nextPos].size = 0
		if right.next >= 0 && right.next < len(syms) {
			syms[right.next].prev = top.pos
		}
		if cur.prev >= 0 {
			if mg, ok := m.merges[pair{syms[cur.prev].id, cur.id}]; ok {
				heap.Push(&q, mergeItem{pos: cur.prev, rank: mg.rank, id: mg.id})
			}
		}
		if cur.next >= 0 && cur.next < len(syms) {
			if mg, ok := m.merges[pair{cur.id, syms[cur.next].id}]; ok {
				heap.Push(&q, mergeItem{pos: top.pos, rank: mg.rank, id: mg.id})
			}
		}
	}
}
