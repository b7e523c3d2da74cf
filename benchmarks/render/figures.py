"""Figures, drawn only from stored cell results (never computing a metric).

Figures go to ``<results>/<preset>/figures/<name>.{png,pdf}`` (matplotlib, no pyplot state).
Two styles (:data:`FIGURE_STYLES`): ``default`` states the preset and which offline data fills which
paper dataset; ``paper`` drops those banners and the figure title (a paper's caption says it) and
uses a paper's text width and font sizes. Both label the panels (a), (b), (c).

Every input a figure reads goes through :class:`_Inputs`, which notes each one it needed and did
not find (:func:`missing_inputs`); a panel with nothing to draw says ``missing``. Rendering the same
results twice gives byte-identical PNG and PDF files.

Figs. 10 and 11 (``retrieval``) are the one figure that reads more than records: each cell's stored
codes (``<cell_id>.codes.npz``), ranked with the evaluation engine (:func:`benchmarks.metrics.retrieve`,
the project's tie rule), and the pixels of the retrieved items, read from the dataset itself after
checking that its split is the one the cell was computed on (:func:`retrieval_examples`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import string
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.render.tables import map_key_name, row_cells
from benchmarks.runner.experiments import (
    DPAH_DEFAULT_T,
    Cell,
    Column,
    DatasetSpec,
    Experiment,
    Preset,
    Row,
    make_cell,
    map_name,
    sweep_hyper,
    table_rows,
)
from benchmarks.runner.results import ResultStore, atomic_write_bytes

log = logging.getLogger("hashbench.render")

__all__ = [
    "FIGURE_FILES",
    "FIGURE_STYLES",
    "RETRIEVAL_QUERIES",
    "RETRIEVAL_SEED",
    "RETRIEVAL_TOP",
    "RetrievalCase",
    "RetrievalExamples",
    "RetrievedRow",
    "build_figure",
    "label_jaccard",
    "missing_inputs",
    "render_figure",
    "retrieval_examples",
    "retrieval_queries",
]

#: file stems under ``<preset>/figures/``; Figs. 10/11 write one file per retrieval dataset (the
#: preset's ``retrieval_columns``, in order)
FIGURE_FILES: dict[str, str | tuple[str, ...]] = {
    "pr": "fig8_pr_curves",
    "t-sensitivity": "fig6_t_sensitivity",
    "alpha-sensitivity": "fig7_alpha_sensitivity",
    "kt-loss": "fig4_kt_loss",
    "distribution": "fig3_fig5_u_distribution",
    "tsne": "fig9_tsne",
    "retrieval": ("fig10_retrieval", "fig11_retrieval"),
}
FIGURE_STYLES = ("default", "paper")

#: an mAP axis spans at least this much, so seed noise of 0.0005 does not look like an effect
MIN_Y_SPAN = 0.02
#: a panel whose drawn values all lie within this spread is marked "flat"
FLAT_SPREAD = 0.005

#: 20 colours told apart at a glance (no light/dark pairs, none too pale on white), for Fig. 9
CLASS_COLOURS = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
    "#000000", "#469990", "#9a6324", "#800000", "#808000", "#000075", "#a9a9a9", "#ffe119",
    "#fabed4", "#dcbeff", "#aaffc3", "#ffd8b1",
)
#: Fig. 8: one marker per Table 3 method (DPAH last, drawn black and thicker)
METHOD_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "h", "*")
#: Figs. 4 and 6/7: without KT (or the baseline) and with KT
WITHOUT_KT = {"color": "tab:blue", "marker": "o", "ls": "--", "mfc": "white"}
WITH_KT = {"color": "tab:red", "marker": "s", "ls": "-"}
NC_STYLE = {"marker": "x", "ls": "none", "ms": 8, "mew": 2}


@dataclass(frozen=True)
class _Style:
    banners: bool  # figure title, preset banner and "[in place of ...]" notes
    panel_width: float  # inches per panel
    max_width: float  # inches for the whole figure
    height: float  # inches, panels and the legend below them
    dpi: int
    rc: tuple[tuple[str, Any], ...]


_COMMON_RC = (("pdf.fonttype", 42), ("axes.titlesize", "medium"), ("errorbar.capsize", 3))
STYLES = {
    "default": _Style(True, 4.2, 18.0, 4.6, 130, _COMMON_RC + (("font.size", 10),
                                                             ("legend.fontsize", 8))),
    "paper": _Style(False, 2.5, 7.0, 2.9, 300, _COMMON_RC + (
        ("font.size", 8), ("axes.labelsize", 8), ("xtick.labelsize", 7), ("ytick.labelsize", 7),
        ("legend.fontsize", 7), ("lines.linewidth", 1.2), ("lines.markersize", 4),
        ("axes.linewidth", 0.6), ("grid.linewidth", 0.4), ("errorbar.capsize", 2))),
}


def _style(style: str) -> _Style:
    if style not in STYLES:
        raise ValueError(f"unknown figure style {style!r}; choose one of {', '.join(FIGURE_STYLES)}")
    return STYLES[style]


# ------------------------------------------------------------------------------------ inputs
class _Inputs:
    """Reads a figure's stored inputs and notes each one it needed and did not find."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.missing: dict[str, None] = {}  # ordered set: a cell shared by two panels counts once

    def note(self, cell: Cell, what: str) -> None:
        self.missing[f"{cell.cell_id}: {what}"] = None

    def record(self, cell: Cell) -> dict | None:
        record = self.store.load(cell.cell_id)
        if record is None:
            damaged = self.store.record_path(cell.cell_id).is_file()
            self.note(cell, "damaged result record" if damaged else "no result record")
        return record

    def part(self, cell: Cell, name: str, what: str) -> tuple[dict | None, Any]:
        """The record and its entry ``name`` (e.g. ``u_hist``), noting a record without it."""
        record = self.record(cell)
        value = record.get(name) if record else None
        if record is not None and not value:
            self.note(cell, f"no {what} in the record")
        return record, value

    def tsne(self, cell: Cell) -> dict[str, np.ndarray] | None:
        if not self.store.tsne_path(cell.cell_id).exists():
            self.note(cell, "no t-SNE embedding file (.tsne.csv)")
            return None
        return self.store.load_tsne(cell.cell_id)

    def images(self, dataset: DatasetSpec, data_root: str | Path | None) -> Any | None:
        """The dataset's :class:`~data_protocols.Benchmark` with images (its pixels, labels and
        split), or None, noting why it could not be read."""
        try:
            return _load_images(dataset, data_root)
        except Exception as exc:  # noqa: BLE001 — absent or unreadable data: the figure says so
            self.missing[f"dataset {dataset.key}: its images could not be read "
                         f"({type(exc).__name__}: {exc})"] = None
            return None

    def codes(self, cell: Cell, bench: Any | None) -> tuple[dict | None, dict | None, str]:
        """The record and the stored codes of a Figs. 10/11 cell (codes, labels, ``query_index``,
        ``db_index``); codes None where they are absent or belong to another split than
        ``bench``'s (noted), with a short reason for the figure. A non-converged cell without
        codes is drawn as N/C, not missing."""
        record = self.record(cell)
        if record is None:
            return None, None, "missing: no stored result"
        path = self.store.codes_path(cell.cell_id)
        # a record names the codes saved with it; a file it does not name is an earlier run's
        named = (record.get("artifacts") or {}).get("codes") == path.name
        if not (named and path.is_file()):
            if not record.get("converged"):
                return record, None, "N/C (did not converge): no codes"
            self.note(cell, f"no codes file ({path.name}): codes are not tracked by git, so "
                      "shipped results have none; recompute the cell with --force")
            return record, None, "missing: no stored codes (recompute with --force)"
        if bench is None:
            return record, None, "missing: no images"
        refused = "refused: stored split differs from the data read now"
        stored = (record.get("dataset") or {}).get("split_hash")
        if stored != bench.split.hash():
            self.note(cell, f"split mismatch: the record's split {stored} is not the split "
                      f"{bench.split.hash()} of the data read now; refusing to show images of "
                      "another split (recompute the cell with --force)")
            return record, None, refused
        codes = self.store.load_codes(cell.cell_id)
        with np.load(path) as data:
            if "query_index" not in data or "db_index" not in data:
                self.note(cell, f"{path.name} has no query_index/db_index (an older run): "
                          "recompute the cell with --force")
                return record, None, "missing: no item indices in the codes"
            codes["query_index"], codes["db_index"] = data["query_index"], data["db_index"]
        same = (np.array_equal(codes["query_index"], bench.split.query)
                and np.array_equal(codes["db_index"], bench.split.database)
                and np.array_equal(codes["query_labels"], bench.labels[bench.split.query])
                and np.array_equal(codes["db_labels"], bench.labels[bench.split.database]))
        if not same:
            self.note(cell, f"split mismatch: the item indices or labels in {path.name} are not "
                      "those of the data read now; refusing to show images of other items "
                      "(recompute the cell with --force)")
            return record, None, refused
        return record, codes, ""


#: Figs. 10/11 read a dataset's images once per process for the few renders of a run (two at most:
#: the images of CIFAR-10 and its mosaics are ~180 MB each)
_IMAGE_CACHE: dict[tuple, Any] = {}


def _load_images(dataset: DatasetSpec, data_root: str | Path | None) -> Any:
    """The dataset loaded as the runner loads it (protocol, options, split seed), with images."""
    import data_protocols as dp

    root = str(dp.DEFAULT_DATA_ROOT if data_root is None else Path(data_root).expanduser())
    key = (dataset.protocol, dataset.variant, dataset.split_seed, root)
    if key not in _IMAGE_CACHE:
        bench = dp.get_protocol(dataset.protocol).load(
            root, dataset.split_seed, input_kind="images", progress=False,
            **dataset.variant_dict())
        if len(_IMAGE_CACHE) >= 2:
            _IMAGE_CACHE.pop(next(iter(_IMAGE_CACHE)))
        _IMAGE_CACHE[key] = bench
    return _IMAGE_CACHE[key]


@dataclass(frozen=True)
class _Stat:
    """Stored mAP over seeds: mean, sample std (None for one seed), whether converged."""

    mean: float
    std: float | None
    converged: bool
    #: seeds left out of a converged mean because they did not converge (the figure says so)
    n_nc: int = 0
    n_seeds: int = 0  # seeds with a stored record


def _over_seeds(records: Iterable[dict | None], key: str) -> _Stat | None:
    """Mean and sample std of the stored mAP ``key`` over seeds.

    Converged seeds only when there are any (``n_nc`` counts the seeds left out, so the point
    can say so); otherwise the stored mAP of the non-converged runs (drawn as N/C crosses);
    None when no seed has a value.
    """
    present = [r for r in records if r]
    have = [r for r in present if r.get("metrics")]
    n_nc = sum(not r.get("converged") for r in present)
    for converged in (True, False):
        vals = [r["metrics"].get("map_at", {}).get(key) for r in have
                if bool(r.get("converged")) == converged]
        vals = [float(v) for v in vals if v is not None and math.isfinite(v)]
        if vals:
            std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
            return _Stat(float(np.mean(vals)), std, converged, n_nc if converged else 0,
                         len(present))
    return None


# ------------------------------------------------------------------------------------ panels
@dataclass(frozen=True)
class _Panel:
    """One panel: a dataset (and metric), and the preset columns it stands for."""

    dataset: DatasetSpec
    k: int | None
    columns: tuple[Column, ...]


def _dataset_panels(preset: Preset, by_metric: bool) -> list[_Panel]:
    """One panel per distinct dataset (PR curves), or per distinct (dataset, metric) (mAP figures):
    the cpu preset's MIRFlickr fills two columns, and is drawn twice only at two cutoffs."""
    groups: dict[tuple, list[Column]] = {}
    for col in preset.columns:
        if col.dataset is not None:
            groups.setdefault((col.dataset.key, col.k if by_metric else None), []).append(col)
    return [_Panel(cols[0].dataset, cols[0].k if by_metric else None, tuple(cols))
            for cols in groups.values()]


def _image_column(preset: Preset) -> Column:
    """Figs. 3/5 and 9 use the paper's ImageNet column (or the preset's first)."""
    col = preset.column_for("imagenet100")
    return col if col is not None and col.dataset is not None else preset.columns[0]


def _dataset_name(col: Column, preset: Preset) -> str:
    """The paper's name in the paper setting, a user's name for their data, else ours, short."""
    if not col.is_paper or preset.paper_setting:
        return col.paper_label
    return col.dataset.label.split(" (")[0]


def _in_place_of(cols: Sequence[Column], preset: Preset) -> str:
    """``[in place of NUS-WIDE and MS COCO]`` for a non-paper preset, else empty."""
    names = [c.paper_label for c in cols if c.is_paper]
    if preset.paper_setting or not names:
        return ""
    return f"[in place of {' and '.join(names)}]"


def _letter(i: int) -> str:
    return f"({string.ascii_lowercase[i]})"


def _panel_title(i: int, panel: _Panel, preset: Preset, style: _Style, metric: bool) -> str:
    title = f"{_letter(i)} {_dataset_name(panel.columns[0], preset)}"
    if metric:
        title += f", {map_name(panel.k)}"
    note = _in_place_of(panel.columns, preset) if style.banners else ""
    return f"{title}\n{note}" if note else title


def _subtitle(preset: Preset) -> str:
    if preset.user_data:
        return f"preset {preset.name} settings on your data ({preset.user_data}): no paper numbers"
    if preset.paper_setting:
        return f"preset {preset.name} (paper setting)"
    return f"preset {preset.name}: offline data, NOT the paper's setting"


def _seeds_note(seeds: Sequence[int]) -> str:
    if len(seeds) > 1:
        return f"mean ± sample std over {len(seeds)} seeds"
    return "one seed (no error bars)"


# ------------------------------------------------------------------------------------ drawing
@dataclass
class _Ctx:
    exp: Experiment
    preset: Preset
    seeds: tuple[int, ...]
    style: _Style
    inputs: _Inputs
    data_root: str | Path | None = None  # Figs. 10/11 read the datasets' images there


def _new_figure(ctx: _Ctx, n: int, sharex: bool = False, sharey: bool = False,
                height: float | None = None):
    from matplotlib.figure import Figure

    n = max(n, 1)
    st = ctx.style
    width = min(st.max_width, max(st.panel_width * n, st.panel_width * 1.4))
    fig = Figure(figsize=(width, height or st.height), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharex=sharex, sharey=sharey)
    return fig, list(axes[0])


def _note(ax, text: str, loc: str = "center", **kw: Any) -> None:
    x, y, ha, va = {"center": (0.5, 0.5, "center", "center"),
                    "lower right": (0.98, 0.03, "right", "bottom"),
                    "upper left": (0.03, 0.97, "left", "top")}[loc]
    ax.text(x, y, text, ha=ha, va=va, transform=ax.transAxes, color=kw.pop("color", "0.35"),
            fontsize=kw.pop("fontsize", "small"), **kw)


def _missing(ax, what: str = "no stored result") -> None:
    _note(ax, f"missing: {what}", color="0.4", fontsize="medium")


def _figure_legend(fig, axes, ncol: int, first: Sequence[str] = ()) -> None:
    """One legend for the whole figure, below the panels (never over a curve); labels in
    ``first`` lead, in that order."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    seen = {**{k: seen[k] for k in first if k in seen}, **seen}
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center",
                   ncol=max(1, min(ncol, len(seen))), frameon=False)


def _finish_panel(ax, drawn: list[float]) -> None:
    """Grid, then the y-range over what was drawn, or the missing-result note."""
    ax.grid(alpha=0.3)
    if drawn:
        _fit_y(ax, drawn)
    else:
        _missing(ax)


def _fit_y(ax, values: list[float]) -> None:
    """Y-range over the drawn values (means +- std, baselines), at least ``MIN_Y_SPAN`` tall;
    values all within ``FLAT_SPREAD`` are marked flat."""
    if not values:
        return
    lo, hi = min(values), max(values)
    span = max(hi - lo, MIN_Y_SPAN)
    mid = (lo + hi) / 2
    pad = 0.08 * span
    ax.set_ylim(mid - span / 2 - pad, mid + span / 2 + pad)
    if hi - lo < FLAT_SPREAD:
        _note(ax, f"flat: spread {hi - lo:.4f}", "lower right")


def _plot_stats(ax, xs: Sequence[float], stats: Sequence[_Stat | None], style: dict,
                label: str) -> list[float]:
    """Converged means with seed error bars as a line; non-converged ones as N/C crosses.
    Returns the y-values drawn (for :func:`_fit_y`)."""
    ok = [(x, s) for x, s in zip(xs, stats, strict=True) if s is not None and s.converged]
    nc = [(x, s) for x, s in zip(xs, stats, strict=True) if s is not None and not s.converged]
    drawn: list[float] = []
    if ok:
        x = [p[0] for p in ok]
        y = [p[1].mean for p in ok]
        err = [p[1].std or 0.0 for p in ok]
        ax.errorbar(x, y, yerr=err if any(err) else None, label=label, **style)
        drawn += [m + e for m, e in zip(y, err, strict=True)]
        drawn += [m - e for m, e in zip(y, err, strict=True)]
        for px, stat in ok:  # a mean that leaves out seeds that did not converge says so
            if stat.n_nc:
                ax.annotate(f"{stat.n_nc}/{stat.n_seeds} N/C", (px, stat.mean),
                            textcoords="offset points", xytext=(4, -10), fontsize=7,
                            color=style["color"])
    if nc:
        ax.plot([p[0] for p in nc], [p[1].mean for p in nc], **NC_STYLE, color=style["color"],
                label=f"{label}: N/C (did not converge)")
        drawn += [p[1].mean for p in nc]
    return drawn


def _fig_pr(ctx: _Ctx):
    """Fig. 8: one panel per distinct dataset (the curves do not depend on the mAP cutoff)."""
    panels = _dataset_panels(ctx.preset, by_metric=False)
    fig, axes = _new_figure(ctx, len(panels))
    bits = ctx.exp.bits[0]
    colours = [f"C{i}" for i in range(10)]
    for i, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
        drew, not_converged = False, []
        for idx, row in enumerate(table_rows(ctx.exp, ctx.preset)):
            curves, any_nc = [], False
            for cell in row_cells(ctx.preset, row, panel.dataset, bits, ctx.seeds):
                record = ctx.inputs.record(cell)
                if record is None:
                    continue
                if not (record.get("converged") and record.get("metrics")):
                    any_nc = True
                    continue
                curve = record["metrics"].get("pr_radius")
                if curve and curve.get("precision") and curve.get("recall"):
                    curves.append(curve)
                else:
                    ctx.inputs.note(cell, "no PR curve (metrics.pr_radius) in the record")
            if not curves:
                if any_nc:
                    not_converged.append(row.label)
                continue
            p = np.mean([np.asarray(c["precision"], float) for c in curves], axis=0)
            r = np.mean([np.asarray(c["recall"], float) for c in curves], axis=0)
            dpah = row.method == "dpah"
            ax.plot(r, p, "-", marker=METHOD_MARKERS[min(idx, len(METHOD_MARKERS) - 1)],
                    markevery=0.1, ms=5 if dpah else 4, lw=2.2 if dpah else 1.1,
                    color="black" if dpah else colours[idx % 10], zorder=3 if dpah else 2,
                    label=row.label)
            drew = True
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=_panel_title(i, panel, ctx.preset, ctx.style, metric=False))
        ax.grid(alpha=0.3)
        if not drew:
            _missing(ax)
        if not_converged:
            _note(ax, "N/C (not drawn): " + ", ".join(not_converged), "lower right")
    _figure_legend(fig, axes, ncol=6)
    return fig


def _fig_sweep(ctx: _Ctx):
    """Figs. 6/7: DPAH's mAP over a hyper-parameter, the baseline dotted, seed error bars."""
    exp, preset = ctx.exp, ctx.preset
    panels = _dataset_panels(preset, by_metric=True)
    fig, axes = _new_figure(ctx, len(panels))
    bits = exp.bits[0]
    for i, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
        key = map_key_name(panel.k)
        drawn: list[float] = []
        for row in exp.rows:
            stats = []
            for v in exp.sweep:
                hyper = {**dict(row.hyper), **sweep_hyper(exp, v, bool(preset.tune))}
                cells = [make_cell(preset, row.method, panel.dataset, bits, s, hyper)
                         for s in ctx.seeds]
                stats.append(_over_seeds((ctx.inputs.record(c) for c in cells), key))
            drawn += _plot_stats(ax, list(exp.sweep), stats, WITH_KT, row.label)
        if exp.baseline is not None:
            cells = row_cells(preset, exp.baseline, panel.dataset, bits, ctx.seeds)
            base = _over_seeds((ctx.inputs.record(c) for c in cells), key)
            if base is not None:
                colour = WITHOUT_KT["color"] if base.converged else "0.45"
                ax.axhline(base.mean, ls=":", color=colour, lw=1.8,
                           label=exp.baseline.label + ("" if base.converged else " (N/C)"))
                if base.converged and base.n_nc:  # in the panel: the legend is shared
                    ax.text(0.02, 0.95, f"{exp.baseline.label}: {base.n_nc}/{base.n_seeds} "
                            "seeds N/C, mean of the others", transform=ax.transAxes,
                            fontsize=7, color=colour, va="top")
                drawn.append(base.mean)
                if base.std:
                    ax.axhspan(base.mean - base.std, base.mean + base.std, color=colour,
                               alpha=0.12, lw=0)
                    drawn += [base.mean - base.std, base.mean + base.std]
        ax.set(xlabel=exp.sweep_param, ylabel=map_name(panel.k), xticks=list(exp.sweep),
               title=_panel_title(i, panel, preset, ctx.style, metric=True))
        _finish_panel(ax, drawn)
    _figure_legend(fig, axes, ncol=4, first=[r.label for r in exp.rows])
    return fig


def _fig_kt(ctx: _Ctx):
    """Fig. 4: with and without the KT loss over code lengths (categorical, slightly dodged)."""
    exp, preset = ctx.exp, ctx.preset
    panels = _dataset_panels(preset, by_metric=True)
    fig, axes = _new_figure(ctx, len(panels))
    styles = (WITHOUT_KT, WITH_KT)
    n = len(exp.rows)
    for i, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
        key = map_key_name(panel.k)
        drawn: list[float] = []
        for j, row in enumerate(exp.rows):
            stats = [_over_seeds((ctx.inputs.record(c) for c in row_cells(
                preset, row, panel.dataset, b, ctx.seeds)), key) for b in preset.bits]
            dodge = 0.06 * (j - (n - 1) / 2)
            xs = [x + dodge for x in range(len(preset.bits))]
            drawn += _plot_stats(ax, xs, stats, styles[j % len(styles)], row.label)
        ax.set(xlabel="code length", ylabel=map_name(panel.k),
               xticks=range(len(preset.bits)), xticklabels=[f"{b} bits" for b in preset.bits],
               xlim=(-0.4, len(preset.bits) - 0.6),
               title=_panel_title(i, panel, preset, ctx.style, metric=True))
        _finish_panel(ax, drawn)
    _figure_legend(fig, axes, ncol=4)
    return fig


def _row_t(row: Row) -> int | None:
    """The KT threshold of a Figs. 3/5 row (None: without KT)."""
    return None if row.method == "dpah_no_kt" else dict(row.hyper).get("t", DPAH_DEFAULT_T)


def _fig_hist(ctx: _Ctx):
    """Fig. 3 (with and without KT overlaid on one axis) and Fig. 5 (one panel per t), on shared
    axes fitted to the data."""
    exp, preset = ctx.exp, ctx.preset
    col = _image_column(preset)
    bits = exp.bits[0]
    hists: dict[Row, tuple[dict | None, dict | None]] = {}
    for row in exp.rows:
        cell = row_cells(preset, row, col.dataset, bits, ctx.seeds[:1])[0]
        hists[row] = ctx.inputs.part(cell, "u_hist", "u histogram (u_hist)")
    no_kt = [r for r in exp.rows if _row_t(r) is None]
    kt = [r for r in exp.rows if _row_t(r) is not None]
    overlay = [r for r in kt if _row_t(r) == DPAH_DEFAULT_T][:1] or kt[:1]
    panels: list[tuple[str, list[Row]]] = []
    if no_kt and overlay:
        panels.append((f"w/o KT and w/ KT ({overlay[0].label})", no_kt[:1] + overlay))
    panels += [(f"w/ KT, {r.label}", [r]) for r in kt]
    if not kt:
        panels += [(r.label, [r]) for r in no_kt]
    fig, axes = _new_figure(ctx, len(panels), sharex=True, sharey=True)
    extent = [abs(_row_t(r)) for r in kt]
    for i, (ax, (title, rows)) in enumerate(zip(axes, panels, strict=True)):
        nc = any(hists[r][0] and not hists[r][0].get("converged") for r in rows)
        ax.set(title=f"{_letter(i)} {title}{' (N/C)' if nc else ''}",
               xlabel="u (before thresholding)")
        if i == 0:
            ax.set_ylabel("count")
        ax.grid(alpha=0.3)
        lines = []
        for row in rows:
            hist = hists[row][1]
            if not hist:
                continue
            t = _row_t(row)
            edges = np.asarray(hist["edges"], float)
            counts = np.asarray(hist["counts"])
            if t is None:  # the paper's blue area
                ax.stairs(counts, edges, fill=True, color=WITHOUT_KT["color"], alpha=0.5, lw=0,
                          label="w/o KT")
            else:
                ax.stairs(counts, edges, color=WITH_KT["color"], lw=1.4, label="w/ KT")
            outside = int(hist.get("below", 0)) + int(hist.get("above", 0))
            if outside:
                extent.append(float(max(abs(edges[0]), abs(edges[-1]))))
            extent += [abs(float(hist["min"])), abs(float(hist["max"]))]
            lines.append(f"{'w/o KT' if t is None else 'w/ KT'}: std {hist['std']:.2f}"
                         + (f", {outside} outside" if outside else ""))
            if t is not None:
                for x in (-t, t):
                    ax.axvline(x, ls=":", color="darkred", lw=1, label="±t")
        if lines:
            _note(ax, "\n".join(lines), "upper left", color="0.2",
                  bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 2})
        else:
            _missing(ax, "no u histogram" if any(hists[r][0] for r in rows) else
                     "no stored result")
    if extent:
        lim = math.ceil(1.1 * max(extent))
        axes[0].set_xlim(-lim, lim)
    _figure_legend(fig, axes, ncol=3)
    return fig


def _fig_tsne(ctx: _Ctx):
    """Fig. 9: t-SNE of database codes, one colour per class (a legend below the panels)."""
    from matplotlib.lines import Line2D

    exp, preset = ctx.exp, ctx.preset
    col = _image_column(preset)
    bits = exp.bits[0]
    loaded = []
    for row in exp.rows:
        cell = row_cells(preset, row, col.dataset, bits, ctx.seeds[:1])[0]
        record = ctx.inputs.record(cell)
        loaded.append((row, record, ctx.inputs.tsne(cell) if record is not None else None))
    classes = sorted({int(c) for _, _, t in loaded if t is not None for c in t["classes"]})
    colour_of = {c: CLASS_COLOURS[j % len(CLASS_COLOURS)] for j, c in enumerate(classes)}
    fig, axes = _new_figure(ctx, len(loaded), height=ctx.style.height + 0.4)
    for i, (ax, (row, record, tsne)) in enumerate(zip(axes, loaded, strict=True)):
        nc = " (N/C)" if record and not record.get("converged") else ""
        ax.set(title=f"{_letter(i)} {row.label}{nc}", xticks=[], yticks=[])
        if tsne is None:
            _missing(ax, "no t-SNE embedding" if record else "no stored result")
            continue
        emb, cls = tsne["embedding"], tsne["classes"]
        ax.scatter(emb[:, 0], emb[:, 1], c=[colour_of[int(c)] for c in cls], s=4, alpha=0.8,
                   linewidths=0)
        ax.set_xlabel(f"{len(np.unique(cls))} classes, {len(cls)} codes", fontsize="small")
    if classes:
        handles = [Line2D([], [], ls="none", marker="o", ms=5, color=colour_of[c]) for c in classes]
        title = "class" + (" (colours repeat beyond 20)" if len(classes) > 20 else "")
        fig.legend(handles, [str(c) for c in classes], loc="outside lower center",
                   ncol=min(10, len(classes)), frameon=False, title=title, handletextpad=0.1,
                   columnspacing=1.0)
    return fig


# ------------------------------------------------------------------------------- Figs. 10/11
#: Figs. 10/11: the top-K retrieved items shown for each of ``RETRIEVAL_QUERIES`` queries, drawn
#: with ``numpy.random.default_rng(RETRIEVAL_SEED)`` (see :func:`retrieval_queries`)
RETRIEVAL_TOP = 5
RETRIEVAL_QUERIES = 2
RETRIEVAL_SEED = 0
#: background of the Jaccard score under a relevant item (the paper's blue) and an irrelevant one
RELEVANT_BOX = "#cfe2f3"
IRRELEVANT_BOX = "#f4cccc"
#: label names where the protocol has them (others show label ids)
LABEL_NAMES: dict[str, tuple[str, ...]] = {}


def _label_names(protocol: str) -> tuple[str, ...]:
    if not LABEL_NAMES:
        from data_protocols.readers import CIFAR10_CLASSES

        LABEL_NAMES.update(cifar10=CIFAR10_CLASSES, cifar10_mosaic=CIFAR10_CLASSES)
    return LABEL_NAMES.get(protocol, ())


def label_jaccard(query: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Jaccard similarity |A ∩ B| / |A ∪ B| of the label set A of ``query`` (a 0/1 vector over the
    labels) with the label set B of each row of ``items`` (n x labels); 0 where both are empty."""
    a = np.asarray(query).astype(bool)
    b = np.atleast_2d(np.asarray(items).astype(bool))
    if b.shape[1] != a.shape[0]:
        raise ValueError(f"label_jaccard: query has {a.shape[0]} labels, items have {b.shape[1]}")
    inter = (b & a).sum(1)
    union = (b | a).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def retrieval_queries(query_labels: np.ndarray, db_labels: np.ndarray,
                      n: int = RETRIEVAL_QUERIES, seed: int = RETRIEVAL_SEED) -> np.ndarray:
    """The queries of Figs. 10/11 (positions in the query set), chosen by a stated rule, never by
    hand: the candidates are the queries with at least one relevant database item (one that
    shares a label); where at least ``n`` of them have two labels or more (multi-label data), only
    those. ``n`` candidates are drawn with ``numpy.random.default_rng(seed)`` (the stable
    permutation of :func:`data_protocols.core.permutation`), in draw order. Fewer than ``n``
    candidates: all of them. The same queries for every method (the rule reads labels only)."""
    from data_protocols.core import permutation

    q = np.asarray(query_labels).astype(bool)
    in_db = np.asarray(db_labels).astype(bool).any(0)
    has_relevant = (q & in_db).any(1)
    pool = np.flatnonzero(has_relevant)
    multi = np.flatnonzero(has_relevant & (q.sum(1) >= 2))
    if multi.size >= n:
        pool = multi
    return pool[permutation(np.random.default_rng(seed), pool.size)[:n]]


def _query_rule(multi: bool) -> str:
    """The rule of :func:`retrieval_queries`, in words, for the caption."""
    among = "queries with a relevant database item" + (" and at least two labels" if multi else "")
    return (f"queries: {RETRIEVAL_QUERIES} drawn with numpy default_rng({RETRIEVAL_SEED}) among "
            f"the {among}, the same for every method; ranks by Hamming distance, ties by "
            "database index")


@dataclass(frozen=True)
class RetrievedRow:
    """One method's top-K for one query. ``status``: ``ok``, ``nc`` (codes of a run that did not
    converge, drawn and marked N/C) or ``missing`` (nothing drawn; ``note`` says why)."""

    label: str
    cell_id: str
    status: str
    db_positions: tuple[int, ...] = ()  # rank 1..K: rows of the database part
    items: tuple[int, ...] = ()  # the same as dataset item indices (``db_index``)
    jaccard: tuple[float, ...] = ()
    note: str = ""

    @property
    def relevant(self) -> tuple[bool, ...]:
        """Whether each retrieved item shares a label with the query."""
        return tuple(j > 0 for j in self.jaccard)


@dataclass(frozen=True)
class RetrievalCase:
    """One query (its position in the query set, its dataset item, its label ids) and the
    retrievals of every method."""

    query_position: int
    query_item: int
    query_labels: tuple[int, ...]
    rows: tuple[RetrievedRow, ...]


@dataclass(frozen=True)
class RetrievalExamples:
    """What one of Figs. 10/11 shows: a retrieval dataset, its cases, and the loaded data (for
    the pixels); ``problem`` says why nothing can be shown (the data could not be read)."""

    column: Column
    cases: tuple[RetrievalCase, ...]
    benchmark: Any | None
    multi_label: bool
    problem: str = ""


def _retrieval(ctx: _Ctx, col: Column) -> RetrievalExamples:
    """The cases of one retrieval dataset, from stored codes only (see :func:`retrieval_examples`)."""
    from benchmarks import metrics

    exp, preset = ctx.exp, ctx.preset
    bench = ctx.inputs.images(col.dataset, ctx.data_root)
    loaded = []
    for row in exp.rows:
        cell = row_cells(preset, row, col.dataset, exp.bits[0], ctx.seeds[:1])[0]
        loaded.append((row, cell, *ctx.inputs.codes(cell, bench)))
    if bench is None:
        return RetrievalExamples(col, (), None, False,
                                 f"the images of {col.dataset.label} could not be read")
    ql, dl = bench.labels[bench.split.query], bench.labels[bench.split.database]
    multi = bool((ql.sum(1) >= 2).any())
    cases = []
    for qpos in retrieval_queries(ql, dl):
        rows = []
        for row, cell, record, codes, why in loaded:
            if codes is None:
                rows.append(RetrievedRow(row.label, cell.cell_id, "missing", note=why))
                continue
            top = metrics.retrieve(codes["query_codes"][[qpos]], codes["db_codes"],
                                   k=RETRIEVAL_TOP)[0]
            jac = label_jaccard(codes["query_labels"][qpos], codes["db_labels"][top])
            rows.append(RetrievedRow(
                row.label, cell.cell_id, "ok" if record.get("converged") else "nc",
                tuple(int(p) for p in top), tuple(int(codes["db_index"][p]) for p in top),
                tuple(float(j) for j in jac)))
        cases.append(RetrievalCase(int(qpos), int(bench.split.query[qpos]),
                                   tuple(int(c) for c in np.flatnonzero(ql[qpos])), tuple(rows)))
    return RetrievalExamples(col, tuple(cases), bench, multi)


def retrieval_examples(exp: Experiment, preset: Preset, store: ResultStore,
                       seeds: Sequence[int] | None = None, *,
                       data_root: str | Path | None = None
                       ) -> tuple[list[RetrievalExamples], list[str]]:
    """What Figs. 10/11 show, one entry per retrieval dataset (``preset.retrieval_columns``), and
    the stored inputs they needed and did not find (as :func:`missing_inputs`).

    Per dataset: the queries of :func:`retrieval_queries`; per method (``exp.rows``, at
    ``exp.bits``, the first seed) the top :data:`RETRIEVAL_TOP` of its stored codes ranked by
    :func:`benchmarks.metrics.retrieve`, and the Jaccard similarity of each item's stored labels
    with the query's. The dataset is read (``input_kind="images"``, under ``data_root`` or the
    default data root) for its pixels; a cell whose stored split differs from it is refused."""
    ctx = _Ctx(exp, preset, tuple(seeds) if seeds else preset.seeds, _style("default"),
               _Inputs(store), data_root)
    cols = _retrieval_columns(ctx)
    return [_retrieval(ctx, col) for col in cols], list(ctx.inputs.missing)


def _retrieval_columns(ctx: _Ctx) -> list[Column]:
    cols = [c for c in ctx.preset.retrieval_columns if c.dataset is not None]
    stems = FIGURE_FILES["retrieval"]
    if len(cols) > len(stems):
        raise ValueError(f"preset {ctx.preset.name!r} has {len(cols)} retrieval_columns; "
                         f"Figs. 10 and 11 show at most {len(stems)}")
    if not cols:
        ctx.inputs.missing[f"preset {ctx.preset.name}: no retrieval dataset "
                           "(Preset.retrieval_columns is empty)"] = None
    return cols


def _tile(ax, image: Any | None = None) -> None:
    """An image tile without ticks (an empty one without a frame either)."""
    ax.set_xticks([])
    ax.set_yticks([])
    if image is None:
        for spine in ax.spines.values():
            spine.set_visible(False)
        return
    ax.imshow(np.asarray(image), interpolation="nearest")


def _label_text(ids: Sequence[int], protocol: str) -> str:
    names = _label_names(protocol)
    return ", ".join(names[i] if i < len(names) else str(i) for i in ids) or "no label"


def _draw_retrieval(ctx: _Ctx, number: int, ex: RetrievalExamples):
    """One of Figs. 10/11: per case the query (left) and each method's top-K in a row; under each
    retrieved image the Jaccard similarity with the query, on blue when relevant (shares a label,
    ✓), on red when not (✗)."""
    from matplotlib.figure import Figure

    st, exp, preset, col = ctx.style, ctx.exp, ctx.preset, ex.column
    n_rows, k = len(exp.rows), RETRIEVAL_TOP
    tile = (st.max_width if not st.banners else 8.0) / (k + 2.1)
    label_h = 0.42 if st.banners else 0.32
    n_cases = max(len(ex.cases), 1)
    fig = Figure(figsize=(tile * (k + 2.1), n_cases * (n_rows * (tile + label_h) + 0.35)
                          + (1.0 if st.banners else 0.0)), layout="constrained")
    if st.banners:
        note = _in_place_of([col], preset)
        kind = ("multi-label" if ex.multi_label else "single-label: every score is 1 or 0")
        if ex.benchmark is not None and ex.benchmark.info.get("construction"):
            kind = f"a {kind} CONSTRUCTION"
        width = int(fig.get_size_inches()[0] * 13)
        fig.suptitle("\n".join(textwrap.fill(line, width) for line in [
            (f"Fig. {number}: top-{k} retrievals of {exp.bits[0]}-bit codes; under each image "
             "the Jaccard similarity of its labels with the query's (✓ shares a label, ✗ does "
             "not)"),
            f"{_dataset_name(col, preset)} ({kind})" + (f" {note}" if note else ""),
            _query_rule(ex.multi_label),
            f"{_subtitle(preset)}; seed {ctx.seeds[0]}",
        ]), fontsize="small")
    if not ex.cases:
        ax = fig.add_subplot()
        _tile(ax)
        _missing(ax, ex.problem or "no query has a relevant database item")
        return fig
    protocol = col.dataset.protocol
    images = ex.benchmark.images
    for c, (sf, case) in enumerate(zip(fig.subfigures(n_cases, 1, squeeze=False)[:, 0], ex.cases,
                                       strict=True)):
        sf.suptitle(f"{_letter(c)} Case {c + 1}", fontsize="medium")
        gs = sf.add_gridspec(n_rows, k + 1, width_ratios=[1.6] + [1.0] * k)
        qax = sf.add_subplot(gs[:, 0])
        _tile(qax, images[case.query_item])
        qax.set_xlabel(f"query #{case.query_item}\nlabels: "
                       f"{_label_text(case.query_labels, protocol)}",
                       fontsize="small")
        for r, got in enumerate(case.rows):
            axes = [sf.add_subplot(gs[r, 1 + j]) for j in range(k)]
            nc = " (N/C)" if got.status == "nc" else ""
            axes[0].set_ylabel(f"{got.label}{nc}", fontsize="small")
            if got.status == "missing":
                for ax in axes:
                    _tile(ax)
                axes[0].text(0.0, 0.5, got.note, transform=axes[0].transAxes, ha="left",
                             va="center", color="0.35", fontsize="small")
                continue
            for j, (ax, item, jac, rel) in enumerate(zip(axes, got.items, got.jaccard,
                                                         got.relevant, strict=True)):
                _tile(ax, images[item])
                for spine in ax.spines.values():
                    spine.set(color="tab:blue" if rel else "tab:red", linewidth=1.6)
                label = ax.set_xlabel(f"{jac:.3f} {'✓' if rel else '✗'}", fontsize="small")
                label.set_bbox({"fc": RELEVANT_BOX if rel else IRRELEVANT_BOX, "ec": "none",
                                "pad": 1.5})
                if r == 0:
                    ax.set_title(f"rank {j + 1}", fontsize="x-small", color="0.35")
    return fig


def _figs_retrieval(ctx: _Ctx) -> list:
    """Figs. 10 and 11: one figure per retrieval dataset (see :func:`retrieval_examples`)."""
    cols = _retrieval_columns(ctx)
    if not cols:
        fig, (ax,) = _new_figure(ctx, 1)
        _tile(ax)
        _missing(ax, f"preset {ctx.preset.name} has no retrieval dataset")
        return [fig]
    return [_draw_retrieval(ctx, 10 + i, _retrieval(ctx, col)) for i, col in enumerate(cols)]


_LAYOUTS = {"pr": _fig_pr, "sweep": _fig_sweep, "series_by_bits": _fig_kt,
            "histograms": _fig_hist, "tsne": _fig_tsne}
#: layouts that draw several figures (one file each: ``FIGURE_FILES`` lists their stems)
_MULTI_LAYOUTS = {"retrieval": _figs_retrieval}


def _title(ctx: _Ctx, fig) -> str:
    exp, preset = ctx.exp, ctx.preset
    title = textwrap.fill(exp.title, max(70, int(fig.get_size_inches()[0] * 13)))
    if exp.layout in ("histograms", "tsne"):
        col = _image_column(preset)
        note = _in_place_of([col], preset)
        title += f"\n{_dataset_name(col, preset)}" + (f" {note}" if note else "")
    extra = f"; {_seeds_note(ctx.seeds)}" if exp.layout in ("sweep", "series_by_bits") else ""
    return f"{title}\n{_subtitle(preset)}{extra}"


def _build(exp: Experiment, preset: Preset, store: ResultStore, seeds: Sequence[int] | None,
           style: str, data_root: str | Path | None) -> tuple[list, list[str]]:
    """Every Figure of ``exp`` (one, or one per retrieval dataset) and its missing inputs."""
    import matplotlib

    st = _style(style)
    ctx = _Ctx(exp, preset, tuple(seeds) if seeds else preset.seeds, st, _Inputs(store),
               data_root)
    with matplotlib.rc_context(dict(st.rc)):
        if exp.layout in _MULTI_LAYOUTS:  # their own titles (one per dataset)
            return _MULTI_LAYOUTS[exp.layout](ctx), list(ctx.inputs.missing)
        fig = _LAYOUTS[exp.layout](ctx)
        if st.banners:
            fig.suptitle(_title(ctx, fig), fontsize="small")
    return [fig], list(ctx.inputs.missing)


def build_figure(exp: Experiment, preset: Preset, store: ResultStore,
                 seeds: Sequence[int] | None = None, *, style: str = "default",
                 data_root: str | Path | None = None):
    """The matplotlib Figure of ``exp`` in ``style`` and the stored inputs it needed and did not
    find (see :func:`missing_inputs`). Figs. 10/11 (layout ``retrieval``) give a list of Figures,
    one per retrieval dataset, and read the datasets' images under ``data_root`` (default: the
    default data root). Save it under ``matplotlib.rc_context(STYLES[style].rc)``, as
    :func:`render_figure` does."""
    figs, missing = _build(exp, preset, store, seeds, style, data_root)
    return (figs if exp.layout in _MULTI_LAYOUTS else figs[0]), missing


def missing_inputs(exp: Experiment, preset: Preset, store: ResultStore,
                   seeds: Sequence[int] | None = None, *,
                   data_root: str | Path | None = None) -> list[str]:
    """One line per stored input the figure needs and did not find (a cell with no record, a
    record without its u histogram or PR curve, an absent t-SNE file; for Figs. 10/11 an absent
    codes file, a dataset whose images cannot be read, a cell computed on another split). A
    non-converged cell, drawn as N/C, is not missing."""
    return _build(exp, preset, store, seeds, "default", data_root)[1]


def _stems(exp: Experiment) -> tuple[str, ...]:
    stems = FIGURE_FILES[exp.name]
    return (stems,) if isinstance(stems, str) else stems


#: beside each figure, the inputs it was drawn without (``<stem>.inputs.json``), so that a later
#: render from fewer inputs (a fresh checkout has no codes files) cannot replace it unseen
INPUTS_SUFFIX = ".inputs.json"
#: where such a less complete render goes instead: ``<stem>.incomplete.{png,pdf}``
INCOMPLETE_SUFFIX = ".incomplete"


def _stored_missing(figures_dir: Path, stem: str) -> list[str] | None:
    """The inputs the stored figure ``stem`` was drawn without; None when there is no figure or
    no readable record of its inputs (a figure rendered before they were recorded)."""
    try:
        return list(json.loads((figures_dir / f"{stem}{INPUTS_SUFFIX}").read_text())["missing"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _keeps_stored(figures_dir: Path, stem: str, missing: list[str]) -> bool:
    """Whether the stored figure ``stem`` is drawn from more inputs than a render that lacks
    ``missing``: it is kept when it lacks fewer, or when it exists and what it lacks is unknown
    (the new render being incomplete)."""
    if not missing or not (figures_dir / f"{stem}.png").exists():
        return False
    stored = _stored_missing(figures_dir, stem)
    return stored is None or len(stored) < len(missing)


def render_figure(exp: Experiment, preset: Preset, store: ResultStore,
                  seeds: Sequence[int] | None = None, *, style: str = "default",
                  data_root: str | Path | None = None) -> dict[str, Path]:
    """Draw one figure from stored results to PNG and PDF (byte-identical when re-rendered);
    returns the paths: ``png``/``pdf``, and ``png_2``/``pdf_2`` for the second file of Figs.
    10/11 (Fig. 11). Beside each figure, ``<stem>.inputs.json`` lists the inputs it was drawn
    without. ``style``: one of :data:`FIGURE_STYLES`; ``data_root``: where Figs. 10/11
    read the datasets' images.

    A render that lacks more inputs than the stored figure did (e.g. on a fresh checkout, where
    the untracked codes files are absent) does not replace it: it is written to
    ``<stem>.incomplete.{png,pdf}`` and a warning says so. A render at least as complete
    replaces the figure and removes any such ``.incomplete`` files."""
    import matplotlib

    st = _style(style)
    figs, missing = _build(exp, preset, store, seeds, style, data_root)
    fdir = store.figures_dir
    fdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    with matplotlib.rc_context(dict(st.rc)):  # pdf.fonttype and the layout's fonts apply at save
        for i, (fig, stem) in enumerate(zip(figs, _stems(exp), strict=False)):
            keep = _keeps_stored(fdir, stem, missing)
            out_stem = stem + INCOMPLETE_SUFFIX if keep else stem
            if keep:
                stored = _stored_missing(fdir, stem)
                log.warning(
                    "%s: kept the stored figure, drawn from more inputs (%s missing, this "
                    "render %d); this render went to %s.{png,pdf}", fdir / f"{stem}.png",
                    "unknown" if stored is None else len(stored), len(missing), out_stem)
            for ext, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None})):
                path = fdir / f"{out_stem}.{ext}"
                buf = io.BytesIO()
                fig.savefig(buf, format=ext, dpi=st.dpi, metadata=metadata)
                atomic_write_bytes(path, buf.getvalue())
                paths[ext if i == 0 else f"{ext}_{i + 1}"] = path
            if not keep:
                inputs = fdir / f"{stem}{INPUTS_SUFFIX}"
                atomic_write_bytes(inputs, (json.dumps({"missing": missing}, indent=1)
                                            + "\n").encode())
                for ext in ("png", "pdf"):
                    (fdir / f"{stem}{INCOMPLETE_SUFFIX}.{ext}").unlink(missing_ok=True)
    return paths
