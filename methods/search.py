"""Search spaces: which hyper-parameters a tuner may change, and over which ranges.

A method declares ``search_space`` next to its class (a ``ClassVar`` mapping a constructor
parameter name to a dimension); the default on :class:`methods.base.HashMethod` is empty. Deep
methods search ``lr`` (:data:`LR`, the same range for everyone) plus at most two of their own
weights or margins; shallow methods (no learning rate) at most three of their own parameters.

The dimensions map one-to-one onto Optuna's ``trial.suggest_*`` calls (:meth:`Dimension.suggest`),
but nothing here imports Optuna: any object with ``suggest_float`` / ``suggest_int`` /
``suggest_categorical`` works. Some ranges scale with the code length (DSH's margin ``2K``,
HashNet's ``alpha_s = 10/K``): ``bits_power`` says the searched value is multiplied by
``n_bits ** bits_power`` before it becomes the parameter (:meth:`Dimension.resolve`), so one range
serves every code length. :func:`suggest_params` does both steps for a whole space.

:func:`default_point` goes the other way: the searched (raw) values of a method's own defaults, so
a tuner can start from the recipe it is compared against. Where a constructor default is ``None``
(a value computed from the code length), the dimension's ``default`` says which raw value that is.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LR",
    "MAX_OWN_DEEP",
    "MAX_OWN_SHALLOW",
    "Categorical",
    "Dimension",
    "IntRange",
    "LogUniform",
    "Uniform",
    "default_point",
    "suggest_params",
    "validate_search_space",
]

#: at most this many of a deep method's own parameters besides ``lr``
MAX_OWN_DEEP = 2
#: at most this many parameters of a shallow method
MAX_OWN_SHALLOW = 3


class Dimension:
    """One searched parameter. Subclasses say how a tuner draws a value."""

    bits_power: int = 0

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw a value with the tuner's ``trial`` (Optuna's ``trial.suggest_*``)."""
        raise NotImplementedError

    def resolve(self, value: Any, n_bits: int) -> Any:
        """The constructor value for a drawn ``value``: ``value * n_bits ** bits_power``."""
        if self.bits_power == 0:
            return value
        return value * float(n_bits) ** self.bits_power

    def unresolve(self, value: Any, n_bits: int) -> Any:
        """The drawn value a constructor ``value`` corresponds to (inverse of :meth:`resolve`);
        ``None`` stands for the dimension's ``default`` (``None`` when it declares none)."""
        if value is None:
            return getattr(self, "default", None)
        if self.bits_power == 0:
            return value
        return value / float(n_bits) ** self.bits_power

    def contains(self, value: Any) -> bool:
        """Whether a drawn ``value`` lies in the range (a tuner could have drawn it)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        return self.low <= value <= self.high  # type: ignore[attr-defined]  # ranges have both

    def check(self) -> None:
        """Raise ``ValueError`` for an empty or malformed range."""


@dataclass(frozen=True)
class LogUniform(Dimension):
    """A float drawn log-uniformly from ``[low, high]`` (``suggest_float(..., log=True)``)."""

    low: float
    high: float
    bits_power: int = 0
    #: the raw value a constructor default of ``None`` stands for (e.g. DSH's 2K: 2.0)
    default: float | None = None

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=True)

    def check(self) -> None:
        if not (0 < self.low < self.high and math.isfinite(self.high)):
            raise ValueError(f"LogUniform needs 0 < low < high (finite), got [{self.low}, {self.high}]")


@dataclass(frozen=True)
class Uniform(Dimension):
    """A float drawn uniformly from ``[low, high]`` (``suggest_float``)."""

    low: float
    high: float
    bits_power: int = 0
    #: the raw value a constructor default of ``None`` stands for (e.g. DSH's 2K: 2.0)
    default: float | None = None

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high)

    def check(self) -> None:
        if not (self.low < self.high and math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"Uniform needs finite low < high, got [{self.low}, {self.high}]")


@dataclass(frozen=True)
class IntRange(Dimension):
    """An integer from ``low..high`` (``suggest_int``; ``log=True`` for a log scale)."""

    low: int
    high: int
    log: bool = False

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        return super().contains(value) and int(value) == value

    def check(self) -> None:
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high))
        if not (ints and self.low < self.high and (self.low >= 1 or not self.log)):
            raise ValueError(f"IntRange needs integers low < high (low >= 1 if log), got "
                             f"[{self.low}, {self.high}]")


@dataclass(frozen=True)
class Categorical(Dimension):
    """One of a few values (``suggest_categorical``)."""

    choices: tuple[Any, ...]

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def check(self) -> None:
        if len(self.choices) < 2:
            raise ValueError(f"Categorical needs at least two choices, got {self.choices!r}")


#: the learning-rate range every deep method searches: log-uniform over [1e-5, 1e-1], which spans
#: every base lr of the published recipes in methods/deep/recipes.py (HashNet's 5e-5 on COCO /
#: NUS-WIDE to TALR's 5e-2 on ImageNet-100) and the presets' 1e-3 (paper), 1e-2 (cpu), 5e-2 (smoke)
LR = LogUniform(1e-5, 1e-1)


def _space_of(cls: type) -> Mapping[str, Any]:
    return getattr(cls, "search_space", {}) or {}


def validate_search_space(cls: type) -> None:
    """Check ``cls.search_space``; raise ``ValueError`` naming the method and the parameter.

    Every key must be a constructor parameter of the class (``cls._param_names()``, the names
    ``get_params`` returns), every value a :class:`Dimension` with a valid range. A deep method
    with a non-empty space searches ``lr`` plus at most :data:`MAX_OWN_DEEP` own parameters; a
    shallow method at most :data:`MAX_OWN_SHALLOW`.
    """
    label = f"{cls.__name__} ({getattr(cls, 'name', '') or 'unregistered'})"
    space = _space_of(cls)
    if not isinstance(space, Mapping):
        raise TypeError(f"{label}.search_space must be a mapping name -> dimension, got "
                         f"{type(space).__name__}")
    names = set(cls._param_names())
    for param, dim in space.items():
        if param not in names:
            raise ValueError(
                f"search space of {label} names parameter {param!r}, which {cls.__name__} "
                f"lacks; its parameters are {sorted(names)}"
            )
        if not isinstance(dim, Dimension):
            raise TypeError(f"search space of {label}: {param!r} must be a Dimension "
                             f"(LogUniform, Uniform, IntRange, Categorical), got {dim!r}")
        try:
            dim.check()
        except ValueError as exc:
            raise ValueError(f"search space of {label}, parameter {param!r}: {exc}") from None
    if not space:
        return
    if getattr(cls, "kind", "") == "deep":
        if "lr" not in space:
            raise ValueError(f"search space of {label} must search 'lr' (every deep method does)")
        own = [p for p in space if p != "lr"]
        if len(own) > MAX_OWN_DEEP:
            raise ValueError(f"search space of {label} has {len(own)} own parameters {own}; "
                             f"at most {MAX_OWN_DEEP} besides lr")
    elif len(space) > MAX_OWN_SHALLOW:
        raise ValueError(f"search space of {label} has {len(space)} parameters; at most "
                         f"{MAX_OWN_SHALLOW} for a shallow method")


def suggest_params(cls: type, trial: Any, n_bits: int) -> dict[str, Any]:
    """Constructor keyword arguments for one trial: draw every dimension, then resolve it.

    The trial records the drawn values (per-bit multipliers where ``bits_power != 0``); the
    returned dict holds what the method is built with.
    """
    validate_search_space(cls)
    return {name: dim.resolve(dim.suggest(trial, name), n_bits)
            for name, dim in _space_of(cls).items()}


def default_point(cls: type, values: Mapping[str, Any], n_bits: int
                  ) -> tuple[dict[str, Any], dict[str, str]]:
    """The searched values of a configuration ``values`` (e.g. a method's defaults under a recipe).

    Returns ``(point, skipped)``: ``point`` maps each searchable parameter to its raw value (the one
    a trial records; :meth:`Dimension.unresolve`), ``skipped`` each parameter that cannot be part
    of it to the reason (outside the searched range, or a ``None`` default the dimension does not
    translate). A tuner enqueues ``point`` as its first trial; skipped parameters are drawn.
    """
    point: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, dim in _space_of(cls).items():
        raw = dim.unresolve(values.get(name), n_bits)
        if raw is None:
            skipped[name] = f"default {values.get(name)!r} has no searched value"
        elif not dim.contains(raw):
            skipped[name] = f"default {raw!r} is outside the searched range {dim!r}"
        else:
            point[name] = int(raw) if isinstance(dim, IntRange) else raw
    return point, skipped
