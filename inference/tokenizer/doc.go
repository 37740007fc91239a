// Package tokenizer reads Hugging Face tokenizer.json files and encodes text
// to token ids exactly as the Rust tokenizers library does (the one
// Immich's Python service runs, 0.23.x), without calling it.
//
// A file is interpreted generically: its normalizer, pre-tokenizer, model,
// post-processor and added tokens are read from the JSON and built from the
// component types the CLIP families Immich serves use:
//
//   - normalizers: NFC, NFD, NFKC, NFKD, Lowercase, Replace, Prepend,
//     Strip, StripAccents, BertNormalizer, Precompiled (SentencePiece's
//     charsmap: a darts-clone double-array trie plus replacement strings),
//     Sequence;
//   - pre-tokenizers: Split, ByteLevel, Metaspace, Whitespace,
//     WhitespaceSplit, BertPreTokenizer, Punctuation, Digits,
//     CharDelimiterSplit, Sequence;
//   - models: BPE (byte-level with end_of_word_suffix as in CLIP, or
//     SentencePiece-style with byte_fallback as in Gemma), Unigram (XLM-R,
//     T5/SigLIP) and WordPiece (LaBSE);
//   - post-processors: RobertaProcessing, BertProcessing,
//     TemplateProcessing, ByteLevel, Sequence.
//
// Regular expressions in the files are written for Oniguruma. They are
// translated to Go's RE2 syntax with Oniguruma's Unicode meaning of \s, \d
// and \w; GPT-2's "\s+(?!\S)" look-ahead idiom is emulated; any other
// construct RE2 lacks (look-around, back-references, possessive or atomic
// groups) is refused with ErrUnsupported rather than approximated.
//
// Decoding ids back to text is not implemented: the service only encodes.
// A Tokenizer is safe for concurrent use.
package tokenizer
