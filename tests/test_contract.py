"""The generic contract every registered method must satisfy (parametrised over the registry).

A new method registered with ``@register`` is picked up here with no edit: its cheap settings come
from its ``test_params`` class attribute.
"""

from __future__ import annotations

import numpy as np
import pytest

import methods
from methods import HashMethod, NotFittedError, get_method, list_methods

N_BITS = 8
N_ITEMS = 120
N_FEATURES = 24
N_CLASSES = 4

#: reference rows (methods/reference.py) make a code of C bits or none: outside the contract
ALL_METHODS = sorted(m for m in list_methods() if not hasattr(get_method(m), "code_length"))


def make_labels(rng: np.random.Generator, n: int, multi_label: bool) -> np.ndarray:
    classes = rng.integers(0, N_CLASSES, size=n)
    Y = np.eye(N_CLASSES, dtype=np.uint8)[classes]
    if multi_label:
        extra = rng.random((n, N_CLASSES)) < 0.3
        Y = np.maximum(Y, extra.astype(np.uint8))
    return Y


def make_inputs(method: HashMethod, Y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Clustered inputs correlated with the labels: features, or small uint8 RGB images."""
    rng = np.random.default_rng(seed)
    n = len(Y)
    if method.expected_input() == "features":
        prototypes = rng.normal(size=(N_CLASSES, N_FEATURES)) * 3
        return (Y @ prototypes + rng.normal(size=(n, N_FEATURES))).astype(np.float32)
    prototypes = rng.integers(0, 256, size=(N_CLASSES, 8, 8, 3))
    images = (Y @ prototypes.reshape(N_CLASSES, -1)) / np.maximum(Y.sum(1, keepdims=True), 1)
    images = images + rng.normal(scale=20, size=images.shape)
    return np.clip(images, 0, 255).astype(np.uint8).reshape(n, 8, 8, 3)


def build(name: str, seed: int = 0, n_bits: int = N_BITS) -> HashMethod:
    cls = get_method(name)
    return cls(n_bits=n_bits, seed=seed, **cls.test_params)


_FITTED: dict[tuple[str, bool], tuple[HashMethod, np.ndarray, np.ndarray, np.ndarray]] = {}


def fitted(name: str, multi_label: bool = False):
    """Fit once per (method, label kind) and reuse across checks (keeps the suite fast)."""
    key = (name, multi_label)
    if key not in _FITTED:
        rng = np.random.default_rng(1)
        Y = make_labels(rng, N_ITEMS, multi_label)
        method = build(name)
        X = make_inputs(method, Y)
        X_before = X.copy()
        returned = method.fit(X, Y)
        assert returned is method, "fit must return self"
        np.testing.assert_array_equal(X, X_before, err_msg="fit mutated its input")
        _FITTED[key] = (method, X, Y, method.encode(X))
    return _FITTED[key]


def test_registry_is_populated_and_every_subclass_registered():
    assert {"lsh", "itq"} <= set(ALL_METHODS)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    import inspect

    concrete = [c for c in subclasses(HashMethod) if not inspect.isabstract(c)]
    concrete = [c for c in concrete if c.__module__.startswith("methods.")]
    abstract_bases = {"DeepHashMethod"}
    unregistered = [
        c.__name__ for c in concrete if c.__name__ not in abstract_bases and not c.name
    ]
    assert not unregistered, f"HashMethod subclasses without @register: {unregistered}"
    for name in ALL_METHODS:
        cls = get_method(name)
        assert cls.kind in ("shallow", "deep")
        assert cls.input_kind in ("features", "images")
        assert cls.paper, f"{name} has no paper reference"


def test_unknown_method_error_lists_registry():
    with pytest.raises(KeyError, match="registered"):
        get_method("no-such-method")


@pytest.mark.parametrize("name", ALL_METHODS)
def test_constructs_with_defaults_and_params_round_trip(name):
    cls = get_method(name)
    method = cls()
    params = method.get_params()
    assert "n_bits" in params and "seed" in params
    clone = cls(**params)
    assert clone.get_params() == params
    assert repr(method).startswith(type(method).__name__)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_encode_before_fit_raises(name):
    method = build(name)
    Y = make_labels(np.random.default_rng(0), 10, False)
    with pytest.raises(NotFittedError, match="fit"):
        method.encode(make_inputs(method, Y))


@pytest.mark.parametrize("multi_label", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("name", ALL_METHODS)
def test_codes_shape_dtype_values(name, multi_label):
    _method, _X, _Y, codes = fitted(name, multi_label)
    assert codes.shape == (N_ITEMS, N_BITS)
    assert codes.dtype == np.uint8
    assert set(np.unique(codes)) <= {0, 1}


@pytest.mark.parametrize("name", ALL_METHODS)
def test_same_seed_same_codes(name):
    method, X, Y, codes = fitted(name)
    again = build(name).fit(X, Y)
    np.testing.assert_array_equal(again.encode(X), codes)
    np.testing.assert_array_equal(method.encode(X), codes, err_msg="encode is not deterministic")


@pytest.mark.parametrize("name", ALL_METHODS)
def test_encode_of_slice_equals_slice_of_encode(name):
    """Catches per-batch state at encode time (e.g. BatchNorm left in training mode)."""
    method, X, _Y, codes = fitted(name)
    np.testing.assert_array_equal(method.encode(X[10:17]), codes[10:17])


@pytest.mark.parametrize("name", ALL_METHODS)
def test_wrong_input_shape_is_rejected(name):
    method, _X, _Y, _codes = fitted(name)
    if method.expected_input() == "features":
        with pytest.raises(ValueError, match="features"):
            method.encode(np.zeros((3, N_FEATURES + 1), dtype=np.float32))
    else:
        with pytest.raises(ValueError):
            method.encode(np.zeros((3, 9, 9, 3), dtype=np.uint8))


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("name", ALL_METHODS)
def test_non_finite_input_is_rejected(name, bad):
    method, X, Y, _codes = fitted(name)
    X_bad = X.astype(np.float32).copy()
    X_bad.flat[5] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        build(name).fit(X_bad, Y)
    with pytest.raises(ValueError, match="NaN or inf"):
        method.encode(X_bad)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_bad_labels_are_rejected(name):
    method = build(name)
    Y = make_labels(np.random.default_rng(0), 20, False)
    X = make_inputs(method, Y)
    with pytest.raises(ValueError, match="multi-hot"):
        method.fit(X, Y.argmax(1))  # class ids instead of a multi-hot matrix
    with pytest.raises(ValueError, match="rows"):
        method.fit(X, Y[:-1])
    with pytest.raises(ValueError, match="0 and 1"):
        method.fit(X, Y * 2)


def test_invalid_n_bits_is_rejected():
    Y = make_labels(np.random.default_rng(0), 20, False)
    X = np.random.default_rng(0).normal(size=(20, 5))
    with pytest.raises(ValueError, match="n_bits"):
        methods.get_method("lsh")(n_bits=0).fit(X, Y)


def test_readme_example_method_is_picked_up():
    """The README's "Adding a method" example: a subclass + @register is all it takes."""
    from methods import HashMethod, register

    @register("_test_readme_example")
    class MedianThreshold(HashMethod):
        """Each bit: one input dimension thresholded at its training median."""

        paper = "README example"
        supervised = False

        def __init__(self, n_bits: int = 16, seed: int = 0) -> None:
            super().__init__(n_bits=n_bits, seed=seed)

        def _fit(self, X, Y):
            rng = np.random.default_rng(self.seed)
            self.dims_ = rng.choice(X.shape[1], size=self.n_bits, replace=X.shape[1] < self.n_bits)
            self.medians_ = np.median(X[:, self.dims_], axis=0)

        def _encode(self, X):
            return X[:, self.dims_] > self.medians_

    try:
        from benchmarks.metrics import map_at_k

        Y = make_labels(np.random.default_rng(0), 60, False)
        X = np.random.default_rng(0).normal(size=(60, 12)) + Y @ np.ones((N_CLASSES, 12))
        codes = get_method("_test_readme_example")(n_bits=8).fit(X, Y).encode(X)
        assert codes.shape == (60, 8)
        assert 0.0 <= map_at_k(codes, codes, Y, Y) <= 1.0
    finally:
        from methods import base

        base._REGISTRY.pop("_test_readme_example", None)
