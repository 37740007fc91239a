#!/usr/bin/python3
"""Builds small SentencePiece-family tokenizer.json fixtures for
inference/tokenizer, shaped as Hugging Face's converters
(transformers.convert_slow_tokenizer) write them for the model families
Immich serves: XLM-R / M-CLIP (Unigram), T5 / SigLIP (Unigram), Gemma /
SigLIP2 (BPE with byte_fallback), NLLB (SentencePiece BPE with language
codes) and LaBSE (BERT WordPiece).

The real files cannot be downloaded here, so the vocabularies are trained
with Debian's python3-sentencepiece on a small corpus; what matters is that
every component type and option is the real one, and that the Precompiled
normalizer carries SentencePiece's real nmt_nfkc charsmap.

Usage (Debian python3 with python3-sentencepiece and python3-protobuf):
    /usr/bin/python3 spm_fixtures.py STRINGS.json CORPUS_DIR OUT_DIR
writes OUT_DIR/<family>/{tokenizer.json,tokenizer_config.json} (complete)
and OUT_DIR/nmt_nfkc.charsmap.
"""
import base64
import glob
import json
import os
import sys

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

strings_path, corpus_dir, out = sys.argv[1:4]
os.makedirs(out, exist_ok=True)

# Corpus: English text from Debian's licence files plus the golden strings
# (many scripts), so that the vocabularies have pieces beyond ASCII.
lines = []
for f in sorted(glob.glob("/usr/share/common-licenses/*")):
    if os.path.isfile(f):
        with open(f, encoding="utf-8", errors="ignore") as fh:
            lines += [l.strip() for l in fh if l.strip()]
golden = [s for s in json.load(open(strings_path)) if s.strip() and len(s) < 2000]
lines += [s.replace("\n", " ") for s in golden] * 5
corpus = os.path.join(corpus_dir, "corpus.txt")
with open(corpus, "w", encoding="utf-8") as fh:
    fh.write("\n".join(lines))


def train(prefix, **kw):
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(corpus_dir, prefix),
        normalization_rule_name="nmt_nfkc", character_coverage=0.9995,
        minloglevel=2, num_threads=1, **kw)
    m = pb.ModelProto()
    with open(os.path.join(corpus_dir, prefix + ".model"), "rb") as fh:
        m.ParseFromString(fh.read())
    return m


def added(i, content, special=True, lstrip=False, normalized=False):
    return {"id": i, "content": content, "single_word": False, "lstrip": lstrip,
            "rstrip": False, "normalized": normalized, "special": special}


def template(single, specials):
    items = []
    for s in single.split():
        if s == "$A":
            items.append({"Sequence": {"id": "A", "type_id": 0}})
        else:
            items.append({"SpecialToken": {"id": s, "type_id": 0}})
    return {"type": "TemplateProcessing", "single": items,
            "pair": items + [{"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {k: {"id": k, "ids": [v], "tokens": [k]} for k, v in specials.items()}}


def spm_normalizer(m):
    cm = base64.b64encode(m.normalizer_spec.precompiled_charsmap).decode()
    return {"type": "Sequence", "normalizers": [
        {"type": "Precompiled", "precompiled_charsmap": cm},
        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}


def metaspace(scheme="always"):
    return {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": True}


def bpe_merges(vocab, scores):
    """SentencePieceExtractor: every split of a piece into two pieces,
    ordered by the merged piece's score (best first)."""
    merges = []
    for piece, score in scores.items():
        local = []
        for i in range(1, len(piece)):
            l, r = piece[:i], piece[i:]
            if l in vocab and r in vocab:
                local.append((l, r, score))
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2], reverse=True)
    return [[l, r] for l, r, _ in merges]


def write(name, tj, cfg):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    base = {"version": "1.0", "truncation": None, "padding": None}
    base.update(tj)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as fh:
        json.dump(base, fh, ensure_ascii=False, indent=1)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump(cfg, fh, ensure_ascii=False, indent=1)


# XLM-R / M-CLIP: Unigram; <s> <pad> </s> <unk> first, <mask> last.
m = train("xlmr", vocab_size=1200, model_type="unigram")
with open(os.path.join(out, "nmt_nfkc.charsmap"), "wb") as fh:
    fh.write(m.normalizer_spec.precompiled_charsmap)
vocab = [["<s>", 0.0], ["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0]]
vocab += [[p.piece, p.score] for p in m.pieces[3:]]
vocab.append(["<mask>", 0.0])
write("xlmr", {
    "added_tokens": [added(0, "<s>"), added(1, "<pad>"), added(2, "</s>"), added(3, "<unk>"),
                     added(len(vocab) - 1, "<mask>", lstrip=True)],
    "normalizer": spm_normalizer(m),
    "pre_tokenizer": metaspace(),
    "post_processor": template("<s> $A </s>", {"<s>": 0, "</s>": 2}),
    "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
    "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": False},
}, {"pad_token": "<pad>", "tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512})

# T5 / SigLIP: Unigram with pad 0, eos 1, unk 2, extra ids at the end;
# WhitespaceSplit then Metaspace, "$A </s>".
m = train("t5", vocab_size=1000, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
vocab = [[p.piece, p.score] for p in m.pieces]
extra = [f"<extra_id_{i}>" for i in range(9, -1, -1)]
vocab += [[e, 0.0] for e in extra]
n = len(m.pieces)
write("t5", {
    "added_tokens": [added(0, "<pad>"), added(1, "</s>"), added(2, "<unk>")]
    + [added(n + i, e) for i, e in enumerate(extra)],
    "normalizer": spm_normalizer(m),
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace()]},
    "post_processor": template("$A </s>", {"</s>": 1}),
    "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
    "model": {"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": False},
}, {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "T5Tokenizer"})

# Gemma / SigLIP2: SentencePiece BPE with byte fallback, no dummy prefix;
# spaces become "▁" in the normalizer; "<bos> $A".
m = pb.ModelProto()
spm.SentencePieceTrainer.train(
    input=corpus, model_prefix=os.path.join(corpus_dir, "gemma"), model_type="bpe", vocab_size=1200,
    byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3, eos_piece="<eos>", bos_piece="<bos>",
    add_dummy_prefix=False,
    split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
    normalization_rule_name="identity", character_coverage=0.9995, minloglevel=2, num_threads=1)
with open(os.path.join(corpus_dir, "gemma.model"), "rb") as fh:
    m.ParseFromString(fh.read())
pieces = {p.piece: i for i, p in enumerate(m.pieces)}
scores = {p.piece: p.score for p in m.pieces if p.type == 1}
write("gemma", {
    "added_tokens": [added(0, "<pad>"), added(1, "<eos>"), added(2, "<bos>"), added(3, "<unk>"),
                     added(len(pieces), "<start_of_turn>"), added(len(pieces) + 1, "<end_of_turn>")],
    "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False},
    "post_processor": template("<bos> $A", {"<bos>": 2}),
    "decoder": None,
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
              "vocab": pieces,
              "merges": bpe_merges(pieces, scores)},
}, {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "tokenizer_class": "GemmaTokenizer"})

# NLLB: SentencePiece BPE, fairseq ids (<s> <pad> </s> <unk>), language
# codes and <mask> as added tokens, "eng_Latn $A </s>".
m = train("nllb", vocab_size=1200, model_type="bpe")
vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
for p in m.pieces[3:]:
    vocab.setdefault(p.piece, len(vocab))
scores = {p.piece: p.score for p in m.pieces[3:]}
langs = ["deu_Latn", "eng_Latn", "fra_Latn", "jpn_Jpan", "zho_Hans"]
lang_ids = {l: len(vocab) + i for i, l in enumerate(langs)}
mask_id = len(vocab) + len(langs)
write("nllb", {
    "added_tokens": [added(0, "<s>"), added(1, "<pad>"), added(2, "</s>"), added(3, "<unk>")]
    + [added(i, l) for l, i in lang_ids.items()] + [added(mask_id, "<mask>", lstrip=True)],
    "normalizer": spm_normalizer(m),
    "pre_tokenizer": metaspace(),
    "post_processor": template("eng_Latn $A </s>", {"eng_Latn": lang_ids["eng_Latn"], "</s>": 2}),
    "decoder": None,
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": False,
              "vocab": vocab, "merges": bpe_merges(vocab, scores)},
}, {"pad_token": "<pad>", "src_lang": "eng_Latn", "tokenizer_class": "NllbTokenizer"})

# LaBSE: BERT WordPiece, cased, [CLS] $A [SEP].
words = {}
for l in lines:
    for w in l.split():
        words[w] = words.get(w, 0) + 1
chars = sorted({c for l in lines for c in l if not c.isspace()})
wp = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
for w, _ in sorted(words.items(), key=lambda x: -x[1])[:600]:
    w = w.strip(".,;:!?()[]\"'")
    if w and w not in wp:
        wp.append(w)
for suf in ["ing", "ed", "s", "er", "ly", "tion", "ment"]:
    wp.append("##" + suf)
write("labse", {
    "added_tokens": [added(i, t) for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])],
    "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                   "strip_accents": None, "lowercase": False},
    "pre_tokenizer": {"type": "BertPreTokenizer"},
    "post_processor": template("[CLS] $A [SEP]", {"[CLS]": 2, "[SEP]": 3}),
    "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
    "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
              "max_input_chars_per_word": 100, "vocab": {t: i for i, t in enumerate(dict.fromkeys(wp))}},
}, {"pad_token": "[PAD]", "do_lower_case": False, "tokenizer_class": "BertTokenizer"})

# GPT-2-style byte-level BPE (ByteLevel pre-tokenizer with use_regex, its
# `\s+(?!\S)` look-ahead included), a few hundred merges learnt here.
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


import re
b2u = bytes_to_unicode()
words = {}
for l in lines:
    for w in re.findall(r"'s|'t|'re|'ve|'m|'ll|'d| ?\w+| ?[^\s\w]+|\s+", l):
        key = tuple(b2u[b] for b in w.encode("utf-8"))
        words[key] = words.get(key, 0) + 1
vocab = {c: i for i, c in enumerate(b2u[b] for b in range(256))}
merges = []
for _ in range(400):
    pairs = {}
    for w, c in words.items():
        for a, b in zip(w, w[1:]):
            pairs[(a, b)] = pairs.get((a, b), 0) + c
    if not pairs:
        break
    (a, b), _ = max(pairs.items(), key=lambda x: (x[1], x[0]))
    merges.append([a, b])
    vocab.setdefault(a + b, len(vocab))
    new = {}
    for w, c in words.items():
        merged, i = [], 0
        while i < len(w):
            if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                merged.append(a + b)
                i += 2
            else:
                merged.append(w[i])
                i += 1
        new[tuple(merged)] = new.get(tuple(merged), 0) + c
    words = new
vocab["<|endoftext|>"] = len(vocab)
write("bytelevel", {
    "added_tokens": [added(vocab["<|endoftext|>"], "<|endoftext|>")],
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
              "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
              "vocab": vocab, "merges": merges},
}, {"pad_token": "<|endoftext|>", "tokenizer_class": "GPT2Tokenizer"})
