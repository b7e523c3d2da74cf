"""Loss terms shared by DPAH and its Table 1/2 baselines: the regulariser (Eq. 6) and the
kurtosis loss (Eq. 7) of Wang et al., Deep Position-Aware Hashing (WACV 2020).

Every ``1/N`` of the paper is a mean over the mini-batch (METHODS.md A4).
"""

from __future__ import annotations

import torch

__all__ = [
    "BALANCE_MODES",
    "QUANT_NORMS",
    "check_reg_options",
    "kt_loss",
    "reg_kt_terms",
    "reg_loss",
    "reg_parts",
]

BALANCE_MODES = ("per_sample", "batch")
#: How Eq. (6)'s quantization term is scaled over the K bits: ``"bits_mean"`` (1/K, SSDH's E2,
#: which the paper cites for L_reg) or ``"sum"`` (as printed). See :func:`reg_parts`.
QUANT_NORMS = ("bits_mean", "sum")


def check_reg_options(balance_mode: str = "per_sample", quant_norm: str = "bits_mean") -> None:
    """Reject an unknown ``balance_mode`` or ``quant_norm`` of Eq. (6), naming the choices."""
    if balance_mode not in BALANCE_MODES:
        raise ValueError(f"balance_mode must be one of {BALANCE_MODES}, got {balance_mode!r}")
    if quant_norm not in QUANT_NORMS:
        raise ValueError(f"quant_norm must be one of {QUANT_NORMS}, got {quant_norm!r}")


def reg_parts(
    b: torch.Tensor, balance_mode: str = "per_sample", quant_norm: str = "bits_mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two parts of Eq. (6) on relaxed codes ``b`` in (0,1)^K: ``(balance, quantization)``.

    ``balance`` = ``1/(2B) sum_i (mean_k b_ik - 0.5)^2`` (``"per_sample"``, as printed) or
    ``1/2 (mean_{i,k} b_ik - 0.5)^2`` (``"batch"``, SSDH's released layer); in [0, 1/8].
    ``quantization`` = ``-1/(2B) sum_i sum_k (b_ik - 0.5)^2`` (``"sum"``, as printed; in
    [-K/8, 0]) or the same divided by K (``"bits_mean"``; in [-1/8, 0]).

    Why ``"bits_mean"`` is the default: the paper takes L_reg from SSDH ("as advocated in [44]"),
    whose binarisation term is ``-(1/K) sum_n ||h_n - 0.5||^2``. As printed (``"sum"``) the
    quantization reward grows to K/8 (4 at 32 bits) while the inter loss is O(log C); the cheapest
    way to collect it is the shared hash-layer bias, so with beta = 1 every run we made (MLP or
    linear head, raw pixels, tags or MobileNet features, lr 1e-3..5e-2) ended with one code for
    all items. ``benchmarks/evidence/README_deep.md`` has the runs.
    """
    if b.ndim != 2:
        raise ValueError(f"relaxed codes must be a B x K matrix, got shape {tuple(b.shape)}")
    check_reg_options(balance_mode, quant_norm)
    if balance_mode == "per_sample":
        balance = 0.5 * ((b.mean(dim=1) - 0.5) ** 2).mean()
    else:  # "batch"
        balance = 0.5 * (b.mean() - 0.5) ** 2
    quantization = -0.5 * ((b - 0.5) ** 2).sum(dim=1).mean()
    if quant_norm == "bits_mean":
        quantization = quantization / b.shape[1]
    return balance, quantization


def reg_loss(
    b: torch.Tensor, balance_mode: str = "per_sample", quant_norm: str = "bits_mean"
) -> torch.Tensor:
    """``L_reg`` of Eq. (6): bit balance minus quantization distance from 0.5 (unweighted)."""
    balance, quantization = reg_parts(b, balance_mode, quant_norm)
    return balance + quantization


def kt_loss(u: torch.Tensor, t: float) -> torch.Tensor:
    """Kurtosis loss ``L_ktl`` of Eq. (7) on pre-sigmoid outputs ``u`` (unweighted).

    ``1/(2B) sum_i sum_k [max(u_ik - t, 0)^2 + max(-u_ik - t, 0)^2]``: zero while ``|u_ik| <= t``.
    """
    if u.ndim != 2:
        raise ValueError(f"outputs must be a B x K matrix, got shape {tuple(u.shape)}")
    excess = torch.relu(u - t) ** 2 + torch.relu(-u - t) ** 2
    return 0.5 * excess.sum(dim=1).mean()


def reg_kt_terms(
    u: torch.Tensor,
    b: torch.Tensor,
    *,
    beta: float,
    gamma: float,
    t: float,
    balance_mode: str = "per_sample",
    quant_norm: str = "bits_mean",
) -> dict[str, torch.Tensor]:
    """``beta L_reg`` (Eq. 6, key ``"reg"``) and ``gamma L_ktl`` (Eq. 7, key ``"kt"``) of Eq. (8);
    a term whose weight is 0 is left out."""
    terms: dict[str, torch.Tensor] = {}
    if beta:
        terms["reg"] = beta * reg_loss(b, balance_mode, quant_norm)
    if gamma:
        terms["kt"] = gamma * kt_loss(u, t)
    return terms
