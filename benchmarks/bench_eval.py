"""Deprecated path: this module is now :mod:`benchmarks.speed.bench_eval` (kept working for one release)."""

from benchmarks._moved import alias

alias(__name__, "benchmarks.bench_eval")
