"""``--table claims`` (benchmarks/render/claims.py): a verdict on each of the paper's claims,
computed from hand-made stored cells (per-query APs) in a temporary results folder."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd

import run_all
from benchmarks import stats
from benchmarks.render.claims import build_claims, format_markdown, render_claims
from benchmarks.render.tables import build_table
from benchmarks.runner.experiments import (
    CLAIMS,
    DIGITS,
    TABLE3,
    cells_for,
    get_preset,
    make_cell,
    reference_cells,
)
from benchmarks.runner.results import ResultStore

#: the test preset (digits, 16 and 32 bits, Table 2 on the `linear` backbone) with DPAH and two
#: reference rows in Table 3
PRESET = replace(get_preset("test"), table3_methods=("lsh", "itq", "dpah", "classifier_codes",
                                                     "unhashed_features"))
N_Q = 300
RNG = np.random.default_rng(0)
BASE = RNG.uniform(0.2, 0.8, N_Q)
DPAH_AP = np.clip(BASE + 0.2 + RNG.normal(0, 0.1, N_Q), 0, 1)  # far ahead, query by query noisy


def _cell(method: str, bits: int, backbone: str | None = None, **hyper):
    return make_cell(PRESET, method, DIGITS, bits, 0, hyper, backbone)


def _save(store: ResultStore, cell, ap: np.ndarray | None, ids: np.ndarray | None = None) -> None:
    """A finished cell whose table value is the mean of ``ap``, with its per-query APs (none
    when ``ap`` is None: value 0.5, as results older than the per-query files)."""
    value = 0.5 if ap is None else float(np.nanmean(ap))
    record = {"cell_id": cell.cell_id, "cell": cell.key(), "converged": True,
              "metrics": {"map_at": {"all": value}}, "environment": {"git_commit": "abc"},
              "utc_time": "2026-01-01T00:00:00Z"}
    ids = np.arange(N_Q) if ids is None else ids
    store.save(record, None if ap is None else {"query_ap_all": ap, "query_index": ids})


def _shift(x: float) -> np.ndarray:
    return np.clip(BASE + x, 0, 1)


def _claims(store: ResultStore) -> dict[str, object]:
    return {c.key: c for c in build_claims(CLAIMS, PRESET, store).claims}


def _fill_table3(store: ResultStore) -> None:
    """DPAH far ahead of ITQ, ITQ ahead of LSH; the reference rows above everything."""
    for bits in PRESET.bits:
        _save(store, _cell("dpah", bits), DPAH_AP)
        _save(store, _cell("itq", bits), BASE)
        _save(store, _cell("lsh", bits), _shift(-0.1))
    for row in TABLE3.reference_rows:
        if row.method in PRESET.table3_methods:
            (ref,) = reference_cells(TABLE3, PRESET, row, DIGITS, (0,))
            _save(store, ref, np.ones(N_Q))


def test_a_clear_win_holds_and_the_best_other_is_no_reference_row(tmp_path):
    store = ResultStore(tmp_path, "test")
    _fill_table3(store)
    claims = _claims(store)
    first = claims["dpah-first"]
    assert first.verdict == "holds (2/2 comparisons, 2 significant)"
    for c in first.comparisons:
        assert (c.a.row, c.b.row) == ("DPAH", "ITQ")  # not a reference row, though higher
        assert c.test.low > 0 and c.significance == "yes"
    # the same test as benchmarks/stats.py on the same vectors
    ref = stats.paired_bootstrap(stats.RunAP(DPAH_AP, np.arange(N_Q)),
                                 stats.RunAP(BASE, np.arange(N_Q)))
    assert (first.comparisons[0].test.low, first.comparisons[0].test.high) == (ref.low, ref.high)
    # groups from the methods' declared attributes: DPAH supervised and deep, LSH/ITQ neither
    for key in ("supervised", "deep"):
        assert claims[key].verdict == "holds (2/2 comparisons, 2 significant)"
        assert {(c.a.row, c.b.row) for c in claims[key].comparisons} == {("DPAH", "ITQ")}
    assert "unsupervised: LSH, ITQ." in claims["supervised"].rule
    md = format_markdown(build_claims(CLAIMS, PRESET, store), store)
    assert "| 1. DPAH is first in every column | holds (2/2 comparisons, 2 significant) | " \
           "Table 3 |" in md
    assert "does not correct for this selection" in md
    assert "reference" not in md.split("### 1.")[1].split("### 2.")[0].split("\n\n", 2)[2]


def test_a_reversed_claim_does_not_hold_and_n_c_members_are_left_out(tmp_path):
    store = ResultStore(tmp_path, "test")
    _save(store, _cell("softmax_pa", 48), _shift(-0.2))  # Table 1: PA far below softmax+CE
    _save(store, _cell("softmax_ce", 48), BASE)
    _fill_table3(store)
    lsh = _cell("lsh", 32)
    store.save({"cell_id": lsh.cell_id, "cell": lsh.key(), "converged": False, "metrics": None})
    claims = _claims(store)
    pa = claims["pa"]
    assert pa.verdict == "does not hold (0/1 comparisons; 1 significantly reversed)"
    (c,) = pa.comparisons  # Table 1's two mAP@all columns are one comparison
    assert c.favours == "B" and c.significance == "yes, reversed" and c.test.high < 0
    first = claims["dpah-first"].comparisons
    assert first[1].note == "N/C, left out of the selection: LSH" and first[1].b.row == "ITQ"


def test_identical_per_query_aps_give_zero_and_no_significance(tmp_path):
    store = ResultStore(tmp_path, "test")
    _save(store, _cell("softmax_kt", 48, "linear"), BASE)
    _save(store, _cell("softmax_ce", 48, "linear"), BASE)
    kt = _claims(store)["kt"]
    same, dpah = kt.comparisons
    assert (same.test.difference, same.test.low, same.test.high) == (0.0, 0.0, 0.0)
    assert same.favours == "tie" and same.significance == "no"
    assert dpah.test is None and dpah.reason == "missing: DPAH, DPAH-without-KT"
    assert kt.verdict == ("partly computed (1 of 2 comparisons; missing: DPAH, DPAH-without-KT):"
                          " does not hold (0/1 comparisons; 0 significantly reversed)")
    md = format_markdown(build_claims(CLAIMS, PRESET, store), store)
    assert "| +0.0000 [+0.0000, +0.0000] | no |" in md


def test_missing_cells_absent_aps_and_other_queries_are_not_computed_with_the_reason(tmp_path):
    store = ResultStore(tmp_path, "test")
    no_margin = _cell("dpah", 16, alpha=0.0)
    _save(store, no_margin, BASE)  # Fig. 7: only the baseline is there
    _save(store, _cell("softmax_pa", 48), BASE)  # Table 1: softmax+CE without per-query APs
    _save(store, _cell("softmax_ce", 48), None)
    _save(store, _cell("softmax_kt", 48, "linear"), BASE)  # Table 2: another query set
    _save(store, _cell("softmax_ce", 48, "linear"), BASE, ids=np.arange(N_Q) + 1)
    claims = _claims(store)  # never an exception
    margin = claims["margin"]
    assert margin.verdict == "not computed (missing: DPAH (alpha = 0.2, default))"
    assert margin.comparisons[0].missing_cells == [_cell("dpah", 16).cell_id]
    assert margin.comparisons[0].b.mean == float(np.mean(BASE))  # the side that is there
    assert claims["pa"].verdict == "not computed (no stored per-query AP: softmax+CE)"
    assert claims["kt"].verdict.startswith("not computed (refused by the test: runs "
                                           "'softmax_kt seed 0' and 'softmax_ce seed 0' were "
                                           "evaluated on different query sets")
    assert claims["kt"].verdict.endswith("; missing: DPAH, DPAH-without-KT)")
    assert claims["dpah-first"].verdict == "not computed (missing: DPAH, LSH, ITQ)"
    assert get_preset("test").table3_methods == ("lsh", "itq")  # no DPAH row there at all
    plain = {c.key: c for c in build_claims(CLAIMS, get_preset("test"), store).claims}
    assert plain["dpah-first"].verdict.startswith("not computed (not in the table: DPAH; ")
    assert plain["supervised"].verdict.startswith("not computed (not in the table: best "
                                                  "supervised; ")


def test_csv_has_one_row_per_comparison_and_rerendering_is_byte_identical(tmp_path):
    store = ResultStore(tmp_path, "test")
    _fill_table3(store)
    _save(store, _cell("softmax_pa", 48), _shift(0.05))
    _save(store, _cell("softmax_ce", 48), BASE)
    first = render_claims(CLAIMS, PRESET, store)
    before = {ext: p.read_bytes() for ext, p in first.items()}
    assert render_claims(CLAIMS, PRESET, store) == first
    assert {ext: p.read_bytes() for ext, p in first.items()} == before
    assert first["md"] == tmp_path / "test" / "tables" / "claims.md"
    df = pd.read_csv(first["csv"])
    claims = build_claims(CLAIMS, PRESET, store).claims
    assert len(df) == sum(len(c.comparisons) for c in claims) == 2 * 3 + 1 + 2 + 1
    assert list(df.claim.unique()) == [1, 2, 3, 4, 5, 6]
    assert set(df.status) == {"computed", "not computed"}
    done = df[df.status == "computed"]
    assert (done.difference.between(done.ci_low, done.ci_high)).all()
    assert df.loc[df.claim_key == "pa", "a"].item() == "softmax+PA"
    # one detail row per comparison in the Markdown too
    md = first["md"].read_text()
    rows = [ln for ln in md.splitlines() if re.match(r"\| [^c|-].* \| \d+ \| ", ln)]
    assert len(rows) == len(df)


def test_claims_runs_the_cells_of_its_tables_and_renders_from_the_command_line(tmp_path, capsys):
    smoke = get_preset("smoke")
    union = {c.cell_id for e in CLAIMS.uses for c in cells_for(e, smoke)}
    assert {c.cell_id for c in cells_for(CLAIMS, smoke)} == union
    assert "claims" in run_all.TABLE_CHOICES
    base = ["--preset", "smoke", "--results-dir", str(tmp_path), "--no-progress", "-q"]
    assert run_all.main([*base, "--table", "claims", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith(f"dry run, preset smoke: {len(union)} cells, 0 done")
    assert run_all.main([*base, "--table", "claims", "--render-only"]) == 0
    md = (tmp_path / "smoke" / "tables" / "claims.md").read_text()
    assert "| 6. The margin helps | not computed (missing: " in md
    assert not (tmp_path / "smoke" / "cells").exists()  # rendering ran nothing
    # another recipe's claims go where that run's other tables go
    assert run_all.main([*base, "--table", "claims", "--recipe", "published",
                         "--render-only"]) == 0
    assert (tmp_path / "smoke" / "recipe-published" / "tables" / "claims.csv").is_file()


def test_a_side_short_of_seeds_is_not_compared_and_its_table_group_is_not_tested(tmp_path):
    """A mean over one seed against means over two is no comparison: the claim says which row
    is short, and Table 3's significance test waits for it too."""
    preset = replace(PRESET, seeds=(0, 1))
    store = ResultStore(tmp_path, "test")
    for bits in preset.bits:
        for seed in preset.seeds:
            for method, ap in (("dpah", DPAH_AP), ("itq", BASE), ("lsh", _shift(-0.1))):
                if method != "dpah" or seed == 0:  # DPAH: seed 0 only
                    _save(store, make_cell(preset, method, DIGITS, bits, seed), ap)
    claims = {c.key: c for c in build_claims(CLAIMS, preset, store).claims}
    first = claims["dpah-first"]
    assert first.verdict == "not computed (short of seeds: DPAH (1/2))"
    assert first.comparisons[0].missing_cells == [make_cell(preset, "dpah", DIGITS, 16, 1).cell_id]
    table = build_table(TABLE3, preset, store)
    tests = {t.status for t in table.tests.values()}
    assert tests == {"incomplete"}
    assert {tuple(t.short_rows) for t in table.tests.values()} == {("DPAH",)}
    for bits in preset.bits:  # DPAH's second seed lands: both are computed
        _save(store, make_cell(preset, "dpah", DIGITS, bits, 1), DPAH_AP)
    claims = {c.key: c for c in build_claims(CLAIMS, preset, store).claims}
    assert claims["dpah-first"].verdict == "holds (2/2 comparisons, 2 significant)"
    assert {t.status for t in build_table(TABLE3, preset, store).tests.values()} == {"computed"}
