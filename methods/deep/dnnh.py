"""DNNH: Simultaneous Feature Learning and Hash Coding (Lai, Pan, Liu, Yan, CVPR 2015).

* Divide-and-encode module: the backbone feature goes through ``Linear(in, units * K) + ReLU``; the
  result is cut into K slices of ``units`` (default 50) values; slice k is mapped by its own linear
  unit to one scalar, then a sigmoid ``s`` and the piece-wise threshold

      g(s) = 0 if s < 0.5 - eps;  1 if s > 0.5 + eps;  s otherwise

  whose gradient is zero in the two saturated branches. The output ``F`` lies in ``[0, 1]^K``.
* Triplet ranking hinge loss (margin 1 on squared distances):
  ``max(0, 1 - (||F_a - F_n||^2 - ||F_a - F_p||^2))``, averaged over the sampled triplets.
* Triplets are generated online inside the mini-batch: every ``(a, p, n)`` with ``p != a`` relevant
  to ``a`` (shares a label) and ``n`` irrelevant; at most ``max_triplets_per_anchor`` (64) per anchor,
  subsampled uniformly with a generator seeded by ``(seed, iteration)`` so runs are reproducible.
  Results version 2 draws that subset on each anchor's positive x negative grid (about 2x faster
  DNNH steps; same distribution, other random numbers than version 1).
* Codes: ``1[F >= 0.5]``.

Provenance: the loss and module are recalled from the DNNH paper [R]; ``units = 50`` per bit follows
the third-party Caffe reproduction HYPJUDY/caffe-dnnh; ``eps = 0.1`` [D] (the paper states only a
small constant, value from memory), the AlexNet adaptation and the per-anchor cap of 64 are [D].
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from methods.base import register
from methods.deep.base import DeepHashMethod, TrainStep
from methods.deep.pairwise import TEST_PARAMS, check_pair_batch, pairwise_similarity
from methods.search import LR, LogUniform, Uniform

__all__ = ["DNNH", "DivideAndEncode", "dnnh_triplet_loss", "piecewise_threshold", "sample_triplets"]


def piecewise_threshold(s: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    """DNNH's ``g``: 0 below ``0.5 - eps``, 1 above ``0.5 + eps``, identity in between.

    Built with ``torch.where`` on constants, so the gradient is exactly zero where saturated.
    """
    zeros = torch.zeros_like(s)
    ones = torch.ones_like(s)
    return torch.where(s < 0.5 - eps, zeros, torch.where(s > 0.5 + eps, ones, s))


class DivideAndEncode(nn.Module):
    """Divide-and-encode head: shared ``Linear + ReLU``, then K independent slices -> K bits in [0,1]."""

    def __init__(self, in_features: int, n_bits: int, units_per_bit: int = 50, eps: float = 0.1) -> None:
        super().__init__()
        self.n_bits = n_bits
        self.units_per_bit = units_per_bit
        self.eps = eps
        self.expand = nn.Linear(in_features, units_per_bit * n_bits)
        # slice k: its own linear unit (weights of the k-th slice only) -> one scalar
        self.slice_weight = nn.Parameter(torch.empty(n_bits, units_per_bit))
        self.slice_bias = nn.Parameter(torch.zeros(n_bits))
        nn.init.normal_(self.slice_weight, std=(1.0 / units_per_bit) ** 0.5)

    def pre_sigmoid(self, x: torch.Tensor) -> torch.Tensor:
        """The K per-slice scalars before the sigmoid (B x K)."""
        hidden = torch.relu(self.expand(x)).view(x.shape[0], self.n_bits, self.units_per_bit)
        return (hidden * self.slice_weight).sum(-1) + self.slice_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return piecewise_threshold(torch.sigmoid(self.pre_sigmoid(x)), self.eps)


def sample_triplets(
    labels: torch.Tensor, max_per_anchor: int | None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Index triples ``(a, p, n)`` (T x 3, long) of valid in-batch triplets, capped per anchor.

    Without a cap every valid triplet is returned (ordered by a, p, n); with a cap, each anchor keeps
    a uniform random subset of its valid triplets of size ``min(cap, #valid)``.

    The capped draw works on each anchor's own ``#pos x #neg`` grid rather than on all ``n^2``
    ``(p, n)`` pairs: it ranks ``max_a #pos_a * #neg_a`` random keys per anchor, not ``n^2`` (about
    12 times fewer on a batch of 128 from 10 classes), and maps the chosen grid index ``t`` to the
    ``t // #neg``-th positive and the ``t % #neg``-th negative. The distribution (a uniform subset
    without replacement) is the one the full-grid draw of results version 1 had; the random stream
    differs, hence :attr:`DNNH.results_version` 2.
    """
    sim = pairwise_similarity(labels).bool().cpu()
    n = sim.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    pos, neg = sim & ~eye, ~sim
    if max_per_anchor is None:
        valid = (pos.unsqueeze(2) & neg.unsqueeze(1)).view(n, n * n)  # (a, p*n)
        a, pn = valid.nonzero().unbind(1)
        return torch.stack([a, pn // n, pn % n], dim=1).to(labels.device)
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    n_valid = n_pos * n_neg  # valid triplets of each anchor
    width = int(n_valid.max()) if n else 0
    if width == 0:
        return torch.empty(0, 3, dtype=torch.long, device=labels.device)
    keys = torch.rand(n, width, generator=generator)
    keys[torch.arange(width).unsqueeze(0) >= n_valid.unsqueeze(1)] = 2.0  # past the grid: last
    k = min(max_per_anchor, width)
    chosen_keys, grid = torch.topk(keys, k, dim=1, largest=False)
    keep = chosen_keys <= 1.0
    a = torch.arange(n).unsqueeze(1).expand(n, k)[keep]
    grid = grid[keep]
    # each anchor's positives (negatives) first, in index order: the stable sort of "not positive"
    pos_items = torch.argsort((~pos).to(torch.uint8), dim=1, stable=True)
    neg_items = torch.argsort((~neg).to(torch.uint8), dim=1, stable=True)
    p = pos_items[a, grid // n_neg[a]]
    ng = neg_items[a, grid % n_neg[a]]
    return torch.stack([a, p, ng], dim=1).to(labels.device)


def dnnh_triplet_loss(F_codes: torch.Tensor, triplets: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """DNNH's triplet ranking hinge ``mean max(0, margin - (||F_a-F_n||^2 - ||F_a-F_p||^2))``."""
    if triplets.numel() == 0:
        return F_codes.sum() * 0.0
    # index_select, not F_codes[idx]: the backward of advanced indexing (index_put_ with
    # accumulate) sums repeated indices in a thread-dependent order on CPU, so runs differed.
    fa, fp, fn = (F_codes.index_select(0, triplets[:, j]) for j in range(3))
    d_ap = ((fa - fp) ** 2).sum(1)
    d_an = ((fa - fn) ** 2).sum(1)
    return torch.clamp(margin - (d_an - d_ap), min=0.0).mean()


@register("dnnh")
class DNNH(DeepHashMethod):
    """DNNH: divide-and-encode head + in-batch triplet ranking hinge; codes ``1[F >= 0.5]``."""

    paper = (
        "H. Lai, Y. Pan, Y. Liu, S. Yan. Simultaneous Feature Learning and Hash Coding with Deep "
        "Neural Networks. CVPR 2015"
    )
    test_params: ClassVar[dict[str, Any]] = dict(TEST_PARAMS)
    #: 2: triplets drawn on each anchor's positive x negative grid (see :func:`sample_triplets`)
    results_version: ClassVar[int] = 2
    #: lr; the triplet margin (squared-distance units) around the paper's 1 [R]; the threshold
    #: width eps of the piece-wise function around the default 0.1 [D]
    search_space: ClassVar[dict[str, Any]] = {
        "lr": LR,
        "margin": LogUniform(0.25, 4.0),
        "eps": Uniform(0.02, 0.3),
    }

    def __init__(
        self,
        n_bits: int = 48,
        seed: int = 0,
        *,
        margin: float = 1.0,
        eps: float = 0.1,
        units_per_bit: int = 50,
        max_triplets_per_anchor: int | None = 64,
        **train_options: Any,
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed, **train_options)
        self.margin = margin
        self.eps = eps
        self.units_per_bit = units_per_bit
        self.max_triplets_per_anchor = max_triplets_per_anchor

    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        if not (isinstance(self.margin, (int, float)) and self.margin > 0):
            raise ValueError(f"margin must be a positive number, got {self.margin!r}")
        if not (isinstance(self.eps, (int, float)) and 0 <= self.eps < 0.5):
            raise ValueError(f"eps must be a number in [0, 0.5), got {self.eps!r}")
        if not (isinstance(self.units_per_bit, int) and self.units_per_bit >= 1):
            raise ValueError(f"units_per_bit must be a positive integer, got {self.units_per_bit!r}")
        cap = self.max_triplets_per_anchor
        if cap is not None and not (isinstance(cap, int) and cap >= 1):
            raise ValueError(f"max_triplets_per_anchor must be a positive integer or None, got {cap!r}")
        return DivideAndEncode(in_features, self.n_bits, self.units_per_bit, self.eps)

    def loss_terms(
        self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]:
        check_pair_batch(u, labels)
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(step.iteration))
        triplets = sample_triplets(labels, self.max_triplets_per_anchor, gen)
        return {"triplet": dnnh_triplet_loss(u, triplets, self.margin)}

    def codes_from_outputs(self, u: torch.Tensor) -> torch.Tensor:
        """``1[F >= 0.5]`` on the divide-and-encode output."""
        return u >= 0.5
