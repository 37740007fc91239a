package clip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/tokenizer"
	"github.com/mlserve/mlserve/onnx"
)

// Sessions loads ONNX models (inference.Runtime implements it).
type Sessions interface {
	NewSession(path string, o inference.SessionOptions) (*inference.Session, error)
}

// ErrTokenizer: the model folder's tokenizer files (tokenizer.json,
// tokenizer_config.json, or the text settings of config.json) are missing
// or unusable, or the pad token is not in the vocabulary. Errors from a
// missing file also wrap fs.ErrNotExist.
var ErrTokenizer = errors.New("clip: bad tokenizer files")

// TextualOptions adjust LoadTextual.
type TextualOptions struct {
	// Name is the cleaned model name (e.g. "nllb-clip-base-siglip__v1");
	// names starting with "nllb" get the FLORES-200 language prefix.
	Name string
	// Session is passed to Sessions.NewSession; its CacheDir defaults to
	// <dir>/textual, so that OpenVINO's cache lands in
	// <dir>/textual/openvino as Immich's does (the runtime appends
	// "openvino").
	Session inference.SessionOptions
}

// Textual is a loaded CLIP text encoder: tokenizer plus ONNX session.
// Embed is safe for concurrent use.
type Textual struct {
	name         string
	session      *inference.Session
	tok          *tokenizer.Tokenizer
	context      int
	canonicalize bool
	nllb         bool
	mclip        bool // inputs input_ids + attention_mask
	int64IDs     bool // the graph declares int64 ids (Immich's are int32)
	dynamicBatch bool // the ids' first dimension is dynamic
	dim          int
	logger       *slog.Logger
}

// textualConfig is the part of open_clip's config.json the text side reads.
type textualConfig struct {
	EmbedDim int `json:"embed_dim"`
	TextCfg  *struct {
		ContextLength   *int `json:"context_length"`
		TokenizerKwargs *struct {
			Clean *string `json:"clean"`
		} `json:"tokenizer_kwargs"`
	} `json:"text_cfg"`
}

// LoadTextual loads the text encoder of the model folder dir
// (<cache>/clip/<name>): config.json, textual/model.onnx,
// textual/tokenizer.json and textual/tokenizer_config.json.
func LoadTextual(dir string, sessions Sessions, opts TextualOptions, logger *slog.Logger) (*Textual, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Textual{name: opts.Name, context: 77, logger: logger, nllb: strings.HasPrefix(opts.Name, "nllb")}

	var cfg textualConfig
	if err := textualReadJSON(filepath.Join(dir, "config.json"), &cfg); err != nil {
		return nil, err
	}
	if cfg.TextCfg == nil {
		// Immich indexes model_cfg["text_cfg"] and fails the same way.
		return nil, fmt.Errorf("%w: %s has no text_cfg", ErrTokenizer, filepath.Join(dir, "config.json"))
	}
	if cl := cfg.TextCfg.ContextLength; cl != nil {
		if *cl <= 0 || *cl > 1<<16 {
			return nil, fmt.Errorf("%w: context_length %d", ErrTokenizer, *cl)
		}
		t.context = *cl
	}
	if k := cfg.TextCfg.TokenizerKwargs; k != nil && k.Clean != nil {
		t.canonicalize = *k.Clean == "canonicalize"
	}

	textual := filepath.Join(dir, "textual")
	var tokCfg struct {
		PadToken json.RawMessage `json:"pad_token"`
	}
	if err := textualReadJSON(filepath.Join(textual, "tokenizer_config.json"), &tokCfg); err != nil {
		return nil, err
	}
	pad, err := textualPadToken(tokCfg.PadToken)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrTokenizer, filepath.Join(textual, "tokenizer_config.json"), err)
	}
	tok, err := tokenizer.Load(filepath.Join(textual, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenizer, err)
	}
	if t.tok, err = tok.WithFixedLength(t.context, pad); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenizer, err)
	}

	so := opts.Session
	if so.CacheDir == "" {
		so.CacheDir = textual
	}
	s, err := sessions.NewSession(filepath.Join(textual, "model.onnx"), so)
	if err != nil {
		return nil, err
	}
	if err := t.bind(s, cfg.EmbedDim); err != nil {
		_ = s.Close()
		return nil, err
	}
	t.session = s
	logger.Debug("loaded CLIP textual model", "model", opts.Name, "context", t.context,
		"canonicalize", t.canonicalize, "mclip", t.mclip, "provider", s.Provider(), "dim", t.dim)
	return t, nil
}

// bind checks the graph's inputs (OpenCLIP "text", or M-CLIP "input_ids"
// and "attention_mask") and finds the embedding size.
func (t *Textual) bind(s *inference.Session, embedDim int) error {
	in := s.Inputs()
	names := make([]string, len(in))
	for i, v := range in {
		names[i] = v.Name
	}
	switch {
	case slices.Equal(names, []string{"text"}):
	case slices.Equal(names, []string{"input_ids", "attention_mask"}):
		t.mclip = true
	default:
		return fmt.Errorf("%w: %s: textual model inputs %v, want [text] or [input_ids attention_mask]",
			inference.ErrInput, s.Path(), names)
	}
	for _, v := range in {
		switch v.Type {
		case onnx.Int32, onnx.Undefined:
		case onnx.Int64:
			t.int64IDs = true
		default:
			return fmt.Errorf("%w: %s: input %s is %s, want int32", inference.ErrInput, s.Path(), v.Name, v.Type)
		}
		if len(v.Dims) == 0 || (len(v.Dims) == 2 && v.Dims[0].Dynamic()) {
			t.dynamicBatch = true
		}
		if len(v.Dims) == 2 && !v.Dims[1].Dynamic() && int(v.Dims[1].Value) != t.context {
			return fmt.Errorf("%w: %s: input %s takes %d tokens, config.json says %d",
				inference.ErrInput, s.Path(), v.Name, v.Dims[1].Value, t.context)
		}
	}
	t.dim = embedDim
	if out := s.Outputs(); len(out) > 0 {
		if d := out[0].Dims; len(d) > 0 && !d[len(d)-1].Dynamic() {
			t.dim = int(d[len(d)-1].Value)
		}
	}
	return nil
}

// Embed returns the text's embedding (L2-normalised by the graph). For
// nllb models, language (a Weblate code such as "de" or "pt-BR", or "")
// selects the FLORES-200 prefix.
func (t *Textual) Embed(ctx context.Context, text, language string) ([]float32, error) {
	ids, mask, err := t.Tokenize(text, language)
	if err != nil {
		return nil, err
	}
	out, err := t.EmbedTokens(ctx, ids, mask, 1)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// Tokenize is the CPU half of Embed: the token ids and attention mask
// (ContextLength values each) of a text, as Immich cleans and tokenizes it.
func (t *Textual) Tokenize(text, language string) (ids, mask []int32, err error) {
	return t.tokenize(text, language)
}

// DynamicBatch tells whether the graph's batch dimension is dynamic. When
// it is not, EmbedTokens takes one text at a time.
func (t *Textual) DynamicBatch() bool { return t.dynamicBatch }

// EmbedTokens is the model half of Embed: it runs n tokenized texts (ids
// and masks from Tokenize, concatenated: n×ContextLength values each) and
// returns their embeddings. Texts of any requests may run together; each
// embedding depends only on its own text.
func (t *Textual) EmbedTokens(ctx context.Context, ids, mask []int32, n int) ([][]float32, error) {
	if n <= 0 || len(ids) != n*t.context || (t.mclip && len(mask) != n*t.context) {
		return nil, fmt.Errorf("%w: clip: %s: %d ids and %d mask values for %d texts of %d tokens",
			inference.ErrInput, t.name, len(ids), len(mask), n, t.context)
	}
	if n > 1 && !t.dynamicBatch {
		return nil, fmt.Errorf("%w: clip: %s takes one text at a time", inference.ErrInput, t.name)
	}
	shape := []int64{int64(n), int64(t.context)}
	tensor := func(v []int32) inference.Tensor {
		if t.int64IDs {
			w := make([]int64, len(v))
			for i, x := range v {
				w[i] = int64(x)
			}
			return inference.I64(w, shape...)
		}
		return inference.I32(v, shape...)
	}
	inputs := []inference.Tensor{tensor(ids)}
	if t.mclip {
		inputs = append(inputs, tensor(mask))
	}
	out, err := t.session.Run(ctx, inputs...)
	if err != nil {
		return nil, err
	}
	emb := out[0]
	if emb.Float32 == nil || len(emb.Shape) == 0 || emb.Shape[0] != int64(n) || emb.Len() == 0 || emb.Len()%n != 0 {
		return nil, fmt.Errorf("clip: %s: textual output is %v, want float32 [%d, dim]", t.name, emb.Shape, n)
	}
	dim := emb.Len() / n
	res := make([][]float32, n)
	for i := range res {
		res[i] = emb.Float32[i*dim : (i+1)*dim : (i+1)*dim]
	}
	return res, nil
}

// tokenize cleans the text as Immich does and returns the ids (and the
// attention mask) fed to the graph, context-length long.
func (t *Textual) tokenize(text, language string) ([]int32, []int32, error) {
	enc, err := t.tok.Encode(t.prepare(text, language), true)
	if err != nil {
		return nil, nil, fmt.Errorf("clip: %s: tokenize: %w", t.name, err)
	}
	return enc.IDs, enc.AttentionMask, nil
}

// prepare is Immich's clean_text plus the nllb language prefix.
//
// Upstream Immich (v2.1 to v3.1, issue #29751) never passes the request's
// language to tokenize, so its nllb models never get the prefix. We honour
// the language on purpose: it is what the code was written to do, and what
// the nllb models were trained with.
func (t *Textual) prepare(text, language string) string {
	text = textualCleanText(text, t.canonicalize, t.context*textualBytesPerToken)
	if t.nllb && language != "" {
		code, ok := weblateToFLORES200[language]
		if !ok {
			base, _, _ := strings.Cut(language, "-")
			code, ok = weblateToFLORES200[base]
		}
		if !ok {
			t.logger.Warn("language not found, defaulting to 'en'", "language", language, "model", t.name)
			code = "eng_Latn"
		}
		text = code + text
	}
	return text
}

// Close releases the session.
func (t *Textual) Close() error { return t.session.Close() }

// Provider is the execution provider the session runs on.
func (t *Textual) Provider() string { return t.session.Provider() }

// Dim is the embedding size.
func (t *Textual) Dim() int { return t.dim }

// ContextLength is the number of token ids fed to the graph.
func (t *Textual) ContextLength() int { return t.context }

// textualPunctuation is Python's string.punctuation.
const textualPunctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

// textualIsPunct marks the ASCII characters of textualPunctuation.
var textualIsPunct = func() (t [128]bool) {
	for _, r := range textualPunctuation {
		t[r] = true
	}
	return t
}()

// textualBytesPerToken sets how much cleaned text the encoder reads:
// context length × this many bytes (77 KB for CLIP's 77 tokens). Immich
// tokenizes the whole text and truncates the tokens; reading a bounded
// prefix gives the same tokens as long as the first context-length tokens
// come from it, which takes an average of more than a kilobyte per token
// to break: runs of characters the vocabulary does not know, fused into
// one unknown token, or single words of more than 1 KB. For such texts
// the embedding is that of their first 77 KB. Without the bound, a 30 MB
// word took 45 s and 3.8 GB to tokenize.
const textualBytesPerToken = 1024

// textualCleanText is Immich's clean_text: collapse whitespace as Python's
// str.split() does; with canonicalize, drop ASCII punctuation and lowercase
// as Python's str.lower() does. It reads text only until the output holds
// maxBytes (no limit when maxBytes ≤ 0); a text cut there ends at its last
// space, so that no word is cut in two (a word of more than maxBytes is cut
// at a character boundary). Reading stops early, so the cost of a huge text
// is bounded by maxBytes, except for runs of whitespace (and, with
// canonicalize, punctuation), which are skipped at a few nanoseconds a byte
// without allocating.
func textualCleanText(text string, canonicalize bool, maxBytes int) string {
	limit := maxBytes
	if limit <= 0 {
		limit = math.MaxInt
	}
	var b strings.Builder
	inField, started := false, false
	for i := 0; i < len(text); {
		r, size := rune(text[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(text[i:])
		}
		if textualIsPySpace(r) {
			inField = false
			i += size
			continue
		}
		if !inField {
			if started { // " ".join: a space before every field but the first
				b.WriteByte(' ')
			}
			inField, started = true, true
		}
		switch {
		case !canonicalize:
			b.WriteString(text[i : i+size]) // bytes as they are, invalid ones too
		case r < 0x80 && textualIsPunct[r]:
		default:
			b.WriteRune(r) // an invalid byte becomes U+FFFD, as with strings.Map
		}
		i += size
		if b.Len() >= limit {
			out := b.String()
			if j := strings.LastIndexByte(out, ' '); j > 0 {
				out = out[:j]
			}
			if canonicalize {
				out = textualPyLower(out)
			}
			return out
		}
	}
	out := b.String()
	if canonicalize {
		out = textualPyLower(out)
	}
	return out
}

// textualIsPySpace is Python's str.isspace for one character: Unicode
// White_Space plus the ASCII information separators U+001C..U+001F.
func textualIsPySpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1C && r <= 0x1F)
}

// textualPyLower is Python's str.lower(): full lowercase mappings (İ gives
// "i̇") and the final-sigma rule (Σ at the end of a word gives ς).
func textualPyLower(s string) string {
	if !strings.ContainsAny(s, "İΣ") {
		return strings.Map(unicode.ToLower, s)
	}
	rs := []rune(s)
	var b strings.Builder
	for i, r := range rs {
		switch r {
		case 'İ':
			b.WriteString("i\u0307")
		case 'Σ':
			if textualFinalSigma(rs, i) {
				b.WriteRune('ς')
			} else {
				b.WriteRune('σ')
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// textualFinalSigma: a cased letter comes before (skipping case-ignorable
// characters) and none comes after.
func textualFinalSigma(rs []rune, i int) bool {
	cased := func(r rune) bool { return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) }
	ignorable := func(r rune) bool {
		return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk) ||
			strings.ContainsRune("'.:·\u2018\u2019\u2024\uFE13\uFE52\uFE55\uFF07\uFF0E\uFF1A", r)
	}
	j := i - 1
	for j >= 0 && ignorable(rs[j]) {
		j--
	}
	if j < 0 || !cased(rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && ignorable(rs[j]) {
		j++
	}
	return j >= len(rs) || !cased(rs[j])
}

func textualReadJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTokenizer, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrTokenizer, path, err)
	}
	return nil
}

// textualPadToken reads pad_token: a string, or an AddedToken object.
func textualPadToken(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", errors.New("no pad_token")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.Content == "" {
		return "", fmt.Errorf("pad_token %s is neither a string nor a token", raw)
	}
	return obj.Content, nil
}
