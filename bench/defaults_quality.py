#!/usr/bin/env python3
"""What a new user gets from `ldaproj train` with no flags, at every scale.

For each data set that is present (the demo always; CLINC150 and WikiAnswers
from ../shared/datasets unless --clinc/--wikianswers say otherwise, skipped
cleanly when absent): import, embed (cached in the work directory), then
  - `train` with no flags (it tunes itself on a slice of its own training
    questions), timed with /usr/bin/time -v for wall time and peak RSS;
  - `train --no-tune` (tau 0.1, centroid keys: the behaviour before tuning);
  - where the data set has a validation split (CLINC150), `train --val` on it;
and `validate` of each on the data set's test queries, every method. Prints
a Markdown table per data set (the rows docs/QUALITY.md quotes) and writes
them to WORK/defaults_quality.md.

Nothing here tunes on a test file: the default train draws its slice from
the training questions, --val uses CLINC150's val split, and test.jsonl is
only read by `validate`.

Usage: bench/defaults_quality.py [--build build] [--work out/defaults-quality]
       [--only demo,clinc150,wikianswers]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
METHODS = ["direct", "global-w", "question-routing", "sparse-teacher", "multi-head"]


def run(cmd, **kw):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    result = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"error: {' '.join(cmd)} exited with {result.returncode}")
    return result


def timed(cmd):
    """Runs cmd under /usr/bin/time -v; returns (stdout, wall seconds, peak RSS bytes)."""
    start = time.monotonic()
    result = run(["/usr/bin/time", "-v"] + cmd)
    wall = time.monotonic() - start
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return result.stdout, wall, int(rss.group(1)) * 1024 if rss else 0


class DataSet:
    def __init__(self, args, name, label, imports, test, val=None):
        self.args, self.name, self.label = args, name, label
        self.imports, self.test, self.val = imports, test, val
        self.work = os.path.join(args.work, name)
        os.makedirs(self.work, exist_ok=True)
        self.db = os.path.join(self.work, "store.db")
        self.bin = os.path.join(args.build, "ldaproj")
        self.rows = []

    def prepare(self):
        run([self.bin, "import", "--db", self.db] + self.imports)
        run([self.bin, "embed", "--quiet", "--db", self.db])

    def train_and_validate(self, row, flags):
        name = "dq_" + re.sub(r"[^a-z0-9]+", "_", row.lower()).strip("_")
        out, wall, rss = timed([self.bin, "train", "--db", self.db, "--json", "--quiet", "--replace", "--name", name] + flags)
        trained = json.loads(out)
        v = run([self.bin, "validate", "--db", self.db, "--projection", name, "--test", self.test, "--json",
                 "--methods", ",".join(METHODS)])
        result = json.loads(v.stdout)
        self.rows.append({"row": row, "train": trained, "wall": wall, "rss": rss, "validate": result})

    def table(self):
        lines = [f"### {self.label}", ""]
        lines.append("| train | τ | keys | train wall | peak RSS | " + " | ".join(METHODS) + " |")
        lines.append("|---|---:|---|---:|---:|" + "---:|" * len(METHODS))
        for r in self.rows:
            t = r["train"]
            keys = f"learned ({t['key_epochs']} ep)" if t.get("key_epochs", 0) else "centroids"
            cells = []
            for m in METHODS:
                got = r["validate"]["methods"].get(m.replace("-", "_"))
                cells.append(f"{100 * got['recall_at_1']:.1f}" if got else "–")
            lines.append(f"| {r['row']} | {t['temperature']:.3g} | {keys} | {r['wall']:.0f} s | "
                         f"{r['rss'] / 1e9:.2f} GB | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"R@1 % on {self.rows[0]['validate']['in_scope_queries']} test queries "
                     f"(`{os.path.relpath(self.test, ROOT)}`).")
        return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--work", default=os.path.join(ROOT, "out", "defaults-quality"))
    parser.add_argument("--clinc", default=os.path.join(ROOT, "..", "shared", "datasets", "clinc150"))
    parser.add_argument("--wikianswers", default=os.path.join(ROOT, "..", "shared", "datasets", "wikianswers"))
    parser.add_argument("--only", default="demo,clinc150,wikianswers")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    sets = []
    if "demo" in wanted:
        sets.append(DataSet(args, "demo", "Demo data (33 clusters; test: data/demo/heldout.json)",
                            [os.path.join(ROOT, "data/demo/clusters.json"), os.path.join(ROOT, "data/demo/extra.jsonl")],
                            os.path.join(ROOT, "data/demo/heldout.json")))
    if "clinc150" in wanted:
        if os.path.exists(os.path.join(args.clinc, "data_full.json")):
            work = os.path.join(args.work, "clinc150")
            os.makedirs(work, exist_ok=True)
            run([sys.executable, os.path.join(HERE, "clinc150_convert.py"), args.clinc, work])
            sets.append(DataSet(args, "clinc150", "CLINC150 (150 clusters; test split)", [os.path.join(work, "train.jsonl")],
                                os.path.join(work, "test.jsonl"), val=os.path.join(work, "val.jsonl")))
        else:
            print(f"skipped: CLINC150 ({args.clinc} has no data_full.json)", file=sys.stderr)
    if "wikianswers" in wanted:
        if os.path.exists(os.path.join(args.wikianswers, "train.jsonl")):
            sets.append(DataSet(args, "wikianswers", "WikiAnswers (102,476 clusters; test.jsonl)",
                                [os.path.join(args.wikianswers, "train.jsonl")],
                                os.path.join(args.wikianswers, "test.jsonl")))
        else:
            print(f"skipped: WikiAnswers ({args.wikianswers} has no train.jsonl)", file=sys.stderr)

    report = []
    for ds in sets:
        ds.prepare()
        ds.train_and_validate("default (no flags)", [])
        ds.train_and_validate("--no-tune (τ 0.1, before tuning)", ["--no-tune"])
        if ds.val:
            ds.train_and_validate("tuned on the val split (--val)", ["--val", ds.val])
        report.append(ds.table())
        print(report[-1], flush=True)
    with open(os.path.join(args.work, "defaults_quality.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(report))


if __name__ == "__main__":
    main()
