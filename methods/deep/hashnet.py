"""HashNet: Deep Learning to Hash by Continuation (Cao, Long, Wang, Yu, ICCV 2017).

* Activation ``h = tanh(beta_t z)`` on the linear hash layer's output ``z`` (``u`` here); codes
  ``sgn(z)`` (``z >= 0``), independent of ``beta_t``.
* Continuation: ``beta_t = beta_0 (1 + gamma t)^p`` with ``beta_0 = 1, gamma = 0.005, p = 0.5``,
  refreshed every 200 iterations as in the released code (thuml/HashNet ``pytorch/src/network.py``:
  ``t`` counts forward passes from 1 and ``beta`` is recomputed when ``t % 200 == 0``); here
  ``t = step.iteration + 1``, so ``beta = 1`` for iterations 0..198, ``sqrt(2)`` from iteration 199,
  and ``sqrt(51) ~ 7.14`` from iteration 9,999. The paper describes a stage-wise increase; the
  step size 200 is the code's.
* Adaptive sigmoid: pair likelihood ``sigma(alpha_s <h_i, h_j>)`` with ``alpha_s = 10 / K``
  (released configs: ``sigmoid_param = 10 / code length``).
* Weighted maximum likelihood (paper Eq. 3): ``sum_ij w_ij [log(1 + exp(x_ij)) - s_ij x_ij]``,
  ``x_ij = alpha_s <h_i, h_j>``, ``s_ij = 1`` iff the items share a label.

  - ``pair_weighting="batch"`` (default, the paper's): ``w_ij = |S| / |S_1|`` for similar and
    ``|S| / |S_0|`` for dissimilar pairs, counted over the pairs of the current mini-batch.
  - ``pair_weighting="fixed"`` (the released code): similar pairs weigh ``class_num``, dissimilar
    pairs 1. ``class_num=None`` computes it as the released README instructs,
    ``(#zeros + #ones) / #ones`` of the training similarity matrix (on at most 10,000 training rows,
    seeded); the released configs use 100 (ImageNet), 1 (COCO), 5 (NUS-WIDE-81).

  The sum is normalised by the total weight ``sum w_ij`` (the Caffe layer's normalisation), so the
  loss value is a weighted mean over pairs.
* Numerical guard (released ``l_threshold = 15``): ``log(1 + exp(x))`` is replaced by ``x`` when
  ``x > 15``.
* Pairs: every unordered pair ``i < j`` within one mini-batch. The released code instead draws two
  independent mini-batches and uses only the cross pairs between them; with one shared loop for every
  deep method we use in-batch pairs (same estimator of the same objective, different pair sample).
* The paper's continuous similarity for multi-label data (label overlap) is off, as in the released
  configs (``continous_similarity: false``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from methods.base import register
from methods.deep.base import DeepHashMethod, TrainStep
from methods.deep.pairwise import TEST_PARAMS, check_pair_batch, pairwise_similarity, upper_pairs

__all__ = [
    "HashNet",
    "hashnet_beta",
    "hashnet_loss",
    "hashnet_pair_weights",
    "training_class_num",
]

PAIR_WEIGHTINGS = ("batch", "fixed")


def hashnet_beta(
    iteration: int,
    *,
    step_size: int = 200,
    gamma: float = 0.005,
    power: float = 0.5,
    beta0: float = 1.0,
) -> float:
    """Continuation scale ``beta`` in force at 0-based training ``iteration`` (released schedule)."""
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    t = iteration + 1  # forward passes so far, as the released code counts them
    last_update = (t // step_size) * step_size
    return beta0 * math.pow(1.0 + gamma * last_update, power)


def hashnet_pair_weights(
    sim: torch.Tensor, mask: torch.Tensor, mode: str = "batch", class_num: float = 1.0
) -> torch.Tensor:
    """Weights ``w_ij`` of the pairs selected by ``mask`` (0 elsewhere).

    ``mode="batch"``: ``|S|/|S_1|`` similar, ``|S|/|S_0|`` dissimilar (counts over the masked pairs);
    ``mode="fixed"``: ``class_num`` similar, 1 dissimilar.
    """
    maskf = mask.to(sim.dtype)
    if mode == "batch":
        n_all = maskf.sum()
        n_sim = (sim * maskf).sum()
        n_dis = n_all - n_sim
        w_sim = n_all / n_sim if n_sim > 0 else torch.zeros_like(n_all)
        w_dis = n_all / n_dis if n_dis > 0 else torch.zeros_like(n_all)
        w = sim * w_sim + (1.0 - sim) * w_dis
    elif mode == "fixed":
        w = sim * float(class_num) + (1.0 - sim)
    else:
        raise ValueError(f"pair_weighting must be one of {PAIR_WEIGHTINGS}, got {mode!r}")
    return w * maskf


def hashnet_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    *,
    beta: float,
    alpha_s: float,
    pair_weighting: str = "batch",
    class_num: float = 1.0,
    l_threshold: float = 15.0,
) -> torch.Tensor:
    """HashNet's weighted pairwise cross-entropy (paper Eq. 3) on ``h = tanh(beta z)``.

    ``sum_{i<j} w_ij [log(1+exp(x_ij)) - s_ij x_ij] / sum_{i<j} w_ij`` with ``x = alpha_s <h_i,h_j>``.
    """
    check_pair_batch(z, labels)
    n = z.shape[0]
    if n < 2:
        return z.sum() * 0.0
    h = torch.tanh(beta * z)
    x = alpha_s * (h @ h.T)
    sim = pairwise_similarity(labels).to(z.dtype)
    # guard: log(1 + e^x) -> x beyond the threshold (released l_threshold)
    softplus = torch.where(x > l_threshold, x, torch.log1p(torch.exp(torch.clamp(x, max=l_threshold))))
    per_pair = softplus - sim * x
    mask = upper_pairs(n, z.device)
    w = hashnet_pair_weights(sim, mask, pair_weighting, class_num)
    return (w * per_pair).sum() / w.sum()


def training_class_num(Y: np.ndarray, *, max_rows: int = 10_000, seed: int = 0) -> float:
    """``(#zeros + #ones) / #ones`` of the training similarity matrix (released README's recipe).

    Counts ordered pairs ``i != j`` of at most ``max_rows`` training rows (a seeded subsample
    beyond that). Returns 1.0 when no pair is similar.
    """
    Y = np.asarray(Y, dtype=np.float32)
    if Y.shape[0] > max_rows:
        rows = np.random.default_rng(seed).choice(Y.shape[0], size=max_rows, replace=False)
        Y = Y[rows]
    n = Y.shape[0]
    n_sim = 0
    for start in range(0, n, 2048):
        block = Y[start : start + 2048] @ Y.T > 0
        n_sim += int(block.sum())
    n_sim -= int((Y.sum(1) > 0).sum())  # drop the diagonal (an item with a label matches itself)
    n_all = n * (n - 1)
    return float(n_all / n_sim) if n_sim > 0 else 1.0


@register("hashnet")
class HashNet(DeepHashMethod):
    """HashNet: tanh continuation + weighted pairwise cross-entropy with adaptive sigmoid.

    ``alpha_s=None`` means ``10 / n_bits``. ``pair_weighting`` is ``"batch"`` (paper) or ``"fixed"``
    (released code, positive weight ``class_num``; ``None`` = computed from the training labels).
    """

    paper = (
        "Z. Cao, M. Long, J. Wang, P. S. Yu. HashNet: Deep Learning to Hash by Continuation. "
        "ICCV 2017"
    )
    test_params: ClassVar[dict[str, Any]] = dict(TEST_PARAMS)

    def __init__(
        self,
        n_bits: int = 48,
        seed: int = 0,
        *,
        alpha_s: float | None = None,
        pair_weighting: str = "batch",
        class_num: float | None = None,
        beta0: float = 1.0,
        continuation_gamma: float = 0.005,
        continuation_power: float = 0.5,
        continuation_step: int = 200,
        l_threshold: float = 15.0,
        **train_options: Any,
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed, **train_options)
        self.alpha_s = alpha_s
        self.pair_weighting = pair_weighting
        self.class_num = class_num
        self.beta0 = beta0
        self.continuation_gamma = continuation_gamma
        self.continuation_power = continuation_power
        self.continuation_step = continuation_step
        self.l_threshold = l_threshold

    def alpha_s_value(self) -> float:
        """Adaptive-sigmoid scale (``10 / K`` unless given)."""
        return 10.0 / self.n_bits if self.alpha_s is None else float(self.alpha_s)

    def beta_at(self, iteration: int) -> float:
        """Continuation scale at a 0-based training iteration."""
        return hashnet_beta(
            iteration,
            step_size=self.continuation_step,
            gamma=self.continuation_gamma,
            power=self.continuation_power,
            beta0=self.beta0,
        )

    def _check_params(self) -> None:
        if self.pair_weighting not in PAIR_WEIGHTINGS:
            raise ValueError(
                f"pair_weighting must be one of {PAIR_WEIGHTINGS}, got {self.pair_weighting!r}"
            )
        if self.alpha_s is not None and not (isinstance(self.alpha_s, (int, float)) and self.alpha_s > 0):
            raise ValueError(f"alpha_s must be a positive number or None (10/K), got {self.alpha_s!r}")
        if self.class_num is not None and not (
            isinstance(self.class_num, (int, float)) and self.class_num > 0
        ):
            raise ValueError(f"class_num must be a positive number or None, got {self.class_num!r}")
        if not (isinstance(self.continuation_step, int) and self.continuation_step >= 1):
            raise ValueError(
                f"continuation_step must be a positive integer, got {self.continuation_step!r}"
            )
        for name in ("beta0", "continuation_gamma", "continuation_power", "l_threshold"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")

    def _fit(self, X: Any, Y: np.ndarray) -> None:
        self._check_params()
        if self.pair_weighting == "fixed":
            self.class_num_ = (
                float(self.class_num) if self.class_num is not None
                else training_class_num(Y, seed=self.seed)
            )
        super()._fit(X, Y)

    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        self._check_params()
        return super().build_head(in_features, n_classes)

    def loss_terms(
        self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]:
        class_num = getattr(self, "class_num_", None) or self.class_num or 1.0
        loss = hashnet_loss(
            u,
            labels,
            beta=self.beta_at(step.iteration),
            alpha_s=self.alpha_s_value(),
            pair_weighting=self.pair_weighting,
            class_num=class_num,
            l_threshold=self.l_threshold,
        )
        return {"pairwise": loss}
