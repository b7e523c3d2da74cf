"""Shallow baselines (LSH, ITQ, SITQ, SDH, KSH) on offline data: mAP@all at 16/32/48/64 bits.

Datasets (each skipped with a message when its files are absent):

* ``digits``: scikit-learn's bundled 8x8 digits (1,797 items, 64-d pixel features, 10 classes):
  100 queries (10 per class), the other 1,697 items as database, 500 of the database (50 per
  class) as training set. With only 500 training items, SDH uses all of them as anchors
  (``n_anchors=500``; the demo's 1,000 is impossible) and KSH uses all of them as labelled set
  (``n_labelled=500``); ITQ at 64 bits uses all 64 PCA directions.
* ``mirflickr``: MIRFlickr-25K (real multi-label: 24 labels, 1,386-d binary tag features): 2,000
  random queries, the other 18,015 items as database, 10,000 of the database as training set (one
  seeded permutation, the same rule as ``benchmarks.evidence.baselines_comparison``); relevant = share >= 1
  label. Paper defaults for every method.
* ``cifar10``: CIFAR-10 on cached ImageNet-pretrained MobileNet features, when a feature cache
  exists (``data_protocols``); otherwise skipped.

Not the paper's setting (AlexNet fc7 on ImageNet-100 / COCO / NUS-WIDE): a CPU check that every
shallow method learns and ranks in the order the literature reports, never a number to compare
with the paper's tables. LSH is the mean over 5 seeds (its variance is large at 16 bits, METHODS.md
2.1); the learned methods use seed 0. SDH is run twice: with the authors' demo width sigma = 0.4
(the default, tuned for L2-normalised GIST) and with the demo's alternative rule kept as a comment
(sigma = mean distance of a training item to its nearest anchor), which adapts to the features.

mAP@all: ranking by Hamming distance, ties broken by ascending database index, queries with no
relevant item dropped (HashNet's convention), via ``benchmarks.metrics.map_at_k``.

    python -m benchmarks.evidence.shallow_comparison                       # all datasets, 16/32/48/64 bits
    python -m benchmarks.evidence.shallow_comparison --datasets digits --bits 16 32
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("lsh", "itq", "sitq", "sdh", "sdh-nn", "ksh")
#: table rows that are a registered method with other settings (not a separate method)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "sdh-nn": ("sdh", {"sigma": "nearest_anchor_mean"}),
}
LABELS = {"sdh": "SDH (sigma = 0.4)", "sdh-nn": "SDH (sigma = nearest-anchor mean)"}
LSH_SEEDS = (0, 1, 2, 3, 4)
DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"

Dataset = dict[str, Any]


# ---------------------------------------------------------------------- metric
def mean_average_precision(
    q_codes: np.ndarray, db_codes: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray
) -> float:
    """mAP@all with the suite's canonical conventions (``benchmarks.metrics.map_at_k``)."""
    from benchmarks.metrics import map_at_k

    return float(map_at_k(q_codes, db_codes, q_labels, db_labels, k=None))


# ---------------------------------------------------------------------- datasets
def _per_class(labels: np.ndarray, candidates: np.ndarray, k: int, rng) -> np.ndarray:
    picks = [rng.choice(candidates[labels[candidates] == c], size=k, replace=False)
             for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def _from_protocol(name: str, seed: int, note: str, **kwargs: Any) -> Dataset | None:
    """A dataset through ``data_protocols.get_protocol(name).load``; None if unavailable."""
    try:
        from data_protocols import get_protocol
    except ImportError:
        return None
    bench = get_protocol(name).load(seed=seed, input_kind="features", progress=False, **kwargs)
    split = bench.split
    return {
        "name": name, "X": np.asarray(bench.features, dtype=np.float64), "Y": bench.labels,
        "query": split.query, "database": split.database, "train": split.train, "params": {},
        "note": f"data_protocols {name!r} (split hash {split.hash()}): {note}",
    }


def load_digits_dataset(seed: int = 0) -> Dataset:
    """scikit-learn digits: 100 queries (10/class), database = the rest, 500 train (50/class).

    Through ``data_protocols`` (``digits``) when it imports; else the same rule, own sampling.
    With only 500 training items SDH uses all of them as anchors and KSH all as labelled set.
    """
    small = {"sdh": {"n_anchors": 500}, "ksh": {"n_labelled": 500}}
    data = _from_protocol("digits", seed, "100 queries (10/class), 500 train (50/class)")
    if data is not None:
        data["params"] = small
        return data
    from sklearn.datasets import load_digits

    digits = load_digits()
    X, y = digits.data.astype(np.float64), digits.target
    rng = np.random.default_rng(seed)
    query = _per_class(y, np.arange(len(y)), 10, rng)
    database = np.setdiff1d(np.arange(len(y)), query)
    train = _per_class(y, database, 50, rng)
    return {
        "name": "digits", "X": X, "Y": np.eye(10, dtype=np.uint8)[y],
        "query": query, "database": database, "train": train, "params": small,
        "note": "own split (data_protocols unavailable): 100 queries 10/class, 500 train 50/class",
    }


def load_mirflickr_dataset(seed: int = 0, data_root: Path = DATA_ROOT) -> Dataset | None:
    """MIRFlickr-25K tag features: 2,000 queries, the rest database, 10,000 train from it."""
    folder = data_root / "mirflickr25k"
    x_path, y_path = folder / "mirflickr25k-yall.mat", folder / "mirflickr25k-lall.mat"
    if not (x_path.is_file() and y_path.is_file()):
        print(f"[skip] MIRFlickr-25K not found under {folder}")
        return None
    data = _from_protocol("mirflickr25k", seed, "2,000 random queries, 18,015 database, "
                          "10,000 train from the database")
    if data is not None:
        return data
    from scipy.io import loadmat

    X = loadmat(str(x_path))["YAll"].astype(np.float64)
    Y = loadmat(str(y_path))["LAll"].astype(np.uint8)
    perm = np.random.default_rng(seed).permutation(len(X))
    query, database = np.sort(perm[:2000]), perm[2000:]
    train = np.sort(database[:10000])
    return {
        "name": "mirflickr", "X": X, "Y": Y, "query": query, "database": np.sort(database),
        "train": train, "params": {},
        "note": "own split (data_protocols unavailable): 2,000 random queries, 18,015 "
                "database, 10,000 train from the database",
    }


def load_cifar10_dataset(seed: int = 0) -> Dataset | None:
    """CIFAR-10 on cached MobileNet features through ``data_protocols``, only if cached.

    Extracting the features is a long job of its own (about 7 ms an image), so this benchmark
    never starts it: without a cache file it skips with a message.
    """
    try:
        from data_protocols import DEFAULT_CACHE_DIR
    except ImportError as exc:
        print(f"[skip] CIFAR-10: data_protocols unavailable ({exc})")
        return None
    pattern = "cifar10*__mobilenet_tflite__*.npy"
    cached = sorted((Path(DEFAULT_CACHE_DIR) / "features").glob(pattern))
    if not cached:
        print(f"[skip] CIFAR-10: no cached MobileNet features under {DEFAULT_CACHE_DIR}/features "
              "(build them with the feature extractor of data_protocols first)")
        return None
    return _from_protocol("cifar10", seed, "1,000 queries, 59,000 database, 5,000 train; "
                          "MobileNet (ImageNet) 1,024-d features",
                          feature_backbone="mobilenet_tflite")


LOADERS: dict[str, Callable[[int], Dataset | None]] = {
    "digits": load_digits_dataset,
    "mirflickr": load_mirflickr_dataset,
    "cifar10": load_cifar10_dataset,
}


# ---------------------------------------------------------------------- runner
def run_cell(data: Dataset, method: str, n_bits: int, seed: int) -> tuple[float, float]:
    """Fit on the training split, encode queries and database, return (mAP@all, fit seconds)."""
    from methods import get_method

    name, extra = VARIANTS.get(method, (method, {}))
    cls = get_method(name)
    model = cls(n_bits=n_bits, seed=seed, **{**data["params"].get(name, {}), **extra})
    X, Y = data["X"], data["Y"]
    t0 = time.perf_counter()
    model.fit(X[data["train"]], Y[data["train"]])
    fit_s = time.perf_counter() - t0
    q_codes, db_codes = model.encode(X[data["query"]]), model.encode(X[data["database"]])
    score = mean_average_precision(q_codes, db_codes, Y[data["query"]], Y[data["database"]])
    return score, fit_s


def render(rows: list[dict[str, Any]], bits: list[int]) -> str:
    lines = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        lines.append(f"\n{name} (mAP@all)\n")
        lines.append("| method | " + " | ".join(f"{b} bits" for b in bits) + " |")
        lines.append("|---|" + "---|" * len(bits))
        for method in METHODS:
            cells = {r["bits"]: r for r in rows if r["dataset"] == name and r["method"] == method}
            if not cells:
                continue
            vals = []
            for b in bits:
                r = cells.get(b)
                if r is None:
                    vals.append("-")
                elif r["method"] == "lsh":
                    vals.append(f"{r['map']:.4f} ± {r['std']:.4f}")
                else:
                    vals.append(f"{r['map']:.4f}")
            label = LABELS.get(method, method.upper()) + (" (5 seeds)" if method == "lsh" else "")
            lines.append(f"| {label} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(LOADERS), choices=list(LOADERS))
    parser.add_argument("--bits", nargs="+", type=int, default=[16, 32, 48, 64])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="optional JSON file of all cells")
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    for dname in args.datasets:
        data = LOADERS[dname](args.split_seed)
        if data is None:
            continue
        print(f"== {dname}: {data['note']}; train {len(data['train'])}, query "
              f"{len(data['query'])}, database {len(data['database'])}, D = {data['X'].shape[1]}")
        for n_bits in args.bits:
            for method in args.methods:
                seeds = LSH_SEEDS if method == "lsh" else (0,)
                scores, times = zip(*(run_cell(data, method, n_bits, s) for s in seeds))
                row = {"dataset": dname, "method": method, "bits": n_bits,
                       "map": float(np.mean(scores)), "std": float(np.std(scores)),
                       "fit_s": float(np.mean(times)), "seeds": list(seeds)}
                rows.append(row)
                print(f"  {method:5s} {n_bits:3d} bits  mAP@all {row['map']:.4f}"
                      f"  (fit {row['fit_s']:.1f} s)", flush=True)
    print(render(rows, args.bits))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
