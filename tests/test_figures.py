"""Figures: drawn from stored records only, byte-identical when re-rendered, both styles, one
panel per distinct dataset, seed error bars, and every missing input reported."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from benchmarks.render import FIGURE_STYLES, build_figure, missing_inputs, render_figure
from benchmarks.render.figures import CLASS_COLOURS, MIN_Y_SPAN
from benchmarks.runner.experiments import (
    DIGITS,
    FIGURES,
    Column,
    cells_for,
    get_preset,
    make_cell,
)
from benchmarks.runner.results import ResultStore

PRESET = get_preset("test")
SEEDS = (0, 1)
#: one figure of each layout
LAYOUTS = {"pr": "pr", "sweep": "t-sensitivity", "series_by_bits": "kt-loss",
           "histograms": "distribution", "tsne": "tsne"}


def _u_hist(scale: float) -> dict:
    edges = np.linspace(-40, 40, 161)
    u = np.random.default_rng(int(scale * 10)).normal(0, scale, 5000)
    counts, _ = np.histogram(u, edges)
    return {"edges": edges.tolist(), "counts": counts.tolist(), "below": 0, "above": 0,
            "n": 5000, "min": float(u.min()), "max": float(u.max()), "mean": float(u.mean()),
            "std": float(u.std()), "part": "train"}


def _record(cell, value: float, converged: bool = True) -> dict:
    return {
        "cell_id": cell.cell_id, "cell": cell.key(), "converged": converged,
        "nc_reason": "" if converged else "loss became NaN at epoch 3",
        "metrics": {"map_at": {"all": value, "5000": value + 0.05},
                    "pr_radius": {"precision": [1.0, 0.6, 0.3], "recall": [0.05, 0.4, 1.0]}},
        "u_hist": _u_hist(1.0 + 0.1 * cell.seed),
    }


def _fill(tmp_path, preset=PRESET, names=tuple(FIGURES)) -> ResultStore:
    """A record (seed s: mAP 0.5 + 0.2 s) for every cell the figures need, t-SNE files too."""
    store = ResultStore(tmp_path, preset.name)
    rng = np.random.default_rng(0)
    for name in names:
        for cell in cells_for(FIGURES[name], preset, SEEDS):
            store.save(_record(cell, 0.5 + 0.2 * cell.seed))
            if "tsne" in cell.needs:
                classes = np.repeat(np.arange(20), 5)
                store.save_tsne(cell.cell_id, rng.normal(size=(100, 2)), classes, np.arange(100))
    return store


def _texts(fig) -> list[str]:
    """Every piece of text a figure shows: suptitle, figure texts, panel titles and notes."""
    out = [fig._suptitle.get_text()] if fig._suptitle else []
    out += [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.texts]
    return out


def _build(name, store, preset=PRESET, style="default"):
    return build_figure(FIGURES[name], preset, store, SEEDS, style=style)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_rerendering_is_byte_identical(tmp_path, layout):
    store = _fill(tmp_path, names=(LAYOUTS[layout],))
    exp = FIGURES[LAYOUTS[layout]]
    styles = FIGURE_STYLES if layout == "pr" else ("default",)
    for style in styles:
        paths = render_figure(exp, PRESET, store, SEEDS, style=style)
        first = {ext: p.read_bytes() for ext, p in paths.items()}
        assert first["png"][:8] == b"\x89PNG\r\n\x1a\n" and first["pdf"][:5] == b"%PDF-"
        assert b"CreationDate" not in first["pdf"]  # no timestamp to differ on
        again = render_figure(exp, PRESET, store, SEEDS, style=style)
        assert {ext: p.read_bytes() for ext, p in again.items()} == first, style


def test_unknown_style_names_the_valid_ones(tmp_path):
    store = ResultStore(tmp_path, PRESET.name)
    with pytest.raises(ValueError, match="default, paper"):
        render_figure(FIGURES["pr"], PRESET, store, style="poster")
    assert not store.figures_dir.exists()


def test_paper_style_drops_banners_and_keeps_panel_labels(tmp_path):
    store = _fill(tmp_path, names=("kt-loss", "distribution"))
    for name in ("kt-loss", "distribution"):
        default = " ".join(_texts(_build(name, store)[0]))
        paper = " ".join(_texts(_build(name, store, style="paper")[0]))
        assert "NOT the paper's setting" in default and "in place of ImageNet-100" in default
        for banner in ("preset", "NOT the paper", "in place of", "Fig."):
            assert banner not in paper, (name, banner)
        assert "(a) " in paper and "(a) " in default
    fig, _ = _build("kt-loss", store, style="paper")
    assert fig.get_size_inches()[0] <= 7.0  # a paper's text width


def test_one_pr_panel_per_dataset_and_one_map_panel_per_metric(tmp_path):
    """Two columns filled by the same data at two cutoffs: one PR panel (curves do not depend
    on the cutoff), two mAP panels named by dataset and metric."""
    other = replace(DIGITS, key="digits_copy", label="other digits (copy)")
    preset = replace(PRESET, columns=(Column("nus_wide", DIGITS, None),
                                      Column("coco", DIGITS, 5000),
                                      Column("imagenet100", other, None)))
    store = _fill(tmp_path, preset, names=("pr", "kt-loss"))
    fig, missing = _build("pr", store, preset)
    assert missing == []
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["(a) digits\n[in place of NUS-WIDE and MS COCO]",
                      "(b) other digits\n[in place of ImageNet-100]"]
    n_methods = len(FIGURES["pr"].rows)
    assert all(len(ax.get_lines()) == n_methods for ax in fig.axes)  # each method drawn once
    fig, _ = _build("kt-loss", store, preset, style="paper")
    assert [ax.get_title() for ax in fig.axes] == [
        "(a) digits, mAP@all", "(b) digits, mAP@5000", "(c) other digits, mAP@all"]


def test_error_bars_are_the_sample_std_over_seeds(tmp_path):
    store = _fill(tmp_path, names=("kt-loss",))  # seed 0: 0.5, seed 1: 0.7
    fig, _ = _build("kt-loss", store)
    (ax,) = fig.axes
    assert len(ax.containers) == 2  # w/o KT and w/ KT, each with error bars
    for container in ax.containers:
        _line, _caps, (bars,) = container.lines
        for seg in bars.get_segments():
            assert seg[1, 1] - seg[0, 1] == pytest.approx(2 * np.std([0.5, 0.7], ddof=1))
            assert (seg[0, 1] + seg[1, 1]) / 2 == pytest.approx(0.6)
    markers = {c.lines[0].get_marker() for c in ax.containers}
    styles = {c.lines[0].get_linestyle() for c in ax.containers}
    assert len(markers) == 2 and len(styles) == 2  # the two series never hide each other


def test_flat_sweep_keeps_a_minimum_y_span_and_says_flat(tmp_path):
    store = ResultStore(tmp_path, PRESET.name)
    for cell in cells_for(FIGURES["t-sensitivity"], PRESET, (0,)):
        store.save(_record(cell, 0.6473 + 0.0001 * len(cell.hyper)))
    fig, _ = build_figure(FIGURES["t-sensitivity"], PRESET, store, (0,))
    (ax,) = fig.axes
    lo, hi = ax.get_ylim()
    assert hi - lo >= MIN_Y_SPAN
    assert any(t.get_text().startswith("flat: spread 0.0001") for t in ax.texts)


def test_histograms_share_axes_fitted_to_the_data(tmp_path):
    store = _fill(tmp_path, names=("distribution",))
    fig, _ = _build("distribution", store)
    axes = fig.axes
    assert len(axes) == 4  # (a) with and without KT overlaid, then t = 15, 10, 5
    assert [len(ax.patches) for ax in axes] == [2, 1, 1, 1]
    assert all(ax.get_ylim() == axes[0].get_ylim() for ax in axes)
    lo, hi = axes[0].get_xlim()
    assert -lo == hi and 15 < hi < 40  # the widest t (15), not the histogram's +-40 edges
    assert fig._suptitle.get_text().count("16 bits") == 1


def test_tsne_legend_has_a_distinct_colour_per_class(tmp_path):
    store = _fill(tmp_path, names=("tsne",))
    fig, _ = _build("tsne", store)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [str(c) for c in range(20)]
    colours = [h.get_color() for h in legend.legend_handles]
    assert len(set(colours)) == 20 and set(colours) == set(CLASS_COLOURS)


def test_missing_inputs_name_each_absent_record_tsne_file_and_histogram(tmp_path):
    store = _fill(tmp_path, names=("tsne", "distribution"))
    seeds0 = [make_cell(PRESET, m, DIGITS, 48, 0) for m in ("dnnh", "hashnet", "dpah")]
    dnnh, hashnet, dpah = seeds0
    assert missing_inputs(FIGURES["tsne"], PRESET, store, SEEDS) == []
    store.tsne_path(dnnh.cell_id).unlink()  # t-SNE files lost
    store.remove(hashnet.cell_id)  # a cell never run
    record = _record(dpah, 0.5, converged=False)  # a non-converged cell is drawn, not missing
    store.save(record)
    missing = missing_inputs(FIGURES["tsne"], PRESET, store, SEEDS)
    assert missing == [f"{dnnh.cell_id}: no t-SNE embedding file (.tsne.csv)",
                       f"{hashnet.cell_id}: no result record"]
    fig, _ = _build("tsne", store)
    assert [ax.get_title() for ax in fig.axes] == ["(a) DNNH", "(b) HashNet", "(c) DPAH (N/C)"]
    assert ["missing" in " ".join(t.get_text() for t in ax.texts) for ax in fig.axes] == \
        [True, True, False]

    no_kt = make_cell(PRESET, "dpah_no_kt", DIGITS, 16, 0)
    record = _record(no_kt, 0.5)
    record["u_hist"] = None
    store.save(record)
    assert missing_inputs(FIGURES["distribution"], PRESET, store, SEEDS) == [
        f"{no_kt.cell_id}: no u histogram (u_hist) in the record"]


def test_figures_read_without_writing_results(tmp_path):
    store = _fill(tmp_path)
    before = sorted(p.name for p in store.cells_dir.iterdir())
    for exp in FIGURES.values():
        if exp.layout == "retrieval":  # needs stored codes: tests/test_retrieval_figure.py
            continue
        assert missing_inputs(exp, PRESET, store, SEEDS) == []
        render_figure(exp, PRESET, store, SEEDS)
    assert sorted(p.name for p in store.cells_dir.iterdir()) == before


def test_a_point_that_leaves_out_seeds_that_did_not_converge_says_so(tmp_path):
    """A mean over the converged seeds only would read as a mean over all of them: the point
    and the dotted baseline name how many seeds did not converge."""
    store = ResultStore(tmp_path, PRESET.name)
    exp = FIGURES["alpha-sensitivity"]
    for cell in cells_for(exp, PRESET, SEEDS):
        collapsed = cell.seed == 1 and dict(cell.hyper).get("alpha") in (0.0, 0.4)
        store.save(_record(cell, 0.5 + 0.2 * cell.seed, converged=not collapsed))
    fig, _ = build_figure(exp, PRESET, store, SEEDS)
    (ax,) = fig.axes
    notes = [t.get_text() for t in ax.texts]
    assert f"1/{len(SEEDS)} N/C" in notes  # the alpha = 0.4 point
    assert f"no margin: 1/{len(SEEDS)} seeds N/C, mean of the others" in notes


def test_a_render_from_fewer_inputs_does_not_replace_the_stored_figure(tmp_path, caplog):
    """A fresh checkout lacks the untracked inputs some figures need: rendering there must not
    overwrite the shipped figure with a less complete one. It goes beside it, and a render at
    least as complete replaces the figure again."""
    import json

    store = _fill(tmp_path, names=("tsne",))
    exp = FIGURES["tsne"]
    fdir = store.figures_dir
    paths = render_figure(exp, PRESET, store, SEEDS)
    complete = paths["png"].read_bytes()
    assert json.loads((fdir / "fig9_tsne.inputs.json").read_text()) == {"missing": []}

    dnnh = make_cell(PRESET, "dnnh", DIGITS, 48, 0)
    tsne = store.tsne_path(dnnh.cell_id)
    saved = tsne.read_bytes()
    tsne.unlink()
    with caplog.at_level("WARNING", logger="hashbench.render"):
        paths = render_figure(exp, PRESET, store, SEEDS)
    assert (fdir / "fig9_tsne.png").read_bytes() == complete  # the stored figure kept
    assert paths["png"] == fdir / "fig9_tsne.incomplete.png" and paths["png"].exists()
    assert paths["pdf"] == fdir / "fig9_tsne.incomplete.pdf"
    assert json.loads((fdir / "fig9_tsne.inputs.json").read_text()) == {"missing": []}
    assert "kept the stored figure, drawn from more inputs (0 missing, this render 1)" \
        in caplog.text

    # a figure whose inputs were never recorded (rendered by older code) is kept too
    (fdir / "fig9_tsne.inputs.json").unlink()
    render_figure(exp, PRESET, store, SEEDS)
    assert (fdir / "fig9_tsne.png").read_bytes() == complete

    tsne.write_bytes(saved)  # the input is back: the render replaces the figure again
    paths = render_figure(exp, PRESET, store, SEEDS)
    assert paths["png"] == fdir / "fig9_tsne.png" and paths["png"].read_bytes() == complete
    assert not (fdir / "fig9_tsne.incomplete.png").exists()
    assert not (fdir / "fig9_tsne.incomplete.pdf").exists()


def test_an_incomplete_render_replaces_a_figure_that_lacked_as_much(tmp_path):
    """While a sweep is under way the figure fills in: a render lacking no more inputs than
    the stored one replaces it."""
    store = _fill(tmp_path, names=("tsne",))
    exp = FIGURES["tsne"]
    hashnet = make_cell(PRESET, "hashnet", DIGITS, 48, 0)
    store.remove(hashnet.cell_id)
    first = render_figure(exp, PRESET, store, SEEDS)
    assert first["png"] == store.figures_dir / "fig9_tsne.png"
    again = render_figure(exp, PRESET, store, SEEDS)
    assert again["png"] == first["png"]
    assert not (store.figures_dir / "fig9_tsne.incomplete.png").exists()
