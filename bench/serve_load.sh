#!/usr/bin/env bash
# Load test of `ldaproj serve` with wrk, loopback only, bounded duration:
# POST /v1/search by text (the encoder runs per request) and by embedding
# (routing + ranking only), multi-head, top 5, the 62 held-out demo queries
# in turn. Prints requests/s, p50/p90/p99 latency and the error count per case.
# Usage: bench/serve_load.sh [BUILD_DIR] [SECONDS] [CONNECTIONS]
#        (defaults: build, 10, 8; the server gets one worker per connection)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
seconds=${2:-10}
connections=${3:-8}
cli=$(realpath "$build/ldaproj")
command -v wrk >/dev/null || { echo "wrk is not installed; run scripts/setup.sh --bench" >&2; exit 1; }

work=$(mktemp -d)
server=
cleanup() {
  [[ -n "$server" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

db="$work/demo.db"
"$cli" import --db "$db" data/demo/clusters.json data/demo/extra.jsonl >/dev/null
"$cli" embed --quiet --db "$db" >/dev/null
"$cli" train --db "$db" >/dev/null

"$cli" serve --db "$db" --host 127.0.0.1 --port 0 --threads "$connections" >"$work/serve.out" 2>&1 &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/serve.out" && break; sleep 0.1; done
url=$(sed -n 's|.*listening on \(http://127\.0\.0\.1:[0-9]*\)/.*|\1|p' "$work/serve.out")
[[ -n "$url" ]] || { cat "$work/serve.out" >&2; exit 1; }

# Request bodies, one JSON object per line: the held-out queries as text, and
# the same queries embedded once up front through /v1/embed.
python3 - "$url" "$work" <<'PY'
import json, sys, urllib.request
url, work = sys.argv[1], sys.argv[2]
queries = [q for c in json.load(open("data/demo/heldout.json"))["clusters"] for q in c["queries"]["novel"]]
request = urllib.request.Request(url + "/v1/embed", json.dumps({"texts": queries}).encode(),
                                 {"Content-Type": "application/json"})
embeddings = json.load(urllib.request.urlopen(request))["embeddings"]
with open(work + "/text.jsonl", "w") as f:
    for q in queries:
        f.write(json.dumps({"text": q, "top_k": 5}) + "\n")
with open(work + "/embedding.jsonl", "w") as f:
    for e in embeddings:
        f.write(json.dumps({"embedding": e, "top_k": 5}) + "\n")
PY

echo "## $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; wrk -t2 -c$connections -d${seconds}s; server --threads $connections"
for kind in text embedding; do
  result=$(LDAPROJ_BODIES="$work/$kind.jsonl" wrk -t2 -c"$connections" -d"${seconds}s" --timeout 10s \
             -s bench/serve_load.lua "$url/v1/search" | grep '^RESULT')
  echo "$kind: ${result#RESULT }"
done
echo "## server-side count of /v1/search responses by status"
curl -s "$url/metrics" | grep '^ldaproj_http_requests_total{endpoint="/v1/search"'
