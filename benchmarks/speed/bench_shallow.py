"""Fit time and peak memory of the shallow methods at the paper's feature size.

Each method is fitted in its own subprocess (so peak memory is its own) on N = 10,000 synthetic
training items of dimension 4,096 (the size of AlexNet fc7 features; non-negative like post-ReLU
activations, 10 classes, float32 as a feature cache stores them) at 64 bits, with the paper
defaults (SDH: 1,000 anchors; KSH: 300 anchors, 1,000 labelled items). Reported per method:

* ``fit s``: wall-clock seconds of ``fit`` (after the data are in memory);
* ``fit peak MiB``: the peak of memory allocated during ``fit`` (``tracemalloc``; NumPy reports its
  array buffers to it), i.e. what the method itself needs on top of its input;
* ``max RSS MiB``: the child process's peak resident set size (``resource``), which also counts
  the interpreter, the imported libraries (``import methods`` loads torch) and the input array.

    python -m benchmarks.speed.bench_shallow                      # all methods, N=10000, D=4096, 64 bits
    python -m benchmarks.speed.bench_shallow --methods ksh --n 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

METHODS = ("lsh", "itq", "sitq", "sdh", "ksh")
LIMIT_S = 300.0
LIMIT_MIB = 4096.0


def synthetic_features(n: int, d: int, n_classes: int = 10, seed: int = 0):
    """Non-negative class-structured features (float32) and one-hot labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    prototypes = rng.gamma(1.0, 1.0, size=(n_classes, d)).astype(np.float32)
    X = prototypes[y] + rng.standard_normal((n, d), dtype=np.float32)
    np.maximum(X, 0.0, out=X)
    return X, np.eye(n_classes, dtype=np.uint8)[y]


def child(method: str, n: int, d: int, n_bits: int) -> dict:
    """Fit one method and measure it (runs inside the subprocess)."""
    from methods import get_method

    X, Y = synthetic_features(n, d)
    model = get_method(method)(n_bits=n_bits, seed=0)
    tracemalloc.start()
    t0 = time.perf_counter()
    model.fit(X, Y)
    fit_s = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    codes = model.encode(X[:1000])
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "method": method, "n": n, "d": d, "n_bits": n_bits, "fit_s": fit_s,
        "fit_peak_mib": peak / 2**20, "max_rss_mib": maxrss_kib / 1024,
        "bit_balance_min": float(codes.mean(0).min()), "params": model.get_params(),
    }


def run(method: str, n: int, d: int, n_bits: int, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.speed.bench_shallow", "--child", method,
           "--n", str(n), "--d", str(d), "--bits", str(n_bits)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"timed out after {timeout:.0f} s"}
    except subprocess.CalledProcessError as exc:
        return {"method": method, "error": exc.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--child", choices=list(METHODS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.n, args.d, args.bits)))
        return 0

    print(f"fit N={args.n} x D={args.d} at {args.bits} bits; {platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} cores, numpy {np.__version__}")
    rows = []
    for method in args.methods:
        row = run(method, args.n, args.d, args.bits, args.timeout)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "params"}), flush=True)
    print("\n| method | fit s | fit peak MiB (tracemalloc) | max RSS MiB (process) |")
    print("|---|---|---|---|")
    ok = True
    for r in rows:
        if "error" in r:
            print(f"| {r['method'].upper()} | {r['error']} | | |")
            ok = False
            continue
        print(f"| {r['method'].upper()} | {r['fit_s']:.1f} | {r['fit_peak_mib']:.0f} | "
              f"{r['max_rss_mib']:.0f} |")
        if r["method"] in ("sdh", "ksh"):
            ok &= r["fit_s"] < LIMIT_S and r["max_rss_mib"] < LIMIT_MIB
    print(f"\nSDH and KSH within {LIMIT_S:.0f} s and {LIMIT_MIB:.0f} MiB: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
