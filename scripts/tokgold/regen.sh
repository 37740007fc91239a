#!/usr/bin/env bash
# Regenerates inference/tokenizer/testdata/*_golden.json (see README.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=inference/tokenizer/testdata
go run ./scripts/tokgold/mkclip -merges .deps/testdata/clip/bpe_simple_vocab_16e6.txt -out "$tmp/clip"
node scripts/tokgold/golden.mjs --dir "$tmp/clip" --context 77 --strings clip \
  --name "OpenAI CLIP (modelgen.CLIPTokenizer)" >"$out/clip_golden.json"
