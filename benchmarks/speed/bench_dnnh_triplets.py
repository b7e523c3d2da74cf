"""Speed benchmark: DNNH's capped triplet draw, results version 2 against version 1, in one run.

Version 1 ranked ``n^2`` random keys per anchor (every ``(p, n)`` pair of the batch, the invalid
ones pushed last); version 2 (:func:`methods.deep.dnnh.sample_triplets`) ranks keys only on each
anchor's own ``#pos x #neg`` grid. Both keep a uniform random subset of ``cap`` valid triplets per
anchor; the version-1 draw is kept here, verbatim in behaviour, as the reference.

Printed for a single-label batch (CIFAR-10-like: 10 classes) and a multi-label one
(MIRFlickr-like: 24 labels, about 3 per item): milliseconds per draw of each version, and per
DNNH training step (draw + divide-and-encode head forward/backward on 1,024-d inputs) of each, with
the ratios. Best of ``--repeats`` alternating rounds, which damps noise from other processes.

    python -m benchmarks.speed.bench_dnnh_triplets [--batch 128] [--bits 48] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from methods.deep.dnnh import DivideAndEncode, dnnh_triplet_loss, sample_triplets
from methods.deep.pairwise import pairwise_similarity


def sample_triplets_v1(labels: torch.Tensor, cap: int, generator: torch.Generator) -> torch.Tensor:
    """The version-1 draw: ``n x n^2`` random keys, invalid triplets sorted last, top ``cap``."""
    sim = pairwise_similarity(labels).bool().cpu()
    n = sim.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    valid = ((sim & ~eye).unsqueeze(2) & (~sim).unsqueeze(1)).view(n, n * n)
    keys = torch.rand(n, n * n, generator=generator)
    keys[~valid] = 2.0
    k = min(cap, n * n)
    chosen_keys, chosen = torch.topk(keys, k, dim=1, largest=False)
    keep = chosen_keys <= 1.0
    a = torch.arange(n).unsqueeze(1).expand(n, k)[keep]
    pn = chosen[keep]
    return torch.stack([a, pn // n, pn % n], dim=1)


def batches(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    single = torch.eye(10)[torch.randint(0, 10, (batch,), generator=gen)]
    multi = (torch.rand(batch, 24, generator=gen) < 0.125).float()
    multi[multi.sum(1) == 0, 0] = 1.0  # every item has a label, as in MIRFlickr-25K's split
    return {"single-label (10 classes)": single, "multi-label (24 labels)": multi}


def best_ms(fn: Callable[[int], object], iters: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(iters):
            fn(i)
        best = min(best, (time.perf_counter() - start) / iters * 1000)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128, help="mini-batch size (default 128)")
    parser.add_argument("--bits", type=int, default=48, help="code length of the head (default 48)")
    parser.add_argument("--cap", type=int, default=64, help="triplets per anchor (default 64)")
    parser.add_argument("--iters", type=int, default=20, help="draws/steps per round (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, best kept (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    head = DivideAndEncode(1024, args.bits)
    opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 1024)
    versions = {"v1": sample_triplets_v1, "v2": sample_triplets}
    print(f"batch {args.batch}, {args.bits} bits, cap {args.cap}, {args.threads} thread(s); "
          f"best of {args.repeats} x {args.iters}")
    for name, labels in batches(args.batch).items():
        ms = {(kind, v): best_ms(_round(kind, versions[v], labels, args.cap, head, opt, x),
                                 args.iters, args.repeats)
              for kind in ("draw", "step") for v in versions}
        sizes = [len(fn(labels, args.cap, torch.Generator().manual_seed(0)))
                 for fn in versions.values()]
        print(f"{name}: triplets per batch v1 {sizes[0]}, v2 {sizes[1]}")
        for kind in ("draw", "step"):
            v1, v2 = ms[(kind, "v1")], ms[(kind, "v2")]
            print(f"  {kind:5s} v1 {v1:7.1f} ms   v2 {v2:7.1f} ms   v1/v2 {v1 / v2:5.2f}x")


def _round(kind: str, sampler: Callable[..., torch.Tensor], labels: torch.Tensor, cap: int,
           head: DivideAndEncode, opt: torch.optim.Optimizer, x: torch.Tensor
           ) -> Callable[[int], object]:
    """One timed unit: a draw, or a whole step (draw, head forward/backward, SGD update)."""
    def draw(i: int) -> torch.Tensor:
        return sampler(labels, cap, torch.Generator().manual_seed(i))

    def step(i: int) -> None:
        loss = dnnh_triplet_loss(head(x), draw(i), 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return draw if kind == "draw" else step

if __name__ == "__main__":
    main()
