#!/usr/bin/env bash
# Distillation experiments: which data sources, which init and which loss
# terms give the student that agrees best with the teacher on held-out novel
# queries. Prints a Markdown table; the numbers in docs/DISTILLATION.md come
# from it.
# Usage: scripts/distill_experiments.sh [path/to/ldaproj] [experiment-group...]
#   groups: sources init loss variants size (default: all)
# SYNTH=N runs the groups sources, init and loss on N synthetic clusters
# instead of the demo data: the generator of `ldaproj synth` (QPC questions
# per cluster, default 8, plus one held-out novel query each) and the teacher
# `ldaproj train` makes from it, through build/distill_scale_bench (BENCH=path),
# evaluated on 500 of the held-out queries.
# INITS="teacher" limits the sources group to one init (default: teacher random).
# Every run uses about the same number of optimizer steps (STEPS, default 2000)
# and patience 0, so that small datasets are not simply trained for less.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/ldaproj}
shift || true
groups=("$@")
synth=${SYNTH:-}
(( ${#groups[@]} )) || { if [[ -n $synth ]]; then groups=(sources init loss); else groups=(sources init loss variants size); fi; }
steps=${STEPS:-2000}
threads=${THREADS:-1}
bench=${BENCH:-build/distill_scale_bench}
per_cluster=${QPC:-8}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
db="$work/demo.db"

if [[ -n $synth ]]; then
  # Training questions left after holding out 15% per cluster, for the step budget.
  train_questions=$(( synth * per_cluster * 85 / 100 ))
else
  "$bin" import --db "$db" data/demo/clusters.json data/demo/extra.jsonl >/dev/null
  "$bin" embed --db "$db" --quiet >/dev/null
  "$bin" train --db "$db" --no-tune >/dev/null  # the teacher docs/DISTILLATION.md measured (tau 0.1, centroid keys)
  train_questions=262
fi

run() {  # label, then distill flags
  local label=$1
  shift
  local samples=8192 sources=all batch=128 arg prev=""
  for arg in "$@"; do
    [[ $prev == --samples ]] && samples=$arg
    [[ $prev == --sources ]] && sources=$arg
    [[ $prev == --batch-size ]] && batch=$arg
    prev=$arg
  done
  [[ $sources == "questions" ]] && samples=0
  local n=$samples
  [[ $sources == all || $sources == *questions* ]] && n=$((n + train_questions))
  local per_epoch=$(( (n + batch - 1) / batch ))
  local epochs=$(( (steps + per_epoch - 1) / per_epoch ))
  if [[ -n $synth ]]; then
    "$bench" --clusters "$synth" --questions-per-cluster "$per_cluster" --students 8x8 --epochs "$epochs" \
      --patience 0 --threads "$threads" --label "$label" --header 0 "$@"
    return
  fi
  local d
  d=$("$bin" distill --db "$db" --json --quiet --patience 0 --epochs "$epochs" --threads "$threads" "$@")
  local v
  v=$("$bin" validate --db "$db" --test data/demo/heldout.json --methods multi-head,student --json)
  python3 - "$label" "$d" "$v" <<'EOF'
import json, sys
label, d, v = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
s, t = v["methods"]["student"], v["methods"]["multi_head"]
a = s["agreement"]
print(f"| {label} | {d['parameters']:,} | {d['train_samples']} | {d['epochs_run']} | {d['seconds']:.0f} s "
      f"| {d['initial_validation_cosine']:.4f} | {d['validation_cosine']:.4f} "
      f"| {a['mean_cosine']:.4f} | {a['min_cosine']:.4f} | {100*a['top10_overlap']:.1f}% "
      f"| {100*s['recall_at_1']:.1f}% ({100*(s['recall_at_1']-t['recall_at_1']):+.1f}) |")
EOF
}

if [[ -n $synth ]]; then
  echo "| run | n | params | train inputs | epochs (best) | train time | held-out cos mean | min | top-10 overlap | R@1 student (vs teacher) |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
else
  echo "| run | params | train inputs | epochs | time | val cos (init) | val cos | novel cos mean | novel cos min | top-10 overlap | R@1 (vs teacher) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
fi
for g in "${groups[@]}"; do
  case $g in
    sources)
      for init in ${INITS:-teacher random}; do
        lr=1e-4
        [[ $init == random ]] && lr=1e-3
        for src in questions questions,perturbed questions,within questions,across questions,extrapolated \
                   perturbed,within,across,extrapolated all; do
          run "sources=$src init=$init lr=$lr" --sources "$src" --init "$init" --lr "$lr"
        done
      done
      ;;
    init)
      for lr in 1e-4 1e-3; do
        run "init=teacher lr=$lr" --init teacher --lr "$lr"
        run "init=random lr=$lr" --init random --lr "$lr"
      done
      ;;
    loss)
      run "mse" --cosine-weight 0
      run "mse + cosine 1" --cosine-weight 1
      run "mse + kl 0.1" --kl-weight 0.1
      run "mse + kl 1" --kl-weight 1
      run "mse + answer scores 100" --answer-weight 100
      run "random init, mse, lr 1e-3" --init random --lr 1e-3
      run "random init, mse + kl 1, lr 1e-3" --init random --lr 1e-3 --kl-weight 1
      ;;
    variants|size)
      [[ -z $synth ]] || { echo "group $g runs on the demo data only" >&2; exit 2; }
      ;;&
    variants)
      run "attention" --variant attention
      run "mlp-attention" --variant mlp-attention
      run "block" --variant block
      run "block, 2 layers" --variant block --layers 2
      run "schedule step" --schedule step
      ;;
    size)
      run "4 heads x 4 keys" --heads 4 --keys-per-head 4
      run "8 heads x 2 keys" --heads 8 --keys-per-head 2
      run "8 heads x 8 keys" --heads 8 --keys-per-head 8
      run "12 heads x 8 keys" --heads 12 --keys-per-head 8
      ;;
    *) echo "unknown experiment group $g" >&2; exit 2 ;;
  esac
done
