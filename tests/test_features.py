"""Feature extraction cache: computed once, reused, a corrupt or partial file rebuilt (never read),
missing weights a clear error."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from data_protocols import DEFAULT_DATA_ROOT, ImageSet
from data_protocols.features import (
    BACKBONES,
    MOBILENET_TFLITE_FILE,
    Backbone,
    WeightsNotFoundError,
    extract_features,
    register_backbone,
)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return ImageSet(array=rng.integers(0, 256, size=(7, 4, 4, 3), dtype=np.uint8))


@pytest.fixture
def fake_backbone():
    calls = []

    def make(_w):
        def fn(ims):
            calls.append(len(ims))
            return np.stack([np.asarray(im, dtype=np.float32).mean((0, 1)) for im in ims])
        return fn

    register_backbone(Backbone(name="fake_mean", description="channel means", transform="none",
                               make=make, find_weights=lambda w: None, batch_size=3))
    yield calls
    BACKBONES.pop("fake_mean")


def test_cache_hit_and_rebuild_after_corruption(tmp_path, images, fake_backbone):
    f1 = extract_features(images, "fake_mean", tmp_path, "toy", progress=False)
    assert f1.shape == (7, 3) and f1.dtype == np.float32
    assert fake_backbone == [3, 3, 1]  # batches of 3
    expected = images.array.astype(np.float32).mean((1, 2))
    assert np.allclose(f1, expected)
    f2 = extract_features(images, "fake_mean", tmp_path, "toy", progress=False)
    assert fake_backbone == [3, 3, 1] and np.array_equal(f1, f2)  # read from the cache
    (npy,) = tmp_path.glob("toy__fake_mean__*.npy")
    side = json.loads((tmp_path / (npy.name + ".json")).read_text())
    assert side["dataset"] == "toy" and side["n_images"] == 7 and side["shape"] == [7, 3]
    # corrupt one byte in the data: same size, wrong checksum -> rebuilt, not read
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0xFF
    npy.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="SHA-256"):
        f3 = extract_features(images, "fake_mean", tmp_path, "toy", progress=False)
    assert np.array_equal(f3, f1) and len(fake_backbone) == 6
    # a partial (truncated) file -> rebuilt
    npy.write_bytes(npy.read_bytes()[:50])
    with pytest.warns(UserWarning, match="partial"):
        f4 = extract_features(images, "fake_mean", tmp_path, "toy", progress=False)
    assert np.array_equal(f4, f1) and len(fake_backbone) == 9
    # a missing sidecar -> rebuilt
    (tmp_path / (npy.name + ".json")).unlink()
    with pytest.warns(UserWarning, match="no sidecar"):
        extract_features(images, "fake_mean", tmp_path, "toy", progress=False)
    assert len(fake_backbone) == 12
    # another image collection gets another file
    extract_features(images.subset([0, 1]), "fake_mean", tmp_path, "toy", progress=False)
    assert len(list(tmp_path.glob("toy__fake_mean__*.npy"))) == 2


def test_raw_backbone_is_pixels(tmp_path, images):
    f = extract_features(images, "raw", tmp_path, "toy", progress=False)
    assert np.allclose(f, images.array.reshape(7, -1) / 255.0)


def test_unknown_backbone_and_missing_weights(tmp_path, images, monkeypatch):
    with pytest.raises(ValueError, match="unknown backbone 'nope'.*raw"):
        extract_features(images, "nope", tmp_path, "toy")
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("HASHBENCH_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsNotFoundError,
                       match=r"alexnet.*hub/checkpoints/alexnet-owt-7be5be79.pth.*raw"):
        extract_features(images, "alexnet", tmp_path, "toy")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        extract_features(images, "resnet50", tmp_path, "toy", weights=tmp_path / "x.pth")


def test_torchvision_backbone_from_local_state_dict(tmp_path, images):
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    torch.save(model.state_dict(), tmp_path / "r50.pth")
    f = extract_features(images.subset([0, 1]), "resnet50", tmp_path, "toy",
                         weights=tmp_path / "r50.pth", progress=False)
    assert f.shape == (2, 2048) and np.isfinite(f).all()


@pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None,
                    reason="optional package ai-edge-litert not installed")
def test_mobilenet_tflite_embedder(tmp_path, images):
    w = DEFAULT_DATA_ROOT / "weights" / MOBILENET_TFLITE_FILE
    if not w.exists():
        pytest.skip(f"TFLite embedder not found at {w}")
    f = extract_features(images.subset([0, 1, 2]), "mobilenet_tflite", tmp_path, "toy",
                         progress=False)
    assert f.shape == (3, 1024) and (f >= 0).all() and f.std() > 0
