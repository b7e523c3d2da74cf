"""Deep baselines of Tables 1 and 3 on offline data: mAP@all at 16/32/48/64 bits, one seed.

``--dataset mirflickr25k``: MIRFlickr-25K (real multi-label: 24 labels, 1,386-d binary tag
features; ``data_protocols.get_protocol("mirflickr25k")``: 2,000 random queries, the other 18,015
items as database, 10,000 of the database as training set). ``--dataset cifar10``: CIFAR-10 from
the offline JPEG copy, appendix protocol (1,000 / 59,000 / 5,000), 1,024-d features of the
ImageNet-pretrained MobileNet embedder (cached under ``results/cache``). Every deep baseline trains
the ``mlp`` backbone on the features (z-scored with training statistics unless
``--no-standardize``). Not the paper's
setting (AlexNet fine-tuned on NUS-WIDE / COCO / ImageNet-100): a CPU check that every baseline
trains, converges and ranks, never a number to compare with the paper's tables.

A run whose training loss went NaN/inf, or whose database codes collapsed to a single code, is
reported as ``N/C`` (did not converge), not as a number.

    python -m benchmarks.evidence.baselines_comparison --bits 16 32 48 64 --epochs 30 --batch-size 128
    python -m benchmarks.evidence.baselines_comparison --dataset cifar10 --epochs 30 --batch-size 128

Each finished cell is written to ``--out`` (JSON, rewritten atomically after every cell, so an
interrupted run resumes where it stopped); the Markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.metrics import map_at_k
from benchmarks.runner.experiments import results_version
from benchmarks.runner.results import environment

METHODS = ("dsh", "hashnet", "dhn", "dnnh", "ssdh", "contrastive", "triplet", "softmax_ce",
           "max_margin")
#: our dataset key -> (protocol, load options)
DATASETS = {
    "mirflickr25k": ("mirflickr25k", {}),
    "cifar10": ("cifar10", {"feature_backbone": "mobilenet_tflite"}),
}


def default_out(dataset: str) -> Path:
    suffix = "mirflickr" if dataset == "mirflickr25k" else dataset
    return Path("results") / f"baselines_comparison_{suffix}.json"


def load_data(
    dataset: str, data_root: Path | None, seed: int, standardize: bool
) -> tuple[dict[str, Any], str]:
    """A protocol split as ``{part: (X, Y)}`` plus its split hash.

    With ``standardize``, every feature column is centred and scaled by the *training* split's mean and
    standard deviation (+0.01): the raw 0/1 tag vectors give a freshly initialised MLP such small
    activations that the pair-wise losses start at their zero-output saddle (HashNet's loss stays at
    log 2; see README_baselines.md).
    """
    from data_protocols import get_protocol

    protocol, options = DATASETS[dataset]
    bench = get_protocol(protocol).load(data_root, seed=seed, progress=False, **options)
    data = {p: (np.asarray(bench.inputs(p), dtype=np.float32), np.asarray(bench.targets(p)))
            for p in ("train", "query", "database")}
    if standardize:
        mu = data["train"][0].mean(axis=0)
        sd = data["train"][0].std(axis=0) + 0.01
        data = {p: (((x - mu) / sd).astype(np.float32), y) for p, (x, y) in data.items()}
    return data, bench.split.hash()


def diverged(method: Any, db_codes: np.ndarray) -> str | None:
    """Why a fitted run counts as not converged (None when it converged).

    The trainer's ``convergence_report`` (non-finite loss, loss not falling by at least 1% from the
    first to the last epoch, collapsed codes) on the database codes.
    """
    report = method.convergence_report(db_codes)
    return None if report["converged"] else str(report["reason"])


def run_cell(
    name: str, bits: int, data: dict[str, np.ndarray], *, seed: int, train_options: dict[str, Any]
) -> dict[str, Any]:
    from methods import get_method

    (Xtr, Ytr), (Xq, Yq), (Xdb, Ydb) = data["train"], data["query"], data["database"]
    from methods.deep.trainer import TrainingDivergedError

    method = get_method(name)(n_bits=bits, seed=seed, **train_options)
    t0 = time.perf_counter()
    try:
        method.fit(Xtr, Ytr)
    except TrainingDivergedError as exc:  # NaN/inf loss: N/C, not a number
        return {"method": name, "bits": bits, "seed": seed, "status": "N/C",
                "results_version": method.results_version,
                "reason": str(exc), "map_all": None, "fit_seconds": None}
    fit_s = time.perf_counter() - t0
    q_codes, db_codes = method.encode(Xq), method.encode(Xdb)
    cell: dict[str, Any] = {
        "method": name,
        "bits": bits,
        "seed": seed,
        "results_version": method.results_version,
        "params": {k: v for k, v in method.get_params().items() if k not in ("n_bits", "seed")},
        "fit_seconds": round(fit_s, 2),
        "first_last_loss": _first_last_loss(method),
        "bit_balance": float(db_codes.mean()),
        "distinct_db_codes": len(np.unique(db_codes, axis=0)),
    }
    reason = diverged(method, db_codes)
    if reason is not None:
        cell.update(status="N/C", reason=reason, map_all=None)
    else:
        cell.update(status="ok", map_all=float(map_at_k(q_codes, db_codes, Yq, Ydb, k=None)))
    return cell


def _first_last_loss(method: Any) -> list[float] | None:
    history = getattr(method, "history_", None)
    if not (isinstance(history, list) and history and "loss" in history[0]):
        return None
    return [round(float(history[0]["loss"]), 6), round(float(history[-1]["loss"]), 6)]


def render(cells: list[dict[str, Any]], bits: list[int]) -> str:
    """Markdown table: one row per method, one column per code length (mAP@all or N/C)."""
    lines = [
        "| method | " + " | ".join(f"{b} bits" for b in bits) + " |",
        "|---|" + "---:|" * len(bits),
    ]
    by_key = {(c["method"], c["bits"]): c for c in cells}
    for name in METHODS:
        if not any((name, b) in by_key for b in bits):
            continue
        row = []
        for b in bits:
            c = by_key.get((name, b))
            row.append("" if c is None else "N/C" if c["status"] != "ok" else f"{c['map_all']:.4f}")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _write_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mirflickr25k",
                        help="offline data (default: mirflickr25k)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="baselines to run (default: all)")
    parser.add_argument("--bits", nargs="+", type=int, default=[16, 32, 48, 64],
                        help="code lengths")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the protocol split")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=128, help="mini-batch size")
    parser.add_argument("--lr", type=float, default=None, help="default: the trainer's (1e-3)")
    parser.add_argument("--hash-lr-mult", type=float, default=None,
                        help="lr multiplier of the head (default: the trainer's, 1)")
    parser.add_argument("--no-standardize", action="store_true",
                        help="feed the raw features (default: z-scored by train statistics)")
    parser.add_argument("--data-root", type=Path, default=None, help="default: ../shared/data")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON of finished cells (default: "
                             "results/baselines_comparison_{mirflickr,cifar10}.json)")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore (and overwrite) every finished cell in --out")
    parser.add_argument("--force", action="store_true",
                        help="recompute the selected methods x bits x seed even if finished, "
                             "replacing those cells and keeping the others in --out")
    args = parser.parse_args(argv)

    args.out = args.out or default_out(args.dataset)
    data, split_hash = load_data(args.dataset, args.data_root, args.split_seed,
                                 not args.no_standardize)
    train_options: dict[str, Any] = {
        "backbone": "mlp",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "progress": False,
    }
    if args.lr is not None:
        train_options["lr"] = args.lr
    if args.hash_lr_mult is not None:
        train_options["hash_lr_mult"] = args.hash_lr_mult
    setting = {
        "dataset": args.dataset,
        "protocol": f"data_protocols.get_protocol({DATASETS[args.dataset][0]!r})",
        "load_options": DATASETS[args.dataset][1],
        "split_hash": split_hash,
        "split": {p: len(data[p][1]) for p in ("query", "database", "train")},
        "split_seed": args.split_seed,
        "standardize": not args.no_standardize,
        "train_options": train_options,
        "metric": "mAP@all (benchmarks.metrics.map_at_k, k = database size)",
    }
    done: list[dict[str, Any]] = []
    if args.out.is_file() and not args.fresh:
        previous = json.loads(args.out.read_text())
        if previous.get("setting") == setting:
            done = previous.get("cells", [])
    if args.force:
        selected = {(m, b, args.seed) for m in args.methods for b in args.bits}
        done = [c for c in done if (c["method"], c["bits"], c["seed"]) not in selected]
    # a cell stored by code that has changed the method's numbers since is run again
    done = [c for c in done if c.get("results_version", 1) == results_version(c["method"])]
    finished = {(c["method"], c["bits"], c["seed"]) for c in done}
    todo = [(m, b) for b in args.bits for m in args.methods if (m, b, args.seed) not in finished]
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    iterator = tqdm(todo, desc="baselines", unit="cell") if tqdm else todo
    for name, bits in iterator:
        cell = run_cell(name, bits, data, seed=args.seed, train_options=train_options)
        done.append(cell)
        cell["environment"] = environment()
        cell["utc_time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write_atomic(args.out, {"setting": setting, "cells": done})
        shown = "N/C" if cell["status"] != "ok" else f"{cell['map_all']:.4f}"
        print(f"{name:12s} {bits:3d} bits  mAP@all {shown}  ({cell['fit_seconds']} s)", flush=True)
    print(render(done, args.bits))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
