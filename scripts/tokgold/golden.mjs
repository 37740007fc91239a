// Computes golden token ids for a tokenizer folder with two reference
// implementations, and writes them as JSON on stdout:
//   - "ids": @huggingface/tokenizers@0.2.0 (pure JS), the reference the
//     project's issue names;
//   - "rust": the Rust tokenizers library through its Node binding
//     (tokenizers@0.23.2), the implementation Immich's Python service runs
//     (tokenizers 0.23.1). Present only where it differs from "ids".
//
// Encoding is set up as Immich does (enable_truncation(L) and
// enable_padding(length=L) with the pad token of tokenizer_config.json);
// the ids are stored without the padding, which is the pad id repeated.
//
//   node golden.mjs --dir DIR --context 77 --strings clip [--name NAME]
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { Tokenizer as JSTokenizer } from "@huggingface/tokenizers";
import { strings as clipStrings } from "./strings.mjs";

const require = createRequire(import.meta.url);
const { Tokenizer: RustTokenizer } = require("tokenizers");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const dir = args.dir;
const context = Number(args.context ?? 77);
const sets = { clip: clipStrings };
const texts = args.strings ? sets[args.strings] : clipStrings;
if (!dir || !texts) {
  console.error("usage: node golden.mjs --dir DIR --context N [--strings clip] [--name NAME]");
  process.exit(2);
}

const tokenizerJSON = JSON.parse(readFileSync(`${dir}/tokenizer.json`, "utf8"));
const config = JSON.parse(readFileSync(`${dir}/tokenizer_config.json`, "utf8"));
const padToken = typeof config.pad_token === "string" ? config.pad_token : config.pad_token.content;

let js = null;
try {
  js = new JSTokenizer(tokenizerJSON, config);
} catch (e) {
  console.error(`@huggingface/tokenizers cannot load ${dir}: ${e.message}`);
}
const rust = RustTokenizer.fromFile(`${dir}/tokenizer.json`);
const padID = rust.tokenToId(padToken);
if (padID === null || padID === undefined) throw new Error(`pad token ${padToken} not in vocabulary`);
rust.setTruncation(context);
rust.setPadding({ maxLength: context, padId: padID, padToken });

// The JS library has no truncation: emulate the Rust one (cut the
// sequence to leave room for the special tokens, then add them).
function jsEncode(text) {
  if (js === null) return null;
  try {
    return jsEncodeOrThrow(text);
  } catch (e) {
    console.error(`@huggingface/tokenizers fails on ${JSON.stringify(text)}: ${e.message}`);
    return null;
  }
}

function jsEncodeOrThrow(text) {
  const full = js.encode(text).ids;
  if (full.length <= context) return full;
  const plain = js.encode(text, { add_special_tokens: false }).ids;
  const nAdded = full.length - plain.length;
  const kept = plain.slice(0, context - nAdded);
  // Special tokens come from the post-processor; find where the sequence
  // sits in the full encoding to rebuild it around the kept part.
  let at = 0;
  while (at + plain.length <= full.length && full.slice(at, at + plain.length).join() !== plain.join()) at++;
  return [...full.slice(0, at), ...kept, ...full.slice(at + plain.length)];
}

const cases = [];
let differ = 0;
for (const text of texts) {
  const ids = jsEncode(text);
  const enc = await rust.encode(text);
  const all = enc.getIds();
  const n = enc.getAttentionMask().reduce((a, b) => a + b, 0);
  if (all.length !== context) throw new Error(`rust length ${all.length} for ${JSON.stringify(text)}`);
  for (let i = n; i < all.length; i++) {
    if (all[i] !== padID) throw new Error(`rust padding for ${JSON.stringify(text)}`);
  }
  const r = all.slice(0, n);
  const c = { text, ids };
  if (ids === null || r.join() !== ids.join()) {
    c.rust = r;
    differ++;
  }
  cases.push(c);
}
console.error(`${cases.length} strings, ${differ} where the JS library differs from the Rust one`);
// One case per line: small files, readable diffs.
const head = {
  tokenizer: args.name ?? dir,
  context_length: context,
  pad_id: padID,
  js: "@huggingface/tokenizers@0.2.0",
  rust: "tokenizers@0.23.2 (Node binding of the Rust library)",
};
const lines = cases.map((c) => JSON.stringify(c));
process.stdout.write(JSON.stringify(head).slice(0, -1) + ',"cases":[\n' + lines.join(",\n") + "\n]}\n");
