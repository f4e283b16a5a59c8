#!/usr/bin/python3
"""Side-by-side table of bench/encoder_compare.sh runs.

Reads the files the script writes into each directory:
  ldaproj_<threads>.json  Google Benchmark JSON of build/encoder_bench
                          (repetitions; the median aggregate is used)
  torch.jsonl             bench/torch_encoder.py bench
  latmd.jsonl             bench/latmd_encoder.mjs (optional)
and prints a Markdown table: batch-1 ms for the short query, batch-32
sentences/s, and each ldaproj row's speed-up over PyTorch eager's best time
at up to the same thread count. With several directories (repeated runs)
every time is the median over the runs, and every ratio the median of the
ratios within each run (so a run slowed by other work compares like with like).

  /usr/bin/python3 bench/encoder_report.py DIR [DIR...]
"""
import json
import os
import re
import statistics
import sys


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip().startswith("{")]


def ldaproj_rows(directory):
    rows = {}  # (precision, threads) -> {"b1_ms", "b32_sps"}
    for name in sorted(os.listdir(directory)):
        if not re.fullmatch(r"ldaproj_\d+\.json", name):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            report = json.load(f)
        for bench in report["benchmarks"]:
            if bench.get("aggregate_name", "median") != "median":
                continue
            match = re.match(r"BM_Encode(ShortQuery|Batch32)/(\w+)/threads:(\d+)", bench["name"])
            if not match:
                continue
            case, precision, threads = match.group(1), match.group(2), int(match.group(3))
            row = rows.setdefault((precision, threads), {})
            if case == "ShortQuery":
                row["b1_ms"] = bench["real_time"] if bench["time_unit"] == "ms" else bench["real_time"] / 1e6
            else:
                row["b32_sps"] = bench["items_per_second"]
    return rows


def peer_rows(records):
    rows = {}  # threads -> {"b1_ms", "b32_sps"}
    for r in records:
        if r.get("mode", "per-text") == "padded" and r["engine"] == "latmd-wasm":
            continue  # the per-text mode is what lat.md runs
        row = rows.setdefault(r["threads"], {})
        if r["batch"] == 1:
            row["b1_ms"] = r["ms_per_sentence"]
        else:
            row["b32_sps"] = r["sentences_per_s"]
    return rows


def best_up_to(rows, threads, key, better):
    values = [row[key] for t, row in rows.items() if t <= threads and key in row]
    return better(values) if values else None


def fmt(value, pattern):
    return "–" if value is None else pattern.format(value)


def median_rows(per_run):
    """Cell-wise median over runs of {key: {field: value}} tables."""
    merged = {}
    for rows in per_run:
        for key, row in rows.items():
            for field, value in row.items():
                merged.setdefault(key, {}).setdefault(field, []).append(value)
    return {key: {field: statistics.median(values) for field, values in row.items()}
            for key, row in merged.items()}


def ratios(ours, torch):
    """(precision, threads) -> {"b1": PyTorch ms / ours, "b32": ours / PyTorch sentences/s}."""
    out = {}
    for (precision, threads), row in ours.items():
        torch_b1 = best_up_to(torch, threads, "b1_ms", min)
        torch_b32 = best_up_to(torch, threads, "b32_sps", max)
        cell = out.setdefault((precision, threads), {})
        if torch_b1 and row.get("b1_ms"):
            cell["b1"] = torch_b1 / row["b1_ms"]
        if torch_b32 and row.get("b32_sps"):
            cell["b32"] = row["b32_sps"] / torch_b32
    return out


def main():
    directories = sys.argv[1:] or ["."]
    per_run_ours = [ldaproj_rows(d) for d in directories]
    per_run_torch = [peer_rows(read_jsonl(os.path.join(d, "torch.jsonl"))) for d in directories]
    ours = median_rows(per_run_ours)
    torch = median_rows(per_run_torch)
    latmd = median_rows([peer_rows(read_jsonl(os.path.join(d, "latmd.jsonl"))) for d in directories])
    speedups = median_rows([ratios(o, t) for o, t in zip(per_run_ours, per_run_torch)])
    print("| engine | weights | threads | batch 1: ms / short query | batch 32: sentences/s "
          "| batch 1 vs PyTorch | batch 32 vs PyTorch |")
    print("|---|---|---:|---:|---:|---:|---:|")
    order = {"fp32": 0, "bf16": 1, "int8": 2}
    for (precision, threads) in sorted(ours, key=lambda k: (order.get(k[0], 9), k[1])):
        row = ours[(precision, threads)]
        b1, b32 = row.get("b1_ms"), row.get("b32_sps")
        ratio_b1 = speedups.get((precision, threads), {}).get("b1")
        ratio_b32 = speedups.get((precision, threads), {}).get("b32")
        print(f"| ldaproj | {precision} | {threads} | {fmt(b1, '{:.3f}')} | {fmt(b32, '{:.0f}')} "
              f"| {fmt(ratio_b1, '{:.2f}×')} | {fmt(ratio_b32, '{:.2f}×')} |")
    for name, rows in (("PyTorch eager", torch), ("@lat.md/embed (WASM, one pass per text)", latmd)):
        for threads in sorted(rows):
            row = rows[threads]
            print(f"| {name} | fp32 | {threads} | {fmt(row.get('b1_ms'), '{:.2f}')} "
                  f"| {fmt(row.get('b32_sps'), '{:.1f}')} | | |")
    print()
    runs = f"medians over {len(directories)} runs" if len(directories) > 1 else "medians of this run"
    print("Ratios compare each ldaproj row with PyTorch's best at up to the same thread count "
          f"({runs}).")


if __name__ == "__main__":
    main()
