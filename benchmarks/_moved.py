"""The module paths ``benchmarks/`` had before it was split by role, kept working for one release.

Each old module (``benchmarks/experiments.py``, ``benchmarks/bench_eval.py``, ...) is a thin alias:
imported, it *is* the new module (``sys.modules`` points the old name at it, so monkeypatching and
private names behave as before) and warns with :class:`DeprecationWarning`; run with ``python -m``,
it runs the new module's ``main`` and prints a one-line deprecation note first.
"""

from __future__ import annotations

import importlib
import runpy
import sys
import warnings

#: old module path -> new module path
MOVED = {
    "benchmarks.experiments": "benchmarks.runner.experiments",
    "benchmarks.results": "benchmarks.runner.results",
    "benchmarks.user_data": "benchmarks.runner.user_data",
    "benchmarks.baselines_comparison": "benchmarks.evidence.baselines_comparison",
    "benchmarks.deep_comparison": "benchmarks.evidence.deep_comparison",
    "benchmarks.shallow_comparison": "benchmarks.evidence.shallow_comparison",
    "benchmarks.bench_eval": "benchmarks.speed.bench_eval",
    "benchmarks.bench_shallow": "benchmarks.speed.bench_shallow",
    "benchmarks.bench_trainer": "benchmarks.speed.bench_trainer",
}


def alias(module_name: str, old: str) -> None:
    """Make the old module ``old`` (whose ``__name__`` is ``module_name``) stand for its new one."""
    new = MOVED[old]
    note = f"{old} has moved to {new}; the old path works in this release only"
    if module_name == "__main__":  # python -m <old>
        print(f"note: {note} (run: python -m {new})", file=sys.stderr)
        runpy.run_module(new, run_name="__main__", alter_sys=True)
        return
    warnings.warn(note, DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
