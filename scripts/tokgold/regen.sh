#!/usr/bin/env bash
# Regenerates the tokenizer goldens and fixtures in inference/tokenizer/testdata
# (see README.md). Needs: Node with `npm ci` done here, Go, the pinned CLIP
# merges in .deps/testdata, and Debian's python3-sentencepiece and
# python3-protobuf (apt-get install python3-sentencepiece python3-protobuf).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=inference/tokenizer/testdata
gold() { node scripts/tokgold/golden.mjs --dir "$1" --context "$2" --strings clip --name "$3"; }

# OpenAI CLIP (byte-level BPE) from the real merges.
go run ./scripts/tokgold/mkclip -merges .deps/testdata/clip/bpe_simple_vocab_16e6.txt -out "$tmp/clip"
gold "$tmp/clip" 77 "OpenAI CLIP (modelgen.CLIPTokenizer)" >"$out/clip_golden.json"

# SentencePiece families: trained fixtures, then goldens on the complete files.
node -e 'import("./scripts/tokgold/strings.mjs").then(m=>process.stdout.write(JSON.stringify(m.strings)))' >"$tmp/strings.json"
mkdir -p "$tmp/corpus" "$tmp/spm"
/usr/bin/python3 scripts/tokgold/spm_fixtures.py "$tmp/strings.json" "$tmp/corpus" "$tmp/spm"
mkdir -p "$out/spm"
gzip -9n <"$tmp/spm/nmt_nfkc.charsmap" >"$out/spm/nmt_nfkc.charsmap.gz"
for f in xlmr:77 t5:64 gemma:64 nllb:77 labse:77 bytelevel:77; do
  name=${f%%:*} ctx=${f##*:}
  gold "$tmp/spm/$name" "$ctx" "$name fixture" >"$out/spm/${name}_golden.json"
  mkdir -p "$out/spm/$name"
  cp "$tmp/spm/$name/tokenizer_config.json" "$out/spm/$name/"
  # The committed copy names the shared charsmap instead of inlining it
  # (inference/tokenizer's tests put it back).
  /usr/bin/python3 - "$tmp/spm/$name/tokenizer.json" "$out/spm/$name/tokenizer.json" <<'PY'
import json, sys
src, dst = sys.argv[1:3]
tj = json.load(open(src, encoding="utf-8"))
def walk(n):
    if isinstance(n, dict):
        if n.get("type") == "Precompiled":
            n["precompiled_charsmap"] = "nmt_nfkc"
        for v in n.values():
            walk(v)
    elif isinstance(n, list):
        for v in n:
            walk(v)
walk(tj)
json.dump(tj, open(dst, "w", encoding="utf-8"), ensure_ascii=False, separators=(",", ":"))
PY
done
