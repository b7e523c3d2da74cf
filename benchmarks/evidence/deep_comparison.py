"""Evidence run: DPAH vs its ablations (DPAH\\KT, HPA(lambda=0)) vs softmax+CE on real data, on CPU.

Datasets (``--dataset``), both through :mod:`data_protocols`:

* ``mirflickr25k``: MIRFlickr-25K (20,015 items, 24 real labels, 1,386-d binary tag features);
  2,000 random queries, the rest database, 10,000 of the database train. Multi-label.
* ``cifar10``: CIFAR-10 from the offline JPEG copy, appendix protocol (1,000 queries, 59,000
  database, 5,000 train), 1,024-d features of the ImageNet-pretrained MobileNet embedder
  (cached under ``results/cache``; extraction takes ~20 minutes on 2 cores the first time).

Every method trains an ``mlp`` backbone (one hidden ReLU layer) + its head from scratch on the
features, with DPAH's SGD settings (momentum 0.9, weight decay 5e-4, fixed learning rate) for a
reduced number of epochs. Metrics (:func:`benchmarks.metrics.map_at_k`): mAP@all and mAP@5000
(relevance = at least one shared label; ties by database index; queries with no relevant item in
the top K dropped, HashNet's convention). Mean and standard deviation over seeds (the seed
changes the split and the training).

This is *not* the paper's setting (no images, no AlexNet, far fewer epochs): the table says so.

    python -m benchmarks.evidence.deep_comparison --help
    python -m benchmarks.evidence.deep_comparison --dataset cifar10 --bits 16 32 48 64 --seeds 0 1 2
    python -m benchmarks.evidence.deep_comparison --select-lr 0.01 0.1 0.5    # lr grid on a train split
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from benchmarks.metrics import map_at_k
from benchmarks.runner.results import environment
from methods import get_method

METHODS = ("dpah", "dpah_no_kt", "hpa_lambda0", "softmax_ce")
LABELS = {
    "dpah": "DPAH",
    "dpah_no_kt": "DPAH\\KT = HPA(λ=0.01)",
    "hpa_lambda0": "HPA(λ=0)",
    "softmax_ce": "softmax+CE",
}


# ---------------------------------------------------------------------- data
DATASETS = {
    "mirflickr25k": ("mirflickr25k", {}, "MIRFlickr-25K (tag features)"),
    "cifar10": ("cifar10", {"feature_backbone": "mobilenet_tflite"},
                "CIFAR-10 (MobileNet embedder features)"),
}


def load_dataset(name: str, seed: int, data_root: str | None):
    """(train X, train Y, query X, query Y, db X, db Y, provenance dict) of a protocol split."""
    from data_protocols import get_protocol

    protocol, options, _ = DATASETS[name]
    b = get_protocol(protocol).load(data_root, seed=seed, progress=False, **options)
    (xt, yt), (xq, yq), (xd, yd) = [(b.inputs(p), b.targets(p)) for p in ("train", "query",
                                                                           "database")]
    return xt, yt, xq, yq, xd, yd, {"protocol": protocol, **options, "split_hash": b.split.hash()}


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
    map_all = map_at_k(qc, dc, yq, yd, k=None)
    map_5k = map_at_k(qc, dc, yq, yd, k=5000)
    u = m.raw_outputs(xt)
    return {
        "method": name, "bits": bits, "seed": seed, "lr": lr, "epochs": args.epochs,
        "map_all": map_all, "map_5000": map_5k, "train_s": train_s,
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
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mirflickr25k",
                   help="real offline data to run on (default: mirflickr25k)")
    p.add_argument("--methods", nargs="+", default=list(METHODS),
                   help="registry names to compare (default: the four rows above)")
    p.add_argument("--bits", nargs="+", type=int, default=[16, 32, 48, 64], help="code lengths")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="seeds (each changes the split and the training)")
    p.add_argument("--epochs", type=int, default=15, help="training epochs (paper: 200)")
    p.add_argument("--batch-size", type=int, default=256, help="mini-batch size (paper: 256)")
    p.add_argument("--hidden", type=int, default=256, help="MLP hidden units")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (paper: 1e-3)")
    p.add_argument("--select-lr", nargs="*", type=float, default=None,
                   help="choose each method's lr from this grid on a training split (48 bits)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra hyper-parameters for every method, e.g. beta=0 (numbers parsed)")
    p.add_argument("--center-features", action="store_true",
                   help="subtract the training mean from the tag features (all methods)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--data-root", default=None,
                   help="folder holding the datasets (default: ../shared/data or "
                        "$HASHBENCH_DATA_ROOT)")
    p.add_argument("--out", default=None,
                   help="JSON written with every row (default: "
                        "results/deep_comparison_<dataset>.json)")
    args = p.parse_args(argv)
    args.set = {k: float(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    lrs = {m: args.lr for m in args.methods}
    selection = {}
    if args.select_lr:
        data0 = load_dataset(args.dataset, 0, args.data_root)
        for m in args.methods:
            lrs[m], selection[m] = select_lr(m, 48, args.select_lr, data0, args)
            print(f"{m}: selected lr {lrs[m]:g}", flush=True)
    rows = []
    for seed in args.seeds:
        data = load_dataset(args.dataset, seed, args.data_root)
        for bits in args.bits:
            for m in args.methods:
                r = run_cell(m, bits, seed, data, args, lrs[m])
                r["data"] = data[6]
                rows.append(r)
                print(f"seed {seed} {bits:>2} bits {m:<12} lr {lrs[m]:g}: "
                      f"mAP@all {r['map_all']:.4f} mAP@5000 {r['map_5000']:.4f} "
                      f"loss {r['first_loss']:.3f}->{r['last_loss']:.3f} "
                      f"max|u| {r['max_abs_u']:.1f} ({r['train_s']:.0f}s)", flush=True)
    out = Path(args.out or f"results/deep_comparison_{args.dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "lr": lrs, "lr_selection": selection,
                               "environment": environment("cpu"),
                               "finished_utc": datetime.now(UTC).isoformat(),
                               "wall_time_s": time.perf_counter() - t_start,
                               "rows": rows}, indent=1, default=str))

    print(f"\n{DATASETS[args.dataset][2]}, mlp backbone ({args.hidden} hidden), {args.epochs} epochs, "
          f"seeds {args.seeds}, extra settings {args.set or 'none'}, centred features "
          f"{args.center_features}; data: {rows[0]['data']}")
    print("NOT the paper's setting (features, MLP from scratch, reduced epochs).\n")
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
