"""Deprecated path: this module is now :mod:`benchmarks.runner.results` (kept working for one release)."""

from benchmarks._moved import alias

alias(__name__, "benchmarks.results")
