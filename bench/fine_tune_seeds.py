#!/usr/bin/env python3
"""Seed spread of the fine-tuned encoder rows of docs/QUALITY.md (CLINC150).

Run after `make bench-quality`, which leaves the CLINC150 stores and the val-chosen settings in
BUILD/quality/clinc150. For every seed given, this repeats the two fine-tuning rows with
`finetune-encoder --seed S` and nothing else changed:
  train only:  fine-tune on the train questions, epoch chosen on val, learned keys, test R@1;
  refit:       fine-tune on train + val for the epoch count that seed's val run chose, learned keys.
Each seed works on copies of the stores in BUILD/quality/seeds/sS (the originals are not touched)
and is skipped when its results are already there. Prints one line per seed and writes
BUILD/quality/seeds/report.json.

  python3 bench/fine_tune_seeds.py [--build build] 2 3
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    print("$", " ".join(str(a) for a in args), file=sys.stderr, flush=True)
    subprocess.run([str(a) for a in args], check=True, stdout=subprocess.DEVNULL)


def copy_store(src, dst):
    if os.path.exists(dst):
        return
    for suffix in ("", "-wal"):  # the WAL may hold the latest commits
        if os.path.exists(src + suffix):
            shutil.copyfile(src + suffix, dst + ".partial" + suffix)
    for suffix in ("", "-wal"):
        if os.path.exists(dst + ".partial" + suffix):
            os.replace(dst + ".partial" + suffix, dst + suffix)


def test_recall(ldaproj, db, test, model_dir, projection, temperature):
    out = subprocess.run([ldaproj, "validate", "--db", db, "--test", test, "--model", model_dir, "--json",
                          "--projection", projection, "--methods", "multi-head", "--temperature", str(temperature)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["methods"]["multi_head"]


def one_seed(ldaproj, clinc, work, seed, settings, layers):
    os.makedirs(work, exist_ok=True)
    done = os.path.join(work, "result.json")
    if os.path.exists(done):
        return json.load(open(done))
    store, refit = os.path.join(work, "store.db"), os.path.join(work, "refit.db")
    copy_store(os.path.join(clinc, "store.db"), store)
    copy_store(os.path.join(clinc, "refit.db"), refit)
    t, key_epochs = settings["temperature"], settings["key_epochs"]
    test = os.path.join(clinc, "test.jsonl")

    name = f"minilm-ft-s{seed}"
    model = os.path.join(work, name)
    if not os.path.isdir(model):
        run(ldaproj, "finetune-encoder", "--db", store, "--out", model, "--layers", layers, "--seed", seed,
            "--val", os.path.join(clinc, "val.jsonl"), "--quiet")
    tuned = json.load(open(os.path.join(model, "fine_tune.json")))
    chosen = tuned["chosen_epoch"]
    run(ldaproj, "embed", "--db", store, "--model", model, "--quiet")
    run(ldaproj, "train", "--db", store, "--replace", "--name", "fine_tuned", "--embedding-model", name, "--temperature", t,
        "--learn-keys", key_epochs)
    train_only = test_recall(ldaproj, store, test, model, "fine_tuned", t)

    refit_name = f"minilm-ft-refit-s{seed}"
    refit_model = os.path.join(work, refit_name)
    if not os.path.isdir(refit_model):
        run(ldaproj, "finetune-encoder", "--db", refit, "--out", refit_model, "--layers", layers, "--seed", seed,
            "--epochs", chosen, "--quiet")
    run(ldaproj, "embed", "--db", refit, "--model", refit_model, "--quiet")
    run(ldaproj, "train", "--db", refit, "--replace", "--name", "refit_fine_tuned", "--embedding-model", refit_name,
        "--temperature", t, "--learn-keys", key_epochs)
    refitted = test_recall(ldaproj, refit, test, refit_model, "refit_fine_tuned", t)

    val = tuned["epochs"][chosen - 1]["validation_accuracy"]
    result = {"seed": seed, "layers": layers, "chosen_epoch": chosen, "val_accuracy": val,
              "test_train_only": train_only, "test_refit": refitted}
    with open(done, "w") as f:
        json.dump(result, f, indent=1)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("seeds", nargs="+", type=int, help="fine-tuning seeds (bench-quality's own run is seed 1)")
    args = parser.parse_args()
    ldaproj = os.path.join(args.build, "ldaproj")
    clinc = os.path.join(args.build, "quality", "clinc150")
    stamps = [os.path.join(clinc, f) for f in ("tuned.json", "fine_tuned.json", "store.db", "refit.db")]
    missing = [p for p in stamps if not os.path.exists(p)]
    if missing:
        sys.exit(f"fine_tune_seeds: {', '.join(missing)} missing: run `make bench-quality` with CLINC150 first")
    settings = json.load(open(stamps[0]))["settings"]
    layers = json.load(open(stamps[1]))["settings"]["layers"]
    results = []
    for seed in args.seeds:
        r = one_seed(ldaproj, clinc, os.path.join(args.build, "quality", "seeds", f"s{seed}"), seed, settings, layers)
        results.append(r)
        print(f"seed {seed}: {layers} layers, val {100 * r['val_accuracy']:.2f} at epoch {r['chosen_epoch']}; "
              f"test R@1 train only {100 * r['test_train_only']['recall_at_1']:.2f}, "
              f"refit on train+val {100 * r['test_refit']['recall_at_1']:.2f}", flush=True)
    with open(os.path.join(args.build, "quality", "seeds", "report.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
