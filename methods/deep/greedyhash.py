"""Greedy Hash (Su, Zhang, Han, Tian, NeurIPS 2018): sign in the forward pass, straight-through backward.

Architecture (official ``ssppp/GreedyHash`` ``cifar1.py`` / ``imagenet.py``, METHODS.md 2.15):
backbone feature -> hash layer ``h`` (K units, PyTorch's default init) -> ``b = sgn(h)`` in the
forward pass, whose backward passes the gradient through unchanged (``dL/dh := dL/db``, the greedy
principle of the paper, Eq. (6)-(7)) -> classifier ``K -> C`` **without bias** -> cross-entropy.

Loss: ``CE(W b, y) + alpha * mean(| |h| - 1 |^3)`` (the paper's Eq. (9) penalty that keeps ``h``
near ``sgn(h)``); ``alpha = 0.1`` is the official CIFAR-10 value (the ImageNet script uses 1).
The paper is single-label; on multi-label data ``classification="auto"`` uses sigmoid
cross-entropy summed over classes and averaged over the batch (the same reading as SSDH's
``"bce"``), a choice of this project.

Codes: ``sgn(h)``, i.e. ``h >= 0``. The official schedule (batch 32, lr 1e-3, 50 epochs on
CIFAR-10 with lr x0.1 at epoch 30) is not imposed: the appendix table runs every method under the
preset's shared schedule, as Table 3 does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.base import register
from methods.deep.base import DeepHashMethod, TrainStep
from methods.deep.pairwise import TEST_PARAMS, check_pair_batch
from methods.search import LR, LogUniform

__all__ = ["GreedyHash", "GreedyHashHead", "greedy_penalty", "sign_straight_through"]

CLASSIFICATIONS = ("auto", "softmax", "bce")


def sign_straight_through(h: torch.Tensor) -> torch.Tensor:
    """``sgn(h)`` forward, identity backward (the value is ``sgn(h)``, the gradient flows to ``h``)."""
    return h + (torch.sign(h) - h).detach()


def greedy_penalty(h: torch.Tensor) -> torch.Tensor:
    """``mean(| |h| - 1 |^3)`` over every entry (official code: ``(h.abs() - 1).abs().pow(3).mean()``)."""
    return (h.abs() - 1.0).abs().pow(3).mean()


class GreedyHashHead(nn.Module):
    """Hash layer (forward returns ``h``) + bias-free classifier on ``sgn(h)``."""

    def __init__(self, in_features: int, n_bits: int, n_classes: int) -> None:
        super().__init__()
        self.hash = nn.Linear(in_features, n_bits)  # PyTorch default init, as the official code
        self.classifier = nn.Linear(n_bits, n_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hash(x)


@register("greedyhash")
class GreedyHash(DeepHashMethod):
    """Greedy Hash: classification through ``sgn(h)`` with a straight-through gradient + cubic penalty."""

    paper = (
        "S. Su, C. Zhang, K. Han, Y. Tian. Greedy Hash: Towards Fast Optimization for Accurate Hash "
        "Coding in CNN. NeurIPS 2018"
    )
    test_params: ClassVar[dict[str, Any]] = dict(TEST_PARAMS)
    #: lr and the penalty weight alpha over the official 0.1 (cifar1.py) to 1 (imagenet.py), a
    #: decade beyond each. Greedy Hash has one own knob.
    search_space: ClassVar[dict[str, Any]] = {"lr": LR, "alpha": LogUniform(0.01, 10.0)}

    def __init__(
        self,
        n_bits: int = 48,
        seed: int = 0,
        *,
        alpha: float = 0.1,
        classification: str = "auto",
        **train_options: Any,
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed, **train_options)
        self.alpha = alpha
        self.classification = classification

    def _check_params(self) -> None:
        if self.classification not in CLASSIFICATIONS:
            raise ValueError(
                f"classification must be one of {CLASSIFICATIONS}, got {self.classification!r}"
            )
        if not (isinstance(self.alpha, (int, float)) and self.alpha >= 0):
            raise ValueError(f"alpha (penalty weight) must be a number >= 0, got {self.alpha!r}")

    def _fit(self, X: Any, Y: np.ndarray) -> None:
        self._check_params()
        single = bool(np.all(np.asarray(Y).sum(axis=1) == 1))
        self.classification_ = (
            ("softmax" if single else "bce") if self.classification == "auto"
            else self.classification
        )
        if self.classification_ == "softmax" and not single:
            raise ValueError(
                "GreedyHash classification='softmax' needs exactly one label per item; "
                "use 'bce' (or 'auto') for multi-label data"
            )
        super()._fit(X, Y)

    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        self._check_params()
        return GreedyHashHead(in_features, self.n_bits, n_classes)

    def loss_terms(
        self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]:
        check_pair_batch(u, labels)
        scores = head.classifier(sign_straight_through(u))
        mode = getattr(self, "classification_", None) or (
            self.classification if self.classification != "auto"
            else ("softmax" if bool((labels.sum(dim=1) == 1).all()) else "bce")
        )
        if mode == "softmax":
            ce = F.cross_entropy(scores, labels.argmax(dim=1))
        else:
            ce = F.binary_cross_entropy_with_logits(
                scores, labels.to(scores.dtype), reduction="sum"
            ) / scores.shape[0]
        return {"classification": ce, "penalty": self.alpha * greedy_penalty(u)}
