"""The shared deep training loop: resume to the identical result, NaN guard, determinism, image
inputs and preprocessing, backbones and their weight loading, history and convergence report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from methods import get_method
from methods.deep import backbones
from methods.deep.dpah import DPAH
from methods.deep.trainer import CHECKPOINT_NAME, TrainingDivergedError

FEATS = {
    "backbone": "mlp",
    "mlp_hidden": 32,
    "batch_size": 32,
    "progress": False,
    "n_bits": 8,
    "lr": 0.05,
}
CNN = {"backbone": "small_cnn", "batch_size": 16, "progress": False, "n_bits": 8, "lr": 0.05}


def toy_features(n=96, c=4, seed=0, multi=True):
    rng = np.random.default_rng(seed)
    y = np.eye(c, dtype=np.uint8)[rng.integers(0, c, n)]
    if multi:
        y = np.maximum(y, (rng.random((n, c)) < 0.3).astype(np.uint8))
    x = (y @ rng.normal(size=(c, 20)) * 3 + rng.normal(size=(n, 20))).astype(np.float32)
    return x, y


def toy_images(n=48, c=3, size=8, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, c, n)
    proto = rng.integers(0, 256, size=(c, size, size, channels))
    x = np.clip(proto[cls] + rng.normal(scale=25, size=(n, size, size, channels)), 0, 255)
    x = x.astype(np.uint8)
    return (x[..., 0] if channels == 1 else x), np.eye(c, dtype=np.uint8)[cls]


class Interrupt(Exception):
    pass


def interrupt_at(method, epoch: int):
    """Make ``method`` raise when training reaches 0-based ``epoch`` (a simulated crash)."""
    original = type(method).loss_terms

    def loss_terms(head, u, labels, step):
        if step.epoch == epoch:
            raise Interrupt
        return original(method, head, u, labels, step)

    method.loss_terms = loss_terms  # instance attribute: parameters and fingerprint unchanged


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest (and steadiest on a shared machine) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------- checkpoints and resume
@pytest.mark.parametrize("kind", ["features", "images"])
def test_resume_after_interrupt_gives_identical_result(tmp_path, kind):
    if kind == "features":
        x, y = toy_features()
        opts = FEATS
    else:
        x, y = toy_images()
        opts = CNN
    full = DPAH(epochs=4, **opts).fit(x, y)

    crashed = DPAH(epochs=4, checkpoint_dir=tmp_path, **opts)
    interrupt_at(crashed, 2)
    with pytest.raises(Interrupt):
        crashed.fit(x, y)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert state["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temp files left

    resumed = DPAH(epochs=4, checkpoint_dir=tmp_path, resume=True, **opts).fit(x, y)
    np.testing.assert_array_equal(resumed.raw_outputs(x), full.raw_outputs(x))
    np.testing.assert_array_equal(resumed.encode(x), full.encode(x))
    strip = [{k: v for k, v in h.items() if k not in ("time_s", "cpu_s")} for h in resumed.history_]
    assert strip == [{k: v for k, v in h.items() if k not in ("time_s", "cpu_s")}
                     for h in full.history_]


def test_resume_extends_a_finished_run_and_rejects_other_settings(tmp_path):
    x, y = toy_features()
    full = DPAH(epochs=3, **FEATS).fit(x, y)
    DPAH(epochs=2, checkpoint_dir=tmp_path, **FEATS).fit(x, y)
    longer = DPAH(epochs=3, checkpoint_dir=tmp_path, resume=True, **FEATS).fit(x, y)
    np.testing.assert_array_equal(longer.raw_outputs(x), full.raw_outputs(x))
    with pytest.raises(ValueError, match="cannot resume"):
        DPAH(epochs=3, checkpoint_dir=tmp_path, resume=True, **{**FEATS, "lr": 0.01}).fit(x, y)
    with pytest.raises(ValueError, match="cannot resume"):
        DPAH(epochs=3, checkpoint_dir=tmp_path, resume=True, **FEATS).fit(x[:90], y[:90])


# ---------------------------------------------------------------------- NaN guard
def test_nan_loss_stops_with_epoch_batch_and_term(tmp_path):
    x, y = toy_features()
    m = DPAH(epochs=3, **FEATS)
    original = DPAH.loss_terms

    def loss_terms(head, u, labels, step):
        terms = original(m, head, u, labels, step)
        if step.epoch == 1 and step.iteration == step.iterations_per_epoch + 2:
            terms["reg"] = terms["reg"] * float("nan")
        return terms

    m.loss_terms = loss_terms
    with pytest.raises(TrainingDivergedError, match=r"'reg'.*epoch 2.*batch 2") as info:
        m.fit(x, y)
    assert (info.value.epoch, info.value.batch, info.value.term) == (2, 2, "reg")


def test_real_divergence_is_caught():
    x, y = toy_features()
    x = x * 1e30
    with pytest.raises(TrainingDivergedError):
        DPAH(epochs=3, **{**FEATS, "lr": 1e30}).fit(x, y)


# ---------------------------------------------------------------------- determinism
def test_seeded_determinism_and_global_rng_untouched():
    x, y = toy_features()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = DPAH(epochs=2, seed=3, **FEATS).fit(x, y)
    assert torch.equal(torch.get_rng_state(), before), "fit must not consume the global RNG"
    b = DPAH(epochs=2, seed=3, **FEATS).fit(x, y)
    c = DPAH(epochs=2, seed=4, **FEATS).fit(x, y)
    np.testing.assert_array_equal(a.raw_outputs(x), b.raw_outputs(x))
    assert not np.array_equal(a.raw_outputs(x), c.raw_outputs(x))


# ---------------------------------------------------------------------- image inputs
def test_small_cnn_eval_mode_and_image_set_input_equal_array_input():
    x, y = toy_images()
    m = DPAH(epochs=2, **CNN).fit(x, y)
    codes = m.encode(x)
    np.testing.assert_array_equal(m.encode(x[5:9]), codes[5:9])  # BatchNorm in eval mode

    class ImageSet:  # minimal image-set-like object: len + getitem -> PIL image
        def __init__(self, arr):
            self.arr = arr

        def __len__(self):
            return len(self.arr)

        def __getitem__(self, i):
            return Image.fromarray(self.arr[i])

    from_set = DPAH(epochs=2, **CNN).fit(ImageSet(x), y)
    np.testing.assert_array_equal(from_set.raw_outputs(ImageSet(x)), m.raw_outputs(x))


def test_grey_images_and_augment_option():
    x, y = toy_images(channels=1)
    m = DPAH(epochs=1, augment=False, **CNN).fit(x, y)
    assert m.encode(x).shape == (48, 8)
    with pytest.raises(ValueError, match="shape"):
        m.encode(np.zeros((2, 9, 9), dtype=np.uint8))


def test_preprocessing_torchvision_crop_and_normalisation():
    batch = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    out = backbones.preprocess_batch(batch, "alexnet", train=False)
    assert out.shape == (2, 3, 224, 224)
    expected = (1.0 - torch.tensor(backbones.IMAGENET_MEAN)) / torch.tensor(backbones.IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 100, 100], expected)
    gen = torch.Generator().manual_seed(0)
    assert (
        backbones.preprocess_batch(batch, "alexnet", train=True, generator=gen).shape == out.shape
    )
    small = backbones.preprocess_batch(
        torch.zeros((1, 1, 8, 8), dtype=torch.uint8), "small_cnn", train=False
    )
    assert float(small.min()) == -1.0


# ---------------------------------------------------------------------- backbones and weights
@pytest.fixture(scope="module")
def alexnet_state(tmp_path_factory):
    """A randomly initialised torchvision AlexNet saved in torchvision's state-dict format."""
    torch.manual_seed(0)
    model = backbones._torchvision_model("alexnet")
    path = tmp_path_factory.mktemp("weights") / backbones.TORCHVISION_WEIGHT_FILES["alexnet"][0]
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_weights_load_from_path_and_from_torchvision_cache(alexnet_state, tmp_path, monkeypatch):
    path, state = alexnet_state
    trunk = backbones.build_backbone("alexnet", weights_path=path)
    torch.testing.assert_close(trunk.fc[4].weight, state["classifier.4.weight"])  # fc7
    torch.testing.assert_close(trunk.features[0].weight, state["features.0.weight"])
    assert trunk.out_features == 4096

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "hub" / "checkpoints")):
        backbones.build_backbone("alexnet")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / path.name).symlink_to(path)
    cached = backbones.build_backbone("alexnet")
    torch.testing.assert_close(cached.fc[1].weight, state["classifier.1.weight"])  # fc6


def test_wrong_state_dict_is_rejected(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"weight": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a torchvision alexnet state dict"):
        backbones.build_backbone("alexnet", weights_path=bad)


def test_no_silent_training_from_scratch(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    x, y = toy_images(n=4, size=16)
    with pytest.raises(FileNotFoundError, match="from_scratch=True"):
        DPAH(backbone="resnet50", epochs=1, progress=False).fit(x, y)
    with pytest.raises(ValueError, match="from_scratch"):
        DPAH(backbone="alexnet", pretrained=False, epochs=1, progress=False).fit(x, y)


def test_alexnet_end_to_end_from_local_weights(alexnet_state):
    path, _ = alexnet_state
    x, y = toy_images(n=6, size=16)
    m = DPAH(
        backbone="alexnet", weights_path=path, epochs=1, batch_size=3, n_bits=8, progress=False
    ).fit(x, y)
    codes = m.encode(x)
    assert codes.shape == (6, 8)
    np.testing.assert_array_equal(m.encode(x[2:4]), codes[2:4])  # dropout off at encode time


@pytest.mark.parametrize("name, out", [("resnet50", 2048), ("vgg16", 4096)])
def test_other_torchvision_trunks_from_scratch(name, out):
    trunk = backbones.build_backbone(name, from_scratch=True).eval()
    with torch.no_grad():
        assert trunk(torch.zeros(1, 3, 64, 64)).shape == (1, out)


def test_feature_backbones_and_expected_input():
    assert DPAH(backbone="mlp").expected_input() == "features"
    assert DPAH(backbone="linear").expected_input() == "features"
    assert DPAH(backbone="small_cnn").expected_input() == "images"
    x, y = toy_features()
    m = DPAH(epochs=1, **{**FEATS, "backbone": "linear"}).fit(x, y)
    assert m.model_.head.hash.in_features == 20
    with pytest.raises(ValueError, match="features"):
        m.encode(np.zeros((2, 21), dtype=np.float32))


# ---------------------------------------------------------------------- options and reports
def test_param_groups_hash_lr_mult_and_center_weight_decay():
    _x, _y = toy_features()
    m = DPAH(
        hash_lr_mult=10.0,
        center_weight_decay=0.0,
        lr=1e-3,
        **{k: v for k, v in FEATS.items() if k != "lr"},
    )
    from methods.deep.backbones import build_backbone

    bb = build_backbone("mlp", n_features=20, mlp_hidden=8)
    head = m.build_head(8, 4)
    groups = m.param_groups(bb, head)
    assert [g["lr"] for g in groups] == [1e-3, 1e-2, 1e-2]
    assert groups[-1]["params"] == [head.center_weight] and groups[-1]["weight_decay"] == 0.0
    assert all(p is not head.center_weight for p in groups[1]["params"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs"),
        ({"backbone": "lenet"}, "backbone"),
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 1}, "batch_size"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_bad_training_options_are_rejected(kwargs, match):
    x, y = toy_features(n=20)
    with pytest.raises(ValueError, match=match):
        DPAH(**{**FEATS, "epochs": 1, **kwargs}).fit(x, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_gpu_is_a_clear_error():
    x, y = toy_features(n=20)
    with pytest.raises(ValueError, match="CUDA"):
        DPAH(**{**FEATS, "epochs": 1, "device": "cuda"}).fit(x, y)


def test_history_validation_split_and_convergence_report():
    x, y = toy_features(n=120)
    m = DPAH(epochs=4, val_fraction=0.25, **FEATS).fit(x, y)
    assert len(m.history_) == 4
    assert {"val_loss", "val_inter", "loss", "inter", "time_s", "cpu_s"} <= set(m.history_[0])
    codes = m.encode(x)
    report = m.convergence_report(codes)
    assert report["converged"] is True and report["reason"] == "loss decreased"
    assert report["distinct_codes"] == len(np.unique(codes, axis=0)) > 1

    m.history_ = [{"loss": 1.0}, {"loss": 1.5}]
    assert m.convergence_report()["converged"] is False
    m.history_ = [{"loss": 5.3153}, {"loss": 5.3116}]  # a saddle: 0.07% in 20 epochs
    report = m.convergence_report()
    assert report["converged"] is False and "by 1%" in report["reason"]
    m.history_ = [{"loss": -2.0}, {"loss": -2.03}]  # negative losses: 1% of |first|
    assert m.convergence_report()["converged"] is True
    m.history_ = [{"loss": 2.0}, {"loss": 1.0}]
    collapsed = np.zeros((10, 8), dtype=np.uint8)
    assert "same code" in m.convergence_report(collapsed)["reason"]
    half = np.zeros((10, 8), dtype=np.uint8)
    half[::2, :3] = 1
    assert m.convergence_report(half)["constant_bits"] == 5


def test_every_deep_method_trains_through_the_engine():
    """Each registered deep method's loss runs in the loop (multi-label, few epochs)."""
    x, y = toy_features(n=64)
    for name in [
        "dpah",
        "dpah_no_kt",
        "hpa_lambda0",
        "softmax_ce",
        "softmax_kt",
        "max_margin",
        "softmax_pa",
    ]:
        m = get_method(name)(epochs=2, **FEATS).fit(x, y)
        assert np.isfinite(m.history_[-1]["loss"]), name


def test_input_scaling_standardizes_with_training_statistics_only():
    """``input_scaling="standardize"``: z-scores features with the training items' statistics,
    stored in the model, so encode applies the same transform to unseen inputs."""
    from methods.deep.dpah import DPAH

    rng = np.random.default_rng(0)
    X = (rng.random((120, 6)) < 0.1).astype(np.float32) * 5.0 + 3.0  # sparse, offset, scaled
    Y = np.eye(3, dtype=np.uint8)[rng.integers(0, 3, 120)]
    m = DPAH(n_bits=8, backbone="linear", epochs=1, batch_size=32, progress=False,
             input_scaling="standardize").fit(X, Y)
    scaling = m.model_.backbone.scaling
    np.testing.assert_allclose(scaling.mean.numpy(), X.mean(0), rtol=1e-5)
    np.testing.assert_allclose(scaling.scale.numpy(), X.std(0) + 0.01, rtol=1e-5)
    # same codes as a linear head fed the z-scored features by hand: the transform is inside
    raw = m.raw_outputs(X[:7])
    z = (X[:7] - X.mean(0)) / (X.std(0) + 0.01)
    head = m.model_.head.hash
    expected = z @ head.weight.detach().numpy().T + head.bias.detach().numpy()
    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="input_scaling"):
        DPAH(n_bits=8, backbone="linear", input_scaling="minmax", progress=False).fit(X, Y)
    plain = DPAH(n_bits=8, backbone="linear", epochs=1, progress=False).fit(X, Y)
    assert plain.model_.backbone.scaling is None


# ---------------------------------------------------------------------- per-item state hooks
def test_epoch_hook_gets_all_training_outputs_once_per_epoch_and_batches_their_rows():
    x, y = toy_features(n=96)
    calls, seen = [], []

    class Recorder(DPAH):
        needs_epoch_outputs = True

        def prepare_state(self, head, labels, train_index):
            calls.append(("prepare", labels.shape, train_index.tolist()))

        def loss_terms(self, head, u, labels, step):
            if head.training:  # validation batches come with their own rows
                seen.append((step.epoch, step.batch_index.tolist()))
            torch.testing.assert_close(labels, torch.as_tensor(y, dtype=torch.float32)[
                step.batch_index])
            return super().loss_terms(head, u, labels, step)

        def after_epoch(self, head, outputs, step):
            calls.append(("epoch", step.epoch, outputs.shape, bool(head.training)))
            self.last_outputs = outputs.clone()

    m = Recorder(epochs=3, val_fraction=0.25, **FEATS)
    m.fit(x, y)
    train_rows = sorted({r for e, rows in seen if e == 0 for r in rows})
    assert calls[0] == ("prepare", (96, y.shape[1]), train_rows) and len(train_rows) == 72
    assert calls[1:] == [("epoch", e, (72, 8), True) for e in range(3)]  # back in train mode
    for e in range(3):  # every training row once per epoch
        assert sorted(r for ep, rows in seen if ep == e for r in rows) == train_rows
    # the outputs are the eval-mode outputs of the training items, in train_index order
    np.testing.assert_array_equal(m.last_outputs.numpy(), m.raw_outputs(x[train_rows]))
    plain = []
    DPAH.after_epoch = lambda self, head, outputs, step: plain.append(outputs)
    try:
        DPAH(epochs=2, **FEATS).fit(x, y)
    finally:
        del DPAH.after_epoch
    assert plain == [None, None]  # no extra pass for methods that do not ask


@pytest.mark.parametrize("name", ["dsdh", "hbmp"])
def test_resume_restores_per_item_state_to_the_identical_result(tmp_path, name):
    x, y = toy_features(multi=False)
    opts = {**FEATS, "lr": 0.01}
    extra = {"discrete_step": "epoch"} if name == "dsdh" else {}
    cls = get_method(name)
    full = cls(epochs=4, **extra, **opts).fit(x, y)
    crashed = cls(epochs=4, checkpoint_dir=tmp_path, **extra, **opts)
    interrupt_at(crashed, 2)
    with pytest.raises(Interrupt):
        crashed.fit(x, y)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert any(k.startswith("head.stored_") or k == "head.target" for k in state["model"])
    resumed = cls(epochs=4, checkpoint_dir=tmp_path, resume=True, **extra, **opts).fit(x, y)
    np.testing.assert_array_equal(resumed.raw_outputs(x), full.raw_outputs(x))
    for key, value in full.model_.head.state_dict().items():
        torch.testing.assert_close(resumed.model_.head.state_dict()[key], value, rtol=0, atol=0)
