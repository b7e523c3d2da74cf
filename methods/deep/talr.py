"""TALR: Hashing as Tie-Aware Learning to Rank (He, Cakir, Bargal, Sclaroff, CVPR 2018), AP variant.

The loss maximises ``APr``, the continuous relaxation of tie-aware AP of Hamming ranking, in its
"simplified" form as the official MatConvNet code computes it (``kunhe/TALR``, ``apr_s_forward.m``,
METHODS.md 2.13). Inside one mini-batch every item is a query against the others:

* relaxed codes ``phi = 2 sigmoid(gamma x) - 1`` (a scaled tanh) and continuous Hamming distances
  ``d_ij = (K - phi_i . phi_j) / 2``;
* a differentiable histogram of the distances with ``L = nbins + 1`` bin centres
  ``c_l = l K / nbins`` and the triangular kernel ``max(0, 1 - |d - c_l| / w)`` on
  ``c_l - w < d <= c_l + w``, ``w = delta K / nbins``; positive counts ``c+_l`` (items sharing a
  label, the query itself excluded), negative counts ``c-_l``, all counts ``c_l``, cumulative
  ``C_l``, ``C+_l`` (``C_{-1} = 0``);
* ``APr_q = (1 / |R_q|) sum_l c+_l (C+_{l-1} + C+_l + 1) / (C_{l-1} + C_l + 1) / delta``, 0 for a
  query with no positive in the batch; loss ``-APr`` over the batch's queries.

The official layer returns the *sum* over queries, and so does the default ``reduction="sum"``;
``"mean"`` divides it by the batch size like most other losses on the shared engine, but then the
loss barely moves at the learning rates the presets share (digits, 10 epochs, lr 0.05, 48 bits:
mean APr 0.119 -> 0.129 and mAP@all 0.49 with ``"mean"``, 0.115 -> 0.83 and 0.86 with
``"sum"``). Hyper-parameters: official CIFAR-10 setting 1
(``run_cifar_s1.m``): ``gamma = 1``, ``nbins = K / 2`` for K >= 32 (the script sets none below 32;
the option's default is ``nbins = K``); ImageNet-100 uses ``nbins = 16``, ``gamma = 10``. Codes
``sgn(x)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from methods.base import register
from methods.deep.base import DeepHashMethod, TrainStep
from methods.deep.pairwise import TEST_PARAMS, check_pair_batch, pairwise_similarity
from methods.search import LR, LogUniform, Uniform

__all__ = ["TALR", "apr_loss", "default_nbins"]

REDUCTIONS = ("mean", "sum")


def default_nbins(n_bits: int) -> int:
    """The official CIFAR-10 choice: ``K / 2`` bins for K >= 32, else ``K``."""
    return n_bits // 2 if n_bits >= 32 else n_bits


def apr_loss(
    x: torch.Tensor,
    labels: torch.Tensor,
    nbins: int,
    gamma: float = 1.0,
    delta: float = 1.0,
    reduction: str = "sum",
) -> torch.Tensor:
    """``-APr`` (simplified tie-aware AP relaxation) of the batch, every item a query."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    n, k = x.shape
    phi = 2.0 * torch.sigmoid(gamma * x) - 1.0
    dist = (k - phi @ phi.t()) / 2.0
    sim = pairwise_similarity(labels).bool()
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    pos = (sim & ~eye).to(x.dtype)
    neg = (~sim).to(x.dtype)
    step = k / nbins
    centres = torch.arange(nbins + 1, dtype=x.dtype, device=x.device) * step
    width = step * delta
    offset = dist.unsqueeze(-1) - centres  # n x n x L
    inside = (offset > -width) & (offset <= width)
    pulse = (1.0 - offset.abs() / width) * inside
    cp = (pulse * pos.unsqueeze(-1)).sum(dim=1)  # n x L
    cn = (pulse * neg.unsqueeze(-1)).sum(dim=1)
    c_all = cp + cn
    C, Cp = c_all.cumsum(dim=1), cp.cumsum(dim=1)
    C_prev, Cp_prev = F.pad(C, (1, 0))[:, :-1], F.pad(Cp, (1, 0))[:, :-1]
    n_pos = pos.sum(dim=1)
    apr = (cp * (Cp_prev + Cp + 1.0) / (C_prev + C + 1.0)).sum(dim=1)
    apr = torch.where(n_pos > 0, apr / n_pos.clamp(min=1.0), torch.zeros_like(apr)) / delta
    total = apr.sum()
    return -(total / n if reduction == "mean" else total)


@register("talr")
class TALR(DeepHashMethod):
    """TALR-AP: a linear hash layer trained to maximise the relaxed tie-aware AP of each batch."""

    paper = (
        "K. He, F. Cakir, S. A. Bargal, S. Sclaroff. Hashing as Tie-Aware Learning to Rank. "
        "CVPR 2018"
    )
    test_params: ClassVar[dict[str, Any]] = dict(TEST_PARAMS)
    #: lr; the relaxation steepness gamma over the official settings 1 (run_cifar_s1.m) to 10
    #: (run_imagenet.m) and a little beyond; delta from 1 (every run script) to 3 (main/get_opts.m:
    #: "use delta>1 to smooth the gradients")
    search_space: ClassVar[dict[str, Any]] = {
        "lr": LR,
        "gamma": LogUniform(0.5, 20.0),
        "delta": Uniform(1.0, 3.0),
    }

    def __init__(
        self,
        n_bits: int = 48,
        seed: int = 0,
        *,
        nbins: int | None = None,
        gamma: float = 1.0,
        delta: float = 1.0,
        reduction: str = "sum",
        **train_options: Any,
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed, **train_options)
        self.nbins = nbins
        self.gamma = gamma
        self.delta = delta
        self.reduction = reduction

    def nbins_value(self) -> int:
        nbins = default_nbins(self.n_bits) if self.nbins is None else self.nbins
        if not isinstance(nbins, int) or isinstance(nbins, bool) or nbins < 1:
            raise ValueError(f"nbins must be a positive integer (or None), got {self.nbins!r}")
        return nbins

    def check_train_options(self) -> None:
        super().check_train_options()
        self.nbins_value()
        for name in ("gamma", "delta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")

    def loss_terms(
        self, head: torch.nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]:
        check_pair_batch(u, labels)
        return {
            "neg_apr": apr_loss(u, labels, self.nbins_value(), self.gamma, self.delta,
                                self.reduction)
        }
