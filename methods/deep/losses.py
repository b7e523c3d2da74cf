"""Loss terms shared by DPAH and its Table 1/2 baselines: the regulariser (Eq. 6) and the
kurtosis loss (Eq. 7) of Wang et al., Deep Position-Aware Hashing (WACV 2020).

Every ``1/N`` of the paper is a mean over the mini-batch (METHODS.md A4).
"""

from __future__ import annotations

import torch

__all__ = ["BALANCE_MODES", "kt_loss", "reg_loss", "reg_parts"]

BALANCE_MODES = ("per_sample", "batch")


def reg_parts(
    b: torch.Tensor, balance_mode: str = "per_sample"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two parts of Eq. (6) on relaxed codes ``b`` in (0,1)^K: ``(balance, quantization)``.

    ``balance`` = ``1/(2B) sum_i (mean_k b_ik - 0.5)^2`` (``"per_sample"``, as printed) or
    ``1/2 (mean_{i,k} b_ik - 0.5)^2`` (``"batch"``, SSDH's released layer); in [0, 1/8].
    ``quantization`` = ``-1/(2B) sum_i sum_k (b_ik - 0.5)^2``; in [-K/8, 0].
    """
    if b.ndim != 2:
        raise ValueError(f"relaxed codes must be a B x K matrix, got shape {tuple(b.shape)}")
    if balance_mode == "per_sample":
        balance = 0.5 * ((b.mean(dim=1) - 0.5) ** 2).mean()
    elif balance_mode == "batch":
        balance = 0.5 * (b.mean() - 0.5) ** 2
    else:
        raise ValueError(f"balance_mode must be one of {BALANCE_MODES}, got {balance_mode!r}")
    quantization = -0.5 * ((b - 0.5) ** 2).sum(dim=1).mean()
    return balance, quantization


def reg_loss(b: torch.Tensor, balance_mode: str = "per_sample") -> torch.Tensor:
    """``L_reg`` of Eq. (6): bit balance minus quantization distance from 0.5 (unweighted)."""
    balance, quantization = reg_parts(b, balance_mode)
    return balance + quantization


def kt_loss(u: torch.Tensor, t: float) -> torch.Tensor:
    """Kurtosis loss ``L_ktl`` of Eq. (7) on pre-sigmoid outputs ``u`` (unweighted).

    ``1/(2B) sum_i sum_k [max(u_ik - t, 0)^2 + max(-u_ik - t, 0)^2]``: zero while ``|u_ik| <= t``.
    """
    if u.ndim != 2:
        raise ValueError(f"outputs must be a B x K matrix, got shape {tuple(u.shape)}")
    excess = torch.relu(u - t) ** 2 + torch.relu(-u - t) ** 2
    return 0.5 * excess.sum(dim=1).mean()
