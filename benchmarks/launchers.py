"""Deprecated path, kept working for one release.

The old ``benchmarks.launchers`` held both the job of one cell (now :mod:`benchmarks.runner.cell`)
and the launchers (now :mod:`benchmarks.runner.launchers`); this module re-exports both.
"""

import warnings

from benchmarks.runner.cell import *
from benchmarks.runner.launchers import *

warnings.warn(
    "benchmarks.launchers has moved to benchmarks.runner.cell (one cell's job) and "
    "benchmarks.runner.launchers (local and submitit); the old path works in this release only",
    DeprecationWarning,
    stacklevel=2,
)
