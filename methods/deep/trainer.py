"""The one training loop of every deep method.

A deep method supplies its head and its loss terms (the contract in :mod:`methods.deep.contract`,
implemented by :class:`methods.deep.base.DeepHashMethod`); this module does everything else, once:
batching and preprocessing of the inputs, the backbone, the SGD
optimiser (paper settings: momentum 0.9, weight decay 5e-4, fixed learning rate 1e-3; optional
``hash_lr_mult`` for the new layers), the fixed-length schedule, seeding, per-epoch checkpoints with
atomic writes, resumption of an interrupted run to the identical result, the NaN/inf guard, the
progress bar and the per-epoch loss history. Alternating methods (DSDH, HBMP) get their per-item
state prepared before the first epoch and a per-epoch step with the outputs of all training items
(the hooks of :mod:`methods.deep.contract`); that state lives in the head's buffers, so the
checkpoint carries it.

Reproducibility: all randomness of a run (initialisation, shuffling, augmentation, dropout) comes
from ``torch.manual_seed(seed)`` inside :func:`torch.random.fork_rng` (the caller's global RNG state
is left untouched) and from one ``torch.Generator`` for shuffling and augmentation; both states go
into every checkpoint, so a resumed run continues exactly where the interrupted one stopped (on CPU,
bit for bit). The final epoch is what is reported; an optional validation split carved from the
training data (``val_fraction``) is only monitored, never used to select a checkpoint.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from methods.deep.backbones import (
    build_backbone,
    images_to_tensor,
    is_feature_backbone,
    preprocess_batch,
    stack_items,
)
from methods.deep.contract import TrainableMethod, TrainStep

__all__ = [
    "CHECKPOINT_NAME",
    "InputData",
    "TrainedModel",
    "TrainingDivergedError",
    "fit_model",
    "predict_outputs",
    "resolve_device",
]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
#: parameters that do not change what is learned (excluded from the resume fingerprint); ``epochs``
#: is excluded so that a finished run can be extended (the schedule is a fixed learning rate).
RUN_ONLY_PARAMS = frozenset(
    {"progress", "checkpoint_dir", "resume", "num_workers", "device", "epochs"}
)


class TrainingDivergedError(FloatingPointError):
    """A loss term became NaN or infinite; names the epoch, the batch and the term."""

    def __init__(self, epoch: int, batch: int, term: str, value: float) -> None:
        self.epoch, self.batch, self.term, self.value = epoch, batch, term, value
        super().__init__(
            f"training diverged: loss term {term!r} = {value} at epoch {epoch} (1-based), "
            f"batch {batch} (0-based); try a smaller learning rate"
        )


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


# ---------------------------------------------------------------------- inputs
class _ItemDataset(torch.utils.data.Dataset):
    """Index -> item of an image-set-like object, for a DataLoader with parallel workers."""

    def __init__(self, images: Any) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        item = self.images[int(i)]
        return np.asarray(item) if not isinstance(item, np.ndarray) else item


class InputData:
    """Batched access to a feature matrix, an image array or an image-set-like object.

    ``batches(index_lists)`` yields CPU tensors: float32 features, or uint8 ``B x C x H x W`` images
    (resized to 256 x 256 for torchvision backbones); preprocessing happens on the device.
    """

    def __init__(self, X: Any, backbone: str, num_workers: int = 0) -> None:
        self.backbone = backbone
        self.num_workers = num_workers
        self.X = X
        self.tensor: torch.Tensor | None = None
        if is_feature_backbone(backbone):
            self.kind = "features"
            self.tensor = torch.as_tensor(np.asarray(X, dtype=np.float32))
        elif isinstance(X, np.ndarray):
            self.kind = "image_array"
            self.tensor = images_to_tensor(X)
        else:
            self.kind = "image_set"
        self.n = len(X)

    def describe(self) -> dict[str, Any]:
        """Shape facts used to size the backbone."""
        if self.kind == "features":
            return {"n_features": int(self.tensor.shape[1])}
        if self.tensor is not None:
            return {"in_channels": int(self.tensor.shape[1])}
        first = stack_items([self.X[0]], self.backbone)
        return {"in_channels": int(first.shape[1])}

    def batches(self, index_lists: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
        if self.tensor is not None:
            for idx in index_lists:
                # index_select: a contiguous row gather, faster than advanced indexing on CPU
                yield self.tensor.index_select(0, torch.as_tensor(idx, dtype=torch.long))
            return
        backbone = self.backbone
        loader = torch.utils.data.DataLoader(
            _ItemDataset(self.X),
            batch_sampler=[list(map(int, idx)) for idx in index_lists],
            num_workers=self.num_workers,
            collate_fn=lambda items: stack_items(items, backbone),
        )
        yield from loader


def _split_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches of ``order``; a trailing batch of one item is dropped (BatchNorm)."""
    out = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(out) > 1 and len(out[-1]) < 2:
        out.pop()
    return out


# ---------------------------------------------------------------------- model
class TrainedModel(nn.Module):
    """Backbone followed by the method's head: inputs -> raw outputs ``u`` (B x n_bits)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@dataclass
class FitResult:
    model: TrainedModel
    history: list[dict[str, float]] = field(default_factory=list)
    device: torch.device | None = None
    resumed_from_epoch: int = 0
    #: early stopping: the epoch kept, its validation mAP, the epoch training stopped at, why
    stopping: dict[str, Any] | None = None


def _fingerprint(method: TrainableMethod, data: InputData, Y: np.ndarray) -> dict[str, Any]:
    params = {k: repr(v) for k, v in method.get_params().items() if k not in RUN_ONLY_PARAMS}
    digest = hashlib.sha1(np.ascontiguousarray(Y).tobytes())
    if data.tensor is not None and data.tensor.numel() * data.tensor.element_size() < 2**31:
        digest.update(data.tensor.numpy().tobytes())
    return {
        "method": type(method).__name__,
        "params": params,
        "n_items": data.n,
        "data_sha1": digest.hexdigest(),
    }


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _preprocess(
    method: TrainableMethod,
    batch: torch.Tensor,
    device: torch.device,
    *,
    train: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    if is_feature_backbone(method.backbone):
        return batch.to(device, non_blocking=True)
    return preprocess_batch(
        batch, method.backbone, train=train, generator=generator, augment=method.augment
    ).to(device, non_blocking=True)


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint's state, or None after discarding (with a warning naming it) a damaged one.

    An empty, truncated or foreign file (an interrupted copy, a full disk) must not make its cell
    fail on every rerun: it is deleted and training restarts from epoch 0.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a checkpoint of this trainer (unknown format)")
    except Exception as exc:  # noqa: BLE001 — EOFError, UnpicklingError, RuntimeError, ...
        warnings.warn(f"discarding the damaged checkpoint {path} ({type(exc).__name__}: {exc}); "
                      "training restarts from epoch 0", stacklevel=3)
        path.unlink(missing_ok=True)
        return None
    return state


def fit_model(method: TrainableMethod, X: Any, Y: np.ndarray) -> FitResult:
    """Train ``method``'s backbone + head on ``(X, Y)``; see the module docstring."""
    device = resolve_device(method.device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return _fit(method, X, Y, device)


def _fit(method: TrainableMethod, X: Any, Y: np.ndarray, device: torch.device) -> FitResult:

    seed = int(method.seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = InputData(X, method.backbone, method.num_workers)
    n, n_classes = Y.shape

    # seeded validation split carved from the training data (monitoring only)
    all_idx = np.arange(n)
    val_idx = np.empty(0, dtype=np.int64)
    if method.val_fraction > 0:
        n_val = round(method.val_fraction * n)
        if n_val < 1 or n_val >= n - 1:
            raise ValueError(
                f"val_fraction={method.val_fraction} leaves no training or no validation items"
            )
        perm = np.random.default_rng(seed).permutation(n)
        val_idx, all_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if len(all_idx) < 2:
        raise ValueError(f"need at least 2 training items, got {len(all_idx)}")

    backbone = build_backbone(
        method.backbone,
        weights_path=method.weights_path,
        from_scratch=method.from_scratch,
        mlp_hidden=method.mlp_hidden,
        input_scaling=method.input_scaling if is_feature_backbone(method.backbone) else "none",
        **data.describe(),
    )
    if getattr(backbone, "scaling", None) is not None:  # statistics of the training items only
        backbone.scaling.set_from(np.asarray(X)[all_idx])
    head = method.build_head(backbone.out_features, n_classes)
    if not isinstance(head, nn.Module):
        raise TypeError(
            f"{type(method).__name__}.build_head must return an nn.Module, got {type(head)}"
        )
    labels_all = torch.as_tensor(Y, dtype=torch.float32)
    # per-item state (buffers of the head) exists before a checkpoint is restored into it
    method.prepare_state(head, labels_all, torch.as_tensor(all_idx, dtype=torch.long))
    model = TrainedModel(backbone, head).to(device)
    optimizer = torch.optim.SGD(
        _with_bias_rule(method, method.param_groups(backbone, head), backbone, head),
        lr=method.lr,
        momentum=method.momentum,
        weight_decay=method.weight_decay,
    )
    for group in optimizer.param_groups:  # the schedule scales each group's own rate
        group.setdefault("base_lr", group["lr"])
    use_amp = bool(method.amp) and device.type == "cuda"
    if method.amp and not use_amp:
        warnings.warn("amp=True has no effect on CPU; training in float32", stacklevel=3)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    iters_per_epoch = len(_split_batches(all_idx, method.batch_size))
    history: list[dict[str, float]] = []
    start_epoch = 0
    early = EarlyStopping(int(method.early_stopping))

    # ------------------------------------------------------------ resume
    ckpt_path = Path(method.checkpoint_dir) / CHECKPOINT_NAME if method.checkpoint_dir else None
    fingerprint = _fingerprint(method, data, Y) if ckpt_path else None
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        if method.resume and ckpt_path.is_file() and (state := read_checkpoint(ckpt_path)):
            if state["fingerprint"] != fingerprint:
                raise ValueError(
                    f"cannot resume from {ckpt_path}: it was written by a run with other "
                    "hyper-parameters or other training data; delete it or set resume=False"
                )
            if state["epoch"] > method.epochs:
                raise ValueError(
                    f"{ckpt_path} holds {state['epoch']} epochs, more than epochs={method.epochs}"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            generator.set_state(state["generator"])
            history = list(state["history"])
            start_epoch = int(state["epoch"])
            early.load_state(state.get("early"))

    # ------------------------------------------------------------ loop
    bar = None
    if method.progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=method.epochs * iters_per_epoch,
            initial=start_epoch * iters_per_epoch,
            desc=f"{type(method).__name__} {method.n_bits} bits",
            unit="batch",
            leave=False,
        )
    try:
        for epoch in range(start_epoch, method.epochs):
            if early.stopped:
                break
            t0, cpu0 = time.perf_counter(), time.process_time()
            model.train()
            order = all_idx[torch.randperm(len(all_idx), generator=generator).numpy()]
            batches = _split_batches(order, method.batch_size)
            term_names: list[str] = []
            term_sums: torch.Tensor | None = None
            n_seen = 0
            for b, (idx, xb) in enumerate(zip(batches, data.batches(batches))):
                rows = torch.as_tensor(idx, dtype=torch.long)
                step = TrainStep(
                    epoch=epoch,
                    iteration=epoch * iters_per_epoch + b,
                    iterations_per_epoch=iters_per_epoch,
                    total_epochs=method.epochs,
                    batch_index=rows.to(device, non_blocking=True),
                )
                factor = lr_factor(method, epoch + b / iters_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                x = _preprocess(method, xb, device, train=True, generator=generator)
                yb = labels_all.index_select(0, rows).to(device, non_blocking=True)
                if use_amp:
                    with torch.autocast(device_type=device.type):
                        u = model(x)
                else:
                    u = model(x)
                terms = method.loss_terms(head, u.float(), yb, step)
                if not terms:
                    raise RuntimeError(f"{type(method).__name__}.loss_terms returned no terms")
                total = sum(terms.values())
                if not bool(torch.isfinite(total)):
                    bad = next(
                        (k for k, v in terms.items() if not bool(torch.isfinite(v))), "total"
                    )
                    value = float((terms.get(bad, total)).detach())
                    raise TrainingDivergedError(epoch + 1, b, bad, value)
                optimizer.zero_grad(set_to_none=True)
                if use_amp:
                    scaler.scale(total).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    total.backward()
                    optimizer.step()
                method.after_optimizer_step(head)
                w = len(idx)
                n_seen += w
                # one weighted vector add per batch (terms, then the total); read once per epoch
                batch_terms = torch.stack([*(v.detach() for v in terms.values()), total.detach()])
                if term_sums is None:
                    term_names, term_sums = [*terms, "loss"], batch_terms * w
                elif len(term_names) != len(terms) + 1 or any(
                    a != b for a, b in zip(term_names, terms)
                ):
                    raise RuntimeError(
                        f"{type(method).__name__}.loss_terms returned terms {list(terms)} after "
                        f"{term_names[:-1]}: every batch must return the same terms"
                    )
                else:
                    term_sums.add_(batch_terms, alpha=w)
                if bar is not None:
                    bar.update(1)
            # the alternating methods' per-epoch step (a no-op for the others)
            outputs = None
            if method.needs_epoch_outputs:
                outputs = _forward_all(method, model, data, all_idx, device)
                model.train()
            method.after_epoch(
                head,
                outputs,
                TrainStep(
                    epoch=epoch,
                    iteration=(epoch + 1) * iters_per_epoch - 1,
                    iterations_per_epoch=iters_per_epoch,
                    total_epochs=method.epochs,
                ),
            )
            record: dict[str, float] = {"epoch": epoch + 1}
            if term_sums is not None:
                record.update(
                    {k: float(v) / n_seen for k, v in zip(term_names, term_sums.tolist())}
                )
            if len(val_idx):
                record.update(
                    _validation_terms(
                        method, model, data, labels_all, val_idx, device, epoch, iters_per_epoch
                    )
                )
            if early.patience and ((epoch + 1) % method.eval_every == 0
                                   or epoch + 1 == method.epochs):
                record["val_map"] = _validation_map(method, model, data, labels_all, val_idx,
                                                    all_idx, device)
                early.update(record["val_map"], epoch + 1, model)
                model.train()
            record["time_s"] = time.perf_counter() - t0
            # CPU seconds of this process (all its threads): what the epoch costs a machine,
            # unlike time_s, which other jobs sharing the cores inflate
            record["cpu_s"] = time.process_time() - cpu0
            history.append(record)
            if bar is not None:
                bar.set_postfix(
                    {k: f"{v:.4g}" for k, v in record.items() if k not in ("epoch", "time_s", "cpu_s")},
                    refresh=False,
                )
            if ckpt_path is not None:
                _atomic_save(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(device)
                        if device.type == "cuda"
                        else None,
                        "generator": generator.get_state(),
                        "history": history,
                        "fingerprint": fingerprint,
                        "early": early.state(),
                    },
                    ckpt_path,
                )
    finally:
        if bar is not None:
            bar.close()
    stopping = early.finish(model, len(history)) if early.patience else None
    model.eval()
    return FitResult(model=model, history=history, device=device, resumed_from_epoch=start_epoch,
                     stopping=stopping)


def lr_factor(method: TrainableMethod, epoch: float) -> float:
    """The schedule's multiplier of every group's base rate at (fractional) ``epoch``."""
    kind = method.lr_schedule
    if kind == "fixed":
        return 1.0
    if kind == "step":  # Caffe "step": gamma ** floor(iter / stepsize)
        return float(method.lr_gamma) ** math.floor(epoch / float(method.lr_step_epochs))
    if kind == "multistep":  # Caffe "multistep" / torch MultiStepLR
        return float(method.lr_gamma) ** sum(epoch >= m for m in method.lr_milestones)
    if kind == "logspace":  # DSDH: np.logspace(log10 lr, log10 lr_end, epochs)[epoch]
        span = max(1, int(method.epochs) - 1)
        return (float(method.lr_end) / float(method.lr)) ** (min(math.floor(epoch), span) / span)
    raise ValueError(f"unknown lr_schedule {kind!r}")


def _with_bias_rule(method: TrainableMethod, groups: list[dict[str, Any]], backbone: nn.Module,
                    head: nn.Module) -> list[dict[str, Any]]:
    """Caffe's bias rule: every bias in its own group at ``bias_lr_mult`` x the group's rate and,
    with ``bias_weight_decay=False``, no weight decay. Unchanged when neither is set."""
    if method.bias_lr_mult == 1.0 and method.bias_weight_decay:
        return groups
    biases = {id(p) for module in (backbone, head) for name, p in module.named_parameters()
              if name == "bias" or name.endswith(".bias")}
    out = []
    for group in groups:
        params = list(group["params"])
        rest = [p for p in params if id(p) not in biases]
        bias = [p for p in params if id(p) in biases]
        lr = group.get("lr", method.lr)
        if rest:
            out.append({**group, "params": rest})
        if bias:
            decay = group.get("weight_decay", method.weight_decay)
            out.append({**group, "params": bias, "lr": lr * method.bias_lr_mult,
                        "weight_decay": decay if method.bias_weight_decay else 0.0})
    return out


class EarlyStopping:
    """Stop when the validation mAP has not improved for ``patience`` epochs; keep the best model.

    Its state (best value, epoch, a CPU copy of the best weights, whether it stopped) goes into
    every checkpoint, so a resumed run stops where the uninterrupted one would.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_map = -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stopped = False

    def update(self, value: float, epoch: int, model: nn.Module) -> None:
        if value > self.best_map:
            self.best_map, self.best_epoch = value, epoch
            self.best_state = {k: v.detach().to("cpu", copy=True)
                               for k, v in model.state_dict().items()}
        elif epoch - self.best_epoch >= self.patience:
            self.stopped = True

    def state(self) -> dict[str, Any]:
        return {"best_map": self.best_map, "best_epoch": self.best_epoch,
                "best_state": self.best_state, "stopped": self.stopped}

    def load_state(self, state: dict[str, Any] | None) -> None:
        if state:
            self.best_map, self.best_epoch = state["best_map"], state["best_epoch"]
            self.best_state, self.stopped = state["best_state"], state["stopped"]

    def finish(self, model: nn.Module, epochs_run: int) -> dict[str, Any]:
        """Restore the best weights; say which epoch was kept and why training ended."""
        if self.best_state is not None and self.best_epoch != epochs_run:
            model.load_state_dict(self.best_state)
        return {"patience": self.patience, "best_epoch": self.best_epoch,
                "best_val_map": self.best_map if self.best_state is not None else None,
                "epochs_run": epochs_run,
                "reason": (f"validation mAP did not improve for {self.patience} epochs"
                           if self.stopped else "epoch budget reached")}


@torch.no_grad()
def _validation_map(method: TrainableMethod, model: TrainedModel, data: InputData,
                    labels_all: torch.Tensor, val_idx: np.ndarray, train_idx: np.ndarray,
                    device: torch.device) -> float:
    """mAP@all of the validation items (queries) against the training items (database), with
    the project's evaluation engine; both are parts of the training split."""
    from benchmarks.metrics import map_at_k  # the one evaluation engine (no import circle)

    def codes(index: np.ndarray) -> np.ndarray:
        u = _forward_all(method, model, data, index, device)
        return method.codes_from_outputs(u).cpu().numpy().astype(bool)

    labels = labels_all.numpy().astype(np.uint8)
    value = float(map_at_k(codes(val_idx), codes(train_idx), labels[val_idx], labels[train_idx],
                           k=None, no_hit="drop"))
    return value if math.isfinite(value) else 0.0


@torch.no_grad()
def _validation_terms(
    method: TrainableMethod,
    model: TrainedModel,
    data: InputData,
    labels_all: torch.Tensor,
    val_idx: np.ndarray,
    device: torch.device,
    epoch: int,
    iters_per_epoch: int,
) -> dict[str, float]:

    model.eval()
    step = TrainStep(
        epoch=epoch,
        iteration=(epoch + 1) * iters_per_epoch - 1,
        iterations_per_epoch=iters_per_epoch,
        total_epochs=method.epochs,
    )
    batches = _split_batches(val_idx, max(method.batch_size, 2))
    sums: dict[str, float] = {}
    for idx, xb in zip(batches, data.batches(batches)):
        u = model(_preprocess(method, xb, device, train=False, generator=None)).float()
        rows = torch.as_tensor(idx, dtype=torch.long)
        step.batch_index = rows.to(device)
        terms = method.loss_terms(model.head, u, labels_all[rows].to(device), step)
        terms["loss"] = sum(terms.values())
        for k, v in terms.items():
            sums["val_" + k] = sums.get("val_" + k, 0.0) + float(v) * len(idx)
    model.train()
    n = sum(len(i) for i in batches)
    return {k: v / n for k, v in sums.items()}


@torch.no_grad()
def predict_outputs(
    method: TrainableMethod,
    model: TrainedModel,
    X: Any,
    device: torch.device,
    batch_size: int | None = None,
) -> np.ndarray:
    """Raw outputs ``u`` (N x n_bits float32) in eval mode, test-time preprocessing."""
    data = InputData(X, method.backbone, method.num_workers)
    u = _forward_all(method, model, data, np.arange(data.n), device, batch_size).cpu().numpy()
    if not np.all(np.isfinite(u)):
        raise FloatingPointError("the network produced NaN/inf outputs at encode time")
    return u


@torch.no_grad()
def _forward_all(
    method: TrainableMethod,
    model: TrainedModel,
    data: InputData,
    index: np.ndarray,
    device: torch.device,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Outputs (len(index) x n_bits float32, on ``device``) of the items ``index`` in eval mode
    with test-time preprocessing; leaves the model in eval mode."""
    if batch_size is None:
        batch_size = 4096 if data.kind == "features" else max(int(method.batch_size), 1)
    batches = [index[i : i + batch_size] for i in range(0, len(index), batch_size)]
    model.eval()
    out = [
        model(_preprocess(method, xb, device, train=False, generator=None)).float()
        for xb in data.batches(batches)
    ]
    return torch.cat(out)


MIN_RELATIVE_DECREASE = 0.01
#: a run whose loss still moves by more than this over its last tenth of epochs is marked
#: "not converged" in the tables (its result stands, with the mark)
MAX_FINAL_RELATIVE_CHANGE = 0.01


def final_relative_change(history: Sequence[dict[str, float]], key: str = "loss") -> float | None:
    """``|L_last - L_start| / |L_start|`` over the last 10% of the epochs (at least one epoch
    back): how much the loss still moved at the end. None with fewer than 2 epochs."""
    losses = [h[key] for h in history if key in h]
    if len(losses) < 2:
        return None
    back = max(1, math.ceil(0.1 * len(losses)))
    start, last = losses[-1 - back], losses[-1]
    if not (math.isfinite(start) and math.isfinite(last)):
        return None
    return abs(last - start) / max(abs(start), 1e-12)


def loss_decreased(
    history: Sequence[dict[str, float]], key: str = "loss",
    min_relative: float = MIN_RELATIVE_DECREASE,
) -> bool | None:
    """Whether the last epoch's mean loss is below the first one's by at least ``min_relative``
    of its magnitude (None with < 2 epochs).

    The margin (1% by default) catches runs stuck at a saddle: a contrastive run on MIRFlickr-25K
    went 5.3153 -> 5.3116 in 20 epochs (0.07%) and ranked barely above chance; every run that
    trained fell by 8% or more.
    """
    if len(history) < 2:
        return None
    first, last = history[0][key], history[-1][key]
    if not (math.isfinite(first) and math.isfinite(last)):
        return False
    return last < first - min_relative * abs(first)
