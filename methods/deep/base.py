"""The base class of every deep method: a method supplies only its head and its loss.

INTERFACE SKELETON (written by the lead). The deep-engine engineer implements ``_fit`` /
``_encode`` / ``raw_outputs`` on top of ``methods.deep.trainer`` (the one training loop) and may add
training options, but must keep the three hooks below with these signatures, because every deep
method is written against them:

* ``build_head(in_features, n_classes) -> nn.Module``: maps backbone features (B x in_features)
  to the method's raw outputs ``u`` (B x n_bits), and owns every method-specific parameter
  (DPAH's class centers, SSDH's classifier, DNNH's divide-and-encode slices, ...).
* ``loss_terms(head, u, labels, step) -> dict[str, Tensor]``: the *weighted* scalar loss terms;
  the trainer minimises their sum and logs each one by name (and names the term that went NaN).
* ``codes_from_outputs(u) -> Tensor``: booleans, default ``u >= 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from methods.base import HashMethod


@dataclass
class TrainStep:
    """Where training is, for losses that depend on it (e.g. HashNet's continuation)."""

    epoch: int  # 0-based
    iteration: int  # global 0-based mini-batch counter
    iterations_per_epoch: int
    total_epochs: int


class DeepHashMethod(HashMethod):
    """A deep hashing method trained by the shared loop in :mod:`methods.deep.trainer`."""

    kind = "deep"
    input_kind = "images"

    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        """Default head: one linear hash layer ``in_features -> n_bits`` (init N(0, 0.01^2), bias 0)."""
        layer = nn.Linear(in_features, self.n_bits)
        nn.init.normal_(layer.weight, std=0.01)
        nn.init.zeros_(layer.bias)
        return layer

    def loss_terms(
        self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]:
        """Weighted scalar loss terms for one mini-batch (``labels``: B x C float multi-hot)."""
        raise NotImplementedError

    def codes_from_outputs(self, u: torch.Tensor) -> torch.Tensor:
        """Binary codes (bool) from raw outputs; ``u >= 0`` unless a method says otherwise."""
        return u >= 0

    def raw_outputs(self, X: Any) -> Any:
        """The real-valued outputs ``u`` before binarisation (N x n_bits numpy array)."""
        raise NotImplementedError
