"""Evidence run: DPAH vs its ablations (DPAH\\KT, HPA(lambda=0)) vs softmax+CE on real multi-label
data, on CPU.

MIRFlickr-25K (20,015 items, 24 real labels, 1,386-d binary tag features): 2,000 random queries, the
rest database, 10,000 of the database train (``data_protocols.get_protocol("mirflickr25k")``); every
method trains an ``mlp`` backbone (one hidden ReLU layer) + its head from scratch, with DPAH's SGD
settings (momentum 0.9, weight decay 5e-4, batch 256, fixed learning rate) for a reduced number of
epochs. Metrics: mAP@all and mAP@5000 (relevance = at least one shared label; ranking by Hamming
distance, ties by database index; queries with no relevant item in the top K dropped, HashNet's
convention). Mean and standard deviation over seeds (the seed changes the split and the training).

This is *not* the paper's setting (no images, no AlexNet, far fewer epochs): the table says so.

    python -m benchmarks.deep_comparison --help
    python -m benchmarks.deep_comparison --bits 16 32 48 64 --seeds 0 1 2 --epochs 15
    python -m benchmarks.deep_comparison --select-lr 0.01 0.1 0.5    # lr grid on a train split
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from methods import get_method

METHODS = ("dpah", "dpah_no_kt", "hpa_lambda0", "softmax_ce")
LABELS = {
    "dpah": "DPAH",
    "dpah_no_kt": "DPAH\\KT = HPA(λ=0.01)",
    "hpa_lambda0": "HPA(λ=0)",
    "softmax_ce": "softmax+CE",
}


# ---------------------------------------------------------------------- metrics
def _local_map_at_k(qc: np.ndarray, dc: np.ndarray, ql: np.ndarray, dl: np.ndarray,
                    k: int | None) -> float:
    """Fallback mAP@K (HashNet convention; ties by ascending database index)."""
    k = dc.shape[0] if k is None else min(k, dc.shape[0])
    qf, df = qc.astype(np.float32), dc.astype(np.float32)
    aps = []
    for s in range(0, len(qc), 256):
        q = qf[s : s + 256]
        ham = q.sum(1, keepdims=True) + df.sum(1)[None] - 2 * q @ df.T
        order = np.argsort(ham, axis=1, kind="stable")[:, :k]
        rel = (ql[s : s + 256].astype(np.float32) @ dl.T.astype(np.float32)) > 0
        rel_k = np.take_along_axis(rel, order, axis=1)
        hits = np.cumsum(rel_k, axis=1)
        n_rel = hits[:, -1]
        prec = hits / np.arange(1, k + 1)
        ap = (prec * rel_k).sum(1)
        keep = n_rel > 0
        aps.extend((ap[keep] / n_rel[keep]).tolist())
    return float(np.mean(aps)) if aps else 0.0


def map_at_k(qc, dc, ql, dl, k=None) -> tuple[float, str]:
    """benchmarks.metrics.map_at_k when present, else the local fallback; says which."""
    try:
        from benchmarks.metrics import map_at_k as project_map

        return float(project_map(qc, dc, ql, dl, k=k)), "benchmarks.metrics.map_at_k"
    except ImportError:
        return _local_map_at_k(qc, dc, ql, dl, k), "local fallback (benchmarks.metrics absent)"


# ---------------------------------------------------------------------- data
def load_mirflickr(seed: int, data_root: str | None):
    """(train X, train Y, query X, query Y, db X, db Y, loader description)."""
    try:
        from data_protocols import get_protocol

        b = get_protocol("mirflickr25k").load(data_root, seed=seed, progress=False)
        parts = [(b.inputs(p), b.targets(p)) for p in ("train", "query", "database")]
        how = "data_protocols.get_protocol('mirflickr25k')"
    except ImportError:
        import scipy.io

        root = Path(data_root or Path(__file__).resolve().parents[2] / "shared" / "data")
        lab = scipy.io.loadmat(root / "mirflickr25k" / "mirflickr25k-lall.mat")["LAll"]
        feat = scipy.io.loadmat(root / "mirflickr25k" / "mirflickr25k-yall.mat")["YAll"]
        keep = lab.any(1)
        lab, feat = (lab[keep] > 0).astype(np.uint8), feat[keep].astype(np.float32)
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(lab))
        q, d = perm[:2000], np.sort(perm[2000:])
        t = rng.choice(d, 10000, replace=False)
        parts = [(feat[i], lab[i]) for i in (t, q, d)]
        how = "local loader (data_protocols absent)"
    (xt, yt), (xq, yq), (xd, yd) = parts
    return xt, yt, xq, yq, xd, yd, how


# ---------------------------------------------------------------------- runs
def run_cell(name: str, bits: int, seed: int, data, args, lr: float) -> dict:
    xt, yt, xq, yq, xd, yd, _ = data
    if args.center_features:  # subtract the training mean (a preprocessing shared by all methods)
        mu = xt.mean(0, keepdims=True)
        xt, xq, xd = xt - mu, xq - mu, xd - mu
    cls = get_method(name)
    m = cls(n_bits=bits, seed=seed, backbone="mlp", mlp_hidden=args.hidden, epochs=args.epochs,
            batch_size=args.batch_size, lr=lr, progress=False, device="cpu", **args.set)
    t0 = time.perf_counter()
    m.fit(xt, yt)
    train_s = time.perf_counter() - t0
    qc, dc = m.encode(xq), m.encode(xd)
    map_all, how = map_at_k(qc, dc, yq, yd, None)
    map_5k, _ = map_at_k(qc, dc, yq, yd, 5000)
    u = m.raw_outputs(xt)
    return {
        "method": name, "bits": bits, "seed": seed, "lr": lr, "epochs": args.epochs,
        "map_all": map_all, "map_5000": map_5k, "metric_impl": how, "train_s": train_s,
        "first_loss": m.history_[0]["loss"], "last_loss": m.history_[-1]["loss"],
        "max_abs_u": float(np.abs(u).max()), "frac_abs_u_gt_t": float((np.abs(u) > 10).mean()),
        "convergence": m.convergence_report(dc),
    }


def select_lr(name: str, bits: int, grid: list[float], data, args) -> tuple[float, dict]:
    """Learning rate with the best mAP@all on a split of the *training* items only
    (10% as queries, the other 90% as database and training set); seed 0."""
    xt, yt = data[0], data[1]
    rng = np.random.default_rng(12345)
    perm = rng.permutation(len(xt))
    nv = len(xt) // 10
    v, tr = perm[:nv], perm[nv:]
    sub = (xt[tr], yt[tr], xt[v], yt[v], xt[tr], yt[tr], data[6])
    scores = {}
    for lr in grid:
        scores[lr] = run_cell(name, bits, 0, sub, args, lr)["map_all"]
        print(f"  lr selection {name} {bits} bits lr={lr:g}: train-split mAP@all {scores[lr]:.4f}",
              flush=True)
    return max(scores, key=scores.get), scores


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--bits", nargs="+", type=int, default=[16, 32, 48, 64])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden", type=int, default=256, help="MLP hidden units")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (paper: 1e-3)")
    p.add_argument("--select-lr", nargs="*", type=float, default=None,
                   help="choose each method's lr from this grid on a training split (48 bits)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra hyper-parameters for every method, e.g. beta=0 (numbers parsed)")
    p.add_argument("--center-features", action="store_true",
                   help="subtract the training mean from the tag features (all methods)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default="results/deep_comparison_mirflickr.json")
    args = p.parse_args(argv)
    args.set = {k: float(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    lrs = {m: args.lr for m in args.methods}
    selection = {}
    if args.select_lr:
        data0 = load_mirflickr(0, args.data_root)
        for m in args.methods:
            lrs[m], selection[m] = select_lr(m, 48, args.select_lr, data0, args)
            print(f"{m}: selected lr {lrs[m]:g}", flush=True)
    rows = []
    for seed in args.seeds:
        data = load_mirflickr(seed, args.data_root)
        for bits in args.bits:
            for m in args.methods:
                r = run_cell(m, bits, seed, data, args, lrs[m])
                r["data_loader"] = data[6]
                rows.append(r)
                print(f"seed {seed} {bits:>2} bits {m:<12} lr {lrs[m]:g}: "
                      f"mAP@all {r['map_all']:.4f} mAP@5000 {r['map_5000']:.4f} "
                      f"loss {r['first_loss']:.3f}->{r['last_loss']:.3f} "
                      f"max|u| {r['max_abs_u']:.1f} ({r['train_s']:.0f}s)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "lr": lrs, "lr_selection": selection,
                               "rows": rows}, indent=1, default=str))

    print(f"\nMIRFlickr-25K, mlp backbone ({args.hidden} hidden), {args.epochs} epochs, "
          f"seeds {args.seeds}, extra settings {args.set or 'none'}, centred features "
          f"{args.center_features}; metric: {rows[0]['metric_impl']}; "
          f"data: {rows[0]['data_loader']}")
    print("NOT the paper's setting (tag features, MLP from scratch, reduced epochs).\n")
    for metric in ("map_all", "map_5000"):
        print(f"| {metric} | lr | " + " | ".join(f"{b} bits" for b in args.bits) + " |")
        print("|---|---|" + "---|" * len(args.bits))
        for m in args.methods:
            cells = []
            for b in args.bits:
                v = [r[metric] for r in rows if r["method"] == m and r["bits"] == b]
                cells.append(f"{np.mean(v):.4f} ± {np.std(v):.4f}")
            print(f"| {LABELS.get(m, m)} | {lrs[m]:g} | " + " | ".join(cells) + " |")
        print()
    print(f"total time {time.perf_counter() - t_start:.0f}s; rows written to {out}")


if __name__ == "__main__":
    main()
