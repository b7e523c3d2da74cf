"""Behaviour of the learned shallow methods (ITQ, SITQ, SDH, KSH) beyond the generic contract.

Each test checks a property the method's algorithm guarantees (or, where it guarantees nothing,
what the original code does), on small seeded synthetic data.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from methods.shallow.itq import ITQ, SITQ, cca_directions, itq_rotation
from methods.shallow.ksh import KSH, pairwise_similarity, refine_projection
from methods.shallow.lsh import LSH
from methods.shallow.sdh import SDH


def clustered(n: int = 400, d: int = 32, c: int = 5, noise: float = 1.0, seed: int = 0,
              multi_label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Items around class prototypes: X = Y @ prototypes + noise, Y one-hot (or multi-hot)."""
    rng = np.random.default_rng(seed)
    Y = np.eye(c, dtype=np.uint8)[rng.integers(0, c, size=n)]
    if multi_label:
        Y = np.maximum(Y, (rng.random((n, c)) < 0.2).astype(np.uint8))
    X = Y @ (rng.normal(size=(c, d)) * 2.0) + noise * rng.normal(size=(n, d))
    return X, Y


def map_all(codes_q, codes_db, Y_q, Y_db) -> float:
    """Naive mAP@all: Hamming ranking, stable ties, queries without relevant items dropped."""
    aps = []
    for q in range(len(codes_q)):
        dist = (codes_db != codes_q[q]).sum(1)
        order = np.argsort(dist, kind="stable")
        rel = (Y_db[order] @ Y_q[q] > 0).astype(float)
        if rel.sum() == 0:
            continue
        prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        aps.append(float((prec * rel).sum() / rel.sum()))
    return float(np.mean(aps))


# ---------------------------------------------------------------------- ITQ / SITQ
@pytest.mark.parametrize("cls", [ITQ, SITQ])
def test_rotation_is_orthogonal_and_quantization_loss_never_increases(cls):
    X, Y = clustered()
    model = cls(n_bits=12, seed=3).fit(X, Y)
    R = model.rotation_
    np.testing.assert_allclose(R.T @ R, np.eye(12), atol=1e-10)
    loss = np.asarray(model.quantization_loss_)
    assert len(loss) == model.n_iter + 1
    # both half-steps (B = sgn(VR), then Procrustes for R) are exact minimisers
    assert np.all(np.diff(loss) <= 1e-9 * loss[0]), loss
    assert loss[-1] < loss[0]


def test_itq_rotation_solves_procrustes_on_a_hand_checked_case():
    # V is a scaled hypercube vertex set: the optimal rotations are the cube's symmetries
    # (signed permutations), with loss ||B - V R||^2 = N * K * (1 - 0.5)^2 = 2.
    V = 0.5 * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=float)
    R, loss = itq_rotation(V, 30, np.random.default_rng(0))
    np.testing.assert_allclose(loss[-1], 4 * 2 * 0.25, atol=1e-9)
    np.testing.assert_allclose(np.abs(R), np.abs(R).round(), atol=1e-6)  # signed permutation


def test_itq_codes_are_balanced_on_centred_data():
    # PCA directions of centred data have zero mean, so each bit's mean stays near 1/2 (not
    # guaranteed exactly: the median is not the mean). Clustered data with 5 classes.
    X, Y = clustered(n=600, seed=1)
    codes = ITQ(n_bits=16, seed=0).fit(X, Y).encode(X)
    assert np.all((codes.mean(0) >= 0.2) & (codes.mean(0) <= 0.8)), codes.mean(0)


def test_itq_encode_matches_the_documented_formula():
    X, Y = clustered(n=100, d=10)
    model = ITQ(n_bits=4, seed=0).fit(X, Y)
    manual = ((X - X.mean(0)) @ model.projection_ @ model.rotation_ >= 0).astype(np.uint8)
    np.testing.assert_array_equal(model.encode(X), manual)
    # the projection is the top-4 PCA basis: orthonormal columns spanning the top eigenvectors
    np.testing.assert_allclose(model.projection_.T @ model.projection_, np.eye(4), atol=1e-10)
    _, evecs = np.linalg.eigh(np.cov(X.T))
    top = evecs[:, -4:]
    np.testing.assert_allclose(np.abs(top.T @ model.projection_).sum(0), np.ones(4), atol=1e-6)


def test_cca_correlations_match_a_direct_computation():
    # One informative direction: x0 = label + small noise; correlation of x0 with the label
    # is close to 1 and the rest ~0. The first canonical correlation equals the correlation of
    # the projected features with the best linear combination of labels.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=500)
    Y = np.eye(2)[y]
    X = rng.normal(size=(500, 3))
    X[:, 0] = y + 0.1 * rng.normal(size=500)
    Wx, r = cca_directions(X, Y, 1e-4, 3)
    assert r[0] > 0.97 and np.all(r[1:] < 1e-3)
    proj = (X - X.mean(0)) @ Wx[:, 0]
    direct = abs(np.corrcoef(proj, y)[0, 1])
    np.testing.assert_allclose(r[0], direct, atol=1e-3)


def test_sitq_scales_directions_by_correlations_and_extra_bits_are_empty():
    # K > C caveat: one-hot labels of C classes give at most C - 1 non-zero correlations
    X, Y = clustered(c=4, d=20)
    model = SITQ(n_bits=8, seed=0).fit(X, Y)
    assert np.all(np.diff(model.correlations_) <= 1e-12)
    assert np.all(model.correlations_[:3] > 0.5)
    assert np.all(model.correlations_[3:] < 1e-3)


@pytest.mark.parametrize("cls", [ITQ, SITQ])
def test_itq_rejects_more_bits_than_dimensions(cls):
    X, Y = clustered(n=50, d=6)
    with pytest.raises(ValueError, match=r"n_bits=8.*D=6"):
        cls(n_bits=8).fit(X, Y)
    X, Y = clustered(n=5, d=20)
    with pytest.raises(ValueError, match=r"n_bits=8.*N=5"):
        cls(n_bits=8).fit(X, Y)


# ---------------------------------------------------------------------- SDH
def test_sdh_steps_decrease_their_subproblems():
    """What SDH guarantees, checked step by step.

    The G-step and F-step are exact ridge solutions, so neither can increase the objective. The
    B-step (DCC) restarts from B = 0 in every outer iteration (as SDH.m does), so it is *not*
    guaranteed to improve on the previous B and the outer objective is not guaranteed monotone;
    what DCC does guarantee is that once every column is +-1 (after the first sweep) each
    coordinate update is an exact minimiser, so the B-subproblem value never increases over the
    later sweeps.
    """
    X, Y = clustered(n=300, multi_label=True)
    model = SDH(n_bits=16, n_anchors=100, n_iter=5, seed=0).fit(X, Y)
    steps = model.step_objective_
    for (_, _, before), (_, step, after) in itertools.pairwise(steps):
        if step in ("G", "F"):
            assert after <= before + 1e-9 * abs(before), (step, before, after)
    for sweeps in model.dcc_objective_:
        assert np.all(np.diff(sweeps) <= 1e-9 * np.abs(sweeps[0])), sweeps
    # on this data the whole objective also goes down overall
    assert model.objective_[-1] < model.objective_[0]


def test_sdh_dcc_column_update_is_exact():
    # For one column, sgn(q_k - B_{-k} W_{-k} w_k^T) must minimise ||BW||^2 - 2 tr(B^T Q) over
    # that column: compare with brute force over all 2^4 columns of a 4-item problem.
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 2))
    Q = rng.normal(size=(4, 3))
    model = SDH(n_bits=3, dcc_sweeps=10)
    B, _ = model._dcc(Q, W)

    def f(b):
        return np.sum((b @ W) ** 2) - 2 * np.sum(b * Q)

    for k in range(3):
        best = min(
            (f(np.where(np.arange(3) == k, np.array(col)[:, None], B)), col)
            for col in np.array(np.meshgrid(*[[-1, 1]] * 4)).T.reshape(-1, 4).tolist()
        )
        assert f(B) <= best[0] + 1e-12


def test_sdh_encode_is_the_rbf_projection():
    X, Y = clustered(n=200)
    model = SDH(n_bits=8, n_anchors=60, seed=0).fit(X, Y)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    d2 = ((Xn[:, None, :] - model.anchors_[None]) ** 2).sum(-1)
    phi = np.hstack([np.exp(-d2 / (2 * 0.4**2)), np.ones((len(X), 1))])
    np.testing.assert_array_equal(model.encode(X), (phi @ model.projection_ > 0).astype(np.uint8))


def test_sdh_nearest_anchor_sigma_rule():
    X, Y = clustered(n=200)
    model = SDH(n_bits=8, n_anchors=60, sigma="nearest_anchor_mean").fit(X, Y)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    d = np.sqrt(((Xn[:, None, :] - model.anchors_[None]) ** 2).sum(-1))
    d[d < 1e-6] = np.inf  # an anchor is not its own nearest anchor
    np.testing.assert_allclose(model.sigma_, d.min(1).mean(), rtol=1e-6)
    # every training item an anchor: sigma stays the typical anchor spacing, not ~0
    all_anchors = SDH(n_bits=8, n_anchors=200, sigma="nearest_anchor_mean").fit(X, Y)
    assert all_anchors.sigma_ > 0.1


# ---------------------------------------------------------------------- KSH
def test_ksh_residual_decreases_bit_by_bit():
    # Greedy fitting of ||H H^T - K S||^2: bit k lowers the residual iff y^T R_k y > l^2 / 2,
    # which the spectral/refined solution achieves on separable data (not a theorem in general).
    X, Y = clustered(n=300)
    model = KSH(n_bits=12, n_anchors=50, n_labelled=200, seed=0).fit(X, Y)
    res = np.asarray(model.residual_)
    assert len(res) == 13 and res[0] == pytest.approx(12**2)
    assert np.all(np.diff(res) < 0), res


def test_ksh_refinement_never_increases_its_cost():
    # backtracking accepts a step only below the quadratic upper bound, which lies under g(v);
    # with momentum g(a_t) can exceed g(a_{t-1}) in principle, so check the accepted points'
    # costs stay below the spectral start, and the final cost is lower than the start.
    X, Y = clustered(n=200)
    model = KSH(n_bits=6, n_anchors=40, n_labelled=150, seed=0).fit(X, Y)
    for costs in model.refine_costs_:
        assert costs[-1] <= costs[0]


def test_ksh_refine_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    K = rng.normal(size=(20, 5))
    R = pairwise_similarity(np.eye(3, dtype=np.uint8)[rng.integers(0, 3, 20)]) * 4.0
    a = rng.normal(size=5) * 0.3

    def g(v):
        y = np.tanh(0.5 * (K @ v))
        return -y @ R @ y

    y = np.tanh(0.5 * (K @ a))
    grad = -(K.T @ ((R @ y) * (1 - y**2)))
    eps = 1e-6
    fd = np.array([(g(a + eps * e) - g(a - eps * e)) / (2 * eps) for e in np.eye(5)])
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)
    # and one refinement run from a lowers g
    a1, costs = refine_projection(K, R, a, max_iter=50, tol=0.0)
    assert g(a1) < g(a) and costs[0] == pytest.approx(g(a))


def test_pairwise_similarity_multi_label():
    Y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=np.uint8)
    expected = np.array([[1, 1, -1], [1, 1, -1], [-1, -1, 1]], dtype=float)
    np.testing.assert_array_equal(pairwise_similarity(Y), expected)


# ---------------------------------------------------------------------- all of them
def test_supervised_methods_beat_unsupervised_on_clustered_data():
    # Labels here are not the dominant variance: a strong nuisance direction dominates PCA,
    # so only label-aware methods recover the classes reliably.
    rng = np.random.default_rng(0)
    X, Y = clustered(n=700, d=24, c=5, noise=1.5, seed=2)
    X[:, :4] += 6.0 * rng.normal(size=(700, 4))
    q, db = np.arange(100), np.arange(100, 700)
    train = np.arange(100, 500)
    scores = {}
    for name, model in [
        ("lsh", LSH(n_bits=16)), ("itq", ITQ(n_bits=16)), ("sitq", SITQ(n_bits=16)),
        ("sdh", SDH(n_bits=16, n_anchors=200, sigma="nearest_anchor_mean")),
        ("ksh", KSH(n_bits=16, n_anchors=100, n_labelled=300)),
    ]:
        model.fit(X[train], Y[train])
        scores[name] = map_all(model.encode(X[q]), model.encode(X[db]), Y[q], Y[db])
    for sup in ("sitq", "sdh", "ksh"):
        for unsup in ("lsh", "itq"):
            assert scores[sup] > scores[unsup] + 0.05, scores


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cls,kw,match", [
    (SDH, {"n_anchors": 50}, r"n_anchors=50.*N=30"),
    (KSH, {"n_anchors": 50, "n_labelled": 10}, r"n_anchors=50.*N=30"),
    (KSH, {"n_anchors": 10, "n_labelled": 40}, r"n_labelled=40.*N=30"),
])
def test_too_few_training_items(cls, kw, match):
    X, Y = clustered(n=30)
    with pytest.raises(ValueError, match=match):
        cls(n_bits=4, **kw).fit(X, Y)


@pytest.mark.parametrize("cls,kw", [
    (SDH, {"n_anchors": 20}), (KSH, {"n_anchors": 20, "n_labelled": 40}),
])
def test_unlabelled_items_are_dropped_with_a_warning(cls, kw):
    X, Y = clustered(n=100)
    Y = Y.copy()
    Y[:7] = 0
    with pytest.warns(UserWarning, match="dropped 7 of 100"):
        model = cls(n_bits=4, **kw).fit(X, Y)
    assert model.encode(X).shape == (100, 4)
    with pytest.raises(ValueError, match="all-zero label"):
        cls(n_bits=4, **kw).fit(X, np.zeros_like(Y))


def test_bad_hyper_parameters_are_named():
    X, Y = clustered(n=100)
    with pytest.raises(ValueError, match="sigma"):
        SDH(n_bits=4, n_anchors=20, sigma="median").fit(X, Y)
    with pytest.raises(ValueError, match="reg"):
        SITQ(n_bits=4, reg=0.0).fit(X, Y)
