"""Rendering: tables (:mod:`.tables`) and figures (:mod:`.figures`), read from stored results only.

Nothing here trains a model or computes a metric: every number drawn or printed comes from a cell
record under ``results/<preset>/cells/``.
"""

from benchmarks.render.figures import (
    FIGURE_FILES,
    FIGURE_STYLES,
    build_figure,
    missing_inputs,
    render_figure,
)
from benchmarks.render.tables import (
    PAPER_NUMBERS_CSV,
    Entry,
    TableData,
    aggregate,
    build_table,
    format_markdown,
    load_paper_numbers,
    render_table,
)

__all__ = [
    "FIGURE_FILES",
    "FIGURE_STYLES",
    "PAPER_NUMBERS_CSV",
    "Entry",
    "TableData",
    "aggregate",
    "build_figure",
    "build_table",
    "format_markdown",
    "load_paper_numbers",
    "missing_inputs",
    "render_figure",
    "render_table",
]
