"""Frozen-backbone features for shallow methods and frozen-feature deep runs, computed once and
cached on disk.

The paper feeds its shallow baselines AlexNet fc7 features; offline, the only ImageNet-pretrained
weights are a MobileNet-v1 TFLite embedder (``/work/shared/data/weights``). Backbones:

* ``alexnet`` (fc7, 4096-d), ``vgg16`` (fc7, 4096-d), ``resnet50`` / ``resnet101`` (pool, 2048-d):
  torchvision models with ImageNet weights from a local state-dict file (``weights=``) or
  torchvision's cache (``torch.hub.get_dir()/checkpoints/<torchvision file name>``). Transform:
  resize to 224 x 224, ImageNet mean/std normalisation.
* ``mobilenet_tflite``: the TFLite embedder (224 x 224 x 3 uint8 in, 1024-d out, dequantised)
  through the optional PyPI package ``ai-edge-litert`` (``pip install ai-edge-litert`` or the
  ``tflite`` extra).
* ``raw``: raw pixels scaled to [0, 1] and flattened (recorded as "raw pixels").

No weights found -> :class:`WeightsNotFoundError` listing where it looked and the alternatives;
there is never a silent fallback to another backbone.

Cache: ``<cache_dir>/<dataset_key>__<backbone>__<key hash>.npy`` plus a JSON sidecar holding the
key (dataset, backbone, weights SHA-256, transform, image count) and the file's SHA-256; a
partial or corrupt file is detected and rebuilt, never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data_protocols.core import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DATA_ROOT,
    ImageSet,
    load_cached_array,
    save_cached_array,
)

__all__ = [
    "BACKBONES",
    "DEFAULT_FEATURE_CACHE",
    "MOBILENET_TFLITE_FILE",
    "Backbone",
    "WeightsNotFoundError",
    "extract_features",
    "list_backbones",
    "register_backbone",
]

#: default feature cache folder (git-ignored: ``results/cache/``)
DEFAULT_FEATURE_CACHE = DEFAULT_CACHE_DIR / "features"
MOBILENET_TFLITE_FILE = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"


class WeightsNotFoundError(FileNotFoundError):
    """A backbone's pretrained weights are not on disk; the message lists where it looked."""


@dataclass
class Backbone:
    """A feature extractor: ``make(weights_path)`` returns ``fn(list of PIL images) -> n x D``.

    ``find_weights(weights)`` returns the weights file (or None for weight-free backbones) or
    raises :class:`WeightsNotFoundError`; ``transform`` describes the preprocessing (part of the
    cache key); ``batch_size`` is the default batch.
    """

    name: str
    description: str
    transform: str
    make: Callable[[Path | None], Callable[[list], np.ndarray]]
    find_weights: Callable[[str | os.PathLike | None], Path | None]
    batch_size: int = 64
    #: file names the weights may have, looked for under ``<data root>/weights/`` first
    weight_files: Callable[[], list[str]] | None = None


BACKBONES: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
    """Add (or replace) a backbone in :data:`BACKBONES`."""
    BACKBONES[backbone.name] = backbone
    return backbone


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


# --------------------------------------------------------------------------------------------
# raw pixels
# --------------------------------------------------------------------------------------------


def _raw_make(_weights: Path | None) -> Callable[[list], np.ndarray]:
    def fn(images: list) -> np.ndarray:
        arrs = [np.asarray(im, dtype=np.float32) for im in images]
        shapes = {a.shape for a in arrs}
        if len(shapes) > 1:
            raise ValueError(f"backbone 'raw' needs images of one size, got {sorted(shapes)}; "
                             "resize them first or use a deep backbone (which resizes to 224)")
        return np.stack([a.reshape(-1) / 255.0 for a in arrs])
    return fn


register_backbone(Backbone(
    name="raw", description="raw pixels (RGB, scaled to [0, 1], flattened)",
    transform="rgb/255 flatten", make=_raw_make, find_weights=lambda w: None, batch_size=512))


# --------------------------------------------------------------------------------------------
# torchvision backbones
# --------------------------------------------------------------------------------------------

_TV = {  # name -> (torchvision builder, weights enum name, feature description)
    "alexnet": ("alexnet", "AlexNet_Weights", "fc7 (4096-d, after ReLU)"),
    "vgg16": ("vgg16", "VGG16_Weights", "fc7 (4096-d, after ReLU)"),
    "resnet50": ("resnet50", "ResNet50_Weights", "global average pool (2048-d)"),
    "resnet101": ("resnet101", "ResNet101_Weights", "global average pool (2048-d)"),
}
_TV_TRANSFORM = "RGB resize 224x224 bilinear, ToTensor, normalize ImageNet mean/std"


def _tv_candidates(name: str) -> list[Path]:
    import torch
    import torchvision.models as tvm

    enum = getattr(tvm, _TV[name][1])
    files = [Path(w.url).name for w in enum if "IMAGENET1K" in w.name and "FEATURES" not in w.name]
    ckpt = Path(torch.hub.get_dir()) / "checkpoints"
    dirs = [ckpt]
    if os.environ.get("HASHBENCH_WEIGHTS_DIR"):
        dirs.insert(0, Path(os.environ["HASHBENCH_WEIGHTS_DIR"]))
    dirs.append(DEFAULT_DATA_ROOT / "weights")
    return [d / f for d in dirs for f in files]


def _tv_find(name: str) -> Callable[[str | os.PathLike | None], Path]:
    def find(weights: str | os.PathLike | None) -> Path:
        if weights is not None:
            p = Path(weights).expanduser()
            if not p.is_file():
                raise WeightsNotFoundError(f"{name} weights file {p} does not exist")
            return p
        cands = _tv_candidates(name)
        for c in cands:
            if c.is_file():
                return c
        raise WeightsNotFoundError(
            f"no ImageNet weights for backbone {name!r}. Looked for: "
            + ", ".join(str(c) for c in cands)
            + f". Get them with torchvision (models.{_TV[name][0]}(weights='IMAGENET1K_V1') "
            "downloads into torch's hub cache) or pass weights=<state-dict file>. Alternatives "
            "that work offline: backbone='mobilenet_tflite' (needs `pip install ai-edge-litert`) "
            "or backbone='raw' (raw pixels).")
    return find


def _tv_make(name: str) -> Callable[[Path | None], Callable[[list], np.ndarray]]:
    def make(weights: Path | None) -> Callable[[list], np.ndarray]:
        import torch
        import torchvision.models as tvm

        model = getattr(tvm, _TV[name][0])(weights=None)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        if name in ("alexnet", "vgg16"):
            model.classifier = model.classifier[:-1]  # drop fc8: output = fc7 after ReLU
        else:
            model.fc = torch.nn.Identity()
        model.eval()
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

        def fn(images: list) -> np.ndarray:
            from PIL import Image

            arr = np.stack([np.asarray(im.resize((224, 224), Image.BILINEAR), dtype=np.float32)
                            for im in images])
            x = (torch.from_numpy(arr).permute(0, 3, 1, 2) / 255.0 - mean) / std
            with torch.no_grad():
                return model(x).numpy()
        return fn
    return make


for _n in _TV:
    register_backbone(Backbone(
        name=_n, description=f"torchvision {_n}, ImageNet weights, {_TV[_n][2]}",
        transform=_TV_TRANSFORM, make=_tv_make(_n), find_weights=_tv_find(_n), batch_size=32,
        weight_files=lambda n=_n: list(dict.fromkeys(c.name for c in _tv_candidates(n)))))


# --------------------------------------------------------------------------------------------
# MobileNet-v1 TFLite embedder
# --------------------------------------------------------------------------------------------


def _tflite_find(weights: str | os.PathLike | None) -> Path:
    cands = [Path(weights).expanduser()] if weights is not None else []
    if os.environ.get("HASHBENCH_WEIGHTS_DIR"):
        cands.append(Path(os.environ["HASHBENCH_WEIGHTS_DIR"]) / MOBILENET_TFLITE_FILE)
    cands.append(DEFAULT_DATA_ROOT / "weights" / MOBILENET_TFLITE_FILE)
    for c in cands:
        if c.is_file():
            return c
    raise WeightsNotFoundError(
        "MobileNet TFLite embedder not found. Looked for: " + ", ".join(map(str, cands))
        + ". It is the google-coral test_data file " + MOBILENET_TFLITE_FILE
        + "; alternatives: backbone='raw' or a torchvision backbone with local weights.")


def _tflite_make(weights: Path | None) -> Callable[[list], np.ndarray]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ImportError(
            "backbone 'mobilenet_tflite' needs the optional package ai-edge-litert: "
            "`pip install ai-edge-litert` (or `pip install -e .[tflite]`); alternatives: "
            "backbone='raw' or a torchvision backbone with local weights") from e
    threads = int(os.environ.get("HASHBENCH_TFLITE_THREADS", os.cpu_count() or 1))
    interp = Interpreter(model_path=str(weights), num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    scale, zero = out["quantization"]

    def fn(images: list) -> np.ndarray:
        from PIL import Image

        res = []
        for im in images:
            a = np.asarray(im.resize((224, 224), Image.BILINEAR), dtype=np.uint8)[None]
            interp.set_tensor(inp["index"], a)
            interp.invoke()
            q = interp.get_tensor(out["index"]).reshape(-1).astype(np.float32)
            res.append((q - zero) * scale if scale else q)
        return np.stack(res)
    return fn


register_backbone(Backbone(
    name="mobilenet_tflite",
    description="MobileNet-v1 1.0 224 quantised ImageNet embedder (TFLite, 1024-d)",
    transform="RGB resize 224x224 bilinear, uint8; output dequantised",
    make=_tflite_make, find_weights=_tflite_find, batch_size=64,
    weight_files=lambda: [MOBILENET_TFLITE_FILE]))


# --------------------------------------------------------------------------------------------
# extraction with cache
# --------------------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for b in iter(lambda: fh.read(1 << 22), b""):
            h.update(b)
    return h.hexdigest()


def extract_features(
    images: ImageSet,
    backbone: str,
    cache_dir: str | os.PathLike | None = None,
    dataset_key: str = "dataset",
    *,
    weights: str | os.PathLike | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    rebuild: bool = False,
    data_root: str | os.PathLike | None = None,
) -> np.ndarray:
    """Run ``backbone`` over every image once and cache the ``N x D`` float32 result.

    The cache key is (dataset_key, backbone, weights file SHA-256, transform, number of images);
    ``dataset_key`` must identify the image collection and its order (the protocols use e.g.
    ``cifar10-jpg``). A cache file that is absent, partial, corrupt or built under another key
    is rebuilt. Returns the features in the order of ``images``. Without ``weights``, the
    weights are looked for under ``<data_root>/weights/`` first (the ``--data-root`` a user gave),
    then in the backbone's usual places.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; available: {list_backbones()}")
    bb = BACKBONES[backbone]
    looked: list[Path] = []
    if weights is None and data_root is not None and bb.weight_files is not None:
        looked = [Path(data_root).expanduser() / "weights" / f for f in bb.weight_files()]
        weights = next((c for c in looked if c.is_file()), None)
    try:
        wpath = bb.find_weights(weights)
    except WeightsNotFoundError as exc:
        if not looked:
            raise
        raise WeightsNotFoundError(f"{exc} (also looked in the data root: "
                                   f"{', '.join(map(str, looked))})") from None
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_FEATURE_CACHE
    key = {"dataset": dataset_key, "backbone": backbone, "transform": bb.transform,
           "weights_sha256": _file_sha256(wpath) if wpath is not None else None,
           "weights_file": wpath.name if wpath is not None else None, "n_images": len(images)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in dataset_key)
    path = cache / f"{safe}__{backbone}__{digest}.npy"
    if not rebuild:
        feats = load_cached_array(path, key)
        if feats is not None:
            return feats
    fn = bb.make(wpath)
    bs = batch_size or bb.batch_size
    n = len(images)
    chunks = []
    t0 = time.time()
    bar = tqdm(total=n, desc=f"{backbone} features for {dataset_key}", disable=not progress,
               unit="img", mininterval=2.0)
    for s in range(0, n, bs):
        batch = [images[i] for i in range(s, min(n, s + bs))]
        chunks.append(np.asarray(fn(batch), dtype=np.float32).reshape(len(batch), -1))
        bar.update(len(batch))
    bar.close()
    feats = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
    if not np.isfinite(feats).all():
        raise FloatingPointError(f"backbone {backbone} produced non-finite features")
    meta = dict(key, seconds=round(time.time() - t0, 2))
    save_cached_array(path, feats, meta)
    return feats
