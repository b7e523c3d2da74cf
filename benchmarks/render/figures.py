"""Figures, drawn only from stored cell results (never computing a metric).

Figures go to ``<results>/<preset>/figures/<name>.{png,pdf}`` (matplotlib, Agg backend).
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.render.tables import _cells, _mkey
from benchmarks.runner.experiments import (
    Cell,
    Column,
    Experiment,
    Preset,
    _sweep_hyper,
    make_cell,
    map_name,
    table_rows,
)
from benchmarks.runner.results import ResultStore, atomic_write_bytes

__all__ = ["FIGURE_FILES", "render_figure"]

FIGURE_FILES = {
    "pr": "fig8_pr_curves",
    "t-sensitivity": "fig6_t_sensitivity",
    "alpha-sensitivity": "fig7_alpha_sensitivity",
    "kt-loss": "fig4_kt_loss",
    "distribution": "fig3_fig5_u_distribution",
    "tsne": "fig9_tsne",
}


def _records(store: ResultStore, cells: list[Cell]) -> list[dict]:
    recs = [store.load(c.cell_id) for c in cells]
    return [r for r in recs if r and r.get("converged") and r.get("metrics")]


def _point(store: ResultStore, cells: list[Cell], key: str) -> tuple[float | None, bool]:
    """Mean stored mAP over seeds and whether it converged.

    Converged seeds only when there are any; otherwise the stored mAP of the non-converged runs
    (drawn as N/C markers), or None when nothing is stored.
    """
    recs = [store.load(c.cell_id) for c in cells]
    recs = [r for r in recs if r and r.get("metrics")]
    ok = [r for r in recs if r.get("converged")]
    use = ok or recs
    vals = [r["metrics"].get("map_at", {}).get(key) for r in use]
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return None, False
    return float(np.mean(vals)), bool(ok)


def _mean_map(store: ResultStore, cells: list[Cell], key: str) -> float | None:
    value, converged = _point(store, cells, key)
    return value if converged else None


def _missing_text(ax, text: str = "missing: no stored result") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _finish_panel(ax, drew: bool, **legend: Any) -> None:
    """Grid, then the legend if anything was drawn, else the missing-result note."""
    ax.grid(alpha=0.3)
    if drew:
        ax.legend(fontsize=7, **legend)
    else:
        _missing_text(ax)


def _subtitle(preset: Preset) -> str:
    if preset.user_data:
        return f"preset {preset.name} settings on your data ({preset.user_data}): no paper numbers"
    if preset.paper_setting:
        return f"preset {preset.name} (paper setting)"
    return f"preset {preset.name}: offline data, NOT the paper's setting"


def _figure_columns(preset: Preset) -> list[Column]:
    """One panel per dataset column of the preset (a dataset filling two columns at two cutoffs
    gets two panels)."""
    return [c for c in preset.columns if c.dataset is not None]


def _col_title(col: Column, preset: Preset) -> str:
    if not col.is_paper:
        return f"{col.paper_label}\n{map_name(col.k)}"
    if preset.paper_setting:
        return f"{col.paper_label} ({map_name(col.k)})"
    return f"{col.dataset.label}\n{map_name(col.k)} [in place of {col.paper_label}]"


def render_figure(exp: Experiment, preset: Preset, store: ResultStore,
                  seeds: Sequence[int] | None = None) -> dict[str, Path]:
    """Draw one figure from stored results to PNG and PDF; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = tuple(seeds) if seeds else preset.seeds
    cols = _figure_columns(preset)
    draw = {
        "pr": _fig_pr,
        "sweep": _fig_sweep,
        "series_by_bits": _fig_kt,
        "histograms": _fig_hist,
        "tsne": _fig_tsne,
    }[exp.layout]
    fig = draw(plt, exp, preset, store, seeds, cols)
    title = textwrap.fill(exp.title, max(70, int(fig.get_size_inches()[0] * 13)))
    if exp.layout in ("histograms", "tsne"):
        col = _first_image_column(preset)
        title += f"\n{col.dataset.label}, {exp.bits[0]} bits"
    fig.suptitle(f"{title}\n{_subtitle(preset)}", fontsize=9)
    fig.tight_layout()
    store.figures_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext in ("png", "pdf"):
        path = store.figures_dir / f"{FIGURE_FILES[exp.name]}.{ext}"
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=130)
        atomic_write_bytes(path, buf.getvalue())
        paths[ext] = path
    plt.close(fig)
    return paths


def _panels(plt, n: int, width: float = 4.2, height: float = 3.6):
    width = max(width, 5.0) if n <= 1 else width
    fig, axes = plt.subplots(1, max(n, 1), figsize=(width * max(n, 1), height + 0.6),
                             squeeze=False)
    return fig, list(axes[0])


def _fig_pr(plt, exp, preset, store, seeds, cols):
    fig, axes = _panels(plt, len(cols))
    bits = exp.bits[0]
    cmap = plt.get_cmap("tab20")
    for ax, col in zip(axes, cols, strict=True):
        any_line = False
        not_converged: list[str] = []
        for i, row in enumerate(table_rows(exp, preset)):
            cells = _cells(preset, row, col.dataset, bits, seeds)
            recs = _records(store, cells)
            if not recs and any(store.is_done(c.cell_id) for c in cells):
                not_converged.append(row.label)
            curves = [r["metrics"].get("pr_radius") for r in recs]
            curves = [c for c in curves if c and c.get("precision") and c.get("recall")]
            if not curves:
                continue
            p = np.mean([np.asarray(c["precision"], float) for c in curves], axis=0)
            r = np.mean([np.asarray(c["recall"], float) for c in curves], axis=0)
            style = "-" if row.method == "dpah" else "--" if i < 5 else "-."
            ax.plot(r, p, style, marker=".", ms=3, lw=2.2 if row.method == "dpah" else 1.1,
                    color="black" if row.method == "dpah" else cmap(i), label=row.label)
            any_line = True
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=_col_title(col, preset).replace(map_name(col.k), f"{bits} bits"))
        _finish_panel(ax, any_line, ncol=2)
        if not_converged:
            ax.text(0.98, 0.02, "N/C (not drawn): " + ", ".join(not_converged),
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.35")
    return fig


NC_STYLE = {"marker": "x", "ls": "none", "ms": 8, "mew": 2}


def _plot_series(ax, pts: list[tuple[Any, float | None, bool]], color: str, label: str) -> bool:
    """Converged points as a line; non-converged ones as grey crosses labelled N/C."""
    ok = [(x, y) for x, y, c in pts if y is not None and c]
    nc = [(x, y) for x, y, c in pts if y is not None and not c]
    if ok:
        ax.plot(*zip(*ok, strict=True), "o-", color=color, label=label)
    if nc:
        ax.plot(*zip(*nc, strict=True), **NC_STYLE, color=color,
                label=f"{label}: N/C (did not converge)")
    return bool(ok or nc)


def _fig_sweep(plt, exp, preset, store, seeds, cols):
    fig, axes = _panels(plt, len(cols))
    bits = exp.bits[0]
    for ax, col in zip(axes, cols, strict=True):
        key = _mkey(col.k)
        drew = False
        for row in exp.rows:
            pts = []
            for v in exp.sweep:
                hyper = {**dict(row.hyper), **_sweep_hyper(exp, v)}
                cells = [make_cell(preset, row.method, col.dataset, bits, s, hyper)
                         for s in seeds]
                pts.append((v, *_point(store, cells, key)))
            drew |= _plot_series(ax, pts, "tab:red", row.label)
        if exp.baseline is not None:
            cells = _cells(preset, exp.baseline, col.dataset, bits, seeds)
            base, converged = _point(store, cells, key)
            if base is not None:
                label = exp.baseline.label + ("" if converged else " (N/C)")
                ax.axhline(base, ls=":", color="tab:blue" if converged else "0.45", lw=1.8,
                           label=label)
                drew = True
        ax.set(xlabel=exp.sweep_param, ylabel=map_name(col.k), xticks=list(exp.sweep),
               title=_col_title(col, preset))
        _finish_panel(ax, drew)
    return fig


def _fig_kt(plt, exp, preset, store, seeds, cols):
    fig, axes = _panels(plt, len(cols))
    colors = ("tab:blue", "tab:red")
    for ax, col in zip(axes, cols, strict=True):
        key = _mkey(col.k)
        drew = False
        for row, color in zip(exp.rows, colors, strict=False):
            pts = [(b, *_point(store, _cells(preset, row, col.dataset, b, seeds), key))
                   for b in preset.bits]
            drew |= _plot_series(ax, pts, color, row.label)
        ax.set(xlabel="code length (bits)", ylabel=map_name(col.k), xticks=list(preset.bits),
               title=_col_title(col, preset))
        _finish_panel(ax, drew)
    return fig


def _first_image_column(preset: Preset) -> Column:
    return preset.column_for("imagenet100") or preset.columns[0]


def _fig_hist(plt, exp, preset, store, seeds, cols):
    col = _first_image_column(preset)
    fig, axes = _panels(plt, len(exp.rows), width=3.4)
    bits = exp.bits[0]
    for ax, row in zip(axes, exp.rows, strict=True):
        record = store.load(_cells(preset, row, col.dataset, bits, seeds[:1])[0].cell_id)
        hist = record.get("u_hist") if record else None
        nc = " (N/C)" if record and not record.get("converged") else ""
        ax.set(xlabel="u (before thresholding)", ylabel="count", xlim=(-40, 40),
               title=f"{row.label}{nc}")
        if not hist:
            _missing_text(ax)
            continue
        t = dict(row.hyper).get("t", None if row.method == "dpah_no_kt" else 10)
        if t is not None:
            for x in (-t, t):
                ax.axvline(x, ls=":", color="tab:red", lw=1)
        edges = np.asarray(hist["edges"])
        ax.stairs(np.asarray(hist["counts"]), edges, fill=True, color="tab:blue", alpha=0.8)
        ax.text(0.02, 0.97, f"std {hist['std']:.2f}\nrange [{hist['min']:.1f}, {hist['max']:.1f}]"
                + (f"\n{hist['below'] + hist['above']} outside ±40"
                   if hist["below"] + hist["above"] else ""),
                transform=ax.transAxes, va="top", fontsize=7)
        ax.grid(alpha=0.3)
    return fig


def _fig_tsne(plt, exp, preset, store, seeds, cols):
    col = _first_image_column(preset)
    fig, axes = _panels(plt, len(exp.rows), width=3.8, height=3.8)
    bits = exp.bits[0]
    for ax, row in zip(axes, exp.rows, strict=True):
        cell = _cells(preset, row, col.dataset, bits, seeds[:1])[0]
        path = store.tsne_path(cell.cell_id)
        record = store.load(cell.cell_id)
        nc = " (N/C)" if record and not record.get("converged") else ""
        ax.set(title=f"{row.label}{nc}", xticks=[], yticks=[])
        if not path.exists():
            _missing_text(ax)
            continue
        tsne = store.load_tsne(cell.cell_id)
        emb, cls = tsne["embedding"], tsne["classes"]
        ax.scatter(emb[:, 0], emb[:, 1], c=cls % 20, cmap="tab20", s=4, alpha=0.8,
                   vmin=0, vmax=19)
        ax.text(0.02, 0.02, f"{len(np.unique(cls))} classes, {len(cls)} codes",
                transform=ax.transAxes, fontsize=7)
    return fig
