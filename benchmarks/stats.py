"""Significance of a difference in mAP: a paired bootstrap over queries (and over seeds).

Two methods evaluated on the same queries give two per-query AP vectors. The table shows the
difference of their means; this module says how much of that difference survives another draw
of queries and, with several seeds, another draw of training runs.

What is resampled (``paired_bootstrap``), ``n_resamples`` times (default 10,000) from
``numpy.random.default_rng(seed)`` (default seed 0):

* **queries**: n of the n kept queries, uniformly with replacement. The draw is the same for both
  methods (the test is paired: a hard query is hard for both) and for every seed of a method.
* **seeds**, when a method has several runs: each method's S runs are drawn S times with
  replacement, independently for the two methods (seed s of one method and seed s of the other
  are unrelated training runs, so seeds are not paired). Seeds are drawn first, then queries
  (a two-level bootstrap); with one run per method only queries are resampled.

The statistic of a resample is (mean over the drawn runs of A of their mean AP over the drawn
queries) minus the same for B; the observed difference is that statistic on the data itself.
The interval is the percentile interval of the resampled statistics at (1 - confidence) / 2 and
(1 + confidence) / 2 (``numpy.quantile``, linear interpolation), 95 % by default. A difference is
called significant when the interval excludes 0.

Queries and the ``no_hit`` rule: per-query AP comes from :func:`benchmarks.metrics.per_query_ap`
(NaN = a query the rule leaves out of the mean). The test needs one query set for every run, so a
query left out for any run of either method is left out for all of them (``n_dropped`` counts
them). Under ``no_hit="zero"`` no query is left out; under ``"zero_skip_absent"`` the left-out
queries are those with no relevant item in the database, the same for every run, so the
observed difference equals the difference of the table's mAP values; under ``"drop"`` it can
differ from it when the methods miss (no relevant item in the top k) on different queries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks import metrics

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "BootstrapResult",
    "CellComparison",
    "RunAP",
    "compare_cell",
    "paired_bootstrap",
    "run_ap",
]

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
DEFAULT_CONFIDENCE = 0.95
_CHUNK = 256  # resamples drawn at a time (bounded memory); results do not depend on it


@dataclass(frozen=True, eq=False)
class RunAP:
    """Per-query AP of one run (one method, one seed) on one query set.

    ``ap``: one value a query after the ``no_hit`` rule (NaN = left out of the mean), as
    :func:`benchmarks.metrics.per_query_ap` returns it. ``query_ids``: the queries' identities in
    the same order (e.g. ``Benchmark.split.query``, indices into the dataset). ``label`` names the
    run in error messages (e.g. ``"dpah seed 1"``). ``k`` and ``no_hit`` record the cut-off and
    rule; runs compared together must agree on both.
    """

    ap: np.ndarray
    query_ids: np.ndarray
    label: str = "run"
    k: int | None = None
    no_hit: str = "drop"

    def __post_init__(self) -> None:
        ap = np.asarray(self.ap, dtype=np.float64)
        ids = np.asarray(self.query_ids)
        if ap.ndim != 1 or ap.size == 0:
            raise ValueError(f"{self.label}: ap must be a non-empty 1-D per-query array, got "
                             f"shape {ap.shape}")
        if ids.shape != ap.shape:
            raise ValueError(f"{self.label}: {ap.size} AP values but query_ids has shape "
                             f"{ids.shape}")
        if np.unique(ids).size != ids.size:
            raise ValueError(f"{self.label}: query_ids has repeated queries")
        bad = ~np.isnan(ap) & ((ap < 0) | (ap > 1))
        if bad.any():
            raise ValueError(f"{self.label}: AP values must lie in [0, 1] (or be NaN), found "
                             f"{ap[bad][:3]}")
        if self.no_hit not in metrics.NO_HIT_RULES:
            raise ValueError(f"{self.label}: no_hit must be one of {metrics.NO_HIT_RULES}, got "
                             f"{self.no_hit!r}")
        object.__setattr__(self, "ap", ap)
        object.__setattr__(self, "query_ids", ids)

    @property
    def map(self) -> float:
        """The run's mAP as the engine reports it (mean of the non-NaN values; 0.0 if none)."""
        return metrics._mean_kept(self.ap)


def run_ap(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
           query_ids: Any = None, *, k: int | None = None, no_hit: str = "drop",
           label: str = "run") -> RunAP:
    """:class:`RunAP` of one run from its codes and labels, through
    :func:`benchmarks.metrics.per_query_ap` (``query_ids`` None: positions 0..Nq-1)."""
    ap = metrics.per_query_ap(query_codes, db_codes, query_labels, db_labels, k, no_hit)
    ids = np.arange(ap.size) if query_ids is None else query_ids
    return RunAP(ap=ap, query_ids=ids, label=label, k=k, no_hit=no_hit)


@dataclass(frozen=True)
class BootstrapResult:
    """Observed mAP difference A - B, its percentile interval and how it was computed."""

    difference: float
    low: float
    high: float
    map_a: float  # mean over A's runs of their mAP on the kept queries
    map_b: float
    confidence: float
    n_resamples: int
    seed: int
    n_queries: int  # kept queries
    n_dropped: int  # queries left out for some run (see the module docstring)
    n_runs_a: int
    n_runs_b: int
    resampled: str  # "queries" or "seeds, then queries"

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return bool(self.low > 0 or self.high < 0)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["significant"] = self.significant
        return d


def _runs(x: RunAP | Sequence[RunAP], name: str) -> list[RunAP]:
    runs = [x] if isinstance(x, RunAP) else list(x)
    if not runs:
        raise ValueError(f"{name} has no runs")
    for r in runs:
        if not isinstance(r, RunAP):
            raise TypeError(f"{name} must be a RunAP or a sequence of RunAP, got {type(r)}")
    return runs


def _check_same_queries(runs: list[RunAP]) -> None:
    ref = runs[0]
    for r in runs[1:]:
        if not np.array_equal(r.query_ids, ref.query_ids):
            n_common = np.intersect1d(r.query_ids, ref.query_ids).size
            raise ValueError(
                f"runs {ref.label!r} and {r.label!r} were evaluated on different query sets "
                f"({ref.query_ids.size} and {r.query_ids.size} queries, {n_common} in common, or "
                "in another order): a paired test needs the same queries")
        if (r.k, r.no_hit) != (ref.k, ref.no_hit):
            raise ValueError(f"runs {ref.label!r} and {r.label!r} use different conventions: "
                             f"k={ref.k}, no_hit={ref.no_hit!r} vs k={r.k}, no_hit={r.no_hit!r}")


def _check_settings(n_resamples: int, seed: int, confidence: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) \
            or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def paired_bootstrap(runs_a: RunAP | Sequence[RunAP], runs_b: RunAP | Sequence[RunAP], *,
                     n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                     confidence: float = DEFAULT_CONFIDENCE) -> BootstrapResult:
    """Paired bootstrap of mAP(A) - mAP(B) over queries, and over seeds when a method has
    several runs (module docstring: what is resampled, how left-out queries are handled).

    Every run must have the same ``query_ids`` (same queries, same order), ``k`` and
    ``no_hit``; otherwise a ValueError names the two runs that differ.
    """
    _check_settings(n_resamples, seed, confidence)
    ra, rb = _runs(runs_a, "runs_a"), _runs(runs_b, "runs_b")
    _check_same_queries(ra + rb)
    A = np.stack([r.ap for r in ra])  # (S_a, n)
    B = np.stack([r.ap for r in rb])
    keep = ~(np.isnan(A).any(0) | np.isnan(B).any(0))
    n = int(keep.sum())
    if n == 0:
        raise ValueError(f"no query is kept by every run of {ra[0].label!r} and {rb[0].label!r} "
                         f"under no_hit={ra[0].no_hit!r}: nothing to compare")
    A, B = A[:, keep], B[:, keep]
    sa, sb = len(ra), len(rb)
    rng = np.random.default_rng(int(seed))
    stats = np.empty(int(n_resamples))
    for c0 in range(0, int(n_resamples), _CHUNK):
        m = min(_CHUNK, int(n_resamples) - c0)
        ca = _counts(rng, m, sa) if sa > 1 else np.ones((m, 1))
        cb = _counts(rng, m, sb) if sb > 1 else np.ones((m, 1))
        w = _counts(rng, m, n)  # (m, n) times each query is drawn
        # mean over drawn seeds of (mean over drawn queries): (w @ A.T) is (m, S_a)
        stat_a = ((w @ A.T) * ca).sum(1) / (n * sa)
        stat_b = ((w @ B.T) * cb).sum(1) / (n * sb)
        stats[c0:c0 + m] = stat_a - stat_b
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    map_a, map_b = float(A.mean(1).mean()), float(B.mean(1).mean())
    return BootstrapResult(
        difference=map_a - map_b, low=float(low), high=float(high), map_a=map_a, map_b=map_b,
        confidence=float(confidence), n_resamples=int(n_resamples), seed=int(seed),
        n_queries=n, n_dropped=int((~keep).sum()), n_runs_a=sa, n_runs_b=sb,
        resampled="seeds, then queries" if max(sa, sb) > 1 else "queries")


def _counts(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    """(m, n) float counts: row j = how often each of n items is drawn in n draws with
    replacement (resample j)."""
    idx = rng.integers(0, n, size=(m, n))
    flat = idx + (np.arange(m) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=m * n).reshape(m, n).astype(np.float64)


@dataclass(frozen=True)
class CellComparison:
    """The best method of a table cell, the runner-up, and whether the lead is significant.

    ``maps``: each method's table value (mean over its runs of the engine's mAP). ``test``: the
    paired bootstrap best - runner-up (None with fewer than two methods); ``significant`` is
    True when its interval lies above 0, None without a runner-up.
    """

    best: str
    runner_up: str | None
    maps: dict[str, float]
    test: BootstrapResult | None

    @property
    def significant(self) -> bool | None:
        if self.test is None:
            return None
        return bool(self.test.low > 0)


def compare_cell(results: Mapping[str, RunAP | Sequence[RunAP]], *,
                 n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                 confidence: float = DEFAULT_CONFIDENCE) -> CellComparison:
    """Best and runner-up of one table cell ``{method: run or per-seed runs}`` by their table
    mAP (ties: the method listed first wins), and the paired bootstrap of the lead.

    The lead counts as significant only when the interval of best - runner-up lies above 0
    (under ``no_hit="drop"`` the bootstrap's common-query difference can disagree in sign with
    the table's; then it is not significant).
    """
    if not results:
        raise ValueError("compare_cell needs at least one method")
    runs = {name: _runs(r, f"method {name!r}") for name, r in results.items()}
    maps = {name: float(np.mean([r.map for r in rs])) for name, rs in runs.items()}
    order = sorted(maps, key=lambda name: -maps[name])  # stable: first listed wins ties
    if len(order) == 1:
        return CellComparison(best=order[0], runner_up=None, maps=maps, test=None)
    best, second = order[0], order[1]
    test = paired_bootstrap(runs[best], runs[second], n_resamples=n_resamples, seed=seed,
                            confidence=confidence)
    return CellComparison(best=best, runner_up=second, maps=maps, test=test)
