#!/usr/bin/env bash
# Runs the libFuzzer targets (fuzz/). Usage:
#   scripts/fuzz.sh BUILD_DIR SECONDS [JOBS]   fuzz each target for SECONDS, JOBS targets at a time
#   scripts/fuzz.sh BUILD_DIR replay           run each target once over its seeds and regressions
# Seeds (fuzz/corpus/<target>/) and crash reproducers (fuzz/regressions/<target>/)
# are only read; new inputs go to BUILD_DIR/corpus/<target>/ and anything that
# fails to BUILD_DIR/artifacts/<target>/, and the script then exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?build dir}
mode=${2:?seconds or replay}
jobs=${3:-1}
targets=(import safetensors ensemble tokenizer serve_request http_request)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

inputs_of() {
  local t=$1
  echo "fuzz/corpus/$t"
  if [[ -d fuzz/regressions/$t ]]; then echo "fuzz/regressions/$t"; fi
}

run_one() {
  local t=$1 bin="$build/fuzz_$1"
  mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
  # shellcheck disable=SC2046
  if [[ $mode == replay ]]; then
    # Every committed input once, without mutation: regressions stay fixed.
    local files=()
    while IFS= read -r -d '' f; do files+=("$f"); done < <(find $(inputs_of "$t") -type f -print0)
    "$bin" "${files[@]}" >"$build/artifacts/$t/replay.log" 2>&1 ||
      { cat "$build/artifacts/$t/replay.log"; echo "fuzz: $t failed on a committed input" >&2; return 1; }
    echo "fuzz: $t: ${#files[@]} committed inputs ok"
  else
    "$bin" "$build/corpus/$t" $(inputs_of "$t") -max_total_time="$mode" -timeout=10 -rss_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/artifacts/$t/" \
      >"$build/artifacts/$t/fuzz.log" 2>&1 ||
      { tail -n 60 "$build/artifacts/$t/fuzz.log"; echo "fuzz: $t found a failure; see $build/artifacts/$t/" >&2; return 1; }
    echo "fuzz: $t: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$build/artifacts/$t/fuzz.log" | awk '{print $2}') runs in ${mode}s, no failure"
  fi
}

export -f run_one inputs_of
export build mode
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'
