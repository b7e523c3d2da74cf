"""Speed benchmark: the shared deep training engine vs a bare PyTorch loop, in one run.

Both sides train DPAH (same model, same loss function ``dpah_loss_terms``, same SGD settings, same
shuffled mini-batches of the same synthetic data) for the same number of epochs:

* ``features``: frozen-feature mode, ``linear`` backbone on 4,096-d "fc7-like" features;
* ``small_cnn``: the small CNN on 32 x 32 x 3 uint8 images with [-1, 1] scaling and random flips.

The engine adds input validation, seeding, per-batch NaN checks, loss-term bookkeeping, the progress
bar (off here), history and the encode-ready model. Printed: items/s of each side (best of
``--repeats`` alternating runs, which damps noise from other processes) and the overhead ratio
``engine time / bare time - 1`` (target <= 10% on CPU).

    python -m benchmarks.speed.bench_trainer [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from methods.deep.backbones import SmallCNN, preprocess_batch
from methods.deep.dpah import DPAH, PAHead, dpah_loss_terms


def make_data(mode: str, n: int, n_classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, n_classes, n)
    y = np.eye(n_classes, dtype=np.uint8)[cls]
    if mode == "features":
        proto = rng.normal(size=(n_classes, 4096)).astype(np.float32)
        x = np.maximum(proto[cls] + rng.normal(size=(n, 4096)).astype(np.float32), 0)
    else:
        proto = rng.integers(0, 256, size=(n_classes, 32, 32, 3))
        x = np.clip(proto[cls] + rng.normal(scale=40, size=(n, 32, 32, 3)), 0, 255).astype(np.uint8)
    return x, y


def bare_loop(
    mode: str, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, n_bits: int
) -> None:
    """The same training with nothing but PyTorch: forward, loss, backward, step."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    if mode == "features":
        xt = torch.from_numpy(x)
        backbone = torch.nn.Identity()
        in_features = x.shape[1]
    else:
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        backbone = SmallCNN(3)
        in_features = backbone.out_features
    yt = torch.from_numpy(y).float()
    head = PAHead(in_features, n_bits, y.shape[1])
    model = torch.nn.Sequential(backbone, head)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch_size):
            idx = perm[i : i + batch_size]
            xb = xt[idx]
            if mode != "features":
                xb = preprocess_batch(xb, "small_cnn", train=True, generator=gen)
            u = model(xb)
            loss = sum(dpah_loss_terms(u, yt[idx], head.centers()).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def engine(
    mode: str, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, n_bits: int
) -> None:
    backbone = "linear" if mode == "features" else "small_cnn"
    DPAH(
        n_bits=n_bits,
        backbone=backbone,
        epochs=epochs,
        batch_size=batch_size,
        progress=False,
        device="cpu",
    ).fit(x, y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per side")
    parser.add_argument("--n-features-items", type=int, default=10000)
    parser.add_argument("--n-image-items", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--bits", type=int, default=48)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch_size}, "
          f"{args.epochs} epochs, {args.bits} bits, best of {args.repeats}")
    print(f"{'mode':<10} {'items':>6} {'engine it/s':>12} {'bare it/s':>10} {'overhead':>9}")
    for mode, n in (("features", args.n_features_items), ("small_cnn", args.n_image_items)):
        x, y = make_data(mode, n)
        times = {"engine": [], "bare": []}
        for _ in range(args.repeats):
            for name, fn in (("engine", engine), ("bare", bare_loop)):
                t0 = time.perf_counter()
                fn(mode, x, y, args.epochs, args.batch_size, args.bits)
                times[name].append(time.perf_counter() - t0)
        te, tb = min(times["engine"]), min(times["bare"])
        items = n * args.epochs
        print(f"{mode:<10} {n:>6} {items / te:>12.0f} {items / tb:>10.0f} {te / tb - 1:>8.1%}")


if __name__ == "__main__":
    main()
