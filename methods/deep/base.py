"""The base class of every deep method: a method supplies only its head and its loss.

Training happens in :mod:`methods.deep.trainer` (the one training loop), which depends only on the
small contract in :mod:`methods.deep.contract`; this class implements that contract, holds the
training options (paper defaults) and implements ``_fit`` / ``_encode`` / ``raw_outputs`` on top of
the trainer. A method supplies three hooks:

* ``build_head(in_features, n_classes) -> nn.Module``: maps backbone features (B x in_features)
  to the method's raw outputs ``u`` (B x n_bits), and owns every method-specific parameter
  (DPAH's class centers, SSDH's classifier, DNNH's divide-and-encode slices, ...).
* ``loss_terms(head, u, labels, step) -> dict[str, Tensor]``: the *weighted* scalar loss terms;
  the trainer minimises their sum and logs each one by name (and names the term that went NaN).
* ``codes_from_outputs(u) -> Tensor``: booleans, default ``u >= 0``.

and may override optional ones: ``param_groups(backbone, head)`` (e.g. another weight decay
for DPAH's centers), ``after_optimizer_step(head)`` (e.g. a projection of clamped centers), and,
for alternating methods with per-item state, ``prepare_state(head, labels, train_index)`` and
``after_epoch(head, outputs, step)`` (with ``needs_epoch_outputs = True`` to receive the outputs of
all training items; see :mod:`methods.deep.contract`).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from methods.base import HashMethod
from methods.deep import trainer
from methods.deep.backbones import BACKBONES, INPUT_SCALINGS, is_feature_backbone
from methods.deep.contract import TrainStep

#: learning-rate schedules the trainer applies (``lr_schedule``)
LR_SCHEDULES = ("fixed", "step", "multistep", "logspace")

__all__ = ["DeepHashMethod", "TrainStep"]


class DeepHashMethod(HashMethod):
    """A deep hashing method trained by the shared loop in :mod:`methods.deep.trainer`.

    Training options (defaults = the DPAH paper's settings, Sec. 4.1): SGD with
    ``momentum=0.9``, ``weight_decay=5e-4``, fixed ``lr=1e-3``, ``batch_size=256``,
    ``epochs=200``, AlexNet backbone with ImageNet weights. ``hash_lr_mult`` multiplies the
    learning rate of the head (hash layer and every method-specific parameter; 10 is the
    HashNet/SSDH convention, 1 the paper's single rate).

    ``backbone``: ``alexnet``, ``vgg16``, ``resnet50``, ``resnet101`` (ImageNet weights from
    ``weights_path`` or torchvision's cache; ``from_scratch=True`` for random initialisation;
    ``pretrained=False`` is only accepted together with ``from_scratch=True``), ``small_cnn``
    (8x8-32x32 images), or the feature backbones ``linear`` / ``mlp`` (``mlp_hidden`` units) that
    take N x D feature matrices; ``input_scaling="standardize"`` z-scores those features with the
    training set's mean and std (+0.01) inside the model (``"none"``, the default, feeds them as
    given; images are always normalised with the ImageNet mean/std). ``augment``: random crop/flip of training images.
    ``device``: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda[:N]"``; ``amp``: mixed precision
    (GPU only). ``checkpoint_dir``: write ``checkpoint.pt`` there after every epoch (atomic);
    ``resume=True`` continues from it. ``val_fraction``: a seeded split of the training data,
    left out of training, on which the loss is monitored (``history_`` keys ``val_*``).

    Schedules of the published recipes (``methods.deep.recipes``): ``lr_schedule`` ``"fixed"``
    (default), ``"step"`` (x ``lr_gamma`` every ``lr_step_epochs``, fractional epochs allowed:
    Caffe's iteration steps), ``"multistep"`` (x ``lr_gamma`` at each of ``lr_milestones``) or
    ``"logspace"`` (from ``lr`` to ``lr_end`` log-linearly over the epochs, DSDH); the factor is
    applied at every iteration to every parameter group. ``bias_lr_mult`` / ``bias_weight_decay``:
    Caffe's rule for biases (``lr_mult: 2``, ``decay_mult: 0``).

    Convergence: ``early_stopping=P`` (epochs, 0 = off) evaluates the validation mAP@all every
    ``eval_every`` epochs (the ``val_fraction`` items as queries, ranked against the training
    items; never the query set or database), stops when it has not improved for ``P`` epochs,
    and keeps the model of the best evaluation (``history_`` key ``val_map``; ``stopping_`` says
    which epoch was chosen and why training stopped).

    Fitted state: ``model_`` (backbone + head, eval mode), ``history_`` (one dict of mean loss terms
    per epoch), ``n_classes_``, ``device_``.
    """

    kind = "deep"
    input_kind = "images"
    #: True: the trainer passes ``after_epoch`` the outputs of all training items (one extra
    #: inference pass over them per epoch); False: ``outputs`` is None and costs nothing
    needs_epoch_outputs: ClassVar[bool] = False

    def __init__(
        self,
        n_bits: int = 48,
        seed: int = 0,
        *,
        backbone: str = "alexnet",
        pretrained: bool = True,
        weights_path: str | os.PathLike | None = None,
        from_scratch: bool = False,
        mlp_hidden: int = 1024,
        input_scaling: str = "none",
        epochs: int = 200,
        batch_size: int = 256,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        hash_lr_mult: float = 1.0,
        augment: bool = True,
        device: str = "auto",
        amp: bool = False,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
        num_workers: int = 0,
        val_fraction: float = 0.0,
        progress: bool = True,
        lr_schedule: str = "fixed",
        lr_gamma: float = 0.1,
        lr_step_epochs: float | None = None,
        lr_milestones: tuple[float, ...] = (),
        lr_end: float | None = None,
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        early_stopping: int = 0,
        eval_every: int = 5,
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed)
        self.backbone = backbone
        self.pretrained = pretrained
        self.weights_path = weights_path
        self.from_scratch = from_scratch
        self.mlp_hidden = mlp_hidden
        self.input_scaling = input_scaling
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.hash_lr_mult = hash_lr_mult
        self.augment = augment
        self.device = device
        self.amp = amp
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.progress = progress
        self.lr_schedule = lr_schedule
        self.lr_gamma = lr_gamma
        self.lr_step_epochs = lr_step_epochs
        self.lr_milestones = tuple(lr_milestones)
        self.lr_end = lr_end
        self.bias_lr_mult = bias_lr_mult
        self.bias_weight_decay = bias_weight_decay
        self.early_stopping = early_stopping
        self.eval_every = eval_every

    # ------------------------------------------------------------------ hooks
    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        """Default head: linear hash layer ``in_features -> n_bits``, init N(0, 0.01^2), bias 0."""
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

    def param_groups(self, backbone: nn.Module, head: nn.Module) -> list[dict[str, Any]]:
        """Optimiser parameter groups: backbone at ``lr``, head at ``lr * hash_lr_mult``."""
        groups = [
            {"params": [p for p in backbone.parameters() if p.requires_grad], "lr": self.lr},
            {
                "params": [p for p in head.parameters() if p.requires_grad],
                "lr": self.lr * self.hash_lr_mult,
            },
        ]
        return [g for g in groups if g["params"]]

    def after_optimizer_step(self, head: nn.Module) -> None:
        """Called after every optimiser step (e.g. to project constrained parameters)."""

    def prepare_state(
        self, head: nn.Module, labels: torch.Tensor, train_index: torch.Tensor
    ) -> None:
        """Called once before the first epoch: register per-item state as buffers of ``head``."""

    def after_epoch(
        self, head: nn.Module, outputs: torch.Tensor | None, step: TrainStep
    ) -> None:
        """Called at the end of every epoch (``outputs``: see ``needs_epoch_outputs``)."""

    # ------------------------------------------------------------------ contract
    def expected_input(self) -> str:
        """ "features" for the feature backbones (``linear``, ``mlp``), else "images"."""
        return "features" if is_feature_backbone(self.backbone) else "images"

    def check_train_options(self) -> None:
        """Reject bad training options with a message naming the option."""
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        if (
            not self.pretrained
            and not self.from_scratch
            and self.backbone in ("alexnet", "vgg16", "resnet50", "resnet101")
        ):
            raise ValueError(
                "pretrained=False needs from_scratch=True to train a torchvision backbone from "
                "random initialisation (never done silently)"
            )
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2")
        for name in ("lr", "hash_lr_mult"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0 or not np.isfinite(v):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        for name in ("momentum", "weight_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {self.num_workers!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_schedule == "step" and not (
                isinstance(self.lr_step_epochs, (int, float)) and self.lr_step_epochs > 0):
            raise ValueError("lr_schedule='step' needs lr_step_epochs > 0, got "
                             f"{self.lr_step_epochs!r}")
        if self.lr_schedule == "multistep" and not self.lr_milestones:
            raise ValueError("lr_schedule='multistep' needs lr_milestones (epochs)")
        if self.lr_schedule == "logspace" and not (
                isinstance(self.lr_end, (int, float)) and self.lr_end > 0):
            raise ValueError(f"lr_schedule='logspace' needs lr_end > 0, got {self.lr_end!r}")
        if not (isinstance(self.lr_gamma, (int, float)) and self.lr_gamma > 0):
            raise ValueError(f"lr_gamma must be a positive number, got {self.lr_gamma!r}")
        if not (isinstance(self.bias_lr_mult, (int, float)) and self.bias_lr_mult > 0):
            raise ValueError(f"bias_lr_mult must be a positive number, got {self.bias_lr_mult!r}")
        for name in ("early_stopping", "eval_every"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, got {self.eval_every!r}")
        if self.early_stopping and not self.val_fraction > 0:
            raise ValueError("early_stopping needs val_fraction > 0: the validation items it "
                             "scores are carved from the training data")
        if self.input_scaling not in INPUT_SCALINGS:
            raise ValueError(
                f"input_scaling must be one of {INPUT_SCALINGS}, got {self.input_scaling!r}"
            )
        trainer.resolve_device(self.device)

    def fit(self, X: Any, Y: Any) -> DeepHashMethod:
        """Train on inputs ``X`` and N x C multi-hot labels ``Y`` (options are checked first)."""
        self.check_train_options()
        return super().fit(X, Y)

    def _fit(self, X: Any, Y: np.ndarray) -> None:
        self.check_train_options()
        result = trainer.fit_model(self, X, Y)
        self.model_ = result.model
        self.history_ = result.history
        self.stopping_ = result.stopping
        self.device_ = result.device
        self.n_classes_ = Y.shape[1]

    def raw_outputs(self, X: Any) -> np.ndarray:
        """The real-valued outputs ``u`` before binarisation (N x n_bits float32 numpy array)."""
        if not getattr(self, "is_fitted_", False):
            from methods.base import NotFittedError

            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, Y) first")
        X = self._check_input(X, fitting=False)
        return trainer.predict_outputs(self, self.model_, X, self.device_)

    def _encode(self, X: Any) -> np.ndarray:
        u = trainer.predict_outputs(self, self.model_, X, self.device_)
        return self.codes_from_outputs(torch.from_numpy(u)).numpy().astype(bool)

    def convergence_report(self, codes: np.ndarray | None = None) -> dict[str, Any]:
        """Did training converge? ``{"converged": bool, "reason": str}``.

        Not converged when: the history holds a non-finite loss; the last epoch's mean loss is not
        at least 1% below the first epoch's (with >= 2 epochs, ``trainer.loss_decreased``); or,
        given ``codes`` (N x n_bits), every item has the same code (collapse). With ``codes`` the report also gives ``constant_bits`` (bits equal
        over all items: not by itself a failure, few classes need few bits) and ``distinct_codes``.
        """
        history = getattr(self, "history_", None)
        if not history:
            return {"converged": False, "reason": "not trained (no history)"}
        losses = [h["loss"] for h in history]
        if not all(np.isfinite(losses)):
            return {"converged": False, "reason": "non-finite loss in the history"}
        decreased = trainer.loss_decreased(history)
        if decreased is False:
            return {
                "converged": False,
                "reason": "loss did not decrease by "
                f"{trainer.MIN_RELATIVE_DECREASE:.0%}: epoch 1 {losses[0]:.6g}, "
                f"epoch {len(losses)} {losses[-1]:.6g}",
            }
        extra: dict[str, Any] = {}
        if codes is not None:
            codes = np.asarray(codes)
            if codes.ndim != 2 or codes.shape[1] != self.n_bits:
                raise ValueError(f"codes must be N x {self.n_bits}, got shape {codes.shape}")
            constant = int(np.sum(np.all(codes == codes[:1], axis=0)))
            extra = {"constant_bits": constant, "distinct_codes": len(np.unique(codes, axis=0))}
            if len(codes) > 1 and constant == self.n_bits:
                return {
                    "converged": False,
                    "reason": "collapsed: every item has the same code",
                    **extra,
                }
        reason = "loss decreased" if decreased else "single epoch: no trend to judge"
        return {"converged": True, "reason": reason, **extra, **self.training_report()}

    def training_report(self) -> dict[str, Any]:
        """How training ended: epochs run, the loss's relative change over the last 10% of the
        epochs, early stopping's chosen epoch, and ``still_improving`` (the loss still moved by
        more than ``trainer.MAX_FINAL_RELATIVE_CHANGE`` at the end of a run that was not
        stopped by early stopping: the tables mark it "not converged")."""
        history = getattr(self, "history_", None) or []
        change = trainer.final_relative_change(history)
        stopping = getattr(self, "stopping_", None)
        stopped_early = bool(stopping and stopping.get("reason", "").startswith("validation"))
        still = (change is not None and change > trainer.MAX_FINAL_RELATIVE_CHANGE
                 and not stopped_early)
        return {"epochs_run": len(history), "loss_rel_change_last_10pct": change,
                "early_stopping": stopping, "still_improving": bool(still)}
