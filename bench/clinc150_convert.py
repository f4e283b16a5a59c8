#!/usr/bin/env python3
"""Converts a CLINC150-format dataset (data_full.json + domains.json) into the
files the quality benchmark (bench/quality.sh) feeds to ldaproj:

  train.jsonl   `ldaproj import` input: a name record per intent, its answer
                (from bench/data/clinc150_answers.jsonl, written for ldaproj)
                and its train queries as questions
  val.jsonl     held-out queries for `ldaproj validate --test`:
  test.jsonl      {"query", "cluster"} in scope, {"query", "out_of_scope": true}
                  for the `oos` queries of the split and of oos_<split>
  domains.tsv   cluster<TAB>domain lines (`ldaproj domains/ensemble --labels`)

The dataset is read-only input; nothing here is committed. Exits 0 with
"skipped: ..." when the data file is absent, 1 on bad input, 2 on bad usage.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{path}: {e}")


def read_answers(path):
    answers = {}
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        fail(f"{path}: {e} (give the answers file with --answers)")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            fail(f"{path}:{number}: not valid JSON ({e})")
        if not isinstance(record.get("cluster"), str) or not str(record.get("answer", "")).strip():
            fail(f'{path}:{number}: expected {{"cluster": "...", "answer": "..."}}')
        answers[record["cluster"]] = record["answer"]
    return answers


def pairs(data, split, data_file):
    rows = data.get(split, [])
    if not isinstance(rows, list):
        fail(f'{data_file}: field "{split}": expected a list of [text, intent] pairs')
    out = []
    for i, row in enumerate(rows):
        if (not isinstance(row, list) or len(row) != 2 or not isinstance(row[0], str)
                or not isinstance(row[1], str) or not row[0].strip()):
            fail(f'{data_file}: {split}[{i}]: expected ["non-empty text", "intent"]')
        out.append((row[0], row[1]))
    return out


def main():
    parser = argparse.ArgumentParser(description="CLINC150 -> ldaproj import/validate files")
    parser.add_argument("data_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--answers", default=os.path.join(HERE, "data", "clinc150_answers.jsonl"))
    parser.add_argument("--data", default="data_full.json",
                        help="data file inside DATA_DIR (CLINC also ships data_small.json, ...)")
    args = parser.parse_args()

    data_file = os.path.join(args.data_dir, args.data)
    if not os.path.exists(data_file):
        print(f"skipped: dataset not found at {data_file}")
        return
    data = read_json(data_file)
    for split in ("train", "val", "test"):
        if not isinstance(data.get(split), list):
            fail(f'{data_file}: field "{split}": expected a list of [text, intent] pairs')

    domain_of = {}
    domains_file = os.path.join(args.data_dir, "domains.json")
    if os.path.exists(domains_file):
        domains = read_json(domains_file)
        if not isinstance(domains, dict):
            fail(f'{domains_file}: expected {{"domain": ["intent", ...]}}')
        for domain, intents in domains.items():
            if not isinstance(intents, list):
                fail(f'{domains_file}: field "{domain}": expected a list of intents')
            for intent in intents:
                domain_of[intent] = domain

    answers = read_answers(args.answers)
    train = [(t, i) for t, i in pairs(data, "train", data_file) if i != "oos"]
    intents = sorted({i for _, i in train})
    if not intents:
        fail(f"{data_file}: no in-scope train queries")
    missing = [i for i in intents if i not in answers]
    if missing:
        fail(f'{args.answers}: no answer for {len(missing)} intents (e.g. "{missing[0]}"); '
             "add a {\"cluster\", \"answer\"} line for each")

    os.makedirs(args.out_dir, exist_ok=True)

    def write_jsonl(name, records):
        with open(os.path.join(args.out_dir, name), "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")

    records = []
    for intent in intents:
        name = intent.replace("_", " ")
        records.append({"cluster": intent, "name": name[:1].upper() + name[1:],
                        "description": f"CLINC150 intent {intent} (domain {domain_of.get(intent, 'all')})"})
        records.append({"cluster": intent, "answer": answers[intent]})
    records += [{"cluster": i, "question": t} for t, i in train]
    write_jsonl("train.jsonl", records)

    known = set(intents)
    counts = {}
    for split in ("val", "test"):
        rows = pairs(data, split, data_file)
        unknown = [i for _, i in rows if i != "oos" and i not in known]
        if unknown:
            fail(f'{data_file}: {split} names intent "{unknown[0]}" that has no train queries')
        in_scope = [{"query": t, "cluster": i} for t, i in rows if i != "oos"]
        out_of_scope = [{"query": t, "out_of_scope": True}
                        for t, i in rows + pairs(data, f"oos_{split}", data_file) if i == "oos"]
        write_jsonl(f"{split}.jsonl", in_scope + out_of_scope)
        counts[split] = (len(in_scope), len(out_of_scope))

    with open(os.path.join(args.out_dir, "domains.tsv"), "w", encoding="utf-8") as f:
        for intent in intents:
            f.write(f"{intent}\t{domain_of.get(intent, 'all')}\n")

    print(f"{data_file} -> {args.out_dir}: {len(intents)} intents, {len(train)} train questions, "
          f"val {counts['val'][0]} (+{counts['val'][1]} out-of-scope), "
          f"test {counts['test'][0]} (+{counts['test'][1]} out-of-scope)")


if __name__ == "__main__":
    main()
