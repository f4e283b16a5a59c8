#!/usr/bin/env bash
# The teacher in ldaproj (fp32/bf16/int8), NumPy and PyTorch eager on the same
# shapes, one after the other in one run, with this machine's sgemm peak and
# memory bandwidth measured by teacher_bench in the same run; prints the
# markdown table recorded in docs/BENCHMARKS.md.
# Usage: bench/teacher_compare.sh [BUILD_DIR] [HEADS]   (make bench runs it)
#   HEADS defaults to 1000,10000,100000,1000000.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
heads=${2:-1000,10000,100000,1000000}
bash scripts/setup.sh --bench >/dev/null
out="$build/bench-teacher"
mkdir -p "$out"
cores=$(nproc)
threads="1"
[[ $cores -gt 1 ]] && threads="1 $cores"

echo "## ldaproj teacher_bench (heads: $heads)" >&2
"$build/teacher_bench" --heads="$heads" --benchmark_min_time=0.3 \
  --benchmark_out="$out/ldaproj.json" --benchmark_out_format=json >&2
: > "$out/peers.jsonl"
for t in $threads; do
  for fw in numpy torch; do
    echo "## $fw, $t thread(s)" >&2
    # Both use OpenBLAS underneath; its thread count is fixed at load time.
    OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t /usr/bin/python3 bench/teacher_peers.py \
      --framework "$fw" --threads "$t" --heads "$heads" | tee -a "$out/peers.jsonl" >&2
  done
done
/usr/bin/python3 bench/teacher_report.py "$out/ldaproj.json" "$out/peers.jsonl" | tee "$out/report.md"
