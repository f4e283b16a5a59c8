#!/usr/bin/env bash
# The main job on the bundled data: import -> embed -> train -> distill -> validate -> query.
# Usage: scripts/demo.sh [path/to/ldaproj]   (make demo builds it first)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/ldaproj}
db=out/demo.db
mkdir -p out

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "import (re-running the demo finds the files unchanged)"
"$bin" import --db "$db" data/demo/clusters.json data/demo/extra.jsonl

step "embed questions and answers with the native all-MiniLM-L6-v2 encoder"
"$bin" embed --db "$db"

step "train the multi-head projection (one head per cluster; it picks its temperature and key learning on held-out training questions)"
"$bin" train --db "$db"

step "distil the teacher into a student transformer (64 learned keys and values; libtorch)"
"$bin" distill --db "$db"

step "store summary"
"$bin" stats --db "$db"

step "validate on held-out novel queries never seen in training"
"$bin" validate --db "$db" --test data/demo/heldout.json --sweep-temperature 0.02,0.05,0.1,0.2,0.5,1

step "answer a few queries, with routing"
"$bin" query --db "$db" --top-k 3 --show-routing --routing-top 5 \
  "my phone stopped uploading pictures" \
  "how much does the bigger plan cost per year" \
  "can someone else see my albums without an account"

echo "Try the server and its page: $bin serve --db $db   (then open http://127.0.0.1:8080/)"
