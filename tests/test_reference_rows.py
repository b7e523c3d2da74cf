"""Reference rows (Sablayrolles et al., ICASSP 2017): the cosine float-ranking engine, the
reference methods (methods/reference.py), their cells and their rows in Table 3."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from benchmarks import metrics as M
from benchmarks.render.tables import build_table, format_markdown
from benchmarks.runner import cell as cell_job
from benchmarks.runner.experiments import (
    REFERENCE_BITS,
    TABLE3,
    cells_for,
    get_preset,
    reference_cells,
)
from benchmarks.runner.results import ResultStore
from methods import get_method
from methods.base import NotFittedError
from methods.reference import prediction_codes

REFS = ("classifier_codes", "classifier_codes_deep", "unhashed_features")


# ------------------------------------------------------------------------ cosine engine
def loop_cosine_ap(q, db, ql, dl, k=None):
    """Plain loop: sort by (-cosine, index), AP@k = sum P(i) rel(i) / hits in the top k."""
    out = []
    for i in range(len(q)):
        sims = [float(np.dot(q[i], d) / (np.linalg.norm(q[i]) * np.linalg.norm(d))) for d in db]
        order = sorted(range(len(db)), key=lambda j: (-sims[j], j))[: k or len(db)]
        hits, s = 0, 0.0
        for rank, j in enumerate(order, 1):
            if (ql[i] & dl[j]).any():
                hits += 1
                s += hits / rank
        out.append(s / hits if hits else np.nan)
    return np.array(out)


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("k", [None, 7])
def test_cosine_ap_equals_a_plain_loop_with_ties_and_blocks(monkeypatch, multi, k):
    rng = np.random.default_rng(0)
    # few distinct directions: many exact ties, broken by ascending database index
    base = rng.integers(-2, 3, size=(4, 5)).astype(np.float64)
    q = base[rng.integers(0, 4, 23)] * rng.integers(1, 3, (23, 1))
    db = base[rng.integers(0, 4, 61)] * rng.integers(1, 3, (61, 1))
    ql = np.eye(5, dtype=np.uint8)[rng.integers(0, 5, 23)]
    dl = np.eye(5, dtype=np.uint8)[rng.integers(0, 5, 61)]
    if multi:
        ql |= (rng.random((23, 5)) < 0.3).astype(np.uint8)
        dl |= (rng.random((61, 5)) < 0.3).astype(np.uint8)
    monkeypatch.setattr(M, "_FLOAT_BLOCK_BYTES", 61 * 21 * 3)  # blocks of 3 queries
    ap = M.cosine_per_query_ap(q, db, ql, dl, k=k)
    np.testing.assert_allclose(ap, loop_cosine_ap(q, db, ql, dl, k), rtol=0, atol=1e-12)
    assert M.cosine_map_at_k(q, db, ql, dl, k=k) == pytest.approx(np.nanmean(ap), abs=1e-15)


def test_cosine_no_hit_rules_match_the_hamming_engine():
    # query 0's class is absent from the database: zero_skip_absent leaves it out, zero counts 0
    # query 1: top item relevant; query 2: relevant items exist, none in the top 1
    q = np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0]])
    db = np.array([[0.0, 1.0], [1.0, 0.1], [0.2, 1.0]])
    ql, dl = np.array([2, 1, 1]), np.array([0, 1, 0])
    drop = M.cosine_per_query_ap(q, db, ql, dl, k=1, no_hit="drop")
    zero = M.cosine_per_query_ap(q, db, ql, dl, k=1, no_hit="zero")
    skip = M.cosine_per_query_ap(q, db, ql, dl, k=1, no_hit="zero_skip_absent")
    assert np.isnan(drop[0]) and zero[0] == 0.0 and np.isnan(skip[0])
    assert drop[1] == zero[1] == skip[1] == 1.0
    assert np.isnan(drop[2]) and zero[2] == 0.0 and skip[2] == 0.0
    assert M.cosine_map_at_k(q, db, ql, dl, k=1, no_hit="zero_skip_absent") == 0.5
    with pytest.raises(ValueError, match="no_hit"):
        M.cosine_map_at_k(q, db, ql, dl, no_hit="typo")
    with pytest.raises(ValueError, match="db_emb.*NaN"):
        M.cosine_map_at_k(q, np.full((3, 2), np.nan), ql, dl)
    with pytest.raises(ValueError, match="dimensions"):
        M.cosine_map_at_k(q, np.ones((3, 3)), ql, dl)


# ------------------------------------------------------------------------ reference methods
def _data(multi: bool, n: int = 160, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    Y = np.eye(4, dtype=np.uint8)[y]
    if multi:
        Y |= (rng.random((n, 4)) < 0.25).astype(np.uint8)
    X = (Y @ rng.normal(size=(4, 12)) * 3 + rng.normal(size=(n, 12))).astype(np.float32)
    return X, Y


def test_prediction_codes_one_hot_and_label_sets():
    s = np.array([[0.1, 0.7, 0.2], [0.3, 0.3, 0.4], [0.5, 0.5, 0.0]])
    np.testing.assert_array_equal(prediction_codes(s, False),
                                  [[0, 1, 0], [0, 0, 1], [1, 0, 0]])  # ties: lowest index
    # multi-label: probability >= 0.5 (scores - 0.5 >= 0), at least the arg-max
    np.testing.assert_array_equal(prediction_codes(s - 0.5, True),
                                  [[0, 1, 0], [0, 0, 1], [1, 1, 0]])


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("name", ["classifier_codes", "classifier_codes_deep"])
def test_classifier_codes_are_the_predictions_and_deterministic(name, multi):
    X, Y = _data(multi)
    cls = get_method(name)
    opts = {"backbone": "mlp", "epochs": 30, "batch_size": 32, "lr": 0.05, "device": "cpu",
            "progress": False} if cls.kind == "deep" else {}
    with pytest.raises(NotFittedError):
        cls(**opts).encode(X)
    m = cls(n_bits=48, seed=3, **opts).fit(X, Y)  # n_bits is recorded, not used
    codes = m.encode(X)
    assert codes.shape == (len(X), 4) and codes.dtype == np.uint8
    assert codes.sum(1).min() >= 1  # at least the most probable label
    if not multi:
        assert (codes.sum(1) == 1).all() and (codes.argmax(1) == Y.argmax(1)).mean() > 0.9
    else:
        assert codes.sum(1).max() > 1  # label sets, not one-hot
    np.testing.assert_array_equal(cls(n_bits=48, seed=3, **opts).fit(X, Y).encode(X), codes)
    np.testing.assert_array_equal(m.encode(X[5:17]), codes[5:17])
    assert m.get_params()["n_bits"] == 48
    bad = X.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        m.encode(bad)
    with pytest.raises(ValueError, match="features"):
        m.encode(X[:, :5])
    no_two = Y.copy()
    no_two[:, 2] = 0
    with pytest.raises(ValueError, match=r"label columns \[2\] have no training item"):
        cls(**opts).fit(X, no_two)


def test_unhashed_features_embed_unit_rows_and_have_no_code():
    X, Y = _data(False)
    m = get_method("unhashed_features")().fit(X, Y)
    E = m.embed(X)
    assert E.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(TypeError, match="no binary code"):
        m.encode(X)
    assert get_method("unhashed_features").ranking == "cosine"


def test_reference_methods_declare_where_their_length_comes_from():
    """The documented exclusion from the n_bits contract: every class with ``code_length``."""
    assert {n: get_method(n).code_length for n in REFS} == {
        "classifier_codes": "n_classes", "classifier_codes_deep": "n_classes",
        "unhashed_features": "float"}
    assert get_method("classifier_codes").kind == "shallow"
    assert get_method("classifier_codes_deep").kind == "deep"
    with pytest.raises(ValueError, match="n_bits must be an integer >= 0"):
        get_method("classifier_codes")(n_bits=-1).fit(*_data(False))


# ------------------------------------------------------------------------ cells and the table
def _preset(preset_name: str = "test"):
    """The test preset with the reference rows (it lists lsh and itq only)."""
    base = get_preset(preset_name)
    return replace(base, table3_methods=("lsh", "itq", *REFS), epochs=3)


def test_table3_has_one_reference_cell_per_column_and_seed():
    preset = _preset()
    refs = [c for c in cells_for(TABLE3, preset) if c.method in REFS]
    assert sorted(c.method for c in refs) == sorted(REFS)
    assert {c.bits for c in refs} == {REFERENCE_BITS}
    # the test preset itself lists only lsh and itq: no reference cells there
    assert not [c for c in cells_for(TABLE3, get_preset("test")) if c.method in REFS]
    # a smoke Table 3 has them under its one column (11 methods x 4 lengths + 3 references)
    assert len(cells_for(TABLE3, get_preset("smoke"))) == 11 * 4 + 3


def test_reference_rows_run_and_show_one_value_under_every_length(tmp_path):
    preset = _preset()
    opts = cell_job.RunOptions(results_dir=str(tmp_path), preset="test",
                               eval_ks=cell_job.eval_ks_for(preset))
    for c in cells_for(TABLE3, preset):
        assert cell_job.run_cell(c, opts).status == "done", c.cell_id
    store = ResultStore(tmp_path, "test")
    col = preset.columns[0]
    lr = reference_cells(TABLE3, preset, TABLE3.reference_rows[0], col.dataset, (0,))[0]
    record = store.load(lr.cell_id)
    assert record["metrics"]["code_length"] == 10  # digits: 10 classes, whatever the bits
    assert 0.8 < record["metrics"]["query_exact_match"] <= 1.0  # query accuracy
    with np.load(store.codes_path(lr.cell_id)) as z:
        assert "query_codes" not in z.files  # 10-bit code in a 0-bit cell: not stored
        assert np.nanmean(z["query_ap_all"]) == pytest.approx(record["metrics"]["map_at"]["all"])
    cos = reference_cells(TABLE3, preset, TABLE3.reference_rows[2], col.dataset, (0,))[0]
    rec = store.load(cos.cell_id)
    assert rec["metrics"]["ranking"] == "cosine"
    data = build_table(TABLE3, preset, store)
    block = data.blocks[0][0]
    for row in TABLE3.reference_rows:
        values = {data.entries[(block, f"{b} bits", row.label)].mean for b in preset.bits}
        assert len(values) == 1 and None not in values, row.label
    md = format_markdown(data, store)
    lines = md.splitlines()
    first_ref = next(i for i, ln in enumerate(lines) if ln.startswith("| reference: classifier"))
    assert lines[first_ref - 1].startswith("| ITQ")  # references below the methods
    assert "C = 10" in md and "Sablayrolles" in md


def test_reference_on_data_without_features_is_skipped_with_its_reason(tmp_path, monkeypatch):
    import data_protocols

    preset = _preset()
    protocol = data_protocols.get_protocol("digits")
    monkeypatch.setattr(type(protocol), "input_kinds", ("images",), raising=False)
    opts = cell_job.RunOptions(results_dir=str(tmp_path), preset="test",
                               eval_ks=cell_job.eval_ks_for(preset))
    col = preset.columns[0]
    cell = reference_cells(TABLE3, preset, TABLE3.reference_rows[0], col.dataset, (0,))[0]
    out = cell_job.run_cell(cell, opts)
    assert out.status == "done"
    store = ResultStore(tmp_path, "test")
    assert store.load(cell.cell_id)["status"] == cell_job.NOT_APPLICABLE
    md = format_markdown(build_table(TABLE3, preset, store), store)
    row = next(ln for ln in md.splitlines() if ln.startswith("| reference: classifier codes, l"))
    assert "n/a" in row
    assert "has no features" in md and "images only" in md


def test_empty_training_label_columns_are_dropped_before_fitting():
    Y = np.array([[1, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=np.uint8)
    kept, dropped = cell_job.drop_empty_label_columns(Y)
    assert dropped == [1] and kept.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    same, none = cell_job.drop_empty_label_columns(Y[:, [0, 2]])
    assert none == [] and same.shape == (3, 2)
