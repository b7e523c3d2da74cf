"""Point-wise (classification-style) rows of DPAH's Table 1 and Table 2.

Every row shares DPAH's pipeline (METHODS.md 1.14): backbone, linear hash layer giving ``u``,
``b = sigmoid(u)``, ``beta * L_reg`` (Eq. 6, ``beta = 1``: A6, set ``beta=0`` to drop it) and an
optional ``gamma * L_ktl`` on ``u`` (Eq. 7; 0 in Table 1, ``gamma = 0.01, t = 10`` for Table 2's
"softmax+KT loss"); only the supervision on ``b`` changes. Codes: ``u >= 0``.

* ``softmax_ce`` (Table 1 "softmax+CE", Table 2 "softmax"): linear classifier ``s = W b``, no
  bias by default (``classifier_bias=True`` adds one); cross-entropy between ``softmax(s)`` and
  the normalised label vector ``y / n`` (A14; for one-hot labels this is the usual softmax
  cross-entropy). Loss term ``"ce"``. Why no bias: on single-label data softmax+CE without bias
  equals softmax+PA (see below), and the paper's Table 1 prints identical ImageNet numbers for the
  two rows, which a bias would make unlikely (the paper states no bias either way). Before
  issue 11 the default kept the bias.
* ``max_margin`` (Table 1 "maximum-margin", SSDH's multi-label loss): the same classifier,
  one-vs-all squared hinge ``1/2 sum_c max(0, 1 - t_c s_c)^2`` with ``t_c = +1`` for relevant
  classes and ``-1`` otherwise, mean over the batch (SSDH's released
  ``multi_label_l2svm_loss_layer``). Term ``"hinge"``.
* ``softmax_pa`` (Table 1 "softmax+PA"): the PA module with the inner product as metric (A13):
  unconstrained class vectors ``w_c`` act as centers, logits ``z_c = <b, w_c>``, positive logit
  ``<b, mean_{c in Y} w_c>``, ``-log(e^{z+} / (e^{z+} + sum_{j not in Y} e^{z_j}))``; no margin, no
  intra term. For one-hot labels this equals ``softmax_ce`` (no classifier bias, the default; both
  train to the same codes from the same initialisation). Term ``"pa"``.
* ``softmax_kt`` (Table 2 "softmax+KT loss"): ``softmax_ce`` with ``gamma = 0.01``.

Classifier / class-vector initialisation: N(0, 0.2^2), bias 0 (SSDH's released prototxt).
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn

from methods.base import register, register_variant
from methods.deep.base import DeepHashMethod, TrainStep
from methods.deep.dpah import DPAH_PAPER, TEST_PARAMS
from methods.deep.losses import check_reg_options, reg_kt_terms
from methods.search import LR, LogUniform, Uniform

__all__ = [
    "ClassifierHead",
    "MaxMargin",
    "SoftmaxCE",
    "SoftmaxPA",
    "max_margin_loss",
    "softmax_ce_loss",
    "softmax_pa_loss",
]

CLASSIFIER_INIT_STD = 0.2
#: the Table 1 point-wise rows: lr and the weight beta of L_reg, one decade either side of the
#: paper's 1 (Sec. 4.1: "beta = 1") [D: range of this project]. One own knob: gamma (KT) is what
#: separates softmax from softmax+KT in Table 2, so it is not tuned on these rows.
POINTWISE_SPACE: dict[str, Any] = {"lr": LR, "beta": LogUniform(0.1, 10.0)}


class ClassifierHead(nn.Module):
    """Hash layer ``in_features -> K`` and a classifier ``K -> C`` applied to ``b = sigmoid(u)``."""

    def __init__(self, in_features: int, n_bits: int, n_classes: int, bias: bool = True) -> None:
        super().__init__()
        self.hash = nn.Linear(in_features, n_bits)
        nn.init.normal_(self.hash.weight, std=0.01)
        nn.init.zeros_(self.hash.bias)
        self.classifier = nn.Linear(n_bits, n_classes, bias=bias)
        nn.init.normal_(self.classifier.weight, std=CLASSIFIER_INIT_STD)
        if bias:
            nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hash(x)


def _check(scores: torch.Tensor, labels: torch.Tensor) -> None:
    if scores.ndim != 2 or labels.shape != scores.shape:
        raise ValueError(
            f"labels must be B x C = {tuple(scores.shape)} multi-hot, got {tuple(labels.shape)}"
        )


def softmax_ce_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over labelled items of ``-sum_c (y_c / n) log softmax(scores)_c`` (A14)."""
    _check(scores, labels)
    labels = labels.to(scores.dtype)
    n = labels.sum(dim=1)
    keep = n > 0
    per_item = -(labels * torch.log_softmax(scores, dim=1)).sum(dim=1) / n.clamp_min(1.0)
    return per_item[keep].mean() if bool(keep.any()) else scores.sum() * 0.0


def max_margin_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One-vs-all squared hinge ``mean_i 1/2 sum_c max(0, 1 - t_ic s_ic)^2``, ``t = 2y - 1``."""
    _check(scores, labels)
    targets = 2.0 * labels.to(scores.dtype) - 1.0
    return 0.5 * (torch.relu(1.0 - targets * scores) ** 2).sum(dim=1).mean()


def softmax_pa_loss(
    b: torch.Tensor, labels: torch.Tensor, class_vectors: torch.Tensor
) -> torch.Tensor:
    """softmax+PA: Eq. (2)'s form with inner-product logits, no margin (mean over labelled items).

    ``softplus(LSE_{j not in Y_i} <b_i, w_j> - <b_i, mean_{c in Y_i} w_c>)``; 0 if ``Y_i`` is all.
    """
    z = b @ class_vectors.T
    _check(z, labels)
    lab = labels.to(b.dtype)
    relevant = labels > 0
    n = lab.sum(dim=1)
    z_pos = (lab * z).sum(dim=1) / n.clamp_min(1.0)
    has_neg = (~relevant).any(dim=1)
    masked = z.masked_fill(relevant, float("-inf"))
    masked = torch.where(has_neg.unsqueeze(1), masked, torch.zeros_like(masked))
    lse = torch.logsumexp(masked, dim=1)
    per_item = torch.where(has_neg, nn.functional.softplus(lse - z_pos), torch.zeros_like(z_pos))
    keep = n > 0
    return per_item[keep].mean() if bool(keep.any()) else z.sum() * 0.0


class _PointwiseBase(DeepHashMethod):
    """Shared parts: ``b = sigmoid(u)``, classifier head, ``beta L_reg`` and ``gamma L_ktl``."""

    paper = DPAH_PAPER
    test_params = TEST_PARAMS
    #: name of the supervision term in the loss log
    term = ""

    def __init__(
        self,
        n_bits: int = 48,
        seed: int = 0,
        *,
        beta: float = 1.0,
        gamma: float = 0.0,
        t: float = 10.0,
        balance_mode: str = "per_sample",
        quant_norm: str = "bits_mean",
        **train_options: Any,
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed, **train_options)
        self.quant_norm = quant_norm
        self.beta = beta
        self.gamma = gamma
        self.t = t
        self.balance_mode = balance_mode

    def _check_params(self) -> None:
        for name in ("beta", "gamma", "t"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        check_reg_options(self.balance_mode, self.quant_norm)

    @abc.abstractmethod
    def supervision(self, head: nn.Module, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The (unweighted) supervision loss on relaxed codes ``b``."""

    def loss_terms(
        self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]:
        b = torch.sigmoid(u)  # Eq. (5)
        terms = {self.term: self.supervision(head, b, labels)}
        terms.update(reg_kt_terms(u, b, beta=self.beta, gamma=self.gamma, t=self.t,
                                  balance_mode=self.balance_mode, quant_norm=self.quant_norm))
        return terms


@register("softmax_ce")
class SoftmaxCE(_PointwiseBase):
    """Table 1 "softmax+CE" / Table 2 "softmax": classifier on ``b`` + cross-entropy vs ``y/n``.

    ``classifier_bias=False`` (default) has no classifier bias (then equal to ``softmax_pa`` on
    single-label data); ``True`` adds one (the pre-issue-11 default).
    """

    term = "ce"
    search_space = POINTWISE_SPACE

    def __init__(
        self, n_bits: int = 48, seed: int = 0, *, classifier_bias: bool = False, **options: Any
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed, **options)
        self.classifier_bias = classifier_bias

    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        self._check_params()
        return ClassifierHead(in_features, self.n_bits, n_classes, bias=bool(self.classifier_bias))

    def supervision(self, head: nn.Module, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return softmax_ce_loss(head.classifier(b), labels)


@register("max_margin")
class MaxMargin(_PointwiseBase):
    """Table 1 "maximum-margin": SSDH's one-vs-all squared hinge (L2-SVM) on a classifier."""

    term = "hinge"
    search_space = POINTWISE_SPACE
    paper = (
        DPAH_PAPER
        + " (Table 1 row; loss of H.-F. Yang, K. Lin, C.-S. Chen, Supervised Learning of "
        "Semantics-Preserving Hash via Deep Convolutional Neural Networks, TPAMI 2018)"
    )

    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        self._check_params()
        return ClassifierHead(in_features, self.n_bits, n_classes, bias=True)

    def supervision(self, head: nn.Module, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return max_margin_loss(head.classifier(b), labels)


@register("softmax_pa")
class SoftmaxPA(_PointwiseBase):
    """Table 1 "softmax+PA": the PA module with inner-product metric, no margin, no intra (A13)."""

    term = "pa"
    search_space = POINTWISE_SPACE

    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        self._check_params()
        # the classifier's weight matrix (no bias) holds the class vectors w_c
        return ClassifierHead(in_features, self.n_bits, n_classes, bias=False)

    def supervision(self, head: nn.Module, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return softmax_pa_loss(b, labels, head.classifier.weight)


#: Table 2 "softmax+KT loss".
SoftmaxKT = register_variant("softmax_kt", SoftmaxCE, gamma=0.01)
#: softmax+KT: lr, the KT weight gamma a decade either side of the paper's 0.01 and the threshold
#: t over the paper's Fig. 6 range {5, ..., 25}
SoftmaxKT.search_space = {"lr": LR, "gamma": LogUniform(1e-3, 1e-1), "t": Uniform(5.0, 25.0)}
