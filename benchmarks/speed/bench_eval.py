"""Speed benchmark of the evaluation engine (``python -m benchmarks.speed.bench_eval --help``).

Builds synthetic codes of the size of the paper's benchmarks, correlated with the labels (each
class has a random prototype code; every item flips each bit with probability ``--flip``), and
times :func:`benchmarks.metrics.map_at_k` against

* the per-query reference public hashing code uses (DeepHash-pytorch ``CalcTopMap`` style: float
  matmul Hamming distances, one ``np.argsort`` per query), on a subset of queries scaled to all
  queries, with the mAP on that subset checked equal to ours (ranked by a stable sort, our rule);
* FAISS ``IndexBinaryFlat`` top-k search alone, if ``faiss`` is importable.

Peak memory is the process's maximum resident set size (``resource.getrusage``).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from benchmarks.metrics import map_at_k, pack_codes


def make_codes(n_q: int, n_db: int, n_bits: int, n_classes: int, multi: bool, flip: float,
               seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Codes = class prototype(s) XOR Bernoulli(flip) noise; multi-label items take 1-3 labels
    and the prototype of their first label."""
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 2, size=(n_classes, n_bits), dtype=np.uint8)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        first = rng.integers(0, n_classes, size=n)
        labels = np.zeros((n, n_classes), dtype=np.uint8)
        labels[np.arange(n), first] = 1
        if multi:
            extra = rng.integers(0, 3, size=n)  # 0-2 extra labels -> 1-3 labels per item
            for j in range(2):
                lab = rng.integers(0, n_classes, size=n)
                sel = extra > j
                labels[np.arange(n)[sel], lab[sel]] = 1
        noise = (rng.random((n, n_bits)) < flip).astype(np.uint8)
        return protos[first] ^ noise, labels

    q, ql = part(n_q)
    db, dbl = part(n_db)
    return q, db, ql, dbl


def reference_map(q: np.ndarray, db: np.ndarray, ql: np.ndarray, dbl: np.ndarray, k: int,
                  stable: bool) -> float:
    """Per-query argsort mAP@k (no-hit queries dropped), as public hashing evaluators do it."""
    qs = (2.0 * q - 1).astype(np.float32)
    dbs = (2.0 * db - 1).astype(np.float32)
    dbl_f = dbl.astype(np.float32)
    aps = []
    for i in range(len(q)):
        ham = 0.5 * (q.shape[1] - dbs @ qs[i])
        order = np.argsort(ham, kind="stable" if stable else None)[:k]
        rel = (dbl_f[order] @ ql[i].astype(np.float32) > 0).astype(np.float64)
        n_rel = rel.sum()
        if n_rel == 0:
            continue
        prec = np.cumsum(rel) / np.arange(1, k + 1)
        aps.append(float((prec * rel).sum() / n_rel))
    return float(np.mean(aps)) if aps else 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


def run_case(name: str, n_q: int, n_db: int, n_bits: int, n_classes: int, multi: bool, k: int,
             n_ref: int, flip: float, seed: int, repeats: int) -> dict:
    print(f"\n== {name}: {n_q} queries x {n_db} database, {n_bits} bits, "
          f"{'multi' if multi else 'single'}-label ({n_classes} classes), mAP@{k}")
    q, db, ql, dbl = make_codes(n_q, n_db, n_bits, n_classes, multi, flip, seed)
    print(f"   (load average before timing: {load_average()}; other processes share the CPUs)")
    rss_before = peak_rss_mb()
    times, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        ours = map_at_k(q, db, ql, dbl, k=k)
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    t_ours = min(times)
    print(f"(a) metrics.map_at_k, all queries:      {t_ours:8.2f} s wall, {min(cpus):8.2f} s CPU"
          f"   mAP@{k} = {ours:.6f}")
    print(f"    peak RSS {peak_rss_mb():.0f} MB (before the call: {rss_before:.0f} MB)")

    sub = slice(0, n_ref)
    t0, c0 = time.perf_counter(), time.process_time()
    ref = reference_map(q[sub], db, ql[sub], dbl, k, stable=False)
    t_ref = (time.perf_counter() - t0) * n_q / n_ref
    c_ref = (time.process_time() - c0) * n_q / n_ref
    ref_stable = reference_map(q[sub], db, ql[sub], dbl, k, stable=True)
    ours_sub = map_at_k(q[sub], db, ql[sub], dbl, k=k)
    same = abs(ours_sub - ref_stable) <= 1e-12
    print(f"(b) per-query argsort reference, {n_ref} queries scaled to {n_q}: {t_ref:8.2f} s "
          f"wall, {c_ref:8.2f} s CPU")
    print(f"    subset mAP: ours {ours_sub:.10f}  stable-argsort reference {ref_stable:.10f} "
          f"({'equal within 1e-12' if same else 'DIFFERENT'}); numpy default sort {ref:.10f}")
    if not same:
        raise SystemExit("engine disagrees with the reference")
    print(f"    speed-up vs reference: {t_ref / t_ours:.1f}x wall, {c_ref / min(cpus):.1f}x CPU")
    res = {"ours_s": t_ours, "ref_s": t_ref, "map": ours, "peak_rss_mb": peak_rss_mb()}
    try:
        import faiss
    except ImportError:
        print("(c) faiss not installed")
        return res
    index = faiss.IndexBinaryFlat(n_bits)
    index.add(pack_codes(db))
    pq = pack_codes(q)
    times, fcpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        index.search(pq, k)
        times.append(time.perf_counter() - t0)
        fcpus.append(time.process_time() - c0)
    t_faiss = min(times)
    print(f"(c) FAISS IndexBinaryFlat top-{k} search alone ({faiss.omp_get_max_threads()} "
          f"threads): {t_faiss:8.2f} s wall, {min(fcpus):8.2f} s CPU")
    print(f"    ratio ours / FAISS search: {t_ours / t_faiss:.2f} wall, "
          f"{min(cpus) / min(fcpus):.2f} CPU")
    res["faiss_s"] = t_faiss
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a 10x smaller run (500 queries; database sizes / 10)")
    ap.add_argument("--case", choices=("imagenet", "nuswide", "both"), default="both",
                    help="ImageNet-100 size (5,000 x 128,495, mAP@1000) and/or NUS-WIDE size "
                         "(2,100 x 193,734, 21 labels, mAP@50000)")
    ap.add_argument("--bits", type=int, default=64, help="code length (default 64)")
    ap.add_argument("--flip", type=float, default=0.2, help="bit-flip probability (default 0.2)")
    ap.add_argument("--ref-queries", type=int, default=200,
                    help="queries timed with the per-query reference (default 200)")
    ap.add_argument("--repeats", type=int, default=1, help="timing repeats, best kept")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    div = 10 if args.quick else 1
    n_ref = min(args.ref_queries, 500 // div * div)
    if args.case in ("imagenet", "both"):
        run_case("ImageNet-100 size", 5000 // div, 128495 // div, args.bits, 100, False,
                 1000 // div, min(n_ref, 5000 // div), args.flip, args.seed, args.repeats)
    if args.case in ("nuswide", "both"):
        run_case("NUS-WIDE size", 2100 // div, 193734 // div, args.bits, 21, True,
                 50000 // div, min(n_ref, 2100 // div), args.flip, args.seed, args.repeats)


if __name__ == "__main__":
    main()
