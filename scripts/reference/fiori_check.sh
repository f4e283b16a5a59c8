#!/usr/bin/env bash
# Full second parity check of the native encoder at max_tokens 512: all 778
# records of @sap-ux/fiori-docs-embeddings (vectors from transformers.js)
# re-encoded by ldaproj, mean and minimum cosine printed. The ctest
# FioriParity.* runs a subset of the same check; this runs all of it.
#
# Usage: scripts/reference/fiori_check.sh [BUILD_DIR]   (default: build)
# Needs the package installed (scripts/setup.sh), or by hand:
#   npm install --no-save --no-package-lock --no-audit --no-fund \
#     --prefix third_party/npm-ref @sap-ux/fiori-docs-embeddings@1.2.6
set -euo pipefail
cd "$(dirname "$0")/../.."

build_dir="${1:-build}"
tests="$build_dir/ldaproj_tests"
if [[ ! -x "$tests" ]]; then
  echo "fiori_check: $tests not found; build first: cmake --build $build_dir --target ldaproj_tests" >&2
  exit 2
fi
LDAPROJ_FIORI_ALL=1 "$tests" --gtest_filter='FioriParity.*' --gtest_color=no | grep -E '^\[ fiori|FAILED|PASSED|SKIPPED|Failure|Expected|Which is|actual|cosine'
