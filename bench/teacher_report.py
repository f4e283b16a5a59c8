#!/usr/bin/python3
"""Turns teacher_bench's JSON and teacher_peers.py's JSON lines into the
markdown table of docs/BENCHMARKS.md: microseconds per query for every
implementation, ldaproj's speed-up over the fastest peer, and ldaproj's
figures as fractions of the machine limits measured in the same run.

The peers' columns and the speed-ups use each peer at its best thread count
up to the row's (a NumPy user would not pick a thread count that is slower).

  bench/teacher_report.py LDAPROJ_JSON PEERS_JSONL
"""
import json
import re
import sys
from collections import defaultdict


def main():
    bench = json.load(open(sys.argv[1]))
    context = bench["context"]
    ours = {}  # (heads, batch, threads, precision) -> benchmark entry
    name_re = re.compile(r"heads:(\d+)/batch:(\d+)/(\w+)/threads:(\d+)")
    for b in bench["benchmarks"]:
        m = name_re.search(b["name"])
        if m and b.get("run_type", "iteration") == "iteration":
            heads, batch, prec, threads = int(m[1]), int(m[2]), m[3], int(m[4])
            ours[(heads, batch, threads, prec)] = b
    peers = defaultdict(dict)
    for line in open(sys.argv[2]):
        if line.strip():
            p = json.loads(line)
            peers[(p["heads"], p["batch"], p["threads"])][p["framework"]] = p["us_per_query"]

    threads_seen = sorted({k[2] for k in ours})
    print(f"Machine: {context.get('num_cpus')} cores at {context.get('mhz_per_cpu')} MHz; limits measured in this run:")
    for t in threads_seen:
        print(f"- {t} thread(s): sgemm {context.get(f'sgemm_gflops_threads_{t}')} GFLOP/s, "
              f"read {context.get(f'read_gbs_threads_{t}')} GB/s, triad {context.get(f'triad_gbs_threads_{t}')} GB/s")
    print()
    print("| heads | batch | threads | ldaproj fp32 µs/q | bf16 | int8 | NumPy | PyTorch | "
          "fp32 vs best peer | bf16 vs best peer | int8 vs best peer | fp32 of limit | bf16/int8 top-10 overlap |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (heads, batch, threads) in sorted({k[:3] for k in ours}):
        row = {p: ours.get((heads, batch, threads, p)) for p in ("fp32", "bf16", "int8")}
        us = {p: (b["us_per_query"] if b else None) for p, b in row.items()}
        peer = {}
        for (h, b, t), by_framework in peers.items():
            if h == heads and b == batch and t <= threads:
                for fw, value in by_framework.items():
                    peer[fw] = min(value, peer.get(fw, float("inf")))
        best_peer = min(peer.values()) if peer else None

        def fmt(x):
            return "–" if x is None else (f"{x:.1f}" if x < 1000 else f"{x:,.0f}")

        def speedup(x):
            return "–" if x is None or best_peer is None else f"{best_peer / x:.2f}×"

        f = row["fp32"]
        if f is None:
            limit = "–"
        elif batch > 1:
            limit = f"{f['GFLOPs'] / f['peak_gflops']:.0%} of sgemm peak"
        else:
            # Time to stream the head matrices once at the measured read bandwidth.
            read_us = f["bytes"] / (f["read_gbs"] * 1e9) * 1e6
            triad_us = f["bytes"] / (f["triad_gbs"] * 1e9) * 1e6
            limit = f"{us['fp32'] / read_us:.2f}× read / {us['fp32'] / triad_us:.2f}× triad stream time"
        overlap = "/".join(f"{row[p]['top10_overlap']:.3f}" for p in ("bf16", "int8")
                           if row[p] and "top10_overlap" in row[p]) or "–"
        print(f"| {heads:,} | {batch} | {threads} | {fmt(us['fp32'])} | {fmt(us['bf16'])} | {fmt(us['int8'])} | "
              f"{fmt(peer.get('numpy'))} | {fmt(peer.get('torch'))} | {speedup(us['fp32'])} | "
              f"{speedup(us['bf16'])} | {speedup(us['int8'])} | {limit} | {overlap} |")


if __name__ == "__main__":
    main()
