"""Significance marks in the tables (benchmarks/render/tables.py): the best method's lead over
the runner-up, tested by the paired bootstrap on the per-query APs the cells stored."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from benchmarks import stats
from benchmarks.render.tables import (
    NO_SIGNIFICANCE_TEXT,
    SIGNIFICANCE_TEXT,
    build_table,
    format_csv,
    format_latex,
    format_markdown,
)
from benchmarks.runner.experiments import DIGITS, TABLE3, get_preset, make_cell
from benchmarks.runner.results import ResultStore, pack_codes

PRESET = get_preset("test")  # Table 3 rows LSH and ITQ, 16 and 32 bits, digits
N_Q = 300


def _save(store: ResultStore, method: str, bits: int, seed: int, ap: np.ndarray | None,
          ids: np.ndarray | None = None, codes: dict | None = None) -> None:
    """A finished cell whose table value is the mean of ``ap``; with its codes file unless
    ``ap`` and ``codes`` are both None (shipped results: no codes)."""
    cell = make_cell(PRESET, method, DIGITS, bits, seed)
    ids = np.arange(N_Q) if ids is None else ids
    value = float(np.nanmean(ap)) if ap is not None else float(
        stats.run_ap(codes["q"], codes["db"], codes["ql"], codes["dl"]).map)
    record = {"cell_id": cell.cell_id, "cell": cell.key(), "converged": True,
              "metrics": {"map_at": {"all": value}}, "environment": {"git_commit": "abc"},
              "utc_time": "2026-01-01T00:00:00Z"}
    packed = None
    if ap is not None:
        packed = {"query_ap_all": ap, "query_index": ids}
    elif codes is not None:  # a codes file written before cells stored per-query APs
        packed = {"query_codes": pack_codes(codes["q"]), "db_codes": pack_codes(codes["db"]),
                  "query_labels": pack_codes(codes["ql"]), "db_labels": pack_codes(codes["dl"]),
                  "n_labels": np.array(codes["ql"].shape[1]), "n_bits": np.array(bits),
                  "query_index": ids}
    store.save(record, packed)


def _rows(data):
    return list(csv.DictReader(io.StringIO(format_csv(data))))


def test_clear_lead_is_unmarked_and_coin_flip_lead_is_marked(tmp_path):
    rng = np.random.default_rng(0)
    store = ResultStore(tmp_path, "test")
    a = rng.uniform(0.2, 0.8, N_Q)
    _save(store, "itq", 16, 0, np.clip(a + 0.2, 0, 1))  # 16 bits: ITQ far ahead
    _save(store, "lsh", 16, 0, a)
    d = rng.permutation(np.tile([0.05, -0.05], N_Q // 2))  # 32 bits: a fair coin per query
    _save(store, "itq", 32, 0, a)
    _save(store, "lsh", 32, 0, np.clip(a + d + 0.001, 0, 1))
    data = build_table(TABLE3, PRESET, store)
    md = format_markdown(data, store)
    assert SIGNIFICANCE_TEXT in md and "10,000 resamples, seed 0, 95% interval" in md
    itq = next(ln for ln in md.splitlines() if ln.startswith("| ITQ"))
    lsh = next(ln for ln in md.splitlines() if ln.startswith("| LSH"))
    assert "†" not in itq.split("|")[2]  # 16 bits: significant lead, no mark
    assert "†" in lsh.split("|")[5] and "†" not in itq  # 32 bits: LSH best, not significant
    rows = {(r["row"], r["column"]): r for r in _rows(data)}
    assert rows[("ITQ", "16 bits")]["best"] == "yes"
    assert rows[("ITQ", "16 bits")]["lead_significant"] == "yes"
    assert rows[("ITQ", "16 bits")]["runner_up"] == "LSH"
    assert float(rows[("ITQ", "16 bits")]["lead_low"]) > 0
    assert rows[("LSH", "32 bits")]["lead_significant"] == "no"
    assert rows[("ITQ", "32 bits")]["best"] == "no"
    # the same test as benchmarks/stats.py on the same vectors
    block = data.blocks[0][0]
    t = data.tests[(block, "16 bits")]
    ref = stats.paired_bootstrap(stats.RunAP(np.clip(a + 0.2, 0, 1), np.arange(N_Q)),
                                 stats.RunAP(a, np.arange(N_Q)))
    assert (t.comparison.test.low, t.comparison.test.high) == (ref.low, ref.high)
    assert r"$^\dagger$" in format_latex(data, store)


def test_over_seeds_the_bootstrap_resamples_seeds_too(tmp_path):
    preset = type(PRESET)(**{**PRESET.__dict__, "seeds": (0, 1)})
    rng = np.random.default_rng(1)
    store = ResultStore(tmp_path, "test")
    a = rng.uniform(0.2, 0.8, N_Q)
    for seed, shift in ((0, 0.1), (1, 0.12)):
        _save(store, "itq", 16, seed, np.clip(a + shift, 0, 1))
        _save(store, "lsh", 16, seed, a)
    data = build_table(TABLE3, preset, store)
    t = data.tests[(data.blocks[0][0], "16 bits")]
    assert t.status == "computed" and t.best == "ITQ" and t.significant
    assert t.comparison.test.resampled == "seeds, then queries"
    assert (t.comparison.test.n_runs_a, t.comparison.test.n_runs_b) == (2, 2)


def test_without_stored_codes_the_header_says_not_computed(tmp_path):
    store = ResultStore(tmp_path, "test")
    for method, value in (("itq", 0.6), ("lsh", 0.5)):
        cell = make_cell(PRESET, method, DIGITS, 16, 0)
        store.save({"cell_id": cell.cell_id, "cell": cell.key(), "converged": True,
                    "metrics": {"map_at": {"all": value}}})
    data = build_table(TABLE3, PRESET, store)
    md = format_markdown(data, store)
    assert NO_SIGNIFICANCE_TEXT in md and "†" not in md
    row = next(r for r in _rows(data) if r["row"] == "ITQ" and r["column"] == "16 bits")
    assert row["lead_significant"] == "not computed: no stored codes"


def test_different_query_sets_are_refused_in_the_table_not_a_crash(tmp_path):
    store = ResultStore(tmp_path, "test")
    rng = np.random.default_rng(2)
    _save(store, "itq", 16, 0, rng.uniform(0.4, 0.9, N_Q))
    _save(store, "lsh", 16, 0, rng.uniform(0.0, 0.5, N_Q), ids=np.arange(N_Q) + 1)
    data = build_table(TABLE3, PRESET, store)
    md = format_markdown(data, store)
    assert "refused" in md and "'itq seed 0' and 'lsh seed 0'" in md
    assert "different query sets" in md and "†" not in md


def test_old_codes_files_give_the_per_query_ap_through_the_engine(tmp_path):
    rng = np.random.default_rng(3)
    store = ResultStore(tmp_path, "test")
    y, ydb = rng.integers(0, 5, N_Q), rng.integers(0, 5, 400)
    labels = np.eye(5, dtype=np.uint8)
    proto = rng.integers(0, 2, (5, 16), dtype=np.uint8)
    for method, flip in (("itq", 0.1), ("lsh", 0.4)):
        q = proto[y] ^ (rng.random((N_Q, 16)) < flip).astype(np.uint8)
        db = proto[ydb] ^ (rng.random((400, 16)) < flip).astype(np.uint8)
        _save(store, method, 16, 0, None, codes={"q": q, "db": db, "ql": labels[y],
                                                 "dl": labels[ydb]})
    data = build_table(TABLE3, PRESET, store)
    t = data.tests[(data.blocks[0][0], "16 bits")]
    assert t.status == "computed" and t.best == "ITQ" and t.significant
    e = data.entries[(data.blocks[0][0], "16 bits", "ITQ")]
    assert t.comparison.maps["ITQ"] == pytest.approx(e.mean, abs=1e-12)


def test_a_group_with_a_missing_row_or_a_short_seed_count_is_not_tested(tmp_path):
    """While a method's cells are not all in, its group's lead is not tested (and unmarked): a
    lead over the methods that finished first, or over a mean of fewer seeds, is no lead."""
    preset = type(PRESET)(**{**PRESET.__dict__, "seeds": (0, 1)})
    rng = np.random.default_rng(4)
    store = ResultStore(tmp_path, "test")
    a = rng.uniform(0.2, 0.8, N_Q)
    coin = rng.permutation(np.tile([0.05, -0.05], N_Q // 2))
    for seed in (0, 1):  # 16 bits: both methods at both seeds, a coin-flip lead (marked)
        _save(store, "itq", 16, seed, a)
        _save(store, "lsh", 16, seed, np.clip(a + coin + 0.001, 0, 1))
    _save(store, "itq", 32, 0, a)  # 32 bits: LSH has one seed of two
    _save(store, "itq", 32, 1, a)
    _save(store, "lsh", 32, 0, np.clip(a + coin + 0.001, 0, 1))
    data = build_table(TABLE3, preset, store)
    block = data.blocks[0][0]
    assert data.tests[(block, "16 bits")].status == "computed"
    t = data.tests[(block, "32 bits")]
    assert t.status == "incomplete" and t.short_rows == ["LSH"]
    assert t.reason == "incomplete: LSH (1/2 seeds)"
    md = format_markdown(data, store)
    lsh = next(ln for ln in md.splitlines() if ln.startswith("| LSH"))
    assert "†" in lsh.split("|")[2] and "†" not in lsh.split("|")[5]
    assert ("significance not computed for 1 of 2 cells (1 incomplete, a method row missing or "
            "short of seeds: LSH); their best value is unmarked") in md
    row = next(r for r in _rows(data) if r["row"] == "LSH" and r["column"] == "32 bits")
    assert row["lead_significant"] == "not computed: incomplete: LSH (1/2 seeds)"
    # the second seed lands: the group is tested
    _save(store, "lsh", 32, 1, np.clip(a + coin + 0.001, 0, 1))
    assert build_table(TABLE3, preset, store).tests[(block, "32 bits")].status == "computed"
