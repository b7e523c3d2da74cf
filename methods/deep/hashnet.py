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
    ``|S| / |S_0|`` for dissimilar pairs, counted over the pairs of the current mini-batch, and the
    sum divided by the number of pairs ``|S|``, as the official ``pairwise_loss_updated`` of
    thuml/HashNet ``pytorch/src/loss.py`` (@85387b8) does. Its total weight is ``2|S|`` when both
    kinds of pair occur, so the value is twice the weighted mean.
  - ``pair_weighting="batch_mean"``: the same weights divided by their total ``sum w_ij`` (a
    weighted mean): half of ``"batch"``, i.e. ``"batch"`` at half the learning rate. This was the
    default before issue 11; kept to reproduce older results.
  - ``pair_weighting="fixed"`` (the released code: the Caffe ``pairwise_loss_layer.cu`` and the
    PyTorch ``pairwise_loss`` that ``pytorch/src/train.py`` calls): similar pairs weigh
    ``class_num``, dissimilar pairs 1, the sum divided by the total weight ``sum w_ij``.
    ``class_num=None`` computes it as the released README instructs, ``(#zeros + #ones) / #ones``
    of the training similarity matrix (on at most 10,000 training rows, seeded); the released
    configs use 100 (ImageNet), 1 (COCO), 5 (NUS-WIDE-81).
* Numerical guard (released ``l_threshold = 15``): ``log(1 + exp(x))`` is replaced by ``x`` when
  ``x > 15``.
* Pairs: every unordered pair ``i < j`` within one mini-batch. The released code instead draws two
  independent mini-batches and uses only the cross pairs between them; with one shared loop for every
  deep method we use in-batch pairs (same estimator of the same objective, different pair sample).
* Continuous similarity (``continuous_similarity=True``): the released
  ``caffe/models/train/{imagenet,coco,nuswide_81}/train_val.prototxt`` all set
  ``continous_similarity: true`` (only the example in ``caffe/models/train/README.md`` says
  false). In ``pairwise_loss_layer.cu`` it multiplies the gradient of every pair by
  ``4 c_ij``, ``c_ij = <y_i, y_j>^2 / (|y_i|^2 |y_j|^2)`` (squared cosine of the label vectors) for
  pairs sharing a label and ``c_ij = 0.25`` otherwise, without changing the normalisation: similar
  pairs get ``4 cos^2`` (4 for identical or single-label pairs), dissimilar pairs 1. Here the
  per-pair loss is multiplied by that factor (so value and gradient agree; the Caffe layer's
  printed value omits it). Default off, the paper's form; the published recipe
  (:mod:`methods.deep.recipes`) turns it on with ``pair_weighting="fixed"``, the released
  configuration. The Caffe backward also carries a factor 2 on every pair that its forward lacks
  (the PyTorch port has none); it is not reproduced.
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
from methods.search import LR, LogUniform

__all__ = [
    "HashNet",
    "continuous_similarity_factor",
    "hashnet_beta",
    "hashnet_loss",
    "hashnet_pair_weights",
    "training_class_num",
]

PAIR_WEIGHTINGS = ("batch", "batch_mean", "fixed")


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

    ``mode="batch"`` / ``"batch_mean"``: ``|S|/|S_1|`` similar, ``|S|/|S_0|`` dissimilar (counts
    over the masked pairs); ``mode="fixed"``: ``class_num`` similar, 1 dissimilar.
    """
    maskf = mask.to(sim.dtype)
    if mode in ("batch", "batch_mean"):
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


def continuous_similarity_factor(labels: torch.Tensor) -> torch.Tensor:
    """Released Caffe layer's per-pair gradient factor ``4 c_ij`` (B x B, see the module notes).

    ``c_ij = <y_i, y_j>^2 / (|y_i|^2 |y_j|^2)`` where the labels overlap (a zero norm counts as 1),
    ``0.25`` otherwise; so 1 for dissimilar pairs and ``4 cos^2(y_i, y_j)`` for similar ones.
    """
    lab = labels.to(torch.float64)
    dot = lab @ lab.T
    norms = (lab * lab).sum(dim=1)
    norms = torch.where(norms == 0, torch.ones_like(norms), norms)
    c = dot * dot / (norms.unsqueeze(1) * norms.unsqueeze(0))
    c = torch.where(c == 0, torch.full_like(c, 0.25), c)
    return 4.0 * c


def hashnet_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    *,
    beta: float,
    alpha_s: float,
    pair_weighting: str = "batch",
    class_num: float = 1.0,
    l_threshold: float = 15.0,
    continuous_similarity: bool = False,
) -> torch.Tensor:
    """HashNet's weighted pairwise cross-entropy (paper Eq. 3) on ``h = tanh(beta z)``.

    ``sum_{i<j} f_ij w_ij [log(1+exp(x_ij)) - s_ij x_ij] / D`` with ``x = alpha_s <h_i,h_j>``,
    ``D = |S|`` (number of pairs) for ``"batch"`` and ``sum w_ij`` otherwise; ``f_ij`` is the
    continuous-similarity factor (1 when off).
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
    denominator = mask.sum().to(z.dtype) if pair_weighting == "batch" else w.sum()
    if continuous_similarity:
        per_pair = per_pair * continuous_similarity_factor(labels).to(z.dtype)
    return (w * per_pair).sum() / denominator


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

    ``alpha_s=None`` means ``10 / n_bits``. ``pair_weighting`` is ``"batch"`` (paper, at the scale
    of the official ``pairwise_loss_updated``), ``"batch_mean"`` (half of it, the pre-issue-11
    default) or ``"fixed"`` (released code, positive weight ``class_num``; ``None`` = computed from
    the training labels). ``continuous_similarity``: the released configs' gradient factor.
    """

    paper = (
        "Z. Cao, M. Long, J. Wang, P. S. Yu. HashNet: Deep Learning to Hash by Continuation. "
        "ICCV 2017"
    )
    test_params: ClassVar[dict[str, Any]] = dict(TEST_PARAMS)
    #: lr; alpha_s = c / K with c one decade either side of the released 10 (``sigmoid_param =
    #: 10 / code length`` in every released train_val.prototxt); the continuation speed gamma
    #: around the released 0.005 (``scale_tanh_param``) [D: ranges of this project, the HashNet
    #: paper gives no sweep we could check]
    search_space: ClassVar[dict[str, Any]] = {
        "lr": LR,
        "alpha_s": LogUniform(1.0, 100.0, bits_power=-1, default=10.0),  # None: 10 / K
        "continuation_gamma": LogUniform(1e-3, 2e-2),
    }

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
        continuous_similarity: bool = False,
        **train_options: Any,
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed, **train_options)
        self.continuous_similarity = continuous_similarity
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
        if not isinstance(self.continuous_similarity, bool):
            raise TypeError(
                f"continuous_similarity must be True or False, got {self.continuous_similarity!r}"
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
            continuous_similarity=self.continuous_similarity,
        )
        return {"pairwise": loss}
