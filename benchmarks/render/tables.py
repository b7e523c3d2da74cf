"""Tables, rendered only from stored cell results (never computing a metric).

Tables go to ``<results>/<preset>/tables/<name>.{md,csv,tex}``: our value (mean +- std over seeds
when there are several), the paper's value and the difference side by side; ``N/C`` where a run
did not converge, ``missing`` where a cell has no result. Every table states its preset, the tie
rule and the mAP convention, and, for non-paper presets, which offline data fills which column.

Significance (:func:`significance`): in every table cell group (one column and code length), the
best method's lead over the runner-up is tested with the paired bootstrap of
:func:`benchmarks.stats.compare_cell` on the per-query APs each cell job stored beside its codes
(``query_ap_<all|K>`` in ``<cell_id>.codes.npz``; for older codes files they are computed from
the stored codes through the same engine); a lead that is not significant is marked ``†``.
Reference rows (Sablayrolles et al., ICASSP 2017) are printed below the methods and take no part
in the test.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import stats
from benchmarks.runner.cell import IDENTICAL_CODES_WARN, NOT_APPLICABLE
from benchmarks.runner.experiments import (
    Cell,
    Column,
    Experiment,
    Preset,
    Row,
    experiment_columns,
    make_cell,
    map_name,
    reference_cells,
    reference_rows,
    table_rows,
)
from benchmarks.runner.results import TIE_RULE, ResultStore, atomic_write_bytes

__all__ = [
    "PAPER_NUMBERS_CSV",
    "Entry",
    "GroupTest",
    "TableData",
    "aggregate",
    "build_table",
    "entry_runs",
    "format_markdown",
    "load_paper_numbers",
    "render_table",
    "significance",
]

PAPER_NUMBERS_CSV = Path(__file__).with_name("paper_numbers.csv")
NO_HIT_TEXT = (
    "mAP convention: queries with no relevant item in the top K are dropped from the mean "
    "(HashNet's evaluator; `no_hit=\"drop\"`)"
)


def load_paper_numbers(path: str | Path = PAPER_NUMBERS_CSV) -> dict[tuple, str]:
    """(table, method, dataset, backbone, bits, metric) -> the value as printed (".7014", "N/C")."""
    out: dict[tuple, str] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            key = (row["table"], row["method"], row["dataset"], row["backbone"], int(row["bits"]),
                   row["metric"])
            out[key] = row["value"].strip()
    return out


def _paper_float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------ aggregation
@dataclass
class Entry:
    """One table entry: our aggregate over seeds, the paper's value and the difference."""

    block: str
    column: str
    row: str
    method: str
    cells: list[Cell]
    metric_key: str  # key into record["metrics"]["map_at"]: "all" or "1000"
    paper_key: tuple | None
    mean: float | None = None
    std: float | None = None
    n: int = 0
    n_nc: int = 0
    n_expected: int = 0
    status: str = "missing"  # "ok" | "nc" | "missing" | "n/a" (a reference the data lacks)
    paper: str | None = None
    values: list[float] = field(default_factory=list)
    reason: str = ""  # why a reference row is n/a
    ok_cells: list[Cell] = field(default_factory=list)  # the cells behind ``values``
    #: ids of the seeds' cells whose loss still moved > 1% over the last 10% of epochs
    unconverged_cells: list[str] = field(default_factory=list)
    #: ids of the seeds' cells where most database items share one code (mostly ties)
    collapsed_cells: list[str] = field(default_factory=list)

    @property
    def n_unconverged(self) -> int:
        return len(self.unconverged_cells)

    @property
    def n_collapsed(self) -> int:
        return len(self.collapsed_cells)

    @property
    def short_of_seeds(self) -> bool:
        """A result whose seeds are not all in: fewer finished (converged or N/C) than asked."""
        return self.status in ("ok", "nc") and self.n + self.n_nc < self.n_expected

    @property
    def diff(self) -> float | None:
        p = _paper_float(self.paper)
        if self.mean is None or p is None:
            return None
        return self.mean - p

    def ours_text(self) -> str:
        if self.status in ("missing", "n/a"):
            return self.status
        if self.mean is None:
            return "N/C"
        text = f"{self.mean:.4f}"
        if self.n > 1:
            text += f" ± {self.std:.4f}"
        if self.n_unconverged:
            text += UNCONVERGED_MARK
        if self.n_collapsed:
            text += COLLAPSED_MARK
        if self.n_nc:
            text += f" ({self.n_nc}/{self.n + self.n_nc} N/C)"
        elif self.n < self.n_expected:
            text += f" ({self.n}/{self.n_expected} seeds)"
        return text

    def paper_text(self) -> str:
        if self.paper is None or self.paper == "-":
            return "–"
        p = _paper_float(self.paper)
        return f"{p:.4f}" if p is not None else self.paper

    def diff_text(self) -> str:
        d = self.diff
        return "–" if d is None else f"{d:+.4f}"


def aggregate(entry: Entry, store: ResultStore) -> Entry:
    """Fill an entry from the stored records of its cells (one per seed)."""
    values: list[float] = []
    n_nc = 0
    for cell in entry.cells:
        record = store.load(cell.cell_id)
        if record is None:
            continue
        if record.get("status") == NOT_APPLICABLE:
            entry.status, entry.reason = "n/a", str(record.get("not_applicable_reason", ""))
            continue
        if not record.get("converged", False) or not record.get("metrics"):
            n_nc += 1
            continue
        value = record["metrics"].get("map_at", {}).get(entry.metric_key)
        if value is None or not math.isfinite(value):
            n_nc += 1
            continue
        values.append(float(value))
        entry.ok_cells.append(cell)
        if (record.get("convergence") or {}).get("still_improving"):
            entry.unconverged_cells.append(cell.cell_id)
        if is_collapsed(record):
            entry.collapsed_cells.append(cell.cell_id)
    entry.values = values
    entry.n, entry.n_nc, entry.n_expected = len(values), n_nc, len(entry.cells)
    if values:
        entry.mean = float(np.mean(values))
        entry.std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        entry.status = "ok"
    elif n_nc:
        entry.status = "nc"
    return entry


@dataclass
class GroupTest:
    """The significance test of one cell group (block, column): the methods' entries there."""

    #: "computed" | "incomplete" (a method row missing or short of seeds) | "no_codes" |
    #: "refused" (e.g. different query sets) | "single"
    status: str
    best: str = ""  # row label of the best method
    runner_up: str = ""
    comparison: stats.CellComparison | None = None
    reason: str = ""
    short_rows: list[str] = field(default_factory=list)  # "incomplete": the rows not all in

    @property
    def significant(self) -> bool | None:
        return self.comparison.significant if self.comparison is not None else None


@dataclass
class TableData:
    exp: Experiment
    preset: Preset
    blocks: list[tuple[str, list[str]]]  # (block title, column labels)
    rows: list[Row]
    entries: dict[tuple[str, str, str], Entry]  # (block, column, row label)
    notes: list[str]
    #: reference rows, printed below ``rows`` (their entries are in ``entries`` too)
    reference_rows: list[Row] = field(default_factory=list)
    #: (block, column) -> the test of the best method's lead (see :func:`significance`)
    tests: dict[tuple[str, str], GroupTest] = field(default_factory=dict)


def row_cells(preset: Preset, row: Row, ds, bits: int, seeds, backbone=None) -> list[Cell]:
    return [make_cell(preset, row.method, ds, bits, s, dict(row.hyper), backbone) for s in seeds]


def _column_note(col: Column, preset: Preset, exp: Experiment | None = None) -> str:
    if col.dataset is None and exp is not None and exp.columns != "columns":
        return (f"{col.paper_label}: not available in preset `{preset.name}` (no such protocol "
                "on its data; the cpu and paper presets have it): column left out")
    if col.dataset is None:
        return f"{col.paper_label}: no data in preset `{preset.name}` (column left out)"
    if exp is not None and exp.columns != "columns":
        return (f"{col.paper_label}: {col.dataset.label}, {map_name(col.k)} — "
                f"{col.dataset.note}; the paper has no numbers for this protocol")
    if not col.is_paper:
        return (f"{col.paper_label}: your dataset, {col.dataset.label}, {map_name(col.k)} — "
                f"{col.dataset.note}; no paper numbers")
    if preset.paper_setting:
        return f"{col.paper_label}: {col.dataset.label}, {map_name(col.k)}"
    return (
        f"column {col.paper_label} (paper: {map_name(col.paper_k)}) is filled with "
        f"{col.dataset.label}, {map_name(col.k)} — {col.dataset.note}"
    )


def column_block(col: Column) -> str:
    """A dataset block's title: the paper's dataset and ours, or the user's dataset."""
    if not col.is_paper:
        return f"{col.paper_label} — {col.dataset.label}"
    return f"{col.paper_label} — ours: {col.dataset.label}"


def _paper_key(col: Column, *key: Any) -> tuple | None:
    """The paper_numbers.csv key of an entry; None for a column that is not a paper dataset."""
    return key if col.is_paper else None


def _two_maps(col: Column) -> list[str]:
    """Tables 1 and 2: our cutoff (beside the paper's) and mAP@all; mAP@all alone for a user's
    dataset evaluated at mAP@all."""
    if not col.is_paper:
        return [map_name(col.k)] if col.k is None else [map_name(col.k), "mAP@all"]
    return [f"{map_name(col.k)} (paper {map_name(col.paper_k)})", "mAP@all"]


def build_table(exp: Experiment, preset: Preset, store: ResultStore,
                seeds: Sequence[int] | None = None, paper: dict | None = None) -> TableData:
    """Lay out a table's entries and fill them from the store."""
    seeds = tuple(seeds) if seeds else preset.seeds
    paper = load_paper_numbers() if paper is None else paper
    rows = list(table_rows(exp, preset))
    entries: dict[tuple[str, str, str], Entry] = {}
    blocks: list[tuple[str, list[str]]] = []
    notes: list[str] = []

    def add(block: str, column: str, row: Row, cells: list[Cell], metric_key: str,
            paper_key: tuple | None) -> None:
        e = Entry(block, column, row.label, row.method, cells, metric_key, paper_key)
        e.paper = paper.get(paper_key) if paper_key else None
        entries[(block, column, row.label)] = aggregate(e, store)

    refs = list(reference_rows(exp, preset))
    if exp.layout == "bits_by_dataset":
        for col in experiment_columns(exp, preset):
            notes.append(_column_note(col, preset, exp))
            if col.dataset is None:
                continue
            block = f"{column_block(col)}, {map_name(col.k)}"
            blocks.append((block, [f"{b} bits" for b in preset.bits]))
            for row in rows:
                for b in preset.bits:
                    pk = _paper_key(col, exp.paper_table, row.label, col.paper_key, "alexnet", b,
                                    map_name(col.paper_k))
                    add(block, f"{b} bits", row, row_cells(preset, row, col.dataset, b, seeds),
                        map_key_name(col.k), pk)
            for row in refs:  # one cell per seed, shown under every code length
                cells = reference_cells(exp, preset, row, col.dataset, seeds)
                for b in preset.bits:
                    add(block, f"{b} bits", row, cells, map_key_name(col.k), None)
        if refs and blocks:
            notes.append(_reference_note(entries, refs, store))
    elif exp.layout == "two_maps_by_dataset":
        b = exp.bits[0]
        for col in preset.columns:
            notes.append(_column_note(col, preset))
            if col.dataset is None:
                continue
            block = column_block(col)
            labels = _two_maps(col)
            blocks.append((block, labels))
            for row in rows:
                cells = row_cells(preset, row, col.dataset, b, seeds)
                add(block, labels[0], row, cells, map_key_name(col.k),
                    _paper_key(col, exp.paper_table, row.label, col.paper_key, "alexnet", b,
                               map_name(col.paper_k)))
                if len(labels) > 1:
                    add(block, labels[1], row, cells, "all",
                        _paper_key(col, exp.paper_table, row.label, col.paper_key, "alexnet", b,
                                   "mAP@all"))
    elif exp.layout == "backbones":
        b = exp.bits[0]
        col = preset.table2_column
        notes.append(_column_note(col, preset))
        for paper_bb, our_bb in preset.table2_backbones:
            stands_in = paper_bb != our_bb and col.is_paper
            note = f" (stands in for the paper's {paper_bb})" if stands_in else ""
            block = f"backbone {our_bb}{note}" if col.is_paper else (
                f"{col.paper_label}, backbone {our_bb}")
            if stands_in:
                notes.append(f"backbone `{our_bb}` fills the paper's {paper_bb} column")
            labels = _two_maps(col)
            blocks.append((block, labels))
            for row in rows:
                cells = row_cells(preset, row, col.dataset, b, seeds, backbone=our_bb)
                add(block, labels[0], row, cells, map_key_name(col.k),
                    _paper_key(col, exp.paper_table, row.label, col.paper_key, paper_bb, b,
                               map_name(col.paper_k)))
                if len(labels) > 1:
                    add(block, labels[1], row, cells, "all",
                        _paper_key(col, exp.paper_table, row.label, col.paper_key, paper_bb, b,
                                   "mAP@all"))
    elif exp.layout == "appendix":
        for col in preset.appendix_columns:
            notes.append(_column_note(col, preset))
            if col.dataset is None:
                continue
            bits = preset.appendix_cifar_bits if col.paper_key == "cifar10" else preset.bits
            block = f"{column_block(col)}, {map_name(col.k)}"
            blocks.append((block, [f"{b} bits" for b in bits]))
            for row in rows:
                for b in bits:
                    pk = _paper_key(col, exp.paper_table, row.label, col.paper_key, "alexnet", b,
                                    map_name(col.paper_k))
                    add(block, f"{b} bits", row, row_cells(preset, row, col.dataset, b, seeds),
                        map_key_name(col.k), pk)
        notes.append("the paper's DSDH, TALR, HBMP and GreedyHash values are the original papers' "
                     "numbers; ours are this project's implementations (methods/deep/dsdh.py, "
                     "talr.py, hbmp.py, greedyhash.py), trained under this table's recipe")
    else:
        raise ValueError(f"{exp.name} is not a table layout: {exp.layout}")
    data = TableData(exp, preset, blocks, rows, entries, notes, refs if blocks else [])
    data.tests = significance(data, store)
    return data


def _reference_note(entries: dict[tuple[str, str, str], Entry], refs: list[Row],
                    store: ResultStore) -> str:
    """What the reference rows are, with each column's classifier code length from the records
    and the reason of every reference that does not apply to its data."""
    lengths: dict[str, set[int]] = {}
    skipped: dict[tuple[str, str], str] = {}
    for (block, _col, label), e in entries.items():
        if label not in {r.label for r in refs}:
            continue
        name = block.rsplit(", mAP@", 1)[0]
        if e.status == "n/a":
            skipped[(name, label)] = e.reason
        for cell in e.ok_cells:
            length = ((store.load(cell.cell_id) or {}).get("metrics") or {}).get("code_length")
            if length is not None:
                lengths.setdefault(name, set()).add(int(length))
    c_text = "; ".join(f"{b}: C = {', '.join(map(str, sorted(v)))}" for b, v in lengths.items())
    text = ("reference rows (Sablayrolles et al., How should we evaluate supervised hashing?, "
            "ICASSP 2017) are no hashing methods and take no part in the significance test: "
            "classifier codes = a classifier's prediction on the same inputs (logistic "
            "regression on the shallow methods' features; the deep methods' backbone with a "
            "C-unit head trained with cross-entropy), coded as the predicted class one-hot or "
            "the predicted label set (probability >= 0.5, at least the most probable label), C "
            "bits whatever the column's code length, so one value is shown under every code "
            "length" + (f" ({c_text})" if c_text else "") + "; unhashed features = cosine "
            "ranking of the float features (no hashing), ties by ascending database index")
    for (block, label), reason in skipped.items():
        text += f". {label} in {block}: n/a, {reason}"
    return text


# ------------------------------------------------------------------------------ significance
SIGNIFICANCE_MARK = "†"
SIGNIFICANCE_TEXT = (
    f"{SIGNIFICANCE_MARK} lead over the runner-up not significant: paired bootstrap over queries "
    f"(and seeds), {stats.DEFAULT_RESAMPLES:,} resamples, seed {stats.DEFAULT_SEED}, "
    f"{stats.DEFAULT_CONFIDENCE:.0%} interval (benchmarks/stats.py), on the per-query AP the "
    "cells stored; methods only, reference rows excluded"
)
NO_SIGNIFICANCE_TEXT = "significance: not computed (no stored codes)"


def _run_ap(store: ResultStore, cell: Cell, metric_key: str) -> stats.RunAP | None:
    """The stored per-query AP of one finished cell (None when its codes file is absent).

    Read from ``query_ap_<metric_key>`` in the codes file; a codes file written before cells
    stored them gives them through :func:`benchmarks.stats.run_ap` on its stored codes.
    """
    k = None if metric_key == "all" else int(metric_key)
    label = f"{cell.method} seed {cell.seed}"
    stored = store.load_query_ap(cell.cell_id)  # tracked with the record: shipped results too
    if stored is not None and f"query_ap_{metric_key}" in stored:
        return stats.RunAP(ap=stored[f"query_ap_{metric_key}"], query_ids=stored["query_index"],
                           label=label, k=k, no_hit="drop")
    path = store.codes_path(cell.cell_id)
    if not path.is_file():
        return None
    with np.load(path) as data:
        if "query_index" not in data.files:
            return None
        ids = data["query_index"]
        name = f"query_ap_{metric_key}"
        if name in data.files:
            return stats.RunAP(ap=data[name], query_ids=ids, label=label, k=k, no_hit="drop")
        if "query_codes" not in data.files:
            return None
    c = store.load_codes(cell.cell_id)
    return stats.run_ap(c["query_codes"], c["db_codes"], c["query_labels"], c["db_labels"], ids,
                        k=k, no_hit="drop", label=label)


def entry_runs(store: ResultStore, entry: Entry) -> list[stats.RunAP] | None:
    """The stored per-query APs of an entry's finished cells, one :class:`RunAP` per seed
    (None when a cell has none: no codes file and no ``query_ap.csv``)."""
    loaded = [_run_ap(store, c, entry.metric_key) for c in entry.ok_cells]
    return None if any(r is None for r in loaded) else loaded


def incomplete_entries(entries: Sequence[Entry]) -> list[tuple[str, str]]:
    """The rows of ``entries`` whose runs are not all in: no stored result (``missing``) or fewer
    seeds finished (converged or N/C) than the table asks for, as ``(row, "row (n/N seeds)")``.

    A lead tested while such a row is absent would be a lead over the methods that happened to
    finish first, and a mean over fewer seeds is not comparable with a mean over all of them.
    """
    out = []
    for e in entries:
        if e.status == "missing":
            out.append((e.row, f"{e.row} (missing)"))
        elif e.short_of_seeds:
            out.append((e.row, f"{e.row} ({e.n + e.n_nc}/{e.n_expected} seeds)"))
    return out


def significance(data: TableData, store: ResultStore) -> dict[tuple[str, str], GroupTest]:
    """For every cell group (block, column) with two or more methods with results: the paired
    bootstrap of the best method's lead over the runner-up (:func:`benchmarks.stats.compare_cell`
    over queries, and over seeds when a method has several), from the stored per-query APs.

    A group where a method row is missing or short of seeds is ``"incomplete"`` (no test: see
    :func:`incomplete_entries`); one where a result lacks stored codes is ``"no_codes"``; one
    whose runs were evaluated on different query sets (or that the test refuses otherwise) is
    ``"refused"`` with the reason, never an exception.
    """
    out: dict[tuple[str, str], GroupTest] = {}
    for block, labels in data.blocks:
        for column in labels:
            group = [data.entries[(block, column, r.label)] for r in data.rows]
            short = incomplete_entries(group)
            group = [e for e in group if e.status == "ok"]
            if short and len(group) >= 2:
                out[(block, column)] = GroupTest(
                    "incomplete", reason="incomplete: " + ", ".join(text for _, text in short),
                    short_rows=[row for row, _ in short])
                continue
            if len(group) < 2:
                out[(block, column)] = GroupTest("single")
                continue
            runs: dict[str, list[stats.RunAP]] = {}
            for e in group:
                loaded = entry_runs(store, e)
                if loaded is None:
                    runs = {}
                    break
                runs[e.row] = loaded
            if not runs:
                out[(block, column)] = GroupTest("no_codes")
                continue
            try:
                comp = stats.compare_cell(runs)
            except ValueError as exc:
                out[(block, column)] = GroupTest("refused", reason=str(exc))
                continue
            out[(block, column)] = GroupTest("computed", comp.best, comp.runner_up or "", comp)
    return out


def _significance_lines(data: TableData) -> list[str]:
    """The table header's statement about the significance marks."""
    tests = [t for t in data.tests.values() if t.status != "single"]
    computed = [t for t in tests if t.status == "computed"]
    if not tests:
        return []
    if not computed:
        if all(t.status == "no_codes" for t in tests):
            return [NO_SIGNIFICANCE_TEXT]
        return [f"significance: not computed ({_not_computed(data)})"]
    lines = [SIGNIFICANCE_TEXT + "."]
    if len(computed) < len(tests):
        lines.append(f"significance not computed for {len(tests) - len(computed)} of "
                     f"{len(tests)} cells ({_not_computed(data)}); their best value is unmarked")
    return lines


def _not_computed(data: TableData) -> str:
    parts = []
    n_codes = sum(t.status == "no_codes" for t in data.tests.values())
    if n_codes:
        parts.append(f"{n_codes} without stored codes")
    short = [t for t in data.tests.values() if t.status == "incomplete"]
    if short:
        rows = dict.fromkeys(row for t in short for row in t.short_rows)
        parts.append(f"{len(short)} incomplete, a method row missing or short of seeds: "
                     f"{', '.join(rows)}")
    for (block, column), t in data.tests.items():
        if t.status == "refused":
            parts.append(f"{block}, {column}: refused: {t.reason}")
    return "; ".join(parts)


def _entry_text(data: TableData, key: tuple[str, str, str]) -> str:
    """An entry's value, with the mark when it is a group's best and its lead is not
    significant."""
    e = data.entries[key]
    t = data.tests.get((key[0], key[1]))
    text = e.ours_text()
    if t is not None and t.status == "computed" and t.best == key[2] and not t.significant:
        text += f" {SIGNIFICANCE_MARK}"
    return text


def map_key_name(k: int | None) -> str:
    return "all" if k is None else str(k)


# ------------------------------------------------------------------------------ table formats
#: after a value whose run had not converged (loss still moving at the end of training)
UNCONVERGED_MARK = "*"
#: after a value whose codes collapsed: most database items share one code, so the ranking is
#: mostly ties and its mAP is close to a random ranking's, whatever the method could do
COLLAPSED_MARK = "‡"


def is_collapsed(record: dict[str, Any]) -> bool:
    """More than ``IDENTICAL_CODES_WARN`` of the database items share one code (the share the
    runner warns about when it stores the cell)."""
    share = (record.get("code_stats") or {}).get("largest_code_share")
    return share is not None and share > IDENTICAL_CODES_WARN


#: the recipe a row shows under --tune when its method declares no search space
NOTHING_TO_TUNE = "defaults (no search space: nothing to tune)"


def recipe_lines(data: TableData, store: ResultStore) -> list[str]:
    """Which training recipe each row used, the tuned values (and where they were tuned), the
    published-recipe fields that could not be followed, and the not-converged mark."""
    recipes: dict[str, set[str]] = {}
    tuned: dict[str, dict[str, Any]] = {}
    gaps: dict[str, dict[str, str]] = {}
    unconverged: set[str] = set()  # cell ids: a cell under several columns counts once
    collapsed: set[str] = set()
    for e in data.entries.values():
        unconverged.update(e.unconverged_cells)
        collapsed.update(e.collapsed_cells)
        for c in e.cells:
            r = store.load(c.cell_id)
            if not r:
                continue
            kind = r.get("method", {}).get("kind")
            recipe = r.get("recipe", "shared")
            if recipe == "tuned" and not (r.get("tuning") or {}).get("study"):
                recipe = NOTHING_TO_TUNE  # e.g. LSH under --tune: no search space
            recipes.setdefault(e.row, set()).add(
                recipe if kind == "deep" or recipe in ("tuned", NOTHING_TO_TUNE) else "defaults")
            if r.get("tuning") and r["tuning"].get("study"):
                t = r["tuning"]
                pinned = t.get("pinned") or {}
                tuned.setdefault(f"{e.row} [{e.block.split(' — ')[-1]}]", {
                    "values": {**(t.get("best_raw") or {}), **pinned}, "pinned": set(pinned),
                    "bits": t.get("bits"), "n": t.get("n_trials"), "val": t.get("best_val_map")})
            if r.get("recipe_gaps"):
                gaps.setdefault(e.row, r["recipe_gaps"])
    lines = []
    if recipes:
        by = {}
        for row, names in recipes.items():
            by.setdefault(", ".join(sorted(names)), []).append(row)
        lines.append("Recipes (deep rows: shared = the preset's one recipe, published = each "
                     "method's official recipe, tuned = --tune; shallow rows: their defaults "
                     "unless tuned): " + "; ".join(f"{k}: {', '.join(v)}"
                                                  for k, v in sorted(by.items())) + ".")
    if tuned:
        any_t = next(iter(tuned.values()))
        lines.append(f"Tuned on validation queries drawn from the training split (never the "
                     f"query set or database), {any_t['n']} trials per method and column, at "
                     f"{any_t['bits']} bits, reused at the other lengths: "
                     + "; ".join(f"{k}: {_tuned_text(t)}" for k, t in sorted(tuned.items()))
                     + ".")
    for row, g in sorted(gaps.items()):
        lines.append(f"{row}: published recipe not fully followed: "
                     + "; ".join(f"{k}: {v}" for k, v in g.items()) + ".")
    if unconverged:
        lines.append(f"{UNCONVERGED_MARK} not converged: the loss still moved by more than 1% "
                     "over the last 10% of the epochs and early stopping did not end the run "
                     f"({len(unconverged)} cell(s)).")
    if collapsed:
        lines.append(f"{COLLAPSED_MARK} collapsed codes: more than "
                     f"{IDENTICAL_CODES_WARN:.0%} of the database items share one code, so the "
                     "ranking is mostly ties and the value is close to a random ranking's "
                     f"({len(collapsed)} cell(s)).")
    return lines


def _tuned_text(t: dict[str, Any]) -> str:
    """``lr=0.01, alpha=0 (pinned, not tuned) (val mAP 0.79)``: one row's values under --tune."""
    def value(p: str, v: Any) -> str:
        text = f"{p}={v:.4g}" if isinstance(v, float) else f"{p}={v}"
        return text + (" (pinned, not tuned)" if p in t["pinned"] else "")

    text = ", ".join(value(p, v) for p, v in (t["values"] or {}).items())
    return text + (f" (val mAP {t['val']:.4f})" if t["val"] is not None else "")


def run_lines(data: TableData, store: ResultStore) -> list[str]:
    """The header lines every table starts with: preset, ranking and mAP convention, seeds, and
    the commits and times of the stored results."""
    commits, times = set(), []
    for e in data.entries.values():
        for c in e.cells:
            r = store.load(c.cell_id)
            if r:
                commits.add(r.get("environment", {}).get("git_commit", "unknown"))
                times.append(r.get("utc_time", ""))
    seeds = sorted({c.seed for e in data.entries.values() for c in e.cells}) or list(
        data.preset.seeds)
    lines = [
        data.preset.header(),
        f"Ranking: {TIE_RULE}. {NO_HIT_TEXT}. Relevance: sharing at least one label.",
        (f"Seeds: {', '.join(map(str, seeds))} (mean ± sample std over seeds when several). "
         "N/C: did not converge (non-finite loss or the method's own convergence check); "
         "missing: no stored result (not run, not implemented, or data not on disk)."),
    ]
    if commits:
        span = f"{min(times)} – {max(times)}" if times else ""
        lines.append(f"Results: git {', '.join(sorted(commits))}; computed {span} UTC.")
    return lines


def block_has_paper(data: TableData, block: str, labels: Sequence[str]) -> bool:
    """Whether any entry of ``block`` has a paper number. A block without one (e.g. a protocol
    the paper never ran) is rendered with our column only, not with empty paper and Δ columns."""
    return any(data.entries[(block, lab, row.label)].paper is not None
               for lab in labels for row in data.rows + data.reference_rows)


def _provenance(data: TableData, store: ResultStore) -> list[str]:
    lines = run_lines(data, store)
    lines += _significance_lines(data)
    lines += recipe_lines(data, store)
    with_paper = [block_has_paper(data, block, labels) for block, labels in data.blocks]
    if all(with_paper):
        lines.append("Each entry: ours | paper | ours − paper.")
    elif any(with_paper):
        lines.append("Each entry: ours | paper | ours − paper; blocks the paper has no numbers "
                     "for show ours only.")
    else:
        lines.append("Each entry: ours (the paper has no numbers for these protocols).")
    return lines


def format_markdown(data: TableData, store: ResultStore) -> str:
    out = io.StringIO()
    out.write(f"## {data.exp.title}\n\n")
    for line in _provenance(data, store):
        out.write(f"- {line}\n")
    for note in data.notes:
        out.write(f"- {note}\n")
    for block, labels in data.blocks:
        out.write(f"\n### {block}\n\n")
        paper = block_has_paper(data, block, labels)
        header = ["method"]
        for lab in labels:
            header += [f"{lab} ours", "paper", "Δ"] if paper else [lab]
        out.write("| " + " | ".join(header) + " |\n")
        out.write("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|\n")
        for row in data.rows + data.reference_rows:
            cells = [row.label]
            for lab in labels:
                e = data.entries[(block, lab, row.label)]
                cells.append(_entry_text(data, (block, lab, row.label)))
                if paper:
                    cells += [e.paper_text(), e.diff_text()]
            out.write("| " + " | ".join(cells) + " |\n")
    return out.getvalue()


CSV_FIELDS = [
    "table", "preset", "block", "column", "row", "method", "metric", "ours_mean", "ours_std",
    "n_seeds", "n_nc", "n_unconverged", "n_collapsed", "status", "paper", "diff",
    "paper_dataset", "our_dataset", "bits", "backbone", "cell_ids", "reference", "best", "runner_up", "lead", "lead_low", "lead_high",
    "lead_significant",
]


def _lead_fields(data: TableData, block: str, column: str, row: str) -> dict[str, Any]:
    """CSV: whether the row is its group's best method and, on that row, the bootstrap of its
    lead (``lead_significant`` yes/no; ``not computed: <why>`` where no test ran)."""
    t = data.tests.get((block, column))
    out = {"best": "", "runner_up": "", "lead": "", "lead_low": "", "lead_high": "",
           "lead_significant": ""}
    if t is None or t.status == "single" or row not in {r.label for r in data.rows}:
        return out
    if t.status != "computed":
        out["lead_significant"] = ("not computed: no stored codes" if t.status == "no_codes"
                                   else f"not computed: {t.reason}")
        return out
    if data.entries[(block, column, row)].status != "ok":
        return out  # not in the test: no result
    out["best"] = "yes" if t.best == row else "no"
    if t.best == row and t.comparison.test is not None:
        test = t.comparison.test
        out.update(runner_up=t.runner_up, lead=repr(test.difference), lead_low=repr(test.low),
                   lead_high=repr(test.high), lead_significant="yes" if t.significant else "no")
    return out


def format_csv(data: TableData) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    refs = {r.label for r in data.reference_rows}
    for (block, column, _), e in data.entries.items():
        c0 = e.cells[0]
        w.writerow({
            "table": data.exp.name, "preset": data.preset.name, "block": block, "column": column,
            "row": e.row, "method": e.method,
            "metric": "mAP@" + e.metric_key,
            "ours_mean": "" if e.mean is None else repr(e.mean),
            "ours_std": "" if e.std is None else repr(e.std),
            "n_seeds": e.n, "n_nc": e.n_nc,
            "n_unconverged": e.n_unconverged, "n_collapsed": e.n_collapsed,
            "status": {"ok": "ok", "nc": "N/C", "missing": "missing", "n/a": "n/a"}[e.status],
            "paper": e.paper if e.paper is not None else "",
            "diff": "" if e.diff is None else repr(e.diff),
            "paper_dataset": e.paper_key[2] if e.paper_key else "",
            "our_dataset": c0.dataset.key, "bits": c0.bits, "backbone": c0.backbone,
            "cell_ids": ";".join(c.cell_id for c in e.cells),
            "reference": "yes" if e.row in refs else "",
            **_lead_fields(data, block, column, e.row),
        })
    return out.getvalue()


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("—", "---"), ("–", "--"),
                 ("−", "-"), ("†", r"$^\dagger$"), ("‡", r"$^\ddagger$")):
        text = text.replace(a, b)
    return text


def format_latex(data: TableData, store: ResultStore) -> str:
    out = io.StringIO()
    out.write(f"% {data.exp.title}\n")
    for line in _provenance(data, store) + data.notes:
        out.write(f"% {line}\n")
    out.write("% requires \\usepackage{booktabs}\n")
    for block, labels in data.blocks:
        paper = block_has_paper(data, block, labels)
        width = 3 if paper else 1
        n = 1 + width * len(labels)
        out.write(f"\\begin{{tabular}}{{l{'r' * (n - 1)}}}\n\\toprule\n")
        out.write(f"\\multicolumn{{{n}}}{{l}}{{{_tex_escape(block)}}} \\\\\n")
        head = ["method"] + [
            f"\\multicolumn{{3}}{{c}}{{{_tex_escape(lab)}}}" if paper else _tex_escape(lab)
            for lab in labels
        ]
        out.write(" & ".join(head) + " \\\\\n")
        if paper:
            out.write(" & ".join([""] + ["ours & paper & $\\Delta$"] * len(labels))
                      + " \\\\\n")
        out.write("\\midrule\n")
        for i, row in enumerate(data.rows + data.reference_rows):
            if i == len(data.rows):
                out.write("\\midrule\n")
            cells = [_tex_escape(row.label)]
            for lab in labels:
                e = data.entries[(block, lab, row.label)]
                cells.append(_tex_escape(_entry_text(data, (block, lab, row.label))))
                if paper:
                    cells += [_tex_escape(e.paper_text()), _tex_escape(e.diff_text())]
            out.write(" & ".join(cells) + " \\\\\n")
        out.write("\\bottomrule\n\\end{tabular}\n\n")
    return out.getvalue()


def render_table(exp: Experiment, preset: Preset, store: ResultStore,
                 seeds: Sequence[int] | None = None) -> dict[str, Path]:
    """Write ``<name>.md``, ``.csv`` and ``.tex`` under the preset's tables folder."""
    data = build_table(exp, preset, store, seeds)
    return write_outputs(store, exp.name, {"md": format_markdown(data, store),
                                           "csv": format_csv(data),
                                           "tex": format_latex(data, store)})


def write_outputs(store: ResultStore, name: str, texts: dict[str, str]) -> dict[str, Path]:
    """Write each ``{ext: text}`` as ``<tables>/<name>.<ext>`` (atomically); return the paths."""
    paths = {}
    for ext, text in texts.items():
        path = store.tables_dir / f"{name}.{ext}"
        atomic_write_bytes(path, text.encode())
        paths[ext] = path
    return paths
