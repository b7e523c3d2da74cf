"""Rendering: tables (:mod:`.tables`), the claims' verdicts (:mod:`.claims`) and figures
(:mod:`.figures`), read from stored results only.

Nothing here trains a model or computes a metric: every number drawn or printed comes from a cell
record under ``results/<preset>/cells/``, or for Figs. 10/11 from its stored codes and labels
(ranked with ``benchmarks.metrics.retrieve``; Jaccard similarity of the stored label sets).
"""

from benchmarks.render.claims import render_claims
from benchmarks.render.figures import (
    FIGURE_FILES,
    FIGURE_STYLES,
    RetrievalExamples,
    build_figure,
    label_jaccard,
    missing_inputs,
    render_figure,
    retrieval_examples,
    retrieval_queries,
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
    "RetrievalExamples",
    "TableData",
    "aggregate",
    "build_figure",
    "build_table",
    "format_markdown",
    "label_jaccard",
    "load_paper_numbers",
    "missing_inputs",
    "render_claims",
    "render_figure",
    "render_table",
    "retrieval_examples",
    "retrieval_queries",
]
