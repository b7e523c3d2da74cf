"""DSDH: Deep Supervised Discrete Hashing (Li, Sun, He, Tan, NeurIPS 2017).

Objective (METHODS.md 2.12): the pairwise likelihood
``sum_ij [log(1 + e^theta_ij) - s_ij theta_ij]``, ``theta_ij = u_i . u_j / 2``, plus a linear
classifier on the codes ``mu ||Y - W^T B||^2 + nu ||W||^2`` and the quantization
``eta ||B - U||^2``, with ``B`` in {-1, 1}. Transcribed from the official MatConvNet code
(``liqi-casia/DSDH-HashingCode``), which fixes the order and the constants; per mini-batch,
``train.m`` does:

1. forward the batch: ``u`` (b x K); store it, ``U[batch] = u`` (``U`` starts at zero for every
   training item and keeps each item's latest output, the per-item state of this method);
2. discrete step on the batch (:func:`dsdh_discrete_step`): ``W = RRC(sgn(u), Y, nu)``, the ridge
   regression ``(sgn(u)^T sgn(u) + nu I)^-1 sgn(u)^T Y`` (``RRC.m``); ``Q = eta u + Y W^T``; ``B``
   by discrete cyclic coordinate descent from ``B = 0``, bit by bit
   ``B[:, k] = sgn(Q[:, k] - B_{-k} W_{-k} w_k^T)``, at most 10 sweeps, stopping when
   ``||B - B_prev||_F < 1e-6 ||B_prev||_F``;
3. network step with ``dJ/du = (S - A) U - 2 eta (u - B)``, ``A = sigmoid(u U^T / 2)``, ``S`` the
   similarity of the batch to *all* training items, ``U`` held fixed (:func:`dsdh_loss`).

Constants [C: ``setup.m``, ``train.m``]: ``eta = 55``, ``nu = 0.1`` (RRC's ``lambda``), ``mu = 1``
(implicit: ``Q = eta u + Y W^T``; in general ``Q = (eta / mu) u + Y W^T`` and the ridge weight is
``nu / mu``), 10 DCC sweeps, tolerance 1e-6. Codes ``u > 0`` (``compute_B.m``).

Normalisation: ``update.m`` divides the gradient by ``batch_size * N`` (N training items), so the
loss terms are the sums over the batch divided by ``B * N``; the likelihood carries a factor 2
(each pair counted as (i, j) and (j, i)), which makes its gradient with ``U`` fixed exactly the
official ``(S - A) U`` (the test checks it).

Departures, and why:

* METHODS.md 2.12 (and the paper's alternating algorithm) describe the W and B steps once per
  epoch over all training items; the official code does them per mini-batch on the batch. The code
  wins: ``discrete_step="batch"`` (default) is the official order. ``discrete_step="epoch"`` is the
  METHODS.md reading: the same solver on all training items at the end of every epoch (the
  trainer's ``after_epoch`` hook with the outputs of all training items, which also refresh ``U``),
  the network pulled toward those stored codes during the next epoch (``B = 0`` in the first).
* The public re-implementations (TreezzZ/DSDH_PyTorch, swuxyj DSDH.py) solve W and B over all
  items every batch and leave ``eta ||B - U||^2`` out of the network loss; not followed.
* Multi-label data: ``s_ij = 1`` iff the items share a label (``calcNeighbor.m`` compares class
  ids; identical on one-hot labels); ``Y`` is the multi-hot matrix (``RRC.m`` takes it as given).
* ``log(1 + e^theta)`` is evaluated as ``softplus(theta)`` (same value, no overflow).
* An item with no label has no classification target: fit raises a ValueError naming the rows
  (as the discrete step does), rather than regressing it onto the zero vector.
* Validation batches (``val_fraction``) are scored against the training items' stored outputs and
  never write ``U``.
* The official schedule (VGG-F fine-tuned, 150 epochs, batch 128, plain SGD with lr
  ``logspace(-2, -6, 150)``, weight decay 5e-4) is not imposed: the appendix table runs every
  method under the preset's shared schedule, as Table 3 does.
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

__all__ = ["DSDH", "dsdh_discrete_step", "dsdh_loss"]

DISCRETE_STEPS = ("batch", "epoch")


def _check_labelled(labels: torch.Tensor, name: str = "labels") -> None:
    empty = (labels.sum(dim=1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"DSDH needs at least one label per item (its classifier W^T b ~ y has no target "
            f"otherwise): {len(empty)} rows of {name} are all zero (first rows: {empty[:5]}); "
            "drop those items"
        )


@torch.no_grad()
def dsdh_discrete_step(
    u: torch.Tensor,
    labels: torch.Tensor,
    eta: float = 55.0,
    nu: float = 0.1,
    mu: float = 1.0,
    max_sweeps: int = 10,
    tol: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``B`` (n x K, in {-1, 0, 1}) and classifier ``W`` (K x C) for outputs ``u`` (n x K).

    ``train.m``: ``W`` is the ridge regression of ``labels`` on ``sgn(u)`` (``RRC.m``, weight
    ``nu / mu``), then DCC from ``B = 0`` on ``Q = (eta / mu) u + labels W^T``, one bit at a time,
    ``B_k = sgn(Q_k - sum_{j != k} B_j (W W^T)_{jk})``, until a sweep changes ``B`` by less than
    ``tol`` (relative Frobenius norm) or ``max_sweeps`` sweeps. ``sgn(0) = 0`` as in MATLAB.
    """
    if u.ndim != 2 or labels.ndim != 2 or len(labels) != len(u):
        raise ValueError(
            f"u must be n x K and labels n x C, got {tuple(u.shape)} and {tuple(labels.shape)}"
        )
    if not nu > 0:
        raise ValueError(f"nu (ridge weight of W) must be > 0, got {nu!r}")
    _check_labelled(labels)
    y = labels.to(u.dtype)
    signs = torch.sign(u)
    k = u.shape[1]
    eye = torch.eye(k, dtype=u.dtype, device=u.device)
    W = torch.linalg.solve(signs.T @ signs + (nu / mu) * eye, signs.T @ y)
    Q = (eta / mu) * u + y @ W.T
    G = W @ W.T
    B = torch.zeros_like(u)
    for _ in range(max_sweeps):
        previous = B.clone()
        for bit in range(k):
            # B_{-k} W_{-k} w_k^T = B G[:, k] - B[:, k] G[k, k]
            B[:, bit] = torch.sign(Q[:, bit] - B @ G[:, bit] + B[:, bit] * G[bit, bit])
        if torch.linalg.norm(B - previous) < tol * torch.linalg.norm(previous):
            break
    return B, W


def dsdh_loss(
    u: torch.Tensor,
    codes: torch.Tensor,
    stored: torch.Tensor,
    similar: torch.Tensor,
    eta: float = 55.0,
) -> dict[str, torch.Tensor]:
    """The network step's loss terms for a batch, normalised as ``update.m`` (by ``b * N``).

    ``u``: b x K batch outputs; ``codes``: their b x K codes ``B``; ``stored``: N x K outputs of all
    training items (held fixed); ``similar``: b x N 0/1 similarity. ``likelihood`` =
    ``2 sum_ij [softplus(theta_ij) - s_ij theta_ij] / (b N)``, ``theta = u stored^T / 2``;
    ``quantization`` = ``eta sum_i ||u_i - b_i||^2 / (b N)``.
    """
    n = stored.shape[0] * u.shape[0]
    theta = 0.5 * u @ stored.detach().T
    likelihood = 2.0 * (F.softplus(theta) - similar * theta).sum() / n
    quantization = eta * (u - codes.detach()).pow(2).sum() / n
    return {"likelihood": likelihood, "quantization": quantization}


@register("dsdh")
class DSDH(DeepHashMethod):
    """DSDH: pairwise likelihood against every item's stored output + discrete codes (DCC)."""

    paper = (
        "Q. Li, Z. Sun, R. He, T. Tan. Deep Supervised Discrete Hashing. NeurIPS 2017"
    )
    test_params: ClassVar[dict[str, Any]] = dict(TEST_PARAMS)
    #: lr; the classification weight mu and the quantization weight eta one decade either side of
    #: the official train.m values (mu = 1, eta = 55) [D: range of this project]
    search_space: ClassVar[dict[str, Any]] = {
        "lr": LR,
        "mu": LogUniform(0.1, 10.0),
        "eta": LogUniform(5.5, 550.0),
    }

    def __init__(
        self,
        n_bits: int = 48,
        seed: int = 0,
        *,
        eta: float = 55.0,
        nu: float = 0.1,
        mu: float = 1.0,
        dcc_sweeps: int = 10,
        dcc_tol: float = 1e-6,
        discrete_step: str = "batch",
        **train_options: Any,
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed, **train_options)
        self.eta = eta
        self.nu = nu
        self.mu = mu
        self.dcc_sweeps = dcc_sweeps
        self.dcc_tol = dcc_tol
        self.discrete_step = discrete_step

    @property
    def needs_epoch_outputs(self) -> bool:  # type: ignore[override]
        return self.discrete_step == "epoch"

    def check_train_options(self) -> None:
        super().check_train_options()
        for name in ("eta", "nu", "mu"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and np.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(self.dcc_sweeps, int) and self.dcc_sweeps >= 1):
            raise ValueError(f"dcc_sweeps must be a positive integer, got {self.dcc_sweeps!r}")
        if not (isinstance(self.dcc_tol, (int, float)) and self.dcc_tol >= 0):
            raise ValueError(f"dcc_tol must be a number >= 0, got {self.dcc_tol!r}")
        if self.discrete_step not in DISCRETE_STEPS:
            raise ValueError(
                f"discrete_step must be one of {DISCRETE_STEPS}, got {self.discrete_step!r}"
            )

    def _solve(self, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return dsdh_discrete_step(
            u, labels, self.eta, self.nu, self.mu, self.dcc_sweeps, self.dcc_tol
        )[0]

    def prepare_state(
        self, head: nn.Module, labels: torch.Tensor, train_index: torch.Tensor
    ) -> None:
        """``U = 0`` for every item (``DSDH.m``), the labels, the training rows; ``B = 0`` (epoch)."""
        _check_labelled(labels[train_index], "Y (training rows)")
        n = len(labels)
        head.register_buffer("stored_u", torch.zeros(n, self.n_bits))
        head.register_buffer("item_labels", labels.float().clone())
        head.register_buffer("train_rows", train_index.clone())
        if self.discrete_step == "epoch":
            head.register_buffer("stored_b", torch.zeros(n, self.n_bits))

    def loss_terms(
        self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]:
        check_pair_batch(u, labels)
        if step.batch_index is None or not hasattr(head, "stored_u"):
            raise RuntimeError(
                "DSDH.loss_terms needs the trainer's state: step.batch_index and the buffers "
                "of prepare_state (train it through fit)"
            )
        rows = step.batch_index
        if head.training:  # train.m: U(ix, :) = U0 before the likelihood
            head.stored_u[rows] = u.detach()
        stored = head.stored_u.index_select(0, head.train_rows)
        all_labels = head.item_labels.index_select(0, head.train_rows)
        similar = (labels.to(all_labels.dtype) @ all_labels.T > 0).to(u.dtype)
        if self.discrete_step == "batch":
            codes = self._solve(u.detach(), labels)
        else:
            codes = head.stored_b.index_select(0, rows)
        return dsdh_loss(u, codes, stored.to(u.dtype), similar, self.eta)

    def after_epoch(
        self, head: nn.Module, outputs: torch.Tensor | None, step: TrainStep
    ) -> None:
        """``discrete_step="epoch"``: refresh ``U`` and solve ``B`` over all training items."""
        if self.discrete_step != "epoch":
            return
        rows = head.train_rows
        head.stored_u[rows] = outputs
        head.stored_b[rows] = self._solve(outputs, head.item_labels.index_select(0, rows))

    def codes_from_outputs(self, u: torch.Tensor) -> torch.Tensor:
        """``compute_B.m``: ``U > 0``."""
        return u > 0
