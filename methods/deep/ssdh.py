"""SSDH: Supervised Learning of Semantics-Preserving Hash via Deep CNNs (Yang, Lin, Chen, TPAMI 2018).

Architecture (official Caffe-DeepBinaryCode ``examples/SSDH/train_val.prototxt``): backbone feature ->
latent layer of K sigmoid units ``h`` -> classification layer (K -> C, with bias, init N(0, 0.2^2)).
Objective ``alpha E1 + beta E2 + gamma E3`` with all weights 1 as in the released configuration:

* E1, classification. ``classification="auto"`` picks softmax cross-entropy when every training item
  has exactly one label and the one-vs-all squared hinge (L2-SVM, the "maximum-margin" loss,
  ``1/2 sum_c max(0, 1 - t_c s_c)^2`` with ``t_c = +-1``, batch mean; released
  ``multi_label_l2svm_loss_layer.cpp``) otherwise; ``"softmax"``, ``"l2svm"`` and ``"bce"`` (sigmoid
  cross-entropy summed over classes, batch mean; the code's other multi-label layer) force one.
* E2, binarisation: ``-(1/K) mean_n ||h_n - 0.5||^2`` (paper form, batch mean) pushes every
  activation away from 0.5.
* E3, 50% firing rate: ``mean_n (mean_k h_nk - 0.5)^2`` (paper form: per-sample means).

``reg_normalisation="caffe"`` reproduces the released layers at HEAD of
kevinlin311tw/Caffe-DeepBinaryCode (@9eaa766; the layers last changed in 46ccfc8, "fixed bug in
the process of back-propagation"): ``src/caffe/layers/K1_euclidean_loss_layer.cpp`` gives
E2 = ``-sum (h - 0.5)^2 / (2 B K)`` (``count`` = B K entries), and ``examples/SSDH/train_val.prototxt``
average-pools ``latent_sigmoid`` over the K bits (``Pooling AVE``, ``kernel_w`` = K) before
``K2_euclidean_loss_layer.cpp``, so E3 = ``sum_n (mean_k h_nk - 0.5)^2 / (2B)``, per sample as the
paper states. Both are the paper's forms halved (the 1/2 of Caffe's Euclidean losses).
``reg_normalisation="caffe_pre_46ccfc8"`` keeps the code before that commit: E2 =
``-sum (h - 0.5)^2 / (2 B^2 K)`` and E3 = ``(mean over the whole batch - 0.5)^2 / (2B)`` (no pooling,
a batch-level mean). The default is the paper's form (``"paper"``).

The head returns the latent layer's pre-activation ``a`` (``h = sigmoid(a)``), so codes ``1[h >= 0.5]``
are computed exactly as ``a >= 0`` (no rounding of ``sigmoid`` to 0.5).
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

__all__ = ["SSDH", "SSDHHead", "l2svm_loss", "ssdh_e2", "ssdh_e3"]

CLASSIFICATIONS = ("auto", "softmax", "l2svm", "bce")
REG_NORMALISATIONS = ("paper", "caffe", "caffe_pre_46ccfc8")


class SSDHHead(nn.Module):
    """Latent layer (K units; forward returns its pre-sigmoid value) + classifier K -> C."""

    def __init__(self, in_features: int, n_bits: int, n_classes: int) -> None:
        super().__init__()
        self.latent = nn.Linear(in_features, n_bits)
        nn.init.normal_(self.latent.weight, std=0.01)
        nn.init.zeros_(self.latent.bias)
        self.classifier = nn.Linear(n_bits, n_classes)
        nn.init.normal_(self.classifier.weight, std=0.2)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.latent(x)


def l2svm_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One-vs-all squared hinge ``mean_n 1/2 sum_c max(0, 1 - t_nc s_nc)^2``, ``t = 2y - 1``."""
    t = 2.0 * labels.to(scores.dtype) - 1.0
    return 0.5 * (torch.clamp(1.0 - t * scores, min=0.0) ** 2).sum(dim=1).mean()


def ssdh_e2(h: torch.Tensor, normalisation: str = "paper") -> torch.Tensor:
    """Binarisation term E2 (negative: minimising it pushes ``h`` away from 0.5)."""
    n, k = h.shape
    sq = ((h - 0.5) ** 2).sum()
    if normalisation == "paper":
        return -sq / (k * n)
    if normalisation == "caffe":  # K1 layer at HEAD: -sum / (2 count), count = B K
        return -sq / (2.0 * n * k)
    if normalisation == "caffe_pre_46ccfc8":
        return -sq / (2.0 * n * n * k)
    raise ValueError(f"reg_normalisation must be one of {REG_NORMALISATIONS}, got {normalisation!r}")


def ssdh_e3(h: torch.Tensor, normalisation: str = "paper") -> torch.Tensor:
    """50%-firing-rate term E3: squared deviation of mean activations from 0.5."""
    n = h.shape[0]
    if normalisation == "paper":
        return ((h.mean(dim=1) - 0.5) ** 2).mean()
    if normalisation == "caffe":  # AVE pooling over the bits, then K2: sum / (2 count), count = B
        return ((h.mean(dim=1) - 0.5) ** 2).sum() / (2.0 * n)
    if normalisation == "caffe_pre_46ccfc8":
        return (h.mean() - 0.5) ** 2 / (2.0 * n)
    raise ValueError(f"reg_normalisation must be one of {REG_NORMALISATIONS}, got {normalisation!r}")


@register("ssdh")
class SSDH(DeepHashMethod):
    """SSDH: sigmoid latent codes learnt through a classifier, plus binarisation and balance terms."""

    paper = (
        "H.-F. Yang, K. Lin, C.-S. Chen. Supervised Learning of Semantics-Preserving Hash via Deep "
        "Convolutional Neural Networks. TPAMI 2018"
    )
    test_params: ClassVar[dict[str, Any]] = dict(TEST_PARAMS)
    #: lr; the weights of E2 (beta) and E3 (gamma) one decade either side of the released 1
    #: (``loss_weight: 1`` in examples/SSDH/train_val.prototxt) [D: range of this project]
    search_space: ClassVar[dict[str, Any]] = {
        "lr": LR,
        "beta": LogUniform(0.1, 10.0),
        "gamma": LogUniform(0.1, 10.0),
    }

    def __init__(
        self,
        n_bits: int = 48,
        seed: int = 0,
        *,
        classification: str = "auto",
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        reg_normalisation: str = "paper",
        classifier_lr_mult: float = 1.0,
        **train_options: Any,
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed, **train_options)
        self.classifier_lr_mult = classifier_lr_mult
        self.classification = classification
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.reg_normalisation = reg_normalisation

    def _check_params(self) -> None:
        if self.classification not in CLASSIFICATIONS:
            raise ValueError(
                f"classification must be one of {CLASSIFICATIONS}, got {self.classification!r}"
            )
        if self.reg_normalisation not in REG_NORMALISATIONS:
            raise ValueError(
                f"reg_normalisation must be one of {REG_NORMALISATIONS}, got {self.reg_normalisation!r}"
            )
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} (loss weight) must be a number >= 0, got {value!r}")

    def _fit(self, X: Any, Y: np.ndarray) -> None:
        self._check_params()
        single = bool(np.all(np.asarray(Y).sum(axis=1) == 1))
        self.classification_ = (
            ("softmax" if single else "l2svm") if self.classification == "auto" else self.classification
        )
        super()._fit(X, Y)

    def _resolved_classification(self, labels: torch.Tensor) -> str:
        resolved = getattr(self, "classification_", None)
        if resolved is not None:
            return resolved
        if self.classification != "auto":
            return self.classification
        # called outside fit (e.g. directly in a test): decide from the batch
        return "softmax" if bool((labels.sum(dim=1) == 1).all()) else "l2svm"

    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        self._check_params()
        return SSDHHead(in_features, self.n_bits, n_classes)

    def param_groups(self, backbone: nn.Module, head: nn.Module) -> list[dict[str, Any]]:
        """The released prototxt's rates: the latent layer at ``hash_lr_mult``, the classifier
        at ``classifier_lr_mult`` x the base rate (``lr_mult: 10`` on ``fc8_encode``)."""
        if self.classifier_lr_mult == self.hash_lr_mult:
            return super().param_groups(backbone, head)
        groups = super().param_groups(backbone, nn.ModuleList([head.latent]))
        groups.append({"params": list(head.classifier.parameters()),
                       "lr": self.lr * self.classifier_lr_mult})
        return groups

    def loss_terms(
        self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]:
        check_pair_batch(u, labels)
        h = torch.sigmoid(u)
        scores = head.classifier(h)
        mode = self._resolved_classification(labels)
        if mode == "softmax":
            if not bool((labels.sum(dim=1) == 1).all()):
                raise ValueError(
                    "SSDH classification='softmax' needs exactly one label per item; "
                    "use 'l2svm' or 'bce' (or 'auto') for multi-label data"
                )
            e1 = F.cross_entropy(scores, labels.argmax(dim=1))
        elif mode == "l2svm":
            e1 = l2svm_loss(scores, labels)
        else:  # bce
            e1 = F.binary_cross_entropy_with_logits(
                scores, labels.to(scores.dtype), reduction="sum"
            ) / scores.shape[0]
        return {
            "classification": self.alpha * e1,
            "binarisation": self.beta * ssdh_e2(h, self.reg_normalisation),
            "balance": self.gamma * ssdh_e3(h, self.reg_normalisation),
        }
