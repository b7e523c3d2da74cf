"""What a deep method supplies to the training engine, and what the engine tells it back.

This module is the boundary between :mod:`methods.deep.trainer` (the one training loop) and
:class:`methods.deep.base.DeepHashMethod` (the base class every deep method subclasses). The
trainer depends only on this contract; the base class implements it and calls the trainer. Neither
imports the other's module for its types, so there is no import circle.

A method supplies:

* its training options, read as attributes (:class:`TrainableMethod` lists them);
* ``build_head(in_features, n_classes)``: the head that maps backbone features to raw outputs ``u``
  and owns every method-specific parameter;
* ``loss_terms(head, u, labels, step)``: the weighted scalar loss terms of one mini-batch;
* optional hooks: ``param_groups(backbone, head)`` and ``after_optimizer_step(head)``;
* for alternating methods that keep state per training item (DSDH's stored outputs and codes,
  HBMP's target codes): ``prepare_state(head, labels, train_index)``, called once per fit before
  the first epoch (and before a checkpoint is restored) with the N x C float labels of every row of
  ``Y`` (CPU) and the rows used for training (long; validation rows left out), and
  ``after_epoch(head, outputs, step)``, called at the end of every epoch; when the method sets
  ``needs_epoch_outputs = True``, ``outputs`` holds the network's outputs (eval mode, no gradient,
  on the device) of all training items, row i for item ``train_index[i]``; otherwise it is None and
  nothing extra is computed. Such state lives in buffers of the head (``register_buffer``): the
  model's state dict, and with it every checkpoint, carries it, so a resumed run continues from the
  identical state. It must not draw from torch's global RNG (use a seeded generator of its own).

The engine passes each ``loss_terms`` call a :class:`TrainStep` saying where training is and which
training items the batch holds (``batch_index``, their rows of the label matrix).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["TrainStep", "TrainableMethod"]


@dataclass
class TrainStep:
    """Where training is, for losses that depend on it (e.g. HashNet's continuation)."""

    epoch: int  # 0-based
    iteration: int  # global 0-based mini-batch counter
    iterations_per_epoch: int
    total_epochs: int
    #: rows of the training label matrix ``Y`` of the batch's items (long, on the training device);
    #: None where no batch is meant (the ``after_epoch`` call)
    batch_index: torch.Tensor | None = None


class TrainableMethod(Protocol):
    """The attributes and hooks :func:`methods.deep.trainer.fit_model` reads from a method."""

    n_bits: int
    seed: int
    backbone: str
    weights_path: str | os.PathLike | None
    from_scratch: bool
    mlp_hidden: int
    input_scaling: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    augment: bool
    device: str
    amp: bool
    checkpoint_dir: str | os.PathLike | None
    resume: bool
    num_workers: int
    val_fraction: float
    progress: bool
    lr_schedule: str
    lr_gamma: float
    lr_step_epochs: float | None
    lr_milestones: tuple[float, ...]
    lr_end: float | None
    bias_lr_mult: float
    bias_weight_decay: bool
    early_stopping: int
    eval_every: int
    needs_epoch_outputs: bool

    def get_params(self) -> dict[str, Any]: ...

    def build_head(self, in_features: int, n_classes: int) -> nn.Module: ...

    def loss_terms(
        self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor, step: TrainStep
    ) -> dict[str, torch.Tensor]: ...

    def param_groups(self, backbone: nn.Module, head: nn.Module) -> list[dict[str, Any]]: ...

    def after_optimizer_step(self, head: nn.Module) -> None: ...

    def prepare_state(
        self, head: nn.Module, labels: torch.Tensor, train_index: torch.Tensor
    ) -> None: ...

    def after_epoch(
        self, head: nn.Module, outputs: torch.Tensor | None, step: TrainStep
    ) -> None: ...
