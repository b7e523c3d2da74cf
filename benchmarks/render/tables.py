"""Tables, rendered only from stored cell results (never computing a metric).

Tables go to ``<results>/<preset>/tables/<name>.{md,csv,tex}``: our value (mean +- std over seeds
when there are several), the paper's value and the difference side by side; ``N/C`` where a run
did not converge, ``missing`` where a cell has no result. Every table states its preset, the tie
rule and the mAP convention, and, for non-paper presets, which offline data fills which column.
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

from benchmarks.runner.experiments import (
    Cell,
    Column,
    Experiment,
    Preset,
    Row,
    make_cell,
    map_name,
    table_rows,
)
from benchmarks.runner.results import TIE_RULE, ResultStore, atomic_write_bytes

__all__ = [
    "PAPER_NUMBERS_CSV",
    "Entry",
    "TableData",
    "aggregate",
    "build_table",
    "format_markdown",
    "load_paper_numbers",
    "render_table",
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
    status: str = "missing"  # "ok" | "nc" | "missing"
    paper: str | None = None
    values: list[float] = field(default_factory=list)

    @property
    def diff(self) -> float | None:
        p = _paper_float(self.paper)
        if self.mean is None or p is None:
            return None
        return self.mean - p

    def ours_text(self) -> str:
        if self.status == "missing":
            return "missing"
        if self.mean is None:
            return "N/C"
        text = f"{self.mean:.4f}"
        if self.n > 1:
            text += f" ± {self.std:.4f}"
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
        if not record.get("converged", False) or not record.get("metrics"):
            n_nc += 1
            continue
        value = record["metrics"].get("map_at", {}).get(entry.metric_key)
        if value is None or not math.isfinite(value):
            n_nc += 1
            continue
        values.append(float(value))
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
class TableData:
    exp: Experiment
    preset: Preset
    blocks: list[tuple[str, list[str]]]  # (block title, column labels)
    rows: list[Row]
    entries: dict[tuple[str, str, str], Entry]  # (block, column, row label)
    notes: list[str]


def _cells(preset: Preset, row: Row, ds, bits: int, seeds, backbone=None) -> list[Cell]:
    return [make_cell(preset, row.method, ds, bits, s, dict(row.hyper), backbone) for s in seeds]


def _column_note(col: Column, preset: Preset) -> str:
    if col.dataset is None:
        return f"{col.paper_label}: no data in preset `{preset.name}` (column left out)"
    if not col.is_paper:
        return (f"{col.paper_label}: your dataset, {col.dataset.label}, {map_name(col.k)} — "
                f"{col.dataset.note}; no paper numbers")
    if preset.paper_setting:
        return f"{col.paper_label}: {col.dataset.label}, {map_name(col.k)}"
    return (
        f"column {col.paper_label} (paper: {map_name(col.paper_k)}) is filled with "
        f"{col.dataset.label}, {map_name(col.k)} — {col.dataset.note}"
    )


def _block(col: Column) -> str:
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

    if exp.layout == "bits_by_dataset":
        for col in preset.columns:
            notes.append(_column_note(col, preset))
            if col.dataset is None:
                continue
            block = f"{_block(col)}, {map_name(col.k)}"
            blocks.append((block, [f"{b} bits" for b in preset.bits]))
            for row in rows:
                for b in preset.bits:
                    pk = _paper_key(col, exp.paper_table, row.label, col.paper_key, "alexnet", b,
                                    map_name(col.paper_k))
                    add(block, f"{b} bits", row, _cells(preset, row, col.dataset, b, seeds),
                        _mkey(col.k), pk)
    elif exp.layout == "two_maps_by_dataset":
        b = exp.bits[0]
        for col in preset.columns:
            notes.append(_column_note(col, preset))
            if col.dataset is None:
                continue
            block = _block(col)
            labels = _two_maps(col)
            blocks.append((block, labels))
            for row in rows:
                cells = _cells(preset, row, col.dataset, b, seeds)
                add(block, labels[0], row, cells, _mkey(col.k),
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
                cells = _cells(preset, row, col.dataset, b, seeds, backbone=our_bb)
                add(block, labels[0], row, cells, _mkey(col.k),
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
            block = f"{_block(col)}, {map_name(col.k)}"
            blocks.append((block, [f"{b} bits" for b in bits]))
            for row in rows:
                for b in bits:
                    pk = _paper_key(col, exp.paper_table, row.label, col.paper_key, "alexnet", b,
                                    map_name(col.paper_k))
                    add(block, f"{b} bits", row, _cells(preset, row, col.dataset, b, seeds),
                        _mkey(col.k), pk)
        notes.append("DSDH, TALR, HBMP and GreedyHash rows of the paper are the original papers' "
                     "numbers; they are `missing` here unless those methods are registered")
    else:
        raise ValueError(f"{exp.name} is not a table layout: {exp.layout}")
    return TableData(exp, preset, blocks, rows, entries, notes)


def _mkey(k: int | None) -> str:
    return "all" if k is None else str(k)


# ------------------------------------------------------------------------------ table formats
def _provenance(data: TableData, store: ResultStore) -> list[str]:
    commits, times = set(), []
    for e in data.entries.values():
        for c in e.cells:
            r = store.load(c.cell_id)
            if r:
                commits.add(r.get("environment", {}).get("git_commit", "unknown"))
                times.append(r.get("utc_time", ""))
    seeds = sorted({c.seed for e in data.entries.values() for c in e.cells})
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
    lines.append("Each entry: ours | paper | ours − paper.")
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
        header = ["method"]
        for lab in labels:
            header += [f"{lab} ours", "paper", "Δ"]
        out.write("| " + " | ".join(header) + " |\n")
        out.write("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|\n")
        for row in data.rows:
            cells = [row.label]
            for lab in labels:
                e = data.entries[(block, lab, row.label)]
                cells += [e.ours_text(), e.paper_text(), e.diff_text()]
            out.write("| " + " | ".join(cells) + " |\n")
    return out.getvalue()


CSV_FIELDS = [
    "table", "preset", "block", "column", "row", "method", "metric", "ours_mean", "ours_std",
    "n_seeds", "n_nc", "status", "paper", "diff", "paper_dataset", "our_dataset", "bits",
    "backbone", "cell_ids",
]


def format_csv(data: TableData) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for (block, column, _), e in data.entries.items():
        c0 = e.cells[0]
        w.writerow({
            "table": data.exp.name, "preset": data.preset.name, "block": block, "column": column,
            "row": e.row, "method": e.method,
            "metric": "mAP@" + e.metric_key,
            "ours_mean": "" if e.mean is None else repr(e.mean),
            "ours_std": "" if e.std is None else repr(e.std),
            "n_seeds": e.n, "n_nc": e.n_nc,
            "status": {"ok": "ok", "nc": "N/C", "missing": "missing"}[e.status],
            "paper": e.paper if e.paper is not None else "",
            "diff": "" if e.diff is None else repr(e.diff),
            "paper_dataset": e.paper_key[2] if e.paper_key else "",
            "our_dataset": c0.dataset.key, "bits": c0.bits, "backbone": c0.backbone,
            "cell_ids": ";".join(c.cell_id for c in e.cells),
        })
    return out.getvalue()


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("—", "---"), ("–", "--"),
                 ("−", "-")):
        text = text.replace(a, b)
    return text


def format_latex(data: TableData, store: ResultStore) -> str:
    out = io.StringIO()
    out.write(f"% {data.exp.title}\n")
    for line in _provenance(data, store) + data.notes:
        out.write(f"% {line}\n")
    out.write("% requires \\usepackage{booktabs}\n")
    for block, labels in data.blocks:
        n = 1 + 3 * len(labels)
        out.write(f"\\begin{{tabular}}{{l{'r' * (n - 1)}}}\n\\toprule\n")
        out.write(f"\\multicolumn{{{n}}}{{l}}{{{_tex_escape(block)}}} \\\\\n")
        head = ["method"] + [
            f"\\multicolumn{{3}}{{c}}{{{_tex_escape(lab)}}}" for lab in labels
        ]
        out.write(" & ".join(head) + " \\\\\n")
        out.write(" & ".join([""] + ["ours & paper & $\\Delta$"] * len(labels)) + " \\\\\n")
        out.write("\\midrule\n")
        for row in data.rows:
            cells = [_tex_escape(row.label)]
            for lab in labels:
                e = data.entries[(block, lab, row.label)]
                cells += [_tex_escape(e.ours_text()), _tex_escape(e.paper_text()),
                          _tex_escape(e.diff_text())]
            out.write(" & ".join(cells) + " \\\\\n")
        out.write("\\bottomrule\n\\end{tabular}\n\n")
    return out.getvalue()


def render_table(exp: Experiment, preset: Preset, store: ResultStore,
                 seeds: Sequence[int] | None = None) -> dict[str, Path]:
    """Write ``<name>.md``, ``.csv`` and ``.tex`` under the preset's tables folder."""
    data = build_table(exp, preset, store, seeds)
    paths = {}
    for ext, text in (("md", format_markdown(data, store)), ("csv", format_csv(data)),
                      ("tex", format_latex(data, store))):
        path = store.tables_dir / f"{exp.name}.{ext}"
        atomic_write_bytes(path, text.encode())
        paths[ext] = path
    return paths
