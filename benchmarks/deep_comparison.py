"""Deprecated path: this module is now :mod:`benchmarks.evidence.deep_comparison` (kept working for one release)."""

from benchmarks._moved import alias

alias(__name__, "benchmarks.deep_comparison")
