"""Deprecated path: this module is now :mod:`benchmarks.evidence.baselines_comparison` (kept working for one release)."""

from benchmarks._moved import alias

alias(__name__, "benchmarks.baselines_comparison")
