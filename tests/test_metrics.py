"""Tests of the evaluation engine against a plain per-query reference and hand-computed values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks import metrics as M

# --------------------------------------------------------------------------- naive reference


def ref_ranking(q: np.ndarray, db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hamming distances and the stable (distance, db index) order, one query."""
    dist = (q[None, :] != db).sum(1)
    return dist, np.argsort(dist, kind="stable")


def ref_rel(ql: np.ndarray, dbl: np.ndarray) -> np.ndarray:
    return (dbl.astype(int) @ ql.astype(int)) > 0


def ref_ap_from_rel(rel: np.ndarray) -> float:
    rel = rel.astype(float)
    if rel.sum() == 0:
        return float("nan")
    prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return float((prec * rel).sum() / rel.sum())


def ref_ap(q, db, ql, dbl, k) -> np.ndarray:
    out = []
    for i in range(len(q)):
        _, order = ref_ranking(q[i], db)
        out.append(ref_ap_from_rel(ref_rel(ql[i], dbl)[order[:k]]))
    return np.array(out)


def ref_map(aps: np.ndarray, no_hit: str) -> float:
    if no_hit == "zero":
        return float(np.nan_to_num(aps).mean())
    kept = aps[~np.isnan(aps)]
    return float(kept.mean()) if len(kept) else 0.0


def random_case(seed, n_q, n_db, n_bits, n_classes, multi):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 2, (n_q, n_bits), dtype=np.uint8)
    db = rng.integers(0, 2, (n_db, n_bits), dtype=np.uint8)
    ql = np.eye(n_classes, dtype=np.uint8)[rng.integers(0, n_classes, n_q)]
    dbl = np.eye(n_classes, dtype=np.uint8)[rng.integers(0, n_classes, n_db)]
    if multi:
        ql |= (rng.random(ql.shape) < 0.2).astype(np.uint8)
        dbl |= (rng.random(dbl.shape) < 0.2).astype(np.uint8)
    return q, db, ql, dbl


CASES = [  # (n_bits, n_q, n_db, classes, multi): 8 bits -> heavy ties
    (8, 25, 600, 5, False),
    (8, 25, 600, 6, True),
    (12, 15, 2500, 20, True),  # rare relevance: many no-hit queries at small k
    (70, 8, 300, 3, False),  # more than one 64-bit word
]


# --------------------------------------------------------------------------- packing, distances


def test_pack_codes_is_faiss_layout():
    codes = np.zeros((2, 16), dtype=np.uint8)
    codes[0, 0] = 1  # bit 0 -> least-significant bit of byte 0
    codes[1, 9] = 1  # bit 9 -> bit 1 of byte 1
    np.testing.assert_array_equal(M.pack_codes(codes), [[1, 0], [0, 2]])


@pytest.mark.parametrize("n_bits", [5, 8, 64, 70, 130])
def test_hamming_distances_match_direct_count(n_bits):
    rng = np.random.default_rng(n_bits)
    q = rng.integers(0, 2, (7, n_bits))
    db = rng.integers(0, 2, (33, n_bits))
    d = M.hamming_distances(M.pack_codes(q), M.pack_codes(db))
    np.testing.assert_array_equal(d, (q[:, None, :] != db[None, :, :]).sum(2))


# --------------------------------------------------------------------------- vs the reference


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", [1, 3, 40, 250, None])
def test_ap_and_map_match_reference(case, k):
    n_bits, n_q, n_db, n_c, multi = case
    q, db, ql, dbl = random_case(n_bits + n_c, n_q, n_db, n_bits, n_c, multi)
    kk = n_db if k is None else k
    want = ref_ap(q, db, ql, dbl, kk)
    got = M.average_precision_at_k(q, db, ql, dbl, k)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)  # NaN positions must agree too
    for no_hit in ("drop", "zero"):
        assert M.map_at_k(q, db, ql, dbl, k, no_hit) == pytest.approx(ref_map(want, no_hit),
                                                                       rel=1e-12, abs=0)


@pytest.mark.parametrize("case", CASES[:3])
def test_retrieve_and_curves_match_reference(case):
    n_bits, n_q, n_db, n_c, multi = case
    q, db, ql, dbl = random_case(7, n_q, n_db, n_bits, n_c, multi)
    ks = [1, 10, 100, n_db + 5]
    prec_k, rec_k, prec_r, rec_r, p2 = [], [], [], [], []
    idx = M.retrieve(q, db, 100)
    for i in range(n_q):
        dist, order = ref_ranking(q[i], db)
        np.testing.assert_array_equal(idx[i], order[:100])
        rel = ref_rel(ql[i], dbl)
        prec_k.append([rel[order[:min(a, n_db)]].sum() / min(a, n_db) for a in ks])
        if rel.sum():
            rec_k.append([rel[order[:min(a, n_db)]].sum() / rel.sum() for a in ks])
            rec_r.append([rel[dist <= r].sum() / rel.sum() for r in range(n_bits + 1)])
        prec_r.append([rel[dist <= r].mean() if (dist <= r).any() else 0.0
                       for r in range(n_bits + 1)])
        p2.append(prec_r[-1][2])
    pk = M.precision_recall_at_k(q, db, ql, dbl, ks)
    np.testing.assert_allclose(pk["precision"], np.mean(prec_k, 0), rtol=1e-12)
    np.testing.assert_allclose(pk["recall"], np.mean(rec_k, 0), rtol=1e-12)
    pr = M.pr_curve_radius(q, db, ql, dbl)
    np.testing.assert_allclose(pr["precision"], np.mean(prec_r, 0), rtol=1e-12)
    np.testing.assert_allclose(pr["recall"], np.mean(rec_r, 0), rtol=1e-12)
    assert M.precision_within_radius(q, db, ql, dbl) == pytest.approx(np.mean(p2), rel=1e-12)

    res = M.evaluate(q, db, ql, dbl, k=50, precision_at=ks)
    assert res["map_at_k"] == pytest.approx(ref_map(ref_ap(q, db, ql, dbl, 50), "drop"))
    assert res["map"] == pytest.approx(ref_map(ref_ap(q, db, ql, dbl, n_db), "drop"))
    assert res["precision_radius2"] == pytest.approx(np.mean(p2))
    assert list(res["precision_at_k"].values()) == pytest.approx(list(np.mean(prec_k, 0)))
    import json

    json.dumps(res)  # JSON-serialisable


def test_thread_count_does_not_change_results():
    q, db, ql, dbl = random_case(3, 40, 900, 8, 5, True)
    old = M._N_THREADS
    try:
        M.set_num_threads(1)
        a = M.evaluate(q, db, ql, dbl, k=30)
        M.set_num_threads(3)
        b = M.evaluate(q, db, ql, dbl, k=30)
    finally:
        M.set_num_threads(old)
    assert a == b


def test_blocking_and_candidate_widening(monkeypatch):
    """Tiny memory blocks (many blocks, one row per candidate group) give the same numbers."""
    q, db, ql, dbl = random_case(5, 30, 1000, 8, 4, False)
    want = ref_ap(q, db, ql, dbl, 20)
    monkeypatch.setattr(M, "_BLOCK_BYTES", 4000)
    np.testing.assert_allclose(M.average_precision_at_k(q, db, ql, dbl, 20), want, rtol=1e-12)
    # a sample that badly under-estimates the threshold must be widened, not trusted
    monkeypatch.setattr(M, "_thresholds_from_sample",
                        lambda D, kmax, n_bits: np.zeros(len(D), dtype=np.int64))
    np.testing.assert_allclose(M.average_precision_at_k(q, db, ql, dbl, 20), want, rtol=1e-12)


# --------------------------------------------------------------------------- hand-computed cases


def codes_for_ranking(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A query of zeros and n database items at distances 1..n (item i at distance i+1)."""
    q = np.zeros((1, n), dtype=np.uint8)
    db = np.tril(np.ones((n, n), dtype=np.uint8))  # row i has i+1 ones
    return q, db


def labels_for(rel_pattern: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Query i has label i; item j relevant to query i iff rel_pattern[i][j]."""
    pat = np.array(rel_pattern, dtype=np.uint8)
    return np.eye(len(pat), dtype=np.uint8), pat.T.copy()


def test_methods_worked_examples():
    # METHODS.md 3.7: top-4 relevance [1,0,1,0] -> (1/1 + 2/3)/2 = 0.8333...;
    # [0,0,0,1] -> (1/4)/1 = 0.25 (normalised by the hit, not by the 2 relevant in the database);
    # [0,0,0,0] -> no hit (relevant only at rank 5).
    q, db = codes_for_ranking(5)
    ql, dbl = labels_for([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1]])
    q = np.repeat(q, 3, axis=0)
    ap = M.average_precision_at_k(q, db, ql, dbl, k=4)
    assert ap[0] == pytest.approx(5 / 6)
    assert ap[1] == pytest.approx(0.25)
    assert np.isnan(ap[2])
    # HashNet PyTorch evaluator: no-hit query dropped -> (5/6 + 1/4) / 2 = 13/24 = 0.541666...
    assert M.map_at_k(q, db, ql, dbl, k=4, no_hit="drop") == pytest.approx(13 / 24)
    # DeepHash-pytorch CalcTopMap / HashNet Caffe: counted as 0 -> (5/6 + 1/4 + 0) / 3 = 13/36
    assert M.map_at_k(q, db, ql, dbl, k=4, no_hit="zero") == pytest.approx(13 / 36)
    # mAP@all: query 1 hits at ranks 4, 5 -> (1/4 + 2/5)/2 = 0.325; query 2 at rank 5 -> 0.2
    assert M.map_at_k(q, db, ql, dbl) == pytest.approx((5 / 6 + 0.325 + 0.2) / 3)


def test_all_dropped_returns_zero():
    q, db = codes_for_ranking(3)
    ql, dbl = labels_for([[0, 0, 1]])
    assert M.map_at_k(q, db, ql, dbl, k=2, no_hit="drop") == 0.0
    assert M.map_at_k(q, db, ql, dbl, k=2, no_hit="zero") == 0.0


def test_ties_broken_by_database_index():
    # all four items at distance 0 from the query; relevant items are 2 and 3
    q = np.zeros((1, 4), dtype=np.uint8)
    db = np.zeros((4, 4), dtype=np.uint8)
    ql, dbl = labels_for([[0, 0, 1, 1]])
    # db_index order puts them at ranks 3 and 4: AP = (1/3 + 2/4)/2 = 5/12
    assert M.map_at_k(q, db, ql, dbl) == pytest.approx(5 / 12)
    assert M.map_at_k(q, db, ql, dbl, k=2) == 0.0  # no hit in the top 2 -> all dropped
    np.testing.assert_array_equal(M.retrieve(q, db, 3), [[0, 1, 2]])


def test_tie_aware_hand_computed():
    # item 0 relevant at distance 0, items 1 and 2 tied at distance 1, one of them relevant.
    q = np.zeros((1, 2), dtype=np.uint8)
    db = np.array([[0, 0], [1, 0], [0, 1]], dtype=np.uint8)
    ql, dbl = labels_for([[1, 0, 1]])
    # orders: rel at rank 2 -> AP = (1 + 2/2)/2 = 1; rel at rank 3 -> (1 + 2/3)/2 = 5/6
    t = M.tie_aware_average_precision(q, db, ql, dbl)
    assert t["expected"][0] == pytest.approx((1 + 5 / 6) / 2)
    assert t["optimistic"][0] == pytest.approx(1.0)
    assert t["pessimistic"][0] == pytest.approx(5 / 6)
    assert M.map_at_k(q, db, ql, dbl) == pytest.approx(5 / 6)  # db_index: item 1 first
    # @2: the cut takes one of the tied pair: rel first -> AP 1 (2 hits); else AP 1 (1 hit)
    t2 = M.tie_aware_average_precision(q, db, ql, dbl, k=2)
    assert t2["expected"][0] == pytest.approx(1.0)
    # He et al.'s formula, written out for this case: group d=0 (n=1, n+=1) gives 1/1;
    # group d=1 (n=2, n+=1, N=1, N+=1): (1/2)[(2 + 0)/(2) + (2 + 0)/(3)] = 5/6; / R=2
    assert t["expected"][0] == pytest.approx((1 + 5 / 6) / 2)


def test_tie_aware_cut_bounds_are_not_relevant_first():
    # ranks: [R, N] at distances 0, 1; then a tied pair [N, R] at distance 2; k = 3.
    # Relevant-first in the cut gives (1 + 2/3)/2 = 0.833 but leaving it out gives 1.0:
    # the optimistic bound is the max over orders, 1.0; the pessimistic one 0.833.
    q = np.zeros((1, 2), dtype=np.uint8)
    db = np.array([[0, 0], [1, 0], [1, 1], [1, 1]], dtype=np.uint8)
    ql, dbl = labels_for([[1, 0, 0, 1]])
    t = M.tie_aware_average_precision(q, db, ql, dbl, k=3)
    assert t["optimistic"][0] == pytest.approx(1.0)
    assert t["pessimistic"][0] == pytest.approx(5 / 6)
    assert t["expected"][0] == pytest.approx((1 + 5 / 6) / 2)


def brute_force_tie_ap(q, db, ql, dbl, k):
    """Mean / max / min of AP@k over every order inside tie groups (no-hit orders -> 0)."""
    exp, opt, pes = [], [], []
    for i in range(len(q)):
        dist = (q[i][None, :] != db).sum(1)
        rel = ref_rel(ql[i], dbl)
        groups = [np.flatnonzero(dist == d) for d in np.unique(dist)]
        vals = []
        for perms in itertools.product(*[itertools.permutations(g) for g in groups]):
            order = np.concatenate(perms)[:k]
            vals.append(np.nan_to_num(ref_ap_from_rel(rel[order])))
        has_hit = any(rel[np.concatenate(groups)[dist[np.concatenate(groups)] <= np.sort(dist)[
            k - 1]]])
        exp.append(np.mean(vals) if has_hit else np.nan)
        opt.append(np.max(vals) if has_hit else np.nan)
        pes.append(np.min(vals) if has_hit else np.nan)
    return np.array(exp), np.array(opt), np.array(pes)


@pytest.mark.parametrize("k", [1, 2, 4, 6, None])
def test_tie_aware_equals_brute_force(k):
    rng = np.random.default_rng(11)
    q = rng.integers(0, 2, (6, 3), dtype=np.uint8)
    db = rng.integers(0, 2, (7, 3), dtype=np.uint8)  # 7 items on 4 distances: groups <= 4ish
    ql = (rng.random((6, 3)) < 0.4).astype(np.uint8)
    dbl = (rng.random((7, 3)) < 0.4).astype(np.uint8)
    kk = 7 if k is None else k
    exp, opt, pes = brute_force_tie_ap(q, db, ql, dbl, kk)
    t = M.tie_aware_average_precision(q, db, ql, dbl, k)
    np.testing.assert_allclose(t["expected"], exp, rtol=1e-9)
    np.testing.assert_allclose(t["optimistic"], opt, rtol=1e-9)
    np.testing.assert_allclose(t["pessimistic"], pes, rtol=1e-9)


@pytest.mark.parametrize("case", CASES[:3])
@pytest.mark.parametrize("k", [5, 60, None])
def test_tie_bounds_bracket_db_index(case, k):
    n_bits, n_q, n_db, n_c, multi = case
    q, db, ql, dbl = random_case(1, n_q, n_db, n_bits, n_c, multi)
    t = M.tie_aware_average_precision(q, db, ql, dbl, k)
    ap = np.nan_to_num(M.average_precision_at_k(q, db, ql, dbl, k))
    ok = ~np.isnan(t["expected"])
    assert np.all(t["pessimistic"][ok] <= ap[ok] + 1e-12)
    assert np.all(ap[ok] <= t["optimistic"][ok] + 1e-12)
    assert np.all(t["pessimistic"][ok] <= t["expected"][ok] + 1e-12)
    assert np.all(t["expected"][ok] <= t["optimistic"][ok] + 1e-12)
    res = M.evaluate(q, db, ql, dbl, k=k, no_hit="zero")
    assert res["map_at_k_pessimistic"] <= res["map_at_k"] + 1e-12
    assert res["map_at_k"] <= res["map_at_k_optimistic"] + 1e-12
    # the tie-aware AP does not depend on the database order
    perm = np.random.default_rng(2).permutation(n_db)
    t2 = M.tie_aware_average_precision(q, db[perm], ql, dbl[perm], k)
    np.testing.assert_allclose(t2["expected"], t["expected"], rtol=1e-9)


def test_one_d_class_labels_equal_one_hot():
    q, db, ql, dbl = random_case(4, 10, 200, 8, 5, False)
    assert M.map_at_k(q, db, ql.argmax(1), dbl.argmax(1), 20) == M.map_at_k(q, db, ql, dbl, 20)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: {**a, "query_codes": a["query_codes"] * 2}, "only 0 and 1"),
        (lambda a: {**a, "db_codes": a["db_codes"][:, :5]}, "bits"),
        (lambda a: {**a, "query_codes": a["query_codes"][0]}, "2-D"),
        (lambda a: {**a, "db_codes": a["db_codes"][:0], "db_labels": a["db_labels"][:0]},
         "empty"),
        (lambda a: {**a, "query_codes": a["query_codes"][:0], "query_labels":
                    a["query_labels"][:0]}, "empty"),
        (lambda a: {**a, "query_labels": a["query_labels"][:-1]}, "query_labels has"),
        (lambda a: {**a, "db_labels": a["db_labels"][:-1]}, "db_labels has"),
        (lambda a: {**a, "db_labels": a["db_labels"][:, :2]}, "different widths"),
        (lambda a: {**a, "query_codes": a["query_codes"].astype(str)}, "dtype"),
        (lambda a: {**a, "k": 0}, "k must be >= 1"),
        (lambda a: {**a, "k": -3}, "k must be >= 1"),
        (lambda a: {**a, "no_hit": "ignore"}, "no_hit"),
    ],
)
def test_bad_input_rejected(mutate, match):
    q, db, ql, dbl = random_case(0, 4, 20, 6, 3, False)
    args = mutate({"query_codes": q, "db_codes": db, "query_labels": ql, "db_labels": dbl})
    with pytest.raises(ValueError, match=match):
        M.map_at_k(**args)


# --------------------------------------------------------------------------- legacy evaluators


def hashnet_caffe_map(q, db, ql, dbl, R):
    """Loop transcription of HashNet's Caffe evaluator (``caffe/models/predict/nuswide_81/
    predict_parallel.py``, ``mean_average_precision``) with its sort made stable.

    Codes there are +-1 (np.sign of the outputs) and the ranking is argsort of -<db, q>; a query
    whose labels meet no database item is skipped; one with no relevant item in the top R
    counts AP 0 (its sum is divided by 1).
    """
    qs, dbs = 2.0 * q - 1, 2.0 * db - 1
    sim = dbs @ qs.T
    ids = np.argsort(-sim, axis=0, kind="stable")
    ground_truth = np.sum(dbl @ ql.T, axis=0)
    qlab = ql.astype(int).copy()
    qlab[qlab == 0] = -1
    aps = []
    for i in range(len(q)):
        if ground_truth[i] > 0:
            idx = ids[:, i]
            imatch = np.sum(dbl[idx[:R], :] == qlab[i], axis=1) > 0
            n_rel = np.sum(imatch)
            px = np.cumsum(imatch) / np.arange(1, R + 1)
            aps.append(np.sum(px * imatch) / (n_rel if n_rel != 0 else 1))
    return float(np.mean(aps))


def absent_classes_case(seed, multi, n_bits=8, flip=None):
    """Queries of 10 classes, a database holding only classes 0-4 (5 query classes absent).

    Codes are random (8 bits: many ties) or, with ``flip``, each class's random prototype with
    every bit flipped with probability ``flip`` (codes that retrieve well)."""
    rng = np.random.default_rng(seed)
    qy, dby = rng.integers(0, 10, 60), rng.integers(0, 5, 400)
    if flip is None:
        q = rng.integers(0, 2, (60, n_bits), dtype=np.uint8)
        db = rng.integers(0, 2, (400, n_bits), dtype=np.uint8)
    else:
        proto = rng.integers(0, 2, (10, n_bits), dtype=np.uint8)
        q = proto[qy] ^ (rng.random((60, n_bits)) < flip).astype(np.uint8)
        db = proto[dby] ^ (rng.random((400, n_bits)) < flip).astype(np.uint8)
    ql, dbl = np.eye(10, dtype=np.uint8)[qy], np.eye(10, dtype=np.uint8)[dby]
    if multi:  # extra labels stay on each item's side of 0-4 / 5-9: queries 5-9 still meet none
        side = (np.arange(10)[None, :] >= 5) == (qy >= 5)[:, None]
        ql |= ((rng.random(ql.shape) < 0.15) & side).astype(np.uint8)
        dbl |= ((rng.random(dbl.shape) < 0.15) & (np.arange(10) < 5)).astype(np.uint8)
    return q, db, ql, dbl


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("k", [3, 20, None])
def test_zero_skip_absent_is_hashnet_caffe(multi, k):
    q, db, ql, dbl = absent_classes_case(3, multi)
    absent = ~((ql.astype(int) @ dbl.T.astype(int)) > 0).any(1)
    assert 10 < absent.sum() < 60  # some queries have no relevant item anywhere
    R = len(db) if k is None else k
    want = hashnet_caffe_map(q, db, ql, dbl, R)
    got = M.map_at_k(q, db, ql, dbl, k, no_hit="zero_skip_absent")
    assert got == pytest.approx(want, rel=1e-12, abs=0)
    # neither older rule gives it: "zero" also averages the absent queries' zeros, "drop" leaves
    # out the present queries with no hit in the top k as well
    zero = M.map_at_k(q, db, ql, dbl, k, no_hit="zero")
    assert zero == pytest.approx(want * (~absent).sum() / len(q), rel=1e-12)
    assert abs(zero - want) > 0.05
    if k == 3:
        assert abs(M.map_at_k(q, db, ql, dbl, k, no_hit="drop") - want) > 0.01
    res = M.evaluate(q, db, ql, dbl, k=k, no_hit="zero_skip_absent")
    assert res["map_at_k"] == got and res["no_hit"] == "zero_skip_absent"
    assert res["n_queries_no_relevant"] == absent.sum()
    assert res["map"] == pytest.approx(hashnet_caffe_map(q, db, ql, dbl, len(db)), rel=1e-12)
    per_q = M.per_query_ap(q, db, ql, dbl, k, no_hit="zero_skip_absent")
    np.testing.assert_array_equal(np.isnan(per_q), absent)
    # the tie bounds keep bracketing the db_index value under the new rule
    t = M.tie_aware_map(q, db, ql, dbl, k, no_hit="zero_skip_absent")
    assert t["pessimistic"] - 1e-12 <= got <= t["optimistic"] + 1e-12


@pytest.mark.parametrize("no_hit", M.NO_HIT_RULES)
def test_per_query_ap_is_what_map_at_k_averages(no_hit):
    q, db, ql, dbl = absent_classes_case(4, True)
    v = M.per_query_ap(q, db, ql, dbl, 5, no_hit=no_hit)
    assert M.map_at_k(q, db, ql, dbl, 5, no_hit=no_hit) == pytest.approx(np.nanmean(v), rel=1e-14)
    raw = M.average_precision_at_k(q, db, ql, dbl, 5)
    ok = ~np.isnan(raw)
    np.testing.assert_array_equal(v[ok], raw[ok])  # the rule only touches no-hit queries


def deephash_pr_at(q, db, ql, dbl, topk, ks):
    """Precision@k / recall@k of DeepHash-pytorch ``CalcTopMapWithPR`` (utils/tools.py, its sort
    made stable): queries with no relevant item in the top ``topk`` are skipped (their rows stay
    0 and ``recall[:, -1] == 1`` keeps only the others), then P and R are averaged."""
    qs, dbs = 2.0 * q - 1, 2.0 * db - 1
    prec, rec = [], []
    for i in range(len(q)):
        gnd = (ql[i].astype(float) @ dbl.T.astype(float)) > 0
        hamm = 0.5 * (q.shape[1] - qs[i] @ dbs.T)
        gnd = gnd[np.argsort(hamm, kind="stable")]
        if gnd[:topk].sum() == 0:
            continue
        cum = np.cumsum(gnd)
        prec.append(cum / np.arange(1, len(db) + 1))
        rec.append(cum / gnd.sum())
    prec, rec = np.mean(prec, 0), np.mean(rec, 0)
    return [prec[a - 1] for a in ks], [rec[a - 1] for a in ks]


def test_rank_pr_curve_vs_deephash_calc_top_map_with_pr():
    """README_metrics: the engine's precision@k averages over every query (a query with no
    relevant item in the database scores 0), recall@k over the queries with one; DeepHash's
    CalcTopMapWithPR averages both over the queries with a hit in its top k only."""
    q, db, ql, dbl = absent_classes_case(5, False, n_bits=16, flip=0.2)
    ks = [10, 100]
    has = ((ql.astype(int) @ dbl.T.astype(int)) > 0).any(1)
    assert has.sum() == 32  # 28 of the 60 queries have no relevant item in the database
    ours = M.precision_recall_at_k(q, db, ql, dbl, ks)
    theirs_p, theirs_r = deephash_pr_at(q, db, ql, dbl, len(db), ks)
    # with topk = the whole database, "a hit in the top k" = "a relevant item in the database"
    np.testing.assert_allclose(ours["precision"], np.array(theirs_p) * has.mean(), rtol=1e-12)
    np.testing.assert_allclose(ours["recall"], theirs_r, rtol=1e-12)
    # the numbers quoted in README_metrics.md
    assert ours["precision"][1] == pytest.approx(0.2512, abs=5e-5)
    assert theirs_p[1] == pytest.approx(0.4709, abs=5e-5)
    assert ours["recall"][1] == pytest.approx(0.5838, abs=5e-5)
