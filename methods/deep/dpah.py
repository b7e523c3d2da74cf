"""DPAH: Deep Position-Aware Hashing (Wang, Wang, Qiao, Shan, Chen, WACV 2020), Sec. 3.

Objective (Eq. 8): ``L = mean_i (L_inter_i + lam L_intra_i) + beta L_reg + gamma L_ktl`` with

* ``b_i = sigmoid(u_i)`` (Eq. 5), ``u_i`` the hash layer's output; codes ``u >= 0`` (identical to
  ``sigmoid(u) >= 0.5``; a tie ``u = 0`` gives 1).
* learnable class centers ``theta`` (C x K) in (0,1)^K; the mean center of a multi-label item
  ``theta_bar_i = mean_{c in Y_i} theta_c``; distance ``d_H(x, z) = 1/2 ||x - z||^2`` (as printed:
  no normalisation by K, no +-1 rescaling).
* inter loss, Eq. (2), in the stable form ``softplus((1+alpha) d+_i + LSE_{j not in Y_i}(-d_ij))``;
  an item carrying every label has no irrelevant center and ``L_inter_i = 0``.
* intra loss, Eq. (3): ``L_intra_i = d_H(b_i, theta_bar_i)``.
* regulariser, Eq. (6), and kurtosis loss, Eq. (7), in :mod:`methods.deep.losses`.

Defaults (paper, Sec. 4.1): ``t=10, alpha=0.2, lam=0.01, beta=1, gamma=0.01``.

Readings where the paper is silent (METHODS.md 1.13), each an option:

* A1 ``center_param``: ``"sigmoid"`` (default; ``theta = sigmoid(V)``, V learnable, mirroring
  ``b = sigmoid(u)``), ``"clamp"`` (theta learnable, projected to [0, 1] after every step),
  ``"free"`` (theta learnable, unconstrained).
* A2 ``center_init``: ``"normal"`` (default; ``V ~ N(0, 1)``), ``"uniform"`` (``theta ~ U(0, 1)``),
  ``"binary"`` (``V = 3 s``, ``s`` uniform in {-1, +1}: near-binary random centers). For
  ``clamp``/``free`` the same recipes give ``theta = sigmoid(V)`` at initialisation.
* A4: every ``1/N`` is a mean over the mini-batch. Items without any label have no positive center:
  they are left out of ``L_inter`` and ``L_intra`` (they still count in ``L_reg`` and ``L_ktl``).
* A5: centers learn at the head's learning rate (``hash_lr_mult``) times ``center_lr_mult``
  (default 1, the paper's single rate); their weight decay is ``center_weight_decay`` (default
  5e-4, as every other parameter). At the paper's rate the centers barely move (the sigmoid's
  derivative is at most 1/4 and each center gets a gradient of about 1/C of the batch), so
  ``center_lr_mult`` is in DPAH's search space; :meth:`DPAH.center_shift_report` says how far
  the centers moved in a run.
* ``balance_mode``: ``"per_sample"`` (Eq. 6 as printed) or ``"batch"`` (SSDH's released layer).
* ``quant_norm``: Eq. (6)'s quantization term divided by K (``"bits_mean"``, default: SSDH's E2,
  the source the paper cites for L_reg) or summed over the K bits (``"sum"``, as printed). As
  printed, with beta = 1 every run we made collapsed to a single code (the reward K/8 outweighs
  the O(log C) inter loss; see :func:`methods.deep.losses.reg_parts`), so the default departs
  from the printed scale; ``quant_norm="sum"`` reproduces it.

A weight of 0 drops its term (and its log entry): ``dpah_no_kt`` has no ``"kt"`` term.
Loss terms (weighted) are logged as ``"inter"``, ``"intra"``, ``"reg"``, ``"kt"``.

Variants (settings of this class, Table 1/2): ``dpah_no_kt`` = DPAH\\KT = HPA(lambda=0.01)
(``gamma=0``); ``hpa_lambda0`` = HPA(lambda=0) (``gamma=0, lam=0``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from methods.base import register, register_variant
from methods.deep.base import DeepHashMethod, TrainStep
from methods.deep.losses import check_reg_options, reg_kt_terms
from methods.search import LR, LogUniform, Uniform

__all__ = [
    "CENTER_INITS",
    "CENTER_PARAMS",
    "DPAH",
    "DPAH_PAPER",
    "PAHead",
    "center_distances",
    "dpah_loss_terms",
    "inter_loss",
    "intra_loss",
    "mean_centers",
]

CENTER_PARAMS = ("sigmoid", "clamp", "free")
CENTER_INITS = ("normal", "uniform", "binary")
DPAH_PAPER = (
    "R. Wang, R. Wang, S. Qiao, S. Shan, X. Chen. Deep Position-Aware Hashing for Semantic "
    "Continuous Image Retrieval. WACV 2020"
)
TEST_PARAMS: dict[str, Any] = {"backbone": "mlp", "epochs": 2, "batch_size": 32, "progress": False}


# ---------------------------------------------------------------------- head
class PAHead(nn.Module):
    """Hash layer ``in_features -> K`` plus the C x K learnable class centers of the PA module."""

    def __init__(
        self,
        in_features: int,
        n_bits: int,
        n_classes: int,
        center_param: str = "sigmoid",
        center_init: str = "normal",
    ) -> None:
        super().__init__()
        if center_param not in CENTER_PARAMS:
            raise ValueError(f"center_param must be one of {CENTER_PARAMS}, got {center_param!r}")
        if center_init not in CENTER_INITS:
            raise ValueError(f"center_init must be one of {CENTER_INITS}, got {center_init!r}")
        self.hash = nn.Linear(in_features, n_bits)
        nn.init.normal_(self.hash.weight, std=0.01)
        nn.init.zeros_(self.hash.bias)
        self.center_param = center_param
        if center_init == "normal":
            v = torch.randn(n_classes, n_bits)
        elif center_init == "uniform":
            v = torch.logit(torch.rand(n_classes, n_bits).clamp(1e-4, 1 - 1e-4))
        else:
            v = 3.0 * (torch.randint(0, 2, (n_classes, n_bits)).float() * 2 - 1)
        #: the learnable center parameter: V (sigmoid) or theta itself (clamp/free)
        self.center_weight = nn.Parameter(v if center_param == "sigmoid" else torch.sigmoid(v))

    def centers(self) -> torch.Tensor:
        """theta (C x K)."""
        if self.center_param == "sigmoid":
            return torch.sigmoid(self.center_weight)
        return self.center_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hash(x)


# ---------------------------------------------------------------------- loss terms
def _check(b: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> None:
    if b.ndim != 2 or centers.ndim != 2 or b.shape[1] != centers.shape[1]:
        raise ValueError(
            f"codes (B x K) and centers (C x K) disagree: {tuple(b.shape)} vs "
            f"{tuple(centers.shape)}"
        )
    if labels.shape != (b.shape[0], centers.shape[0]):
        raise ValueError(
            f"labels must be B x C = {(b.shape[0], centers.shape[0])}, got {tuple(labels.shape)}"
        )


def mean_centers(labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``theta_bar_i = (1/n_i) sum_{c in Y_i} theta_c`` (B x K); rows without labels are 0."""
    labels = labels.to(centers.dtype)
    n = labels.sum(dim=1, keepdim=True)
    return (labels @ centers) / n.clamp_min(1.0)


def center_distances(b: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``D_ij = d_H(b_i, theta_j) = 1/2 ||b_i - theta_j||^2`` (B x C), exact differences."""
    diff = b.unsqueeze(1) - centers.unsqueeze(0)
    return 0.5 * (diff * diff).sum(dim=-1)


def inter_loss(
    b: torch.Tensor,
    labels: torch.Tensor,
    centers: torch.Tensor,
    alpha: float = 0.2,
    reduce: bool = True,
) -> torch.Tensor:
    """``L_inter`` of Eq. (2), stable form; mean over labelled items (per item if not ``reduce``).

    ``-log[e^{-(1+a) d+} / (e^{-(1+a) d+} + sum_{j not in Y_i} e^{-d_ij})]
    = softplus((1+a) d+ + LSE_{j not in Y_i}(-d_ij))``.
    """
    _check(b, labels, centers)
    relevant = labels > 0
    d_pos = 0.5 * ((b - mean_centers(labels, centers)) ** 2).sum(dim=1)
    neg_logits = -center_distances(b, centers)
    irrelevant = ~relevant
    has_neg = irrelevant.any(dim=1)
    masked = neg_logits.masked_fill(relevant, float("-inf"))
    # rows without an irrelevant class: a finite placeholder keeps the gradient NaN-free (loss 0)
    masked = torch.where(has_neg.unsqueeze(1), masked, torch.zeros_like(masked))
    lse = torch.logsumexp(masked, dim=1)
    per_item = torch.where(
        has_neg, nn.functional.softplus((1.0 + alpha) * d_pos + lse), torch.zeros_like(d_pos)
    )
    if not reduce:
        return per_item
    return _mean_over_labelled(per_item, relevant)


def intra_loss(
    b: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor, reduce: bool = True
) -> torch.Tensor:
    """``L_intra`` of Eq. (3): ``1/2 ||b_i - theta_bar_i||^2``, mean over labelled items."""
    _check(b, labels, centers)
    per_item = 0.5 * ((b - mean_centers(labels, centers)) ** 2).sum(dim=1)
    if not reduce:
        return per_item
    return _mean_over_labelled(per_item, labels > 0)


def _mean_over_labelled(per_item: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    has_label = relevant.any(dim=1)
    if bool(has_label.all()):
        return per_item.mean()
    if not bool(has_label.any()):
        return per_item.sum() * 0.0
    return per_item[has_label].mean()


def dpah_loss_terms(
    u: torch.Tensor,
    labels: torch.Tensor,
    centers: torch.Tensor,
    *,
    alpha: float = 0.2,
    lam: float = 0.01,
    beta: float = 1.0,
    gamma: float = 0.01,
    t: float = 10.0,
    balance_mode: str = "per_sample",
    quant_norm: str = "bits_mean",
) -> dict[str, torch.Tensor]:
    """Weighted terms of Eq. (8) for raw outputs ``u`` (B x K); zero-weight terms are left out."""
    b = torch.sigmoid(u)  # Eq. (5)
    terms = {"inter": inter_loss(b, labels, centers, alpha)}
    if lam:
        terms["intra"] = lam * intra_loss(b, labels, centers)
    terms.update(reg_kt_terms(u, b, beta=beta, gamma=gamma, t=t, balance_mode=balance_mode,
                              quant_norm=quant_norm))
    return terms


# ---------------------------------------------------------------------- method
@register("dpah")
class DPAH(DeepHashMethod):
    """Deep Position-Aware Hashing: PA module (learnable centers, Eqs. 2-3) + L_reg + KT loss.

    ``alpha`` margin, ``lam`` intra weight, ``beta`` L_reg weight, ``gamma`` KT weight, ``t`` KT
    threshold; center options in the module docstring. Training options: ``DeepHashMethod``.
    """

    paper = DPAH_PAPER
    test_params = TEST_PARAMS
    #: lr; the margin alpha over the range of the paper's Fig. 7 (alpha in {0, 0.2, ..., 0.8});
    #: center_lr_mult from the paper's 1 up to 100, about the factor C by which a per-center
    #: gradient of ~1/C is smaller than the hash layer's (issue 11, item 4). t stays at 10 (Fig. 6:
    #: insensitive over [5, 10]).
    search_space: ClassVar[dict[str, Any]] = {
        "lr": LR,
        "alpha": Uniform(0.0, 0.8),
        "center_lr_mult": LogUniform(1.0, 100.0),
    }

    def __init__(
        self,
        n_bits: int = 48,
        seed: int = 0,
        *,
        alpha: float = 0.2,
        lam: float = 0.01,
        beta: float = 1.0,
        gamma: float = 0.01,
        t: float = 10.0,
        center_param: str = "sigmoid",
        center_init: str = "normal",
        center_weight_decay: float = 5e-4,
        center_lr_mult: float = 1.0,
        balance_mode: str = "per_sample",
        quant_norm: str = "bits_mean",
        **train_options: Any,
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed, **train_options)
        self.quant_norm = quant_norm
        self.alpha = alpha
        self.lam = lam
        self.beta = beta
        self.gamma = gamma
        self.t = t
        self.center_param = center_param
        self.center_init = center_init
        self.center_weight_decay = center_weight_decay
        self.center_lr_mult = center_lr_mult
        self.balance_mode = balance_mode

    def _check_params(self) -> None:
        for name in ("alpha", "lam", "beta", "gamma", "t", "center_weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        v = self.center_lr_mult
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and np.isfinite(v)):
            raise ValueError(f"center_lr_mult must be a positive number, got {v!r}")
        check_reg_options(self.balance_mode, self.quant_norm)
        if self.center_param not in CENTER_PARAMS:
            raise ValueError(
                f"center_param must be one of {CENTER_PARAMS}, got {self.center_param!r}"
            )
        if self.center_init not in CENTER_INITS:
            raise ValueError(f"center_init must be one of {CENTER_INITS}, got {self.center_init!r}")

    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        self._check_params()
        head = PAHead(in_features, self.n_bits, n_classes, self.center_param, self.center_init)
        #: theta at initialisation, for center_shift_report
        self.initial_centers_ = head.centers().detach().cpu().numpy().copy()
        return head

    def param_groups(self, backbone: nn.Module, head: nn.Module) -> list[dict[str, Any]]:
        groups = super().param_groups(backbone, head)
        center = head.center_weight
        for g in groups:
            g["params"] = [p for p in g["params"] if p is not center]
        groups.append(
            {
                "params": [center],
                "lr": self.lr * self.hash_lr_mult * self.center_lr_mult,
                "weight_decay": self.center_weight_decay,
            }
        )
        return [g for g in groups if g["params"]]

    def after_optimizer_step(self, head: nn.Module) -> None:
        if self.center_param == "clamp":
            with torch.no_grad():
                head.center_weight.clamp_(0.0, 1.0)

    def loss_terms(
        self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]:
        return dpah_loss_terms(
            u,
            labels,
            head.centers(),
            alpha=self.alpha,
            lam=self.lam,
            beta=self.beta,
            gamma=self.gamma,
            t=self.t,
            balance_mode=self.balance_mode,
            quant_norm=self.quant_norm,
        )

    def centers(self) -> Any:
        """The learned class centers theta (C x K numpy array in (0,1) for ``sigmoid``)."""
        return self.model_.head.centers().detach().cpu().numpy()

    def center_shift_report(self) -> dict[str, float]:
        """How far the class centers moved between initialisation and the end of training.

        ``mean_abs_change`` and ``max_abs_change`` of ``theta`` (C x K entries) and
        ``sign_flip_fraction``: the fraction of entries whose bit ``theta >= 0.5`` changed (the
        sign of V for ``center_param="sigmoid"``, i.e. the center's binary code).
        """
        start = getattr(self, "initial_centers_", None)
        if not getattr(self, "is_fitted_", False) or start is None:
            from methods.base import NotFittedError

            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, Y) first")
        end = self.centers()
        change = np.abs(end.astype(np.float64) - start.astype(np.float64))
        flipped = (end >= 0.5) != (start >= 0.5)
        return {
            "mean_abs_change": float(change.mean()),
            "max_abs_change": float(change.max()),
            "sign_flip_fraction": float(flipped.mean()),
        }


#: Table 1 "HPA(lambda=0.01)" and Table 2 "DPAH\KT loss": DPAH without the KT loss.
DPAHNoKT = register_variant("dpah_no_kt", DPAH, gamma=0.0)
#: Table 1 "HPA(lambda=0)": no KT, no intra loss.
HPALambda0 = register_variant("hpa_lambda0", DPAH, gamma=0.0, lam=0.0)
