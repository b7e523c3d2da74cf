"""Backbones of the deep methods, and the input preprocessing that goes with each.

* Image backbones (``input kind "images"``): torchvision ``alexnet`` (the paper's; fc7, 4096-d),
  ``vgg16`` (fc7, 4096-d), ``resnet50`` / ``resnet101`` (global pooled, 2048-d), with ImageNet
  weights from a local torchvision state-dict file (``weights_path``) or torchvision's cache
  (``torch.hub.get_dir()/checkpoints/<torchvision's file name>``); and ``small_cnn`` for 8x8 to
  32x32 images (always trained from scratch: no pretrained weights exist for it).
* Feature backbones (``input kind "features"``, frozen-feature mode): ``linear`` (identity: the hash
  head sits directly on cached features such as fc7) and ``mlp`` (one hidden ReLU layer, e.g. on
  MIRFlickr tag vectors).

Weights are never downloaded and a torchvision backbone never silently trains from random
initialisation: without a weights file the error names every path that was looked at; random
initialisation needs ``from_scratch=True``.

Preprocessing is done on uint8 tensor batches (``preprocess_batch``) so that random augmentation is
drawn from the trainer's seeded generator: torchvision backbones resize to 256 x 256 (done per item
when images are loaded), take a random 224 crop + horizontal flip for training and the centre 224
crop for encoding, then ImageNet mean/std normalisation; ``small_cnn`` scales to [-1, 1] per channel
(+ horizontal flip for training).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BACKBONES",
    "FEATURE_BACKBONES",
    "IMAGE_BACKBONES",
    "TORCHVISION_WEIGHT_FILES",
    "SmallCNN",
    "build_backbone",
    "candidate_weight_paths",
    "is_feature_backbone",
    "preprocess_batch",
    "to_uint8_chw",
]

TORCHVISION_BACKBONES = ("alexnet", "vgg16", "resnet50", "resnet101")
IMAGE_BACKBONES = (*TORCHVISION_BACKBONES, "small_cnn")
FEATURE_BACKBONES = ("linear", "mlp")
BACKBONES = IMAGE_BACKBONES + FEATURE_BACKBONES

#: torchvision's file names of the ImageNet weights (first = preferred: the V1 weights of the
#: paper's era; ResNets also accept torchvision's later V2 files).
TORCHVISION_WEIGHT_FILES: dict[str, tuple[str, ...]] = {
    "alexnet": ("alexnet-owt-7be5be79.pth",),
    "vgg16": ("vgg16-397923af.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
    "resnet101": ("resnet101-63fe2227.pth", "resnet101-cd907fc2.pth"),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE = 256
CROP = 224


def is_feature_backbone(name: str) -> bool:
    """True for backbones that consume feature vectors (``linear``, ``mlp``)."""
    return name in FEATURE_BACKBONES


def check_backbone_name(name: Any) -> str:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return name


# ---------------------------------------------------------------------- torchvision trunks
class _TorchvisionTrunk(nn.Module):
    """A torchvision classifier with its last layer removed: image batch -> penultimate features."""

    def __init__(self, name: str, model: nn.Module) -> None:
        super().__init__()
        self.name = name
        if name in ("alexnet", "vgg16"):
            # conv layers, pooling, then fc6 and fc7 with their ReLU and dropout (fc8 dropped)
            self.features = model.features
            self.avgpool = model.avgpool
            self.fc = nn.Sequential(*list(model.classifier.children())[:-1])
            self.out_features = 4096
        else:
            model.fc = nn.Identity()
            self.body = model
            self.out_features = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name in ("alexnet", "vgg16"):
            x = self.avgpool(self.features(x))
            return self.fc(torch.flatten(x, 1))
        return self.body(x)


def candidate_weight_paths(name: str, weights_path: str | os.PathLike | None = None) -> list[Path]:
    """Where ImageNet weights of ``name`` are looked for, in order."""
    if weights_path is not None:
        return [Path(weights_path)]
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return [cache / fname for fname in TORCHVISION_WEIGHT_FILES[name]]


def _torchvision_model(name: str) -> nn.Module:
    import torchvision.models as tvm

    return getattr(tvm, name)(weights=None)


def _load_torchvision(
    name: str, weights_path: str | os.PathLike | None, from_scratch: bool
) -> nn.Module:
    model = _torchvision_model(name)
    if from_scratch:
        return model
    paths = candidate_weight_paths(name, weights_path)
    found = next((p for p in paths if p.is_file()), None)
    if found is None:
        looked = ", ".join(str(p) for p in paths)
        raise FileNotFoundError(
            f"no ImageNet weights for backbone {name!r}: looked at {looked}. Put torchvision's "
            f"state dict there (file name {TORCHVISION_WEIGHT_FILES[name][0]}), pass "
            "weights_path=..., or pass from_scratch=True to train from random initialisation"
        )
    state = torch.load(found, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{found} is not a torchvision {name} state dict (keys or shapes differ): {exc}"
        ) from exc
    return model


# ---------------------------------------------------------------------- small CNN and MLP
class SmallCNN(nn.Module):
    """Three 3x3 conv blocks (32/64/128 channels, BatchNorm, ReLU, two max-pools), global average
    pooling and a 512-d ReLU layer; works on 8x8 to 32x32 inputs with any number of channels."""

    def __init__(self, in_channels: int, out_features: int = 512) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Sequential(nn.Linear(128, out_features), nn.ReLU(inplace=True))
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x), 1))


#: How feature inputs are scaled before a feature backbone (``input_scaling`` option).
INPUT_SCALINGS = ("none", "standardize")


class FeatureScaling(nn.Module):
    """``(x - mean) / (std + 0.01)`` with the training set's per-dimension statistics.

    The statistics are buffers, so they travel with checkpoints and ``encode`` applies exactly the
    training transform. Why: sparse 0/1 inputs (MIRFlickr's tag vectors) give a freshly
    initialised MLP outputs so small that pair-wise losses start at their zero-output saddle
    (HashNet's loss sits at log 2, DSH/DHN codes collapse); z-scoring is the feature-input
    counterpart of the ImageNet mean/std normalisation of images.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))

    def set_from(self, X: np.ndarray) -> None:
        """Set mean and scale from the training features ``X`` (N x D)."""
        X = np.asarray(X, dtype=np.float64)
        self.mean.copy_(torch.as_tensor(X.mean(axis=0), dtype=torch.float32))
        self.scale.copy_(torch.as_tensor(X.std(axis=0) + 0.01, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class _Identity(nn.Module):
    def __init__(self, n_features: int, scaling: FeatureScaling | None = None) -> None:
        super().__init__()
        self.out_features = n_features
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.scaling is None else self.scaling(x)


class _MLP(nn.Module):
    def __init__(self, n_features: int, hidden: int, scaling: FeatureScaling | None = None) -> None:
        super().__init__()
        self.scaling = scaling
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(inplace=True))
        self.out_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x if self.scaling is None else self.scaling(x))


def build_backbone(
    name: str,
    *,
    n_features: int | None = None,
    in_channels: int = 3,
    weights_path: str | os.PathLike | None = None,
    from_scratch: bool = False,
    mlp_hidden: int = 1024,
    input_scaling: str = "none",
) -> nn.Module:
    """Build a backbone; the returned module has an ``out_features`` attribute.

    ``n_features`` is required for feature backbones; ``in_channels`` sizes ``small_cnn``.
    ``input_scaling="standardize"`` gives a feature backbone a :class:`FeatureScaling` front
    (``backbone.scaling``; the caller sets its statistics from the training features).
    """
    check_backbone_name(name)
    if input_scaling not in INPUT_SCALINGS:
        raise ValueError(f"input_scaling must be one of {INPUT_SCALINGS}, got {input_scaling!r}")
    if name in FEATURE_BACKBONES:
        if not n_features or n_features < 1:
            raise ValueError(f"backbone {name!r} needs the feature dimension, got {n_features!r}")
        scaling = FeatureScaling(n_features) if input_scaling == "standardize" else None
        if name == "linear":
            return _Identity(n_features, scaling)
        if not (isinstance(mlp_hidden, (int, np.integer)) and mlp_hidden >= 1):
            raise ValueError(f"mlp_hidden must be a positive integer, got {mlp_hidden!r}")
        return _MLP(n_features, int(mlp_hidden), scaling)
    if name == "small_cnn":
        return SmallCNN(in_channels)
    return _TorchvisionTrunk(name, _load_torchvision(name, weights_path, from_scratch))


# ---------------------------------------------------------------------- image preprocessing
def to_uint8_chw(image: Any) -> torch.Tensor:
    """One image (PIL image or ``H x W [x C]`` array) as a ``C x H x W`` uint8 tensor."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"an image must be H x W [x C], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).contiguous()


def resize_uint8(batch: torch.Tensor, size: int = RESIZE) -> torch.Tensor:
    """Resize a uint8 ``B x C x H x W`` batch to ``size x size`` (bilinear, antialiased)."""
    if batch.shape[-2:] == (size, size):
        return batch
    out = F.interpolate(
        batch.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


def preprocess_batch(
    batch: torch.Tensor,
    backbone: str,
    *,
    train: bool,
    generator: torch.Generator | None = None,
    augment: bool = True,
) -> torch.Tensor:
    """uint8 ``B x C x H x W`` images -> normalised float batch for ``backbone``.

    Random crops/flips (training only, ``augment=True``) are drawn from ``generator`` so that a
    seeded run is reproducible and resumable.
    """
    b = batch.shape[0]
    if backbone in TORCHVISION_BACKBONES:
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        elif batch.shape[1] != 3:
            raise ValueError(
                f"{backbone} needs 1- or 3-channel images, got {batch.shape[1]} channels"
            )
        batch = resize_uint8(batch, RESIZE)
        if train and augment:
            offs = torch.randint(0, RESIZE - CROP + 1, (b, 2), generator=generator).tolist()
            batch = torch.stack(
                [img[:, i : i + CROP, j : j + CROP] for img, (i, j) in zip(batch, offs)]
            )
        else:
            s = (RESIZE - CROP) // 2
            batch = batch[:, :, s : s + CROP, s : s + CROP]
        x = batch.float().div_(255.0)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    else:
        x = batch.float().mul_(2.0 / 255.0).sub_(1.0)
    if train and augment:
        flip = torch.rand(b, generator=generator) < 0.5
        if bool(flip.any()):
            x = x.clone()
            x[flip.to(x.device)] = x[flip.to(x.device)].flip(-1)
    return x


def images_to_tensor(X: np.ndarray) -> torch.Tensor:
    """An ``N x H x W [x C]`` array as an ``N x C x H x W`` uint8 tensor."""
    arr = np.asarray(X)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()


def stack_items(items: Sequence[Any], backbone: str) -> torch.Tensor:
    """Load image-set items into one uint8 batch (resized to 256 first for torchvision nets)."""
    tensors = [to_uint8_chw(it) for it in items]
    if backbone in TORCHVISION_BACKBONES:
        # grey -> RGB, RGBA -> RGB, then the 256 x 256 resize (per item: sizes may differ)
        tensors = [t.expand(3, -1, -1) if t.shape[0] == 1 else t[:3] for t in tensors]
        tensors = [resize_uint8(t.unsqueeze(0), RESIZE)[0] for t in tensors]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch differ in shape: {sorted(shapes)}")
    return torch.stack(tensors)
