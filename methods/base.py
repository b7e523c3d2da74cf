"""The method contract every hashing method satisfies, and the registry.

A method is built with its code length, a seed and its hyper-parameters (defaults = the values its
original paper or the DPAH paper used), learns with ``fit(X, Y)`` and produces binary codes with
``encode(X)``. The style follows scikit-learn's estimators: ``__init__`` only stores its keyword
arguments, learned state ends in ``_``, ``fit`` returns ``self``.

Inputs
------
* ``X`` is either an ``N x D`` feature matrix (``input_kind == "features"``) or an image collection
  (``input_kind == "images"``): an ``N x H x W [x C]`` uint8 array, or any object with ``__len__``
  and ``__getitem__`` returning a PIL image or an ``H x W [x C]`` array (``data_protocols.ImageSet``).
* ``Y`` is always an ``N x C`` multi-hot label matrix (single-label data is one-hot), so one code
  path serves single- and multi-label data. Unsupervised methods ignore it.

Outputs
-------
``encode`` returns an ``N x n_bits`` ``uint8`` matrix of {0, 1}, deterministic for a fitted method.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "HashMethod",
    "NotFittedError",
    "check_features",
    "check_labels",
    "get_method",
    "list_methods",
    "register",
    "register_variant",
    "registry",
]

INPUT_KINDS = ("features", "images")
METHOD_KINDS = ("shallow", "deep")


class NotFittedError(RuntimeError):
    """Raised when ``encode`` is called before ``fit``."""


def _all_finite(arr: np.ndarray) -> bool:
    """True when no entry is NaN or inf. A sum is NaN/inf whenever an entry is, and is finite
    otherwise unless it overflows; only then are the entries checked one by one (faster than
    ``np.isfinite`` on the whole array, which also allocates an N x D mask)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(arr.sum()):
            return True
    return bool(np.all(np.isfinite(arr)))


def check_features(X: Any, *, name: str = "X", n_features: int | None = None) -> np.ndarray:
    """Validate an ``N x D`` feature matrix: numeric, 2-D, finite, non-empty.

    Returns a float64 copy-free view where possible. ``n_features`` (when given) is the dimension
    seen at fit time; a different one is an error.
    """
    arr = np.asarray(X)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a numeric N x D feature matrix, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D N x D feature matrix, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features but the method was fitted on {n_features}"
        )
    if arr.dtype.kind in "fc" and not _all_finite(arr):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} contains NaN or inf (first at row {bad[0]}, column {bad[1]}); "
            "clean the features before hashing"
        )
    return arr


def check_labels(Y: Any, n_items: int, *, name: str = "Y") -> np.ndarray:
    """Validate an ``N x C`` multi-hot label matrix and return it as uint8.

    A 1-D vector of integer class ids is *not* accepted silently: the contract is multi-hot, so a
    single-label user converts with ``np.eye(C)[y]``; the message says so.
    """
    arr = np.asarray(Y)
    if arr.ndim == 1:
        raise ValueError(
            f"{name} must be an N x C multi-hot label matrix; got a 1-D vector. "
            "For class ids y use np.eye(n_classes, dtype=np.uint8)[y]"
        )
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an N x C multi-hot label matrix, got shape {arr.shape}")
    if arr.shape[0] != n_items:
        raise ValueError(f"{name} has {arr.shape[0]} rows but X has {n_items} items")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be numeric and finite")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only 0 and 1 (multi-hot labels)")
    return arr.astype(np.uint8, copy=False)


def n_items_of(X: Any) -> int:
    """Number of items in a feature matrix or image collection."""
    try:
        return len(X)
    except TypeError as exc:
        raise ValueError(f"X must be a sized collection (array or image set), got {type(X)}") from exc


class HashMethod(abc.ABC):
    """Abstract base of every hashing method.

    Subclasses set the class attributes, take ``n_bits`` and ``seed`` (and their hyper-parameters as
    explicit keyword arguments with paper defaults) in ``__init__``, and implement ``_fit`` and
    ``_encode``. Validation, fitted-state checks and the output format are handled here, once.
    """

    #: registry name, set by :func:`register`
    name: ClassVar[str] = ""
    #: "shallow" or "deep"
    kind: ClassVar[str] = "shallow"
    #: what ``fit``/``encode`` consume: "features" or "images"
    input_kind: ClassVar[str] = "features"
    #: citation of the method's original paper
    paper: ClassVar[str] = ""
    #: whether ``fit`` uses the labels
    supervised: ClassVar[bool] = True
    #: registry name of the class this is a variant of ("" for a base method)
    variant_of: ClassVar[str] = ""
    variant_defaults: ClassVar[dict[str, Any]] = {}
    #: bumped when a code change alters the method's results (not for a refactor): the runner keys
    #: stored cells by it from 2 on, so cells of an earlier version are run again, never mixed in
    results_version: ClassVar[int] = 1
    #: cheap settings for the generic contract tests (e.g. few epochs); merged into the defaults
    test_params: ClassVar[dict[str, Any]] = {}
    #: what a tuner may change: constructor parameter -> dimension (:mod:`methods.search`);
    #: empty by default (nothing to tune); checked by ``methods.search.validate_search_space``
    search_space: ClassVar[dict[str, Any]] = {}

    def __init__(self, n_bits: int = 48, seed: int = 0) -> None:
        self.n_bits = n_bits
        self.seed = seed

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        names: list[str] = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                if p.name not in names:
                    names.append(p.name)
        return names

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as given to ``__init__`` (scikit-learn style)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> HashMethod:
        valid = set(self._param_names())
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {key!r}; valid: {sorted(valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def expected_input(self) -> str:
        """What this configured instance consumes: "features" or "images".

        Shallow methods always take features; deep methods take images, or features when their
        backbone is a feature backbone (frozen-feature mode / MLP on features).
        """
        return self.input_kind

    # ------------------------------------------------------------------ public API
    def fit(self, X: Any, Y: Any) -> HashMethod:
        """Learn the hash function from training inputs ``X`` and N x C multi-hot labels ``Y``."""
        self._check_n_bits()
        X = self._check_input(X, fitting=True)
        Y = check_labels(Y, n_items_of(X))
        self._fit(X, Y)
        self.is_fitted_ = True
        return self

    def encode(self, X: Any) -> np.ndarray:
        """Binary codes of ``X``: an N x n_bits uint8 matrix of {0, 1}."""
        if not getattr(self, "is_fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, Y) first")
        X = self._check_input(X, fitting=False)
        raw = np.asarray(self._encode(X))
        n = n_items_of(X)
        if raw.shape != (n, self.n_bits):
            raise RuntimeError(
                f"{type(self).__name__}._encode returned shape {raw.shape}, expected {(n, self.n_bits)}"
            )
        if raw.dtype == bool:
            return raw.astype(np.uint8)
        if not np.all((raw == 0) | (raw == 1)):
            raise RuntimeError(f"{type(self).__name__}._encode must return 0/1 values (or booleans)")
        return raw.astype(np.uint8, copy=False)

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def _fit(self, X: Any, Y: np.ndarray) -> None:
        """Learn the hash function; inputs are already validated."""

    @abc.abstractmethod
    def _encode(self, X: Any) -> np.ndarray:
        """Return N x n_bits booleans (or 0/1) for validated inputs."""

    # ------------------------------------------------------------------ validation
    def _check_n_bits(self) -> None:
        if not isinstance(self.n_bits, (int, np.integer)) or isinstance(self.n_bits, bool) or self.n_bits < 1:
            raise ValueError(f"n_bits must be a positive integer, got {self.n_bits!r}")

    def _check_input(self, X: Any, *, fitting: bool) -> Any:
        """Validate inputs of the declared kind; features are checked for shape and finiteness."""
        if self.expected_input() == "features":
            n_features = None if fitting else getattr(self, "n_features_in_", None)
            X = check_features(X, n_features=n_features)
            if fitting:
                self.n_features_in_ = X.shape[1]
            return X
        return self._check_images(X, fitting=fitting)

    def _check_images(self, X: Any, *, fitting: bool) -> Any:
        if n_items_of(X) == 0:
            raise ValueError("X is empty (0 images)")
        if isinstance(X, np.ndarray):
            if X.ndim not in (3, 4):
                raise ValueError(f"image input must be N x H x W [x C], got shape {X.shape}")
            if np.issubdtype(X.dtype, np.floating) and not np.all(np.isfinite(X)):
                raise ValueError("image input contains NaN or inf")
            shape = X.shape[1:]
            if fitting:
                self.image_shape_ = shape
            elif getattr(self, "image_shape_", shape) != shape:
                raise ValueError(f"images have shape {shape} but the method was fitted on {self.image_shape_}")
        return X


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[HashMethod]] = {}


def register(name: str) -> Callable[[type[HashMethod]], type[HashMethod]]:
    """Class decorator: register a :class:`HashMethod` subclass under a short name."""

    def decorator(cls: type[HashMethod]) -> type[HashMethod]:
        if not (isinstance(cls, type) and issubclass(cls, HashMethod)):
            raise TypeError(f"@register({name!r}) must decorate a HashMethod subclass, got {cls!r}")
        if cls.kind not in METHOD_KINDS:
            raise ValueError(f"{cls.__name__}.kind must be one of {METHOD_KINDS}, got {cls.kind!r}")
        if cls.input_kind not in INPUT_KINDS:
            raise ValueError(f"{cls.__name__}.input_kind must be one of {INPUT_KINDS}")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"method name {name!r} is already registered by {existing.__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def register_variant(
    name: str, base: type[HashMethod], paper: str = "", **defaults: Any
) -> type[HashMethod]:
    """Register an ablation variant: the same class with other default hyper-parameters.

    Variants (Table 1/2 rows) are settings, not copies: the returned subclass only changes the
    defaults of ``base.__init__``; an explicit keyword still overrides them.
    """

    def __init__(self: HashMethod, **kwargs: Any) -> None:
        base.__init__(self, **{**defaults, **kwargs})

    cls = type(
        f"{base.__name__}[{name}]",
        (base,),
        {
            "__init__": __init__,
            "__doc__": f"{base.__name__} with {defaults} ({name}). {base.__doc__ or ''}",
            "__module__": base.__module__,
            "paper": paper or base.paper,
            "variant_of": base.name,
            "variant_defaults": dict(defaults),
        },
    )
    return register(name)(cls)


def registry() -> dict[str, type[HashMethod]]:
    """A copy of the name -> class mapping."""
    return dict(_REGISTRY)


def list_methods(kind: str | None = None) -> list[str]:
    """Registered names, optionally only ``"shallow"`` or ``"deep"`` ones."""
    return [n for n, c in _REGISTRY.items() if kind is None or c.kind == kind]


def get_method(name: str) -> type[HashMethod]:
    """The class registered under ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None
