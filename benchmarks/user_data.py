"""Deprecated path: this module is now :mod:`benchmarks.runner.user_data` (kept working for one release)."""

from benchmarks._moved import alias

alias(__name__, "benchmarks.user_data")
