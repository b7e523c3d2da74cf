"""Contrastive-loss and triplet-loss hashing: the generic pair-wise / triplet-wise rows of Table 1.

These are DPAH's own ablation baselines (METHODS.md 1.14), not published methods: every Table 1 row
shares the backbone, the hash layer, the relaxation ``b = sigmoid(u)`` in ``(0,1)^K``, the distance
``d_H(x, z) = 1/2 ||x - z||^2`` and DPAH's regulariser ``L_reg`` (Eq. 6, weight ``beta = 1``, A6);
only the similarity loss changes.

* contrastive: all unordered pairs ``i < j`` of the mini-batch,
  ``l_ij = s_ij d_ij + (1 - s_ij) max(0, m_c - d_ij)`` averaged over pairs, ``m_c = K / 4``
  (half the largest ``d_H`` between two (0,1)^K vectors; the 0/1-scale analogue of DSH's ``2K``).
* triplet: batch-all, every ``(a, p, n)`` with ``p != a`` relevant and ``n`` irrelevant to ``a``,
  ``l = max(0, d_ap - d_an + m_t)`` averaged over valid triplets, ``m_t = K / 8``.

Similarity for multi-label data: two items are similar iff they share at least one label. Both
margins are [D] design decisions of this project (the paper gives none, A15). Codes: ``u >= 0``
(identical to ``sigmoid(u) >= 0.5``).

This module also holds the small helpers the other pair-wise baselines share
(:func:`pairwise_similarity`, :func:`upper_pairs`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from methods.base import register
from methods.deep.base import DeepHashMethod, TrainStep
from methods.deep.losses import check_reg_options, reg_loss
from methods.search import LR, LogUniform, Uniform

__all__ = [
    "ContrastiveHashing",
    "TripletHashing",
    "check_pair_batch",
    "contrastive_loss",
    "half_sq_distances",
    "pairwise_similarity",
    "position_regulariser",
    "triplet_loss",
    "upper_pairs",
]

TEST_PARAMS: dict[str, Any] = {"backbone": "mlp", "epochs": 2, "batch_size": 32, "progress": False}


# ---------------------------------------------------------------------- shared helpers
def pairwise_similarity(labels: torch.Tensor) -> torch.Tensor:
    """``B x B`` float matrix, 1 where two items share at least one label (multi-hot ``labels``)."""
    if labels.ndim != 2:
        raise ValueError(f"labels must be a B x C multi-hot matrix, got shape {tuple(labels.shape)}")
    lab = labels.float()
    return (lab @ lab.T > 0).to(lab.dtype)


def upper_pairs(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean ``n x n`` mask of the unordered pairs ``i < j``."""
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(diagonal=1)


def half_sq_distances(b: torch.Tensor) -> torch.Tensor:
    """``D_ij = 1/2 ||b_i - b_j||^2`` for all pairs (DPAH's ``d_H``), exact (no Gram trick)."""
    diff = b.unsqueeze(1) - b.unsqueeze(0)
    return 0.5 * (diff * diff).sum(-1)


def check_pair_batch(u: torch.Tensor, labels: torch.Tensor) -> None:
    if u.ndim != 2:
        raise ValueError(f"outputs must be a B x K matrix, got shape {tuple(u.shape)}")
    if labels.ndim != 2 or labels.shape[0] != u.shape[0]:
        raise ValueError(
            f"labels must be a B x C multi-hot matrix with B = {u.shape[0]} rows, "
            f"got shape {tuple(labels.shape)}"
        )


def position_regulariser(b: torch.Tensor, quant_norm: str = "bits_mean") -> torch.Tensor:
    """DPAH's ``L_reg`` (Eq. 6) on relaxed codes ``b`` in (0,1)^K, batch mean for ``1/N`` (A4).

    ``1/2 mean_i (mean_k b_ik - 1/2)^2 - 1/2 mean_i sum_k (b_ik - 1/2)^2``: per-sample bit balance
    minus a quantisation term pushing every entry away from 1/2 (divided by K with the default
    ``quant_norm="bits_mean"``, summed over the K bits with ``"sum"``: see ``reg_parts``). Every Table 1 row carries it (A6);
    this is the shared implementation of :mod:`methods.deep.losses`, the one DPAH uses.
    """
    return reg_loss(b, balance_mode="per_sample", quant_norm=quant_norm)


# ---------------------------------------------------------------------- losses
def contrastive_loss(b: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Contrastive loss over all pairs ``i < j`` of the batch, on ``d_H = 1/2||b_i - b_j||^2``.

    ``mean_{i<j} [ s_ij d_ij + (1 - s_ij) max(0, margin - d_ij) ]`` (METHODS.md 1.14).
    """
    check_pair_batch(b, labels)
    n = b.shape[0]
    if n < 2:
        return b.sum() * 0.0
    d = half_sq_distances(b)
    s = pairwise_similarity(labels).to(b.dtype)
    per_pair = s * d + (1.0 - s) * torch.clamp(margin - d, min=0.0)
    return per_pair[upper_pairs(n, b.device)].mean()


def triplet_loss(b: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-all triplet loss ``mean max(0, d_ap - d_an + margin)`` over every valid triplet.

    Valid: ``p != a`` shares a label with ``a``; ``n`` shares none. No valid triplet -> 0
    (still connected to the graph so that ``backward`` works).
    """
    check_pair_batch(b, labels)
    n = b.shape[0]
    d = half_sq_distances(b)
    s = pairwise_similarity(labels).bool()
    eye = torch.eye(n, dtype=torch.bool, device=b.device)
    pos = s & ~eye  # (a, p)
    neg = ~s  # (a, n)
    valid = pos.unsqueeze(2) & neg.unsqueeze(1)  # (a, p, n)
    if not bool(valid.any()):
        return b.sum() * 0.0
    hinge = torch.clamp(d.unsqueeze(2) - d.unsqueeze(1) + margin, min=0.0)
    return hinge[valid].mean()


# ---------------------------------------------------------------------- methods
class _Table1Mixin:
    """Shared parts of the contrastive / triplet rows: ``L_reg`` on ``b = sigmoid(u)``, checks.

    A plain mixin (not a :class:`HashMethod`), so the registry sees no unregistered method class.
    """

    #: ``margin=None`` means ``K / margin_divisor`` in ``d_H`` units
    margin_divisor: ClassVar[int]

    def __init__(
        self,
        n_bits: int = 48,
        seed: int = 0,
        *,
        margin: float | None = None,
        beta: float = 1.0,
        use_reg: bool = True,
        quant_norm: str = "bits_mean",
        **train_options: Any,
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed, **train_options)
        self.quant_norm = quant_norm
        self.margin = margin
        self.beta = beta
        self.use_reg = use_reg

    def margin_value(self) -> float:
        """The margin in ``d_H`` units (``K / margin_divisor`` unless given)."""
        return self.n_bits / self.margin_divisor if self.margin is None else float(self.margin)

    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        self._check_common()
        if self.margin is not None and not (isinstance(self.margin, (int, float)) and self.margin > 0):
            raise ValueError(
                "margin must be a positive number or None "
                f"(K/{self.margin_divisor}), got {self.margin!r}"
            )
        return super().build_head(in_features, n_classes)

    def _check_common(self) -> None:
        if not (isinstance(self.beta, (int, float)) and self.beta >= 0):
            raise ValueError(f"beta (weight of L_reg) must be a number >= 0, got {self.beta!r}")
        if not isinstance(self.use_reg, bool):
            raise TypeError(f"use_reg must be True or False, got {self.use_reg!r}")
        check_reg_options(quant_norm=self.quant_norm)

    def _reg_terms(self, b: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.use_reg or self.beta == 0:
            return {}
        return {"reg": self.beta * position_regulariser(b, self.quant_norm)}


@register("contrastive")
class ContrastiveHashing(_Table1Mixin, DeepHashMethod):
    """Contrastive-loss hashing (Table 1 "contrastive loss"): all in-batch pairs + ``beta L_reg``.

    ``margin=None`` means ``K / 4`` in ``d_H`` units [D]; ``use_reg`` turns A6 off.
    """

    paper = (
        "Table 1 baseline of Wang et al., Deep Position-Aware Hashing, WACV 2020 "
        "(pair-wise contrastive loss; Hadsell, Chopra, LeCun, CVPR 2006)"
    )
    test_params: ClassVar[dict[str, Any]] = dict(TEST_PARAMS)
    #: lr; the margin as a multiple c of K (c K in d_H units) from K/16 to K/2 (the largest d_H
    #: between two (0,1)^K vectors), around the default K/4; the weight beta of L_reg a decade
    #: either side of the paper's 1 [D: the paper gives no margin, A15]
    search_space: ClassVar[dict[str, Any]] = {
        "lr": LR,
        "margin": Uniform(1 / 16, 1 / 2, bits_power=1, default=1 / 4),  # None: K / 4
        "beta": LogUniform(0.1, 10.0),
    }

    margin_divisor = 4

    def loss_terms(
        self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]:
        b = torch.sigmoid(u)  # Eq. (5) relaxation
        terms = {"contrastive": contrastive_loss(b, labels, self.margin_value())}
        terms.update(self._reg_terms(b))
        return terms


@register("triplet")
class TripletHashing(_Table1Mixin, DeepHashMethod):
    """Triplet-loss hashing (Table 1 "triplet loss"): batch-all triplets + ``beta L_reg``.

    ``margin=None`` means ``K / 8`` in ``d_H`` units [D] (grid K/16, K/8, K/4 in METHODS.md).
    """

    paper = (
        "Table 1 baseline of Wang et al., Deep Position-Aware Hashing, WACV 2020 "
        "(triplet-wise loss, batch-all mining)"
    )
    test_params: ClassVar[dict[str, Any]] = dict(TEST_PARAMS)
    #: lr; the margin c K over METHODS.md's grid K/16 .. K/4 (default K/8); beta as contrastive
    search_space: ClassVar[dict[str, Any]] = {
        "lr": LR,
        "margin": LogUniform(1 / 16, 1 / 4, bits_power=1, default=1 / 8),  # None: K / 8
        "beta": LogUniform(0.1, 10.0),
    }

    margin_divisor = 8

    def loss_terms(
        self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]:
        b = torch.sigmoid(u)
        terms = {"triplet": triplet_loss(b, labels, self.margin_value())}
        terms.update(self._reg_terms(b))
        return terms
