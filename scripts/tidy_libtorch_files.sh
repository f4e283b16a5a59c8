#!/usr/bin/env bash
# clang-tidy for the sources that include libtorch. Usage:
#   scripts/tidy_libtorch_files.sh BUILD_DIR [CLANG_TIDY]
# No clang in Debian 12 parses libtorch 1.13's headers in C++20 with libstdc++ 12
# (docs/RELIABILITY.md, section 5): clang-tidy always ends with errors inside
# /usr/include. Its checks still run on the rest of the translation unit, so this
# script fails on any diagnostic located in our own files and only counts the
# ones in system headers. A file whose report names none of our files and no
# system-header parse error either means clang-tidy did not run: that fails too.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:?build dir}
tidy=${2:-clang-tidy}
root=$(pwd)
status=0
mapfile -t files < <(grep -l '<torch/' src/*/*.cpp)
for f in "${files[@]}"; do
  log=$(mktemp)
  "$tidy" -p "$build" --quiet "$root/$f" >"$log" 2>&1
  ours=$(grep -E "^$root/(src|include)/[^:]+:[0-9]+:[0-9]+: (warning|error):" "$log")
  theirs=$(grep -cE '^/usr/[^:]+:[0-9]+:[0-9]+: error:' "$log")
  if [[ -n $ours ]]; then
    echo "tidy: $f: findings in our code:" >&2
    echo "$ours" >&2
    status=1
  elif ! grep -qE '(warning|error)s? generated' "$log"; then
    echo "tidy: $f: clang-tidy produced no report:" >&2
    tail -n 20 "$log" >&2
    status=1
  else
    echo "tidy: $f: clean in our code ($theirs parse errors inside libtorch/libstdc++ headers, not ours)"
  fi
  rm -f "$log"
done
exit $status
