#!/usr/bin/python3
"""The teacher's routing + projection written the obvious way in NumPy and in
PyTorch eager, timed on the same shapes as bench/teacher_bench.cpp (d = 384,
queries near some centroids), one JSON line per (framework, heads, batch).

  OPENBLAS_NUM_THREADS=T bench/teacher_peers.py --framework numpy --threads T
  bench/teacher_peers.py --framework torch --threads T [--heads 1000,10000]

NumPy's thread count is OpenBLAS's, which is fixed when numpy is imported, so
set OPENBLAS_NUM_THREADS to the same value as --threads.
"""
import argparse
import json
import time

import numpy as np

DIM = 384
QUERIES = 256
TAU = 0.1


def head_set(heads, seed):
    rng = np.random.default_rng(seed)
    c = rng.uniform(-1, 1, size=(heads, DIM)).astype(np.float32)
    a = rng.uniform(-1, 1, size=(heads, DIM)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    noise = rng.uniform(-1, 1, size=(QUERIES, DIM)).astype(np.float32)
    q = c[(np.arange(QUERIES) * 7919) % heads] + 0.05 * noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return c, a, q


def numpy_teacher(c, a):
    def project(q):  # q: batch x d, unit rows
        s = q @ c.T / TAU
        s -= s.max(axis=1, keepdims=True)
        w = np.exp(s)
        w /= w.sum(axis=1, keepdims=True)
        p = w @ a
        return p / np.linalg.norm(p, axis=1, keepdims=True)
    return project


def torch_teacher(c, a):
    import torch
    ct, at = torch.from_numpy(c), torch.from_numpy(a)

    def project(q):
        with torch.inference_mode():
            w = torch.softmax(q @ ct.T / TAU, dim=1)
            p = w @ at
            return p / p.norm(dim=1, keepdim=True)
    return project


def time_per_call(fn, arg, budget):
    fn(arg)  # warm-up
    calls, start = 0, time.perf_counter()
    while True:
        fn(arg)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget and calls >= 2:
            return elapsed / calls


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--framework", choices=["numpy", "torch"], required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--heads", default="1000,10000,100000,1000000")
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--budget", type=float, default=0.5, help="seconds of timing per point")
    args = ap.parse_args()
    if args.framework == "torch":
        import torch
        torch.set_num_threads(args.threads)
        version = torch.__version__
    else:
        version = np.__version__
    for heads in (int(x) for x in args.heads.split(",")):
        c, a, q = head_set(heads, heads)
        project = (numpy_teacher if args.framework == "numpy" else torch_teacher)(c, a)
        for batch in (int(x) for x in args.batches.split(",")):
            qb = q[:batch].copy()
            if args.framework == "torch":
                import torch
                qb = torch.from_numpy(qb)
            seconds = time_per_call(project, qb, args.budget)
            print(json.dumps({"framework": args.framework, "version": version, "heads": heads, "batch": batch,
                              "threads": args.threads, "us_per_query": seconds * 1e6 / batch}), flush=True)
        del c, a, q, project


if __name__ == "__main__":
    main()
