"""Deprecated path: this module is now :mod:`benchmarks.speed.bench_trainer` (kept working for one release)."""

from benchmarks._moved import alias

alias(__name__, "benchmarks.bench_trainer")
