"""Figs. 10/11 (``--figure retrieval``): seeded queries, the evaluation engine's top-5, Jaccard
scores of the stored labels, refusal of another split, missing codes reported, byte-identical
re-rendering. Fake stored codes on digits and on a tiny hand-made multi-label npz dataset."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import data_protocols as dp
from benchmarks import metrics
from benchmarks.render import (
    FIGURE_STYLES,
    build_figure,
    label_jaccard,
    missing_inputs,
    render_figure,
    retrieval_examples,
    retrieval_queries,
)
from benchmarks.runner.experiments import (
    DIGITS,
    FIGURES,
    Column,
    DatasetSpec,
    cells_for,
    get_preset,
)
from benchmarks.runner.results import ResultStore, pack_codes
from data_protocols.core import permutation

PRESET = get_preset("test")
EXP = FIGURES["retrieval"]
BITS = EXP.bits[0]


def _bench(ds: DatasetSpec):
    return dp.get_protocol(ds.protocol).load(None, ds.split_seed, input_kind="images",
                                             progress=False, **ds.variant_dict())


def _save(store: ResultStore, cell, bench, q_codes, db_codes, *, split_hash: str | None = None,
          codes: bool = True, converged: bool = True, db_index=None) -> None:
    """A stored record and codes npz laid out as benchmarks/runner/cell.py writes them."""
    record = {"cell_id": cell.cell_id, "cell": cell.key(), "converged": converged,
              "metrics": {"map_at": {"all": 0.5}} if converged else None,
              "dataset": {"split_hash": split_hash or bench.split.hash()}}
    arrays = {
        "query_codes": pack_codes(q_codes), "db_codes": pack_codes(db_codes),
        "query_labels": pack_codes(bench.targets("query")),
        "db_labels": pack_codes(bench.targets("database")),
        "n_labels": np.array(bench.labels.shape[1]), "n_bits": np.array(BITS),
        "query_index": bench.split.query,
        "db_index": bench.split.database if db_index is None else db_index,
    }
    store.save(record, arrays if codes else None)


def _random_codes(bench, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2, (len(bench.split.query), BITS)),
            rng.integers(0, 2, (len(bench.split.database), BITS)))


def _fill_digits(tmp_path, preset=PRESET) -> tuple[ResultStore, object, dict]:
    """Random 64-bit codes (one seed per method) for every cell of the figure on digits."""
    store = ResultStore(tmp_path, preset.name)
    bench = _bench(DIGITS)
    stored = {}
    for i, cell in enumerate(cells_for(EXP, preset)):
        stored[cell.method] = (cell, *_random_codes(bench, i))
        _save(store, cell, bench, *stored[cell.method][1:])
    return store, bench, stored


def _texts(fig) -> list[str]:
    out = [fig._suptitle.get_text()] if fig._suptitle else []
    out += [sf._suptitle.get_text() for sf in fig.subfigs if sf._suptitle]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.texts]
    return [t.replace("\n", " ") for t in out]  # a wrapped caption line reads as one


# ------------------------------------------------------------------------------ the query rule
def test_query_rule_is_seeded_and_prefers_multi_label_queries_with_a_relevant_item():
    rng = np.random.default_rng(3)
    db = rng.integers(0, 2, (50, 6)).astype(np.uint8)
    db[:, 5] = 0  # label 5 never occurs in the database
    q = np.zeros((40, 6), dtype=np.uint8)
    q[:10, 5] = 1  # no relevant item anywhere
    q[10:30, 0] = 1  # one label
    q[30:, [1, 2]] = 1  # two labels
    q[35:, 5] = 1  # three labels, one absent from the database: still relevant
    chosen = retrieval_queries(q, db)
    assert np.array_equal(chosen, retrieval_queries(q, db))  # deterministic
    multi = np.arange(30, 40)
    assert np.array_equal(chosen, multi[permutation(np.random.default_rng(0), multi.size)[:2]])
    assert not np.array_equal(retrieval_queries(q, db, seed=1), chosen)  # the seed matters
    # fewer than two multi-label candidates: every query with a relevant item is a candidate
    q1 = q.copy()
    q1[31:, [2, 5]] = 0  # only query 30 keeps two labels
    pool = np.arange(10, 40)
    for seed in range(20):
        got = retrieval_queries(q1, db, seed=seed)
        assert np.array_equal(got, pool[permutation(np.random.default_rng(seed), 30)[:2]])
    assert retrieval_queries(q[:10], db).size == 0  # no candidate: no case, never a made-up one


def test_jaccard_of_label_sets_on_a_hand_made_case():
    query = np.array([1, 1, 0, 0])
    items = np.array([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
    assert label_jaccard(query, items) == pytest.approx([1 / 2, 2 / 3, 0.0, 1.0, 0.0])
    assert label_jaccard(np.zeros(4), np.zeros((1, 4))) == pytest.approx([0.0])
    with pytest.raises(ValueError, match="4 labels, items have 3"):
        label_jaccard(query, items[:, :3])


# ------------------------------------------------------------------------------ the figure
def test_top5_is_the_engines_ranking_of_the_stored_codes_for_the_same_two_queries(tmp_path):
    store, bench, stored = _fill_digits(tmp_path)
    (ex,), missing = retrieval_examples(EXP, PRESET, store)
    assert missing == []
    ql, dl = bench.targets("query"), bench.targets("database")
    want = retrieval_queries(ql, dl)
    assert [c.query_position for c in ex.cases] == want.tolist()
    assert [c.query_item for c in ex.cases] == bench.split.query[want].tolist()
    for case in ex.cases:
        assert [r.label for r in case.rows] == ["DPAH", "HashNet", "DNNH"]  # the paper's order
        for row in case.rows:
            cell, q_codes, db_codes = stored[row.cell_id.split("-")[0]]
            assert row.cell_id == cell.cell_id and row.status == "ok"
            top = metrics.retrieve(q_codes, db_codes, k=5)[case.query_position]
            assert row.db_positions == tuple(top)
            assert row.items == tuple(bench.split.database[top])
            assert row.jaccard == pytest.approx(label_jaccard(ql[case.query_position], dl[top]))
            assert row.relevant == tuple(
                bool((dl[p] & ql[case.query_position]).any()) for p in top)


def test_hand_made_multi_label_case_scores_ties_and_missing_codes(tmp_path):
    """Queries {0, 1}; the database's first five items {0,1}, {0,1,2}, {0}, {0,2,3}, {2,3}. DPAH's
    codes put the database in its own order; HashNet's tie items 3..7 at distance 0 (the tie rule
    keeps database order); DNNH's record has no codes file (shipped results)."""
    n, n_query = 20, 3
    path = tmp_path / "tiny.npz"
    images = np.arange(n * 64, dtype=np.int64).reshape(n, 8, 8).astype(np.uint8)
    np.savez(path, labels=np.ones((n, 4), np.uint8), images=images)
    spec = DatasetSpec(key="tiny_ml", protocol="npz", label="tiny multi-label (npz)",
                       variant=(("n_query", n_query), ("path", str(path))))
    split = _bench(spec).split  # a random split: it does not depend on the labels
    labels = np.zeros((n, 4), np.uint8)
    labels[split.query] = [1, 1, 0, 0]
    labels[split.database] = [0, 0, 0, 1]
    for p, s in enumerate([[0, 1], [0, 1, 2], [0], [0, 2, 3], [2, 3]]):
        labels[split.database[p]] = np.isin(np.arange(4), s)
    np.savez(path, labels=labels, images=images)
    bench = _bench(spec)
    assert bench.split == split
    preset = replace(PRESET, retrieval_columns=(Column("coco", spec, None),
                                                Column("nus_wide", DIGITS, None)))
    store = ResultStore(tmp_path / "results", preset.name)
    n_db = len(split.database)
    q_codes = np.zeros((n_query, BITS), np.uint8)
    dpah_db = (np.arange(BITS)[None, :] < np.arange(n_db)[:, None]).astype(np.uint8)  # dist = p
    hashnet_db = np.ones((n_db, BITS), np.uint8)
    hashnet_db[3:8] = 0
    cells = {c.method: c for c in cells_for(EXP, preset) if c.dataset.key == "tiny_ml"}
    _save(store, cells["dpah"], bench, q_codes, dpah_db)
    _save(store, cells["hashnet"], bench, q_codes, hashnet_db)
    _save(store, cells["dnnh"], bench, q_codes, dpah_db, codes=False)

    (ex, ex_digits), missing = retrieval_examples(EXP, preset, store)
    assert ex.multi_label and len(ex.cases) == 2
    for case in ex.cases:
        assert case.query_labels == (0, 1)
        dpah, hashnet, dnnh = case.rows
        assert dpah.db_positions == (0, 1, 2, 3, 4)
        assert dpah.jaccard == pytest.approx([1.0, 2 / 3, 0.5, 0.25, 0.0])
        assert dpah.relevant == (True, True, True, True, False)
        assert hashnet.db_positions == (3, 4, 5, 6, 7)
        assert hashnet.jaccard == pytest.approx([0.25, 0.0, 0.0, 0.0, 0.0])
        assert dnnh.status == "missing" and "no stored codes" in dnnh.note
    assert missing[0] == (f"{cells['dnnh'].cell_id}: no codes file ({cells['dnnh'].cell_id}"
                          ".codes.npz): codes are not tracked by git, so shipped results have "
                          "none; recompute the cell with --force")
    digit_cells = [c for c in cells_for(EXP, preset) if c.dataset.key == "digits"]
    assert missing[1:] == [f"{c.cell_id}: no result record" for c in digit_cells]
    assert [r.note for r in ex_digits.cases[0].rows] == ["missing: no stored result"] * 3

    fig10, fig11 = build_figure(EXP, preset, store)[0]
    text = " ".join(_texts(fig10))
    for shown in ("1.000 ✓", "0.667 ✓", "0.500 ✓", "0.250 ✓", "0.000 ✗", "no stored codes",
                  "Fig. 10", "tiny multi-label (multi-label)", "at least two labels",
                  "default_rng(0)", "labels: 0, 1"):
        assert shown in text, shown
    assert "Fig. 11" in " ".join(_texts(fig11)) and "digits" in " ".join(_texts(fig11))
    # a query and its retrieved items are the dataset's own pixels
    query_ax = next(ax for ax in fig10.axes if ax.get_xlabel().startswith("query #"))
    item = ex.cases[0].query_item
    assert np.array_equal(query_ax.images[0].get_array()[..., 0], images[item])
    paths = render_figure(EXP, preset, store)
    assert sorted(paths) == ["pdf", "pdf_2", "png", "png_2"]
    assert [paths[k].name for k in ("png", "png_2")] == ["fig10_retrieval.png",
                                                         "fig11_retrieval.png"]


def test_a_cell_of_another_split_is_refused_and_reported(tmp_path):
    store, bench, stored = _fill_digits(tmp_path)
    dpah, q_codes, db_codes = stored["dpah"]
    _save(store, dpah, bench, q_codes, db_codes, split_hash="0123456789ab")
    hashnet, q_codes, db_codes = stored["hashnet"]
    shifted = bench.split.database[::-1].copy()  # the right hash, but other items
    _save(store, hashnet, bench, q_codes, db_codes, db_index=shifted)
    dnnh = stored["dnnh"][0]  # a later run that did not converge: the old codes are not its own
    _save(store, dnnh, bench, q_codes, db_codes, codes=False, converged=False)
    assert not store.codes_path(dnnh.cell_id).is_file()  # the store drops the earlier codes
    missing = missing_inputs(EXP, PRESET, store)
    assert missing == [
        (f"{dpah.cell_id}: split mismatch: the record's split 0123456789ab is not the split "
        f"{bench.split.hash()} of the data read now; refusing to show images of another split "
        "(recompute the cell with --force)"),
        (f"{hashnet.cell_id}: split mismatch: the item indices or labels in {hashnet.cell_id}"
        ".codes.npz are not those of the data read now; refusing to show images of other "
        "items (recompute the cell with --force)"),
    ]  # the N/C cell without codes is drawn as N/C, not missing
    (ex,), _ = retrieval_examples(EXP, PRESET, store)
    for case in ex.cases:
        assert [(r.status, r.items) for r in case.rows] == [("missing", ())] * 3
        assert [r.note for r in case.rows] == [
            "refused: stored split differs from the data read now"] * 2 + [
            "N/C (did not converge): no codes"]


@pytest.mark.parametrize("style", FIGURE_STYLES)
def test_rerendering_is_byte_identical_in_both_styles(tmp_path, style):
    store = _fill_digits(tmp_path)[0]
    paths = render_figure(EXP, PRESET, store, style=style)
    assert sorted(paths) == ["pdf", "png"]  # one retrieval dataset in the test preset
    first = {k: p.read_bytes() for k, p in paths.items()}
    assert first["png"][:8] == b"\x89PNG\r\n\x1a\n" and b"CreationDate" not in first["pdf"]
    again = render_figure(EXP, PRESET, store, style=style)
    assert {k: p.read_bytes() for k, p in again.items()} == first
    (fig,), _ = build_figure(EXP, PRESET, store, style=style)
    text = " ".join(_texts(fig))
    assert "(a) Case 1" in text and "(b) Case 2" in text
    banners = ("preset test", "in place of MS COCO", "default_rng(0)", "single-label")
    assert all((b in text) == (style == "default") for b in banners)


def test_cells_are_the_presets_retrieval_columns_at_64_bits():
    cpu = get_preset("cpu")
    got = {(c.method, c.dataset.key, c.bits, c.seed) for c in cells_for(EXP, cpu)}
    assert got == {(m, d, 64, 0) for m in ("dpah", "hashnet", "dnnh")
                   for d in ("cifar10_mosaic_mobilenet", "cifar10_mobilenet")}
    assert get_preset("cpu").retrieval_columns[0].dataset.protocol == "cifar10_mosaic"
    assert {c.dataset.key for c in cells_for(EXP, get_preset("paper"))} == {"coco", "nuswide21"}


def test_a_preset_without_retrieval_datasets_says_so(tmp_path):
    preset = replace(PRESET, retrieval_columns=())
    store = ResultStore(tmp_path, preset.name)
    assert cells_for(EXP, preset) == []
    assert missing_inputs(EXP, preset, store) == [
        "preset test: no retrieval dataset (Preset.retrieval_columns is empty)"]
    (fig,), _ = build_figure(EXP, preset, store)
    assert "preset test has no retrieval dataset" in " ".join(_texts(fig))
