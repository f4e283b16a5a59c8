#!/usr/bin/env python3
"""Retrieval quality benchmark (`make bench-quality`): CLINC150 and the bundled demo data.

CLINC150 (../shared/datasets/clinc150 unless --clinc DIR; skipped when absent):
  convert -> import -> embed (cached in BUILD/quality/, reruns only re-validate)
  -> choose every setting on the val split (teacher temperature, sparse route-k,
     question-routing temperature and neighbours) -> train with the chosen
     temperature -> distill -> ensemble (CLINC's 10 domains as manual labels)
  -> choose each method's out-of-scope threshold on val -> validate on test;
  the encoder fine-tuned on train (`finetune-encoder`, epoch chosen on val) -> embed with it
  -> learned keys with the val-chosen temperature and epochs -> validate on test; and the same
  fine-tuning refit on train+val for the epoch count val chose.
Demo data (data/demo, never tuned on): the same commands with CLINC's choices.
The tables go into docs/QUALITY.md between the bench-quality markers.

Adding a method is one entry in METHODS; `ldaproj validate` does the rest.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every method in the table, in order. student/ensemble are trained below.
METHODS = [
    "direct",
    "global-w",
    "multi-head",
    "sparse-teacher",
    "question-routing",
    "student",
    "ensemble",
]
DEFAULT_TEMPERATURE = 0.1
TEMPERATURES = [0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2]
ROUTE_KS = [1, 2, 4, 8, 16, 64]
QUESTION_TEMPERATURES = [0.01, 0.02, 0.05, 0.1]
QUESTION_NEIGHBORS = [0, 20]
# Learned keys (`train --learn-keys`): the teacher's temperature and epochs, chosen together.
KEY_TEMPERATURES = [0.02, 0.05, 0.1]
KEY_EPOCHS = [25, 50, 200]
# Ideas on top of the learned keys, at the keys' chosen temperature (each kept only as an option):
# sub-keys per head (train --keys-per-head K), a query adapter learned with the keys
# (train --query-adapter), blends at query time (--blend-questions B, --blend-direct G).
SUB_KEYS = [2, 4]
IDEA_EPOCHS = [50, 200]
BLEND_QUESTIONS = [0.05, 0.1, 0.2, 0.3]
BLEND_DIRECT = [0.05, 0.1, 0.2]
# The encoder's last layer fine-tuned on the training questions (`finetune-encoder` defaults, whose
# learning rate was chosen on CLINC150 val in experiments/FINETUNE.md; the epoch is chosen on val).
FINE_TUNED_MODEL = "minilm-finetuned"
FINE_TUNE_LAYERS = [1, 2]  # how many last layers are trained; chosen on val


def fine_tuned_model(layers):
    """The fine-tuned model's directory (and so model) name."""
    return FINE_TUNED_MODEL if layers == 1 else f"{FINE_TUNED_MODEL}-l{layers}"
PLAIN = "plain"  # the plain multi-head teacher (centroid keys)
MAIN = "learned"  # the learned-keys teacher that is distilled and ensembled


def log(message):
    print(message, file=sys.stderr, flush=True)


class Ldaproj:
    def __init__(self, binary):
        self.binary = binary

    def __call__(self, *args, as_json=False):
        command = [self.binary, *map(str, args)]
        log("$ " + " ".join(command))
        started = time.time()
        result = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        seconds = time.time() - started
        if not as_json:
            sys.stderr.write(result.stdout)
            return result.stdout, seconds
        return json.loads(result.stdout), seconds


def best(rows, key=lambda r: (r["recall_at_1"], r["mrr_at_10"])):
    return max(rows, key=key)


class Run:
    """One dataset through import, embed, train, distill, ensemble and validate."""

    def __init__(self, ldaproj, name, work, import_files, test, val=None, labels=None):
        self.ldaproj, self.name, self.work = ldaproj, name, work
        self.import_files, self.test, self.val, self.labels = import_files, test, val, labels
        self.db = os.path.join(work, "store.db")
        self.base_model = None  # the bundled encoder's name, from prepare()
        self.report = {"name": name}

    def cache(self, split):
        return ["--embedding-cache", os.path.join(self.work, f"{split}.embeddings")]

    def stamp(self, name, value=None):
        path = os.path.join(self.work, name + ".json")
        if value is not None:
            with open(path, "w") as f:
                json.dump(value, f, indent=1)
        return json.load(open(path)) if os.path.exists(path) else None

    def prepare(self):
        os.makedirs(self.work, exist_ok=True)
        self.ldaproj("import", "--db", self.db, *self.import_files)
        out, seconds = self.ldaproj("embed", "--db", self.db, "--quiet")
        found = re.search(r"(\d+) new embeddings with (\S+)", out)
        new, self.base_model = int(found.group(1)), found.group(2)
        if new > 0:
            self.stamp("embed", {"embeddings": new, "seconds": round(seconds, 1)})
        self.report["embed"] = self.stamp("embed")
        stats, _ = self.ldaproj("stats", "--db", self.db, "--json", as_json=True)
        self.report["clusters"], self.report["questions"] = stats["clusters"], stats["questions"]

    def train_base(self, db, *args):
        """`ldaproj train` on the base encoder's embeddings: named, because once a fine-tuned encoder has
        embedded the store too, train refuses to guess. --no-tune: this benchmark makes every choice on
        val itself and passes it; a flag it leaves out means the plain setting (centroid keys), not one
        train would tune (bench/defaults_quality.py measures the self-tuning). --replace: reruns retrain
        the same names (train keeps earlier projections and refuses a taken name otherwise)."""
        return self.ldaproj("train", "--db", db, "--embedding-model", self.base_model, "--no-tune", "--replace",
                            *args)

    def validate(self, split, *args):
        file = self.val if split == "val" else self.test
        out, _ = self.ldaproj("validate", "--db", self.db, "--test", file, *self.cache(split), "--json", *args,
                              as_json=True)
        return out

    def tune_on_val(self):
        """Every choice from the val split: the settings with the best R@1 (then MRR@10). Cached."""
        cached = self.stamp("tuned")
        if cached:
            self.report["val_sweeps"] = cached["sweeps"]
            return cached["settings"]
        self.train_base(self.db, "--name", PLAIN, "--temperature", DEFAULT_TEMPERATURE)
        sweeps = []
        for neighbors in QUESTION_NEIGHBORS:
            out = self.validate("val", "--projection", PLAIN, "--methods", "direct",
                                "--sweep-temperature", ",".join(map(str, TEMPERATURES)),
                                "--sweep-question-temperature", ",".join(map(str, QUESTION_TEMPERATURES)),
                                "--question-neighbors", neighbors)
            sweeps += [dict(r, keys="centroids") for r in out["sweep"]
                       if neighbors == QUESTION_NEIGHBORS[0] or r["method"] == "question-routing"]
        plain = best([r for r in sweeps if r["method"] == "multi-head"])
        questions = best([r for r in sweeps if r["method"] == "question-routing"])
        learned = []
        for t in KEY_TEMPERATURES:
            for epochs in KEY_EPOCHS:
                name = f"tune_keys_t{t}_e{epochs}"
                self.train_base(self.db, "--name", name, "--temperature", t, "--learn-keys", epochs)
                out = self.validate("val", "--projection", name, "--methods", "multi-head")
                learned.append(dict(out["methods"]["multi_head"], method="multi-head", temperature=t,
                                    keys=f"learned, {epochs} epochs", key_epochs=epochs))
        keys = best(learned)
        settings = {"plain_temperature": plain["temperature"], "temperature": keys["temperature"],
                    "key_epochs": keys["key_epochs"], "question_temperature": questions["question_temperature"],
                    "question_neighbors": questions["question_neighbors"]}
        name = f"tune_keys_t{keys['temperature']}_e{keys['key_epochs']}"
        out = self.validate("val", "--projection", name, "--methods", "direct",
                            "--sweep-route-k", ",".join(map(str, ROUTE_KS)))
        routes = [dict(r, keys=keys["keys"]) for r in out["sweep"]]
        settings["route_k"] = best(routes)["route_k"]
        sweeps += learned + routes
        ideas = self.tune_ideas(settings, name)
        settings["ideas"] = {k: v["setting"] for k, v in ideas.items()}
        sweeps += [dict(v["row"], idea=k) for k, v in ideas.items()]
        sweeps += [dict(r) for v in ideas.values() for r in v["tried"]]
        self.stamp("tuned", {"settings": settings, "sweeps": sweeps})
        self.report["val_sweeps"] = sweeps
        return settings

    def tune_ideas(self, settings, keys_name):
        """The ideas beyond learned keys, each with its own settings chosen on val (best R@1, then MRR@10)."""
        t = settings["temperature"]
        ideas = {}

        def trained(name, *args):
            self.train_base(self.db, "--name", name, "--temperature", t, *args)
            return self.validate("val", "--projection", name, "--methods", "multi-head")["methods"]["multi_head"]

        tried = []
        for k in SUB_KEYS:
            for epochs in IDEA_EPOCHS:
                m = trained(f"tune_sub{k}_e{epochs}", "--learn-keys", epochs, "--keys-per-head", k)
                tried.append(dict(m, method="multi-head", temperature=t, keys=f"{k} sub-keys, {epochs} epochs",
                                  setting={"keys_per_head": k, "key_epochs": epochs}))
        ideas["sub_keys"] = tried
        tried = []
        for epochs in IDEA_EPOCHS:
            m = trained(f"tune_adapter_e{epochs}", "--learn-keys", epochs, "--query-adapter")
            tried.append(dict(m, method="multi-head", temperature=t, keys=f"learned + query adapter, {epochs} epochs",
                              setting={"key_epochs": epochs}))
        ideas["adapter"] = tried
        for idea, flag, values in (("blend_questions", "--blend-questions", BLEND_QUESTIONS),
                                   ("blend_direct", "--blend-direct", BLEND_DIRECT)):
            tried = []
            for b in values:
                m = self.validate("val", "--projection", keys_name, "--methods", "multi-head", "--temperature", t,
                                  *self.question_args(settings), flag, b)["methods"]["multi_head"]
                tried.append(dict(m, method="multi-head", temperature=t,
                                  keys=f"learned, {settings['key_epochs']} epochs, {flag[2:]} {b:g}",
                                  setting={"blend": b}))
            ideas[idea] = tried
        out = {}
        for idea, rows in ideas.items():
            top = best(rows)
            out[idea] = {"setting": top["setting"], "row": top, "tried": [r for r in rows if r is not top]}
        return out

    @staticmethod
    def question_args(settings):
        return ["--question-temperature", settings["question_temperature"],
                "--question-neighbors", settings["question_neighbors"]]

    def train(self, settings):
        """The plain teacher, the main one (learned keys) with its student and ensemble; skipped when done."""
        wanted = {k: settings[k] for k in ("plain_temperature", "temperature", "key_epochs")}
        wanted["labels"] = bool(self.labels)
        wanted["name"] = MAIN
        done = self.stamp("trained")
        if done and done["settings"] == wanted:
            self.report["training"] = done["seconds"]
            return
        times = {}
        self.train_base(self.db, "--name", PLAIN, "--temperature", settings["plain_temperature"])
        # Trained last, so it is the active projection the student and ensemble attach to.
        _, times["train"] = self.train_base(self.db, "--name", MAIN, "--temperature", settings["temperature"],
                                         "--learn-keys", settings["key_epochs"])
        _, times["distill"] = self.ldaproj("distill", "--db", self.db, "--quiet")
        domains = ["--labels", self.labels] if self.labels else ["--domains", "4"]
        _, times["ensemble"] = self.ldaproj("ensemble", "--db", self.db, *domains, "--quiet")
        times = {k: round(v, 1) for k, v in times.items()}
        self.stamp("trained", {"settings": wanted, "seconds": times})
        self.report["training"] = times

    def train_ideas(self, settings, refit_questions=None):
        """The idea projections with their val-chosen settings, and the refit on train+val (CLINC only)."""
        ideas = settings.get("ideas")
        if not ideas:
            return
        wanted = {"settings": {k: settings[k] for k in ("temperature", "key_epochs")}, "ideas": ideas,
                  "refit": bool(refit_questions)}
        if self.stamp("trained_ideas") == wanted:
            return
        t = settings["temperature"]
        sub = ideas["sub_keys"]
        self.train_base(self.db, "--name", "idea_sub_keys", "--temperature", t,
                     "--learn-keys", sub["key_epochs"], "--keys-per-head", sub["keys_per_head"])
        self.train_base(self.db, "--name", "idea_adapter", "--temperature", t,
                     "--learn-keys", ideas["adapter"]["key_epochs"], "--query-adapter")
        if refit_questions:
            # A copy of the store with the val questions added as training questions; the epochs and
            # temperature are the ones val chose for the learned keys, val is not used again.
            refit_db = os.path.join(self.work, "refit.db")
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(refit_db + suffix):
                    os.remove(refit_db + suffix)
            for suffix in ("", "-wal"):  # the WAL may hold the latest commits
                if os.path.exists(self.db + suffix):
                    shutil.copyfile(self.db + suffix, refit_db + suffix)
            self.ldaproj("import", "--db", refit_db, refit_questions)
            self.ldaproj("embed", "--db", refit_db, "--quiet")
            self.train_base(refit_db, "--name", "refit", "--temperature", t,
                         "--learn-keys", settings["key_epochs"])
        self.stamp("trained_ideas", wanted)

    def fine_tune(self, settings, layers=None):
        """Fine-tuned encoders (one per FINE_TUNE_LAYERS, epoch chosen on val; the best on val is kept, or
        `layers` when given), the kept one's embeddings and learned keys. Returns the layers kept."""
        candidates = {}
        for k in ([layers] if layers else FINE_TUNE_LAYERS if self.val else FINE_TUNE_LAYERS[:1]):
            model_dir = os.path.join(self.work, fine_tuned_model(k))
            if not os.path.isdir(model_dir):
                val = ["--val", self.val] if self.val else []
                self.ldaproj("finetune-encoder", "--db", self.db, "--out", model_dir, "--layers", k, *val, "--json",
                             as_json=True)
            candidates[k] = json.load(open(os.path.join(model_dir, "fine_tune.json")))

        def val_accuracy(k):
            r = candidates[k]
            return r["epochs"][r["chosen_epoch"] - 1]["validation_accuracy"]

        chosen = max(sorted(candidates), key=val_accuracy)  # ties keep fewer layers
        report = dict(candidates[chosen], tried={k: val_accuracy(k) for k in candidates})
        self.report["fine_tune"] = report
        wanted = {k: settings[k] for k in ("temperature", "key_epochs")}
        wanted["layers"] = chosen
        done = self.stamp("fine_tuned")
        if not (done and done["settings"] == wanted):
            model_dir = os.path.join(self.work, fine_tuned_model(chosen))
            self.ldaproj("embed", "--db", self.db, "--model", model_dir, "--quiet")
            self.ldaproj("train", "--db", self.db, "--replace", "--name", "idea_fine_tuned", "--embedding-model",
                         fine_tuned_model(chosen), "--temperature", settings["temperature"],
                         "--learn-keys", settings["key_epochs"])
            self.stamp("fine_tuned", {"settings": wanted, "report": report})
        return chosen

    def fine_tune_refit(self, settings):
        """The fine-tuning refit on train+val (refit.db) for the epoch count val chose; val is not used again."""
        refit_db = os.path.join(self.work, "refit.db")
        done = self.stamp("fine_tuned")
        if not os.path.exists(refit_db) or not done:
            return
        chosen, layers = done["report"]["chosen_epoch"], done["settings"]["layers"]
        model_dir = os.path.join(self.work, FINE_TUNED_MODEL + "-refit")
        wanted = {"temperature": settings["temperature"], "key_epochs": settings["key_epochs"], "epochs": chosen,
                  "layers": layers}
        done = self.stamp("fine_tuned_refit")
        if done and done["settings"] == wanted and os.path.isdir(model_dir):
            self.report["fine_tune_refit"] = done["report"]
            return
        if os.path.isdir(model_dir):
            shutil.rmtree(model_dir)
        self.ldaproj("finetune-encoder", "--db", refit_db, "--out", model_dir, "--epochs", chosen, "--layers", layers,
                     "--json")
        report = json.load(open(os.path.join(model_dir, "fine_tune.json")))
        self.ldaproj("embed", "--db", refit_db, "--model", model_dir, "--quiet")
        self.ldaproj("train", "--db", refit_db, "--replace", "--name", "refit_fine_tuned", "--embedding-model",
                     FINE_TUNED_MODEL + "-refit", "--temperature", settings["temperature"],
                     "--learn-keys", settings["key_epochs"])
        self.stamp("fine_tuned_refit", {"settings": wanted, "report": report})
        self.report["fine_tune_refit"] = report

    @staticmethod
    def setting_args(settings):
        return ["--temperature", settings["temperature"], "--route-k", settings["route_k"],
                "--question-temperature", settings["question_temperature"],
                "--question-neighbors", settings["question_neighbors"]]

    def evaluate(self, settings, thresholds=None):
        """Every method on test (the main projection) and the plain teacher; thresholds from val when there is one."""
        methods = ",".join(METHODS)
        args = self.setting_args(settings)
        plain_args = ["--projection", PLAIN, "--methods", "multi-head", "--temperature", settings["plain_temperature"]]
        if self.val:
            val = self.validate("val", "--projection", MAIN, "--methods", methods, *args, "--choose-reject-threshold")
            plain_val = self.validate("val", *plain_args, "--choose-reject-threshold")
            self.report["val"] = val
            thresholds = {m: v["chosen_rejection"]["threshold"] for m, v in val["methods"].items()}
            thresholds["plain"] = plain_val["methods"]["multi_head"]["chosen_rejection"]["threshold"]
        thresholds = thresholds or {}

        def reject(pairs):
            text = ",".join(f"{m.replace('_', '-')}={t}" for m, t in pairs if t is not None)
            return ["--reject-below", text] if text else []

        test = self.validate("test", "--projection", MAIN, "--methods", methods, *args,
                             *reject((m, t) for m, t in thresholds.items() if m != "plain"))
        plain = self.validate("test", *plain_args, "--sweep-temperature", DEFAULT_TEMPERATURE,
                              *reject([("multi-head", thresholds.get("plain"))]))
        self.report.update({"settings": settings, "thresholds": thresholds, "test": test, "test_plain": plain})
        self.report["test_ideas"] = self.evaluate_ideas(settings)
        return thresholds

    def evaluate_ideas(self, settings):
        """Each idea's row on test with its val-chosen settings (no rejection)."""
        ideas = settings.get("ideas")
        if not ideas:
            return {}
        t = settings["temperature"]
        one = ["--methods", "multi-head", "--temperature", t]
        out = {}
        for idea, projection in (("sub_keys", "idea_sub_keys"), ("adapter", "idea_adapter")):
            out[idea] = self.validate("test", "--projection", projection, *one)["methods"]["multi_head"]
        for idea, flag in (("blend_questions", "--blend-questions"), ("blend_direct", "--blend-direct")):
            out[idea] = self.validate("test", "--projection", MAIN, *one, *self.question_args(settings), flag,
                                      ideas[idea]["blend"])["methods"]["multi_head"]
        done = self.stamp("fine_tuned")
        model_dir = os.path.join(self.work, fine_tuned_model(done["settings"]["layers"])) if done else ""
        if done and os.path.isdir(model_dir):
            test, _ = self.ldaproj("validate", "--db", self.db, "--test", self.test, "--model", model_dir,
                                   "--embedding-cache", os.path.join(self.work, "test.fine_tuned.embeddings"),
                                   "--json", "--projection", "idea_fine_tuned", *one, as_json=True)
            out["fine_tuned"] = test["methods"]["multi_head"]
        refit_db = os.path.join(self.work, "refit.db")
        if os.path.exists(refit_db):
            test, _ = self.ldaproj("validate", "--db", refit_db, "--test", self.test, *self.cache("test"), "--json",
                                   "--projection", "refit", *one, as_json=True)
            out["refit"] = test["methods"]["multi_head"]
        refit_model = os.path.join(self.work, FINE_TUNED_MODEL + "-refit")
        if self.stamp("fine_tuned_refit") and os.path.isdir(refit_model):
            test, _ = self.ldaproj("validate", "--db", refit_db, "--test", self.test, "--model", refit_model,
                                   "--embedding-cache", os.path.join(self.work, "test.fine_tuned_refit.embeddings"),
                                   "--json", "--projection", "refit_fine_tuned", *one, as_json=True)
            out["fine_tuned_refit"] = test["methods"]["multi_head"]
        return out


def convert_clinc(clinc_dir, work):
    os.makedirs(work, exist_ok=True)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "clinc150_convert.py"), clinc_dir, work],
                            check=True, stdout=subprocess.PIPE, text=True)
    log(result.stdout.strip())
    return not result.stdout.startswith("skipped")


def clinc_refit_questions(work):
    """CLINC150's in-scope val queries as training questions (for the train+val refit)."""
    out = os.path.join(work, "val_as_train.jsonl")
    with open(out, "w") as f:
        for line in open(os.path.join(work, "val.jsonl")):
            r = json.loads(line)
            if not r.get("out_of_scope"):
                f.write(json.dumps({"cluster": r["cluster"], "question": r["query"]}, ensure_ascii=False) + "\n")
    return out


def demo_heldout(work):
    """data/demo's two held-out files as one JSONL file for validate."""
    os.makedirs(work, exist_ok=True)
    out = os.path.join(work, "heldout.jsonl")
    doc = json.load(open(os.path.join(ROOT, "data", "demo", "heldout.json")))
    with open(out, "w") as f:
        for c in doc["clusters"]:
            for q in c["queries"].get("novel", []):
                f.write(json.dumps({"query": q, "cluster": c["id"]}) + "\n")
        f.write(open(os.path.join(ROOT, "data", "demo", "extra_heldout.jsonl")).read())
    return out


# ------------------------------------------------------------------ report
def pct(x):
    return f"{100 * x:.1f}"


def row(name, m, base):
    return (f"| {name} | {pct(m['recall_at_1'])} | {pct(m['recall_at_5'])} | {m['mrr_at_10']:.3f} | "
            f"{m['ndcg_at_10']:.3f} | {100 * (m['recall_at_1'] - base):+.1f} |")


def metrics_table(report):
    s = report["settings"]
    plain = report["test_plain"]
    base = plain["methods"]["multi_head"]["recall_at_1"]
    lines = ["| method | R@1 | R@5 | MRR@10 | nDCG@10 | R@1 vs plain teacher |", "|---|---:|---:|---:|---:|---:|"]
    for r in plain.get("sweep", []):
        lines.append(row(f"multi-head, centroid keys, default τ={r['temperature']:g}", r, base))
    lines.append(row(f"**multi-head, centroid keys, τ={s['plain_temperature']:g} (the plain teacher)**",
                     plain["methods"]["multi_head"], base))
    keys = f"learned keys ({s['key_epochs']} epochs)"
    notes = {"multi_head": f"multi-head, {keys}, τ={s['temperature']:g}",
             "sparse_teacher": f"sparse-teacher, {keys}, τ={s['temperature']:g}, route-k {s['route_k']}",
             "question_routing": f"question-routing, τq={s['question_temperature']:g}, "
                                 f"{s['question_neighbors'] or 'all'} neighbours",
             "student": f"student of the {keys} teacher",
             "ensemble": f"ensemble of the {keys} teacher"}
    for key, m in report["test"]["methods"].items():
        lines.append(row(notes.get(key, key.replace("_", "-")), m, base))
    ideas = s.get("ideas") or {}
    for key, m in (report.get("test_ideas") or {}).items():
        if key == "sub_keys":
            name = (f"multi-head, {ideas[key]['keys_per_head']} learned sub-keys per head "
                    f"({ideas[key]['key_epochs']} epochs), τ={s['temperature']:g}")
        elif key == "adapter":
            name = f"multi-head, learned keys + query adapter ({ideas[key]['key_epochs']} epochs), τ={s['temperature']:g}"
        elif key == "blend_questions":
            name = f"multi-head, {keys}, τ={s['temperature']:g}, blended with question routing (b={ideas[key]['blend']:g})"
        elif key == "blend_direct":
            name = f"multi-head, {keys}, τ={s['temperature']:g}, blended with direct (g={ideas[key]['blend']:g})"
        elif key == "fine_tuned":
            ft = report.get("fine_tune") or {}
            how = (f"epoch {ft['chosen_epoch']} of {len(ft['epochs'])} chosen on val" if ft.get("epochs") and
                   ft["epochs"][0].get("validation_accuracy", -1) >= 0 else "last epoch")
            n = ft.get("options", {}).get("layers", 1)
            layers = "last layer" if n == 1 else f"last {n} layers"
            name = (f"multi-head, **encoder's {layers} fine-tuned** on the training questions ({how}), "
                    f"then {keys}, τ={s['temperature']:g}")
        elif key == "fine_tuned_refit":
            ft = report.get("fine_tune_refit") or {}
            n = ft.get("options", {}).get("layers", 1)
            layers = "last layer" if n == 1 else f"last {n} layers"
            name = (f"multi-head, encoder's {layers} fine-tuned on train+val ({len(ft.get('epochs', []))} epochs, "
                    f"the count val chose above), then {keys} on train+val, τ={s['temperature']:g}")
        else:
            name = f"multi-head, {keys}, τ={s['temperature']:g}, refit on train+val"
        lines.append(row(name, m, base))
    return lines


def rejection_table(report):
    lines = ["| method | threshold (from val) | in-scope accuracy | OOS recall | in-scope rejected |",
             "|---|---:|---:|---:|---:|"]
    has_oos = report["test"]["out_of_scope_queries"] > 0
    entries = [("multi-head, centroid keys", report["test_plain"]["methods"]["multi_head"])]
    entries += [(k.replace("_", "-"), m) for k, m in report["test"]["methods"].items()]
    for name, m in entries:
        r = m.get("rejection")
        if not r:
            continue
        oos = pct(r["out_of_scope_recall"]) if has_oos else "–"
        lines.append(f"| {name} | {r['threshold']:.4f} | {pct(r['in_scope_accuracy'])} | {oos} | "
                     f"{pct(r['in_scope_rejected'])} |")
    return lines


def sweep_table(report):
    lines = ["| method | keys | setting | R@1 | MRR@10 |", "|---|---|---|---:|---:|"]
    for r in report["val_sweeps"]:
        if r["method"] == "multi-head":
            setting = f"τ={r['temperature']:g}"
        elif r["method"] == "sparse-teacher":
            setting = f"τ={r['temperature']:g}, route-k {r['route_k']}"
        else:
            setting = f"τq={r['question_temperature']:g}, neighbours {r['question_neighbors'] or 'all'}"
        keys = r.get("keys", "") if r["method"] != "question-routing" else "–"
        lines.append(f"| {r['method']} | {keys} | {setting} | {pct(r['recall_at_1'])} | {r['mrr_at_10']:.3f} |")
    return lines


def render(reports, command):
    out = [f"Generated by `{command}` on {datetime.date.today().isoformat()} "
           f"({platform.machine()}, {os.cpu_count()} cores visible). R@k and accuracies in %."]
    for rep in reports:
        out += ["", f"### {rep['name']}", ""]
        embed = rep.get("embed")
        facts = f"{rep['clusters']} clusters, {rep['questions']} training questions"
        if embed:
            facts += f"; embedding {embed['embeddings']} texts took {embed['seconds']} s wall (cached for reruns)"
        t = rep.get("training") or {}
        if t:
            facts += "; " + ", ".join(f"{k} {v} s" for k, v in t.items())
        test = rep["test"]
        facts += (f". Test: {test['in_scope_queries']} in-scope queries"
                  + (f" + {test['out_of_scope_queries']} out-of-scope" if test["out_of_scope_queries"] else "") + ".")
        out += [facts, ""]
        s = rep["settings"]
        origin = "chosen on this dataset's val split" if rep.get("val_sweeps") else "taken unchanged from CLINC150's val split"
        out += [f"Settings ({origin}): plain teacher τ={s['plain_temperature']:g}; learned keys "
                f"{s['key_epochs']} epochs at τ={s['temperature']:g}; sparse route-k {s['route_k']}; question-routing "
                f"τq={s['question_temperature']:g} over {s['question_neighbors'] or 'all'} neighbours.", ""]
        out += metrics_table(rep) + [""]
        rej = rejection_table(rep)
        if len(rej) > 2:
            out += ["Out-of-scope rejection on test (confidence below the threshold → no answer; thresholds "
                    "maximise in-scope accuracy + OOS recall on CLINC150 val):", ""] + rej + [""]
        if rep.get("val_sweeps"):
            out += ["<details><summary>val results behind the choices</summary>", ""] + sweep_table(rep) + \
                   ["", "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


def write_doc(path, body):
    begin, end = "<!-- bench-quality:begin -->", "<!-- bench-quality:end -->"
    text = open(path).read() if os.path.exists(path) else f"# Retrieval quality\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        text = text.rstrip() + f"\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + body + end + tail)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--clinc", default=os.path.join(ROOT, "..", "shared", "datasets", "clinc150"))
    parser.add_argument("--doc", default=os.path.join(ROOT, "docs", "QUALITY.md"))
    args = parser.parse_args()
    ldaproj = Ldaproj(os.path.join(args.build, "ldaproj"))
    work = os.path.join(args.build, "quality")
    reports = []

    settings = {"plain_temperature": DEFAULT_TEMPERATURE, "temperature": DEFAULT_TEMPERATURE, "key_epochs": 0,
                "route_k": 64, "question_temperature": 0.02, "question_neighbors": 0}
    thresholds = None
    fine_tune_layers = FINE_TUNE_LAYERS[0]
    clinc_work = os.path.join(work, "clinc150")
    if convert_clinc(args.clinc, clinc_work):
        clinc = Run(ldaproj, "CLINC150 (test split)", clinc_work, [os.path.join(clinc_work, "train.jsonl")],
                    test=os.path.join(clinc_work, "test.jsonl"), val=os.path.join(clinc_work, "val.jsonl"),
                    labels=os.path.join(clinc_work, "domains.tsv"))
        clinc.prepare()
        settings = clinc.tune_on_val()
        clinc.train_ideas(settings, refit_questions=clinc_refit_questions(clinc_work))
        fine_tune_layers = clinc.fine_tune(settings)
        clinc.fine_tune_refit(settings)
        clinc.train(settings)
        thresholds = clinc.evaluate(settings)
        reports.append(clinc.report)
    else:
        log("CLINC150 not found: the demo runs with the default settings and no rejection thresholds")

    demo_work = os.path.join(work, "demo")
    demo = Run(ldaproj, "Demo data (data/demo, held-out queries; nothing tuned on it)", demo_work,
               [os.path.join(ROOT, "data", "demo", "clusters.json"), os.path.join(ROOT, "data", "demo", "extra.jsonl")],
               test=demo_heldout(demo_work))
    demo.prepare()
    demo.train_ideas(settings)
    demo.fine_tune(settings, layers=fine_tune_layers)
    demo.train(settings)
    demo.evaluate(settings, thresholds=thresholds)
    reports.append(demo.report)

    with open(os.path.join(work, "report.json"), "w") as f:
        json.dump(reports, f, indent=1)
    write_doc(args.doc, render(reports, "make bench-quality"))
    log(f"wrote {args.doc} (raw results in {os.path.join(work, 'report.json')})")


if __name__ == "__main__":
    main()
