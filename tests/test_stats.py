"""The paired bootstrap of mAP differences (benchmarks/stats.py) on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import metrics as M
from benchmarks import stats as S


def class_codes(seed: int, flip: float, n_q: int = 200, n_db: int = 1000, n_bits: int = 32):
    """Codes of 10 classes: a random prototype per class, every bit flipped w.p. ``flip``."""
    rng = np.random.default_rng(seed)
    proto = rng.integers(0, 2, (10, n_bits), dtype=np.uint8)
    qy, dby = np.arange(n_q) % 10, np.arange(n_db) % 10
    q = proto[qy] ^ (rng.random((n_q, n_bits)) < flip).astype(np.uint8)
    db = proto[dby] ^ (rng.random((n_db, n_bits)) < flip).astype(np.uint8)
    return q, db, qy, dby


def run(ap, label="run", ids=None, **kw):
    ap = np.asarray(ap, dtype=float)
    return S.RunAP(ap=ap, query_ids=np.arange(ap.size) if ids is None else ids, label=label, **kw)


def test_identical_codes_give_zero_and_zero_interval():
    q, db, qy, dby = class_codes(0, 0.3)
    a = S.run_ap(q, db, qy, dby, label="A")
    b = S.run_ap(q.copy(), db.copy(), qy, dby, label="B")
    res = S.paired_bootstrap(a, b, n_resamples=2000)
    assert (res.difference, res.low, res.high) == (0.0, 0.0, 0.0)
    assert not res.significant and res.n_queries == 200 and res.resampled == "queries"
    assert res.map_a == M.map_at_k(q, db, qy, dby)  # the engine's number, not a second AP


def test_clear_win_excludes_zero():
    q, db, qy, dby = class_codes(1, 0.05)  # near-perfect codes
    qr, dbr, _, _ = class_codes(2, 0.5)  # random codes (each bit a coin)
    good = S.run_ap(q, db, qy, dby, label="good")
    bad = S.run_ap(qr, dbr, qy, dby, label="random")
    res = S.paired_bootstrap(good, bad, n_resamples=2000)
    assert res.difference == pytest.approx(M.map_at_k(q, db, qy, dby)
                                           - M.map_at_k(qr, dbr, qy, dby), abs=1e-12)
    assert res.difference > 0.5 and res.low > 0.4 and res.significant
    assert res.low <= res.difference <= res.high
    back = S.paired_bootstrap(bad, good, n_resamples=2000)
    assert back.high < 0 and back.significant


def test_coin_flip_difference_includes_zero_with_normal_width():
    # per query the winner is a fair coin: B = A +- 0.1. The interval must contain 0 and have the
    # normal-theory width 2 * 1.96 * sd / sqrt(n) of a mean of n independent differences.
    rng = np.random.default_rng(3)
    n = 400
    a = rng.uniform(0.2, 0.8, n)
    d = np.where(rng.random(n) < 0.5, 0.1, -0.1)
    res = S.paired_bootstrap(run(a, "A"), run(a + d, "B"), n_resamples=4000)
    assert res.difference == pytest.approx(-d.mean())
    assert res.low < 0 < res.high and not res.significant
    width = 2 * 1.96 * d.std() / np.sqrt(n)
    assert res.high - res.low == pytest.approx(width, rel=0.1)


def test_different_query_sets_are_an_error_naming_both():
    a = run(np.full(10, 0.5), "dpah seed 0")
    b = run(np.full(10, 0.4), "hashnet seed 0", ids=np.r_[np.arange(9), 11])
    with pytest.raises(ValueError, match="'dpah seed 0' and 'hashnet seed 0'.*different query"):
        S.paired_bootstrap(a, b)
    c = run(np.full(10, 0.4), "hashnet seed 1", ids=np.arange(10)[::-1])  # same set, other order
    with pytest.raises(ValueError, match="'dpah seed 0' and 'hashnet seed 1'"):
        S.paired_bootstrap(a, c)
    d = run(np.full(9, 0.4), "itq", ids=np.arange(9))
    with pytest.raises(ValueError, match="'dpah seed 0' and 'itq'.*10 and 9 queries"):
        S.paired_bootstrap([a], [d])
    # across the seeds of one method too
    with pytest.raises(ValueError, match="'dpah seed 0' and 'hashnet seed 0'"):
        S.paired_bootstrap([a, b], [a])


def test_other_bad_input():
    a = run(np.full(10, 0.5), "A")
    with pytest.raises(ValueError, match="different conventions"):
        S.paired_bootstrap(a, run(np.full(10, 0.5), "B", k=100))
    with pytest.raises(ValueError, match="10 AP values but query_ids"):
        S.RunAP(ap=np.full(10, 0.5), query_ids=np.arange(9), label="A")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run([0.5, 1.5], "A")
    with pytest.raises(ValueError, match="repeated"):
        S.RunAP(ap=[0.5, 0.5], query_ids=[3, 3])
    with pytest.raises(ValueError, match="n_resamples"):
        S.paired_bootstrap(a, a, n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        S.paired_bootstrap(a, a, confidence=1.0)
    with pytest.raises(ValueError, match="no query is kept"):
        S.paired_bootstrap(run([np.nan, 0.5], "A"), run([0.5, np.nan], "B"))


def test_seeds_are_resampled_on_a_tiny_case():
    # A's two seeds: every query 0.9, then every query 0.5; B's single run: every query 0.7.
    # Queries carry no variance, so the bootstrap distribution is the seed draw alone:
    # both draws seed 0 (p = 1/4): +0.2; both seed 1 (1/4): -0.2; one of each (1/2): 0.
    a = [run(np.full(6, 0.9), "A seed 0"), run(np.full(6, 0.5), "A seed 1")]
    b = run(np.full(6, 0.7), "B seed 0")
    res = S.paired_bootstrap(a, b, n_resamples=4000)
    assert res.difference == pytest.approx(0.0, abs=1e-15)
    assert res.low == pytest.approx(-0.2) and res.high == pytest.approx(0.2)
    assert res.resampled == "seeds, then queries" and (res.n_runs_a, res.n_runs_b) == (2, 1)
    # one seed alone would claim a certain +0.2
    one = S.paired_bootstrap(a[0], b, n_resamples=500)
    assert (one.low, one.high) == pytest.approx((0.2, 0.2)) and one.significant


def test_seed_resampling_frequencies():
    # the same tiny case read through narrower intervals: the values -0.2, 0, +0.2 carry
    # probabilities 1/4, 1/2, 1/4, so the 30-70 % interval is {0} and the 20-80 % one spans both
    a = [run(np.full(6, 0.9)), run(np.full(6, 0.5))]
    b = run(np.full(6, 0.7))
    r = S.paired_bootstrap(a, b, n_resamples=4000, confidence=0.4)
    assert (r.low, r.high) == pytest.approx((0.0, 0.0), abs=1e-12)
    r = S.paired_bootstrap(a, b, n_resamples=4000, confidence=0.6)
    assert (r.low, r.high) == pytest.approx((-0.2, 0.2))


def test_determinism_same_seed_same_interval():
    rng = np.random.default_rng(5)
    a, b = run(rng.random(50), "A"), run(rng.random(50), "B")
    r1 = S.paired_bootstrap(a, b, n_resamples=1000, seed=7)
    r2 = S.paired_bootstrap(a, b, n_resamples=1000, seed=7)
    r3 = S.paired_bootstrap(a, b, n_resamples=1000, seed=8)
    assert r1 == r2
    assert (r1.low, r1.high) != (r3.low, r3.high)
    assert r1.difference == r3.difference
    assert r1.as_dict()["seed"] == 7 and r1.as_dict()["n_resamples"] == 1000


def test_left_out_queries_are_left_out_for_both():
    # query 2 has no hit for A (NaN under "drop"): it leaves B's mean too
    a = run([0.5, 0.7, np.nan, 0.9], "A")
    b = run([0.4, 0.6, 1.0, 0.8], "B")
    res = S.paired_bootstrap(a, b, n_resamples=200)
    assert res.n_dropped == 1 and res.n_queries == 3
    assert res.map_b == pytest.approx(0.6) and res.difference == pytest.approx(0.1)


def test_zero_skip_absent_keeps_the_table_difference():
    # queries of classes 5-9 have no relevant item in the database: the same queries are left
    # out for both methods, so the difference is exactly the difference of the table's values
    q, db, qy, dby = class_codes(4, 0.2)
    qr, dbr, _, _ = class_codes(6, 0.35)
    keep_db = dby < 5
    db, dbr, dby = db[keep_db], dbr[keep_db], dby[keep_db]
    a = S.run_ap(q, db, qy, dby, k=50, no_hit="zero_skip_absent", label="A")
    b = S.run_ap(qr, dbr, qy, dby, k=50, no_hit="zero_skip_absent", label="B")
    res = S.paired_bootstrap(a, b, n_resamples=500)
    assert res.n_dropped == 100
    want = (M.map_at_k(q, db, qy, dby, 50, "zero_skip_absent")
            - M.map_at_k(qr, dbr, qy, dby, 50, "zero_skip_absent"))
    assert res.difference == pytest.approx(want, abs=1e-12)


def test_compare_cell_best_runner_up_and_significance():
    rng = np.random.default_rng(9)
    base = rng.uniform(0.3, 0.7, 300)
    cell = {
        "itq": [run(base - 0.2, "itq s0")],
        "dpah": [run(base + 0.01 * rng.standard_normal(300), f"dpah s{s}") for s in range(3)],
        "hashnet": [run(base + 0.05 + 0.01 * rng.standard_normal(300), f"hashnet s{s}")
                    for s in range(2)],
    }
    c = S.compare_cell(cell, n_resamples=1000)
    assert (c.best, c.runner_up) == ("hashnet", "dpah") and c.significant is True
    assert c.maps["itq"] == pytest.approx(base.mean() - 0.2)
    assert c.test.difference == pytest.approx(c.maps["hashnet"] - c.maps["dpah"])
    # a lead that is noise is not significant
    noisy = {"a": run(base, "a"), "b": run(np.clip(base + rng.normal(0, 0.2, 300), 0, 1), "b")}
    c2 = S.compare_cell(noisy, n_resamples=1000)
    assert c2.test.low < 0 < c2.test.high and c2.significant is False
    # one method: no runner-up, nothing to test
    c3 = S.compare_cell({"itq": cell["itq"]})
    assert c3.runner_up is None and c3.test is None and c3.significant is None
    # a tie goes to the method listed first
    c4 = S.compare_cell({"x": run(base, "x"), "y": run(base, "y")}, n_resamples=100)
    assert (c4.best, c4.runner_up, c4.significant) == ("x", "y", False)
