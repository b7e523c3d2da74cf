"""DHN: Deep Hashing Network (Zhu, Long, Wang, Cao, AAAI 2016).

Hash layer with ``tanh`` output ``h``; objective (pairwise cross-entropy likelihood + smooth
quantisation):

    sum_{i<j} [ log(1 + exp(Omega_ij)) - s_ij Omega_ij ] + lambda sum_i sum_k log cosh(|h_ik| - 1),
    Omega_ij = 1/2 <h_i, h_j>

with ``s_ij = 1`` iff the items share a label. Mini-batch form used here: the likelihood is the mean
over the unordered in-batch pairs, the quantisation term the mean over the batch of its per-sample
sum over bits. Codes: ``sgn(h)`` (``u >= 0``).

Provenance: the form (inner-product likelihood with factor 1/2 on tanh outputs, log-cosh
quantisation) is recalled from the DHN paper [R] and consistent with thulab/DeepHash's ``dhn.py``
(which later switched to a squared quantisation loss and HashNet-style pair balancing; neither is
used here, for a faithful DHN). ``lambda = 0.1`` is a design default [D]: the paper selects it by
cross-validation and its value is from memory, not from its text; grid {0.01, 0.1, 1}.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import register
from methods.deep.base import DeepHashMethod, TrainStep
from methods.deep.pairwise import TEST_PARAMS, check_pair_batch, pairwise_similarity, upper_pairs
from methods.search import LR, LogUniform

__all__ = ["DHN", "dhn_loss", "log_cosh"]


def log_cosh(x: torch.Tensor) -> torch.Tensor:
    """``log(cosh(x))`` computed stably: ``|x| + log1p(exp(-2|x|)) - log 2``."""
    a = x.abs()
    return a + torch.log1p(torch.exp(-2.0 * a)) - torch.log(torch.tensor(2.0, dtype=x.dtype))


def dhn_loss(
    h: torch.Tensor, labels: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """DHN's ``(likelihood, lambda * quantisation)`` on tanh outputs ``h`` (batch means)."""
    check_pair_batch(h, labels)
    n = h.shape[0]
    quant = lam * log_cosh(h.abs() - 1.0).sum(dim=1).mean()
    if n < 2:
        return h.sum() * 0.0, quant
    omega = 0.5 * (h @ h.T)
    sim = pairwise_similarity(labels).to(h.dtype)
    per_pair = F.softplus(omega, beta=1.0, threshold=50.0) - sim * omega
    return per_pair[upper_pairs(n, h.device)].mean(), quant


@register("dhn")
class DHN(DeepHashMethod):
    """Deep Hashing Network: pairwise cross-entropy on tanh codes + ``lam`` log-cosh quantisation."""

    paper = (
        "H. Zhu, M. Long, J. Wang, Y. Cao. Deep Hashing Network for Efficient Similarity Retrieval. "
        "AAAI 2016"
    )
    test_params: ClassVar[dict[str, Any]] = dict(TEST_PARAMS)
    #: lr and the quantisation weight lambda over METHODS.md's grid {0.01, 0.1, 1} (the paper
    #: cross-validates it). DHN has one own knob.
    search_space: ClassVar[dict[str, Any]] = {"lr": LR, "lam": LogUniform(0.01, 1.0)}

    def __init__(self, n_bits: int = 48, seed: int = 0, *, lam: float = 0.1, **train_options: Any) -> None:
        super().__init__(n_bits=n_bits, seed=seed, **train_options)
        self.lam = lam

    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        if not (isinstance(self.lam, (int, float)) and self.lam >= 0):
            raise ValueError(f"lam (quantisation weight) must be a number >= 0, got {self.lam!r}")
        return super().build_head(in_features, n_classes)

    def loss_terms(
        self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]:
        likelihood, quant = dhn_loss(torch.tanh(u), labels, self.lam)
        return {"likelihood": likelihood, "quantisation": quant}
