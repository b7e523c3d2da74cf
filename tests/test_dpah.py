"""DPAH's loss terms against direct transcriptions of the paper's equations (METHODS.md 1.15), its
Table 1/2 variants, and the point-wise baselines (softmax+CE, maximum-margin, softmax+PA)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks.metrics import map_at_k
from methods import get_method
from methods.deep.dpah import (
    DPAH,
    PAHead,
    center_distances,
    dpah_loss_terms,
    inter_loss,
    intra_loss,
    mean_centers,
)
from methods.deep.losses import kt_loss, reg_loss, reg_parts
from methods.deep.pointwise import max_margin_loss, softmax_ce_loss, softmax_pa_loss

# hand-made batch: 4 items, K = 3 bits, C = 3 classes (single-label rows 0-1, multi-label rows 2-3)
B_HAND = torch.tensor(
    [[0.9, 0.2, 0.6], [0.1, 0.8, 0.3], [0.5, 0.5, 0.9], [0.7, 0.1, 0.2]], dtype=torch.float64
)
THETA_HAND = torch.tensor([[0.8, 0.1, 0.7], [0.2, 0.9, 0.1], [0.4, 0.6, 0.8]], dtype=torch.float64)
Y_HAND = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 1], [1, 1, 0]], dtype=torch.float64)


def d_h(x, z) -> float:
    return 0.5 * sum((float(a) - float(c)) ** 2 for a, c in zip(x, z))


def mean_center_loop(y, theta):
    members = [c for c in range(len(y)) if y[c] > 0]
    return [sum(float(theta[c][k]) for c in members) / len(members) for k in range(len(theta[0]))]


def inter_eq2_loop(b, y, theta, alpha) -> list[float]:
    """Eq. (2) as printed: -log(e^{-(1+a) d+} / (e^{-(1+a) d+} + sum_{j not in Y} e^{-d_j}))."""
    out = []
    for i in range(len(b)):
        pos = math.exp(-d_h(b[i], mean_center_loop(y[i], theta)) * (1 + alpha))
        neg = sum(math.exp(-d_h(b[i], theta[j])) for j in range(len(theta)) if y[i][j] == 0)
        out.append(-math.log(pos / (pos + neg)))
    return out


def inter_eq1_loop(b, y, theta, alpha) -> list[float]:
    """Eq. (1): max{(1+a) d+ - min_{j not in Y} d_j, 0}."""
    out = []
    for i in range(len(b)):
        d_pos = d_h(b[i], mean_center_loop(y[i], theta))
        d_neg = min(d_h(b[i], theta[j]) for j in range(len(theta)) if y[i][j] == 0)
        out.append(max(d_pos * (1 + alpha) - d_neg, 0.0))
    return out


def random_case(rng: np.random.Generator, n: int = 6, k: int = 8, c: int = 5):
    b = torch.tensor(rng.random((n, k)), dtype=torch.float64)
    theta = torch.tensor(rng.random((c, k)), dtype=torch.float64)
    y = (rng.random((n, c)) < 0.35).astype(np.float64)
    y[np.arange(n), rng.integers(0, c, n)] = 1
    y[y.sum(1) == c, 0] = 0  # keep at least one irrelevant class
    return b, torch.tensor(y), theta


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest (and steadiest on a shared machine) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------- Eq. (2), Eq. (1)
@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.8])
def test_inter_loss_matches_eq2_transcription_on_hand_batch(alpha):
    expected = inter_eq2_loop(B_HAND.tolist(), Y_HAND.tolist(), THETA_HAND.tolist(), alpha)
    per_item = inter_loss(B_HAND, Y_HAND, THETA_HAND, alpha, reduce=False)
    np.testing.assert_allclose(per_item.numpy(), expected, rtol=1e-12)
    assert float(inter_loss(B_HAND, Y_HAND, THETA_HAND, alpha)) == pytest.approx(np.mean(expected))


def test_inter_loss_matches_naive_formula_on_random_cases_and_bounds_eq1():
    rng = np.random.default_rng(0)
    for _ in range(200):
        b, y, theta = random_case(rng)
        alpha = float(rng.uniform(0, 1))
        eq2 = inter_loss(b, y, theta, alpha, reduce=False).numpy()
        np.testing.assert_allclose(
            eq2,
            inter_eq2_loop(b.tolist(), y.tolist(), theta.tolist(), alpha),
            rtol=1e-6,
            atol=1e-12,
        )
        eq1 = np.array(inter_eq1_loop(b.tolist(), y.tolist(), theta.tolist(), alpha))
        assert np.all(eq2 >= eq1 - 1e-12), "Eq. (2) must upper-bound Eq. (1) (appendix A)"


def test_inter_loss_is_stable_for_far_codes():
    """Large distances (K = 512) underflow the naive exp form; the stable form stays finite."""
    b = torch.zeros(2, 512, dtype=torch.float64)
    theta = torch.ones(3, 512, dtype=torch.float64)
    theta[1] = 0.0
    y = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
    loss = inter_loss(b, y, theta, 0.2, reduce=False)
    assert torch.isfinite(loss).all()
    # item 0: d+ = 256, negatives at d = 0 and 256: softplus(1.2*256 + log(1 + e^-256)) ~ 307.2
    assert float(loss[0]) == pytest.approx(1.2 * 256, rel=1e-9)
    assert float(loss[1]) == pytest.approx(math.log1p(2 * math.exp(-256)), abs=1e-12)


def test_mean_center_single_and_multi_label():
    theta_bar = mean_centers(Y_HAND, THETA_HAND)
    torch.testing.assert_close(theta_bar[0], THETA_HAND[0])
    torch.testing.assert_close(theta_bar[1], THETA_HAND[1])
    torch.testing.assert_close(theta_bar[2], (THETA_HAND[1] + THETA_HAND[2]) / 2)
    torch.testing.assert_close(theta_bar[3], (THETA_HAND[0] + THETA_HAND[1]) / 2)
    expected = (Y_HAND @ THETA_HAND) / Y_HAND.sum(1, keepdim=True)
    torch.testing.assert_close(theta_bar, expected)


def test_center_distances_match_loop():
    d = center_distances(B_HAND, THETA_HAND)
    for i in range(4):
        for j in range(3):
            assert float(d[i, j]) == pytest.approx(d_h(B_HAND[i], THETA_HAND[j]))


def test_all_labels_sample_has_zero_inter_loss_and_finite_gradient():
    b = B_HAND[:2].clone().requires_grad_(True)
    theta = THETA_HAND.clone().requires_grad_(True)
    y = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    per_item = inter_loss(b, y, theta, 0.2, reduce=False)
    assert float(per_item[0].detach()) == 0.0
    per_item.sum().backward()
    assert torch.isfinite(b.grad).all() and torch.isfinite(theta.grad).all()
    assert torch.all(b.grad[0] == 0)


# ---------------------------------------------------------------------- Eq. (3), (6), (7)
def test_intra_loss_matches_eq3_transcription():
    expected = [d_h(B_HAND[i], mean_center_loop(Y_HAND[i], THETA_HAND)) for i in range(4)]
    np.testing.assert_allclose(intra_loss(B_HAND, Y_HAND, THETA_HAND, reduce=False), expected)
    assert float(intra_loss(B_HAND, Y_HAND, THETA_HAND)) == pytest.approx(np.mean(expected))


def test_reg_loss_matches_eq6_transcription():
    n, k = B_HAND.shape
    balance = sum((sum(float(x) for x in row) / k - 0.5) ** 2 for row in B_HAND) / (2 * n)
    quant = sum((float(x) - 0.5) ** 2 for row in B_HAND for x in row) / (2 * n)
    # as printed: quantization summed over the K bits
    assert float(reg_loss(B_HAND, quant_norm="sum")) == pytest.approx(balance - quant, rel=1e-12)
    # default: SSDH's 1/K scaling of the quantization term
    assert float(reg_loss(B_HAND)) == pytest.approx(balance - quant / k, rel=1e-12)
    batch_balance = 0.5 * (float(B_HAND.mean()) - 0.5) ** 2
    assert float(reg_loss(B_HAND, "batch", "sum")) == pytest.approx(
        batch_balance - quant, rel=1e-12
    )
    with pytest.raises(ValueError, match="balance_mode"):
        reg_loss(B_HAND, "global")
    with pytest.raises(ValueError, match="quant_norm"):
        reg_loss(B_HAND, quant_norm="max")


def test_reg_loss_bounds():
    rng = np.random.default_rng(1)
    k = 16
    for b in [
        torch.tensor(rng.random((32, k))),
        torch.zeros(4, k),
        torch.ones(4, k),
        torch.full((4, k), 0.5),
        torch.tensor(rng.integers(0, 2, (8, k)), dtype=torch.float64),
    ]:
        balance, quant = reg_parts(b, quant_norm="sum")
        assert 0.0 <= float(balance) <= 1 / 8 + 1e-12
        assert -k / 8 - 1e-12 <= float(quant) <= 0.0
        assert float(reg_parts(b)[1]) == pytest.approx(float(quant) / k)
    balance, quant = reg_parts(torch.zeros(4, k), quant_norm="sum")
    assert float(balance) == pytest.approx(1 / 8) and float(quant) == pytest.approx(-k / 8)
    assert float(reg_parts(torch.zeros(4, k))[1]) == pytest.approx(-1 / 8)


def test_kt_loss_matches_eq7_and_its_gradient():
    t = 2.0
    u = torch.tensor([[0.5, -1.9, 3.0], [-4.0, 2.0, 2.5]], dtype=torch.float64, requires_grad=True)
    n = u.shape[0]
    expected = sum(max(x - t, 0) ** 2 + max(-x - t, 0) ** 2 for row in u.tolist() for x in row) / (
        2 * n
    )
    loss = kt_loss(u, t)
    assert float(loss.detach()) == pytest.approx(expected)
    assert float(loss.detach()) == pytest.approx((1 + 4 + 0.25) / 4)  # (1^2 + 2^2 + 0.5^2) / 4
    loss.backward()
    expected_grad = torch.tensor(
        [[0, 0, (3.0 - t) / n], [(-4.0 + t) / n, 0, (2.5 - t) / n]], dtype=torch.float64
    )
    torch.testing.assert_close(u.grad, expected_grad)


def test_kt_loss_is_zero_inside_threshold():
    u = torch.linspace(-10, 10, 64).reshape(8, 8).requires_grad_(True)
    loss = kt_loss(u, 10.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(u.grad == 0)


# ---------------------------------------------------------------------- Eq. (8), gradients, codes
def test_total_objective_weights_and_term_names():
    u = torch.logit(B_HAND)
    terms = dpah_loss_terms(u, Y_HAND, THETA_HAND, alpha=0.2, lam=0.01, beta=1.0, gamma=0.5, t=0.1)
    assert set(terms) == {"inter", "intra", "reg", "kt"}
    assert float(terms["inter"]) == pytest.approx(
        float(inter_loss(B_HAND, Y_HAND, THETA_HAND, 0.2))
    )
    assert float(terms["intra"]) == pytest.approx(
        0.01 * float(intra_loss(B_HAND, Y_HAND, THETA_HAND))
    )
    assert float(terms["reg"]) == pytest.approx(float(reg_loss(B_HAND)))
    assert float(terms["kt"]) == pytest.approx(0.5 * float(kt_loss(u, 0.1)))
    no_kt = dpah_loss_terms(u, Y_HAND, THETA_HAND, lam=0.0, gamma=0.0)
    assert set(no_kt) == {"inter", "reg"}


def test_gradcheck_through_sigmoid_centers():
    torch.manual_seed(0)
    u = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(
        [[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1], [1, 0, 1, 0]], dtype=torch.float64
    )

    def total(u_, v_):
        terms = dpah_loss_terms(
            u_ * 6, y, torch.sigmoid(v_), alpha=0.2, lam=0.3, beta=1.0, gamma=0.1, t=2.0
        )
        return sum(terms.values())

    assert torch.autograd.gradcheck(total, (u, v), eps=1e-6, atol=1e-6)


def test_codes_u_nonnegative_equal_sigmoid_threshold():
    u = torch.randn(1000, 16, dtype=torch.float64) * 5
    u[0, :4] = 0.0
    method = DPAH(n_bits=16)
    codes = method.codes_from_outputs(u)
    torch.testing.assert_close(codes, torch.sigmoid(u) >= 0.5)
    assert codes[0, :4].all()


def test_pa_head_center_parametrisations():
    torch.manual_seed(0)
    head = PAHead(10, 8, 3, "sigmoid", "normal")
    assert torch.all((head.centers() > 0) & (head.centers() < 1))
    head = PAHead(10, 8, 3, "sigmoid", "binary")
    assert set(head.center_weight.detach().abs().unique().tolist()) == {3.0}
    head = PAHead(10, 8, 3, "clamp", "uniform")
    assert head.centers() is head.center_weight
    with pytest.raises(ValueError, match="center_param"):
        PAHead(10, 8, 3, "tanh", "normal")
    with pytest.raises(ValueError, match="center_init"):
        PAHead(10, 8, 3, "sigmoid", "zeros")


# ---------------------------------------------------------------------- point-wise baselines
def test_softmax_pa_equals_softmax_ce_without_bias_for_one_hot_labels():
    rng = np.random.default_rng(2)
    b = torch.tensor(rng.random((7, 6)))
    w = torch.tensor(rng.normal(size=(4, 6)))
    y = torch.tensor(np.eye(4)[rng.integers(0, 4, 7)])
    assert float(softmax_pa_loss(b, y, w)) == pytest.approx(
        float(softmax_ce_loss(b @ w.T, y)), rel=1e-12
    )


def test_softmax_pa_multi_label_matches_loop():
    rng = np.random.default_rng(3)
    b = torch.tensor(rng.random((4, 5)))
    w = torch.tensor(rng.normal(size=(3, 5)))
    y = torch.tensor([[1.0, 1, 0], [0, 1, 0], [1, 1, 1], [0, 1, 1]])
    out = []
    for i in range(4):
        z = [float(b[i] @ w[c]) for c in range(3)]
        rel = [c for c in range(3) if y[i, c] > 0]
        z_pos = float(b[i] @ (sum(w[c] for c in rel) / len(rel)))
        neg = sum(math.exp(z[j]) for j in range(3) if y[i, j] == 0)
        out.append(-math.log(math.exp(z_pos) / (math.exp(z_pos) + neg)))
    assert float(softmax_pa_loss(b, y, w)) == pytest.approx(np.mean(out), rel=1e-12)


def test_softmax_ce_multi_label_target_is_normalised_label_vector():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    out = []
    for i in range(2):
        logz = math.log(sum(math.exp(float(x)) for x in s[i]))
        rel = [c for c in range(3) if y[i, c] > 0]
        out.append(-sum((float(s[i, c]) - logz) / len(rel) for c in rel))
    assert float(softmax_ce_loss(s, y)) == pytest.approx(np.mean(out), rel=1e-12)


def test_max_margin_matches_squared_hinge_loop():
    s = torch.tensor([[0.5, -2.0, 1.5], [-0.2, 0.3, -1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    total = 0.0
    for i in range(2):
        for c in range(3):
            tgt = 1.0 if y[i, c] > 0 else -1.0
            total += 0.5 * max(0.0, 1 - tgt * float(s[i, c])) ** 2
    assert float(max_margin_loss(s, y)) == pytest.approx(total / 2, rel=1e-12)


def _toy(n=96, c=4, multi=False, seed=0):
    rng = np.random.default_rng(seed)
    y = np.eye(c, dtype=np.uint8)[rng.integers(0, c, n)]
    if multi:
        y = np.maximum(y, (rng.random((n, c)) < 0.3).astype(np.uint8))
    x = (y @ rng.normal(size=(c, 20)) * 3 + rng.normal(size=(n, 20))).astype(np.float32)
    return x, y


def test_softmax_pa_and_softmax_ce_no_bias_train_to_the_same_codes_on_single_label_data():
    x, y = _toy()
    opts = {
        "backbone": "mlp",
        "mlp_hidden": 32,
        "epochs": 3,
        "batch_size": 32,
        "progress": False,
        "n_bits": 8,
    }
    pa = get_method("softmax_pa")(**opts).fit(x, y)
    ce = get_method("softmax_ce")(classifier_bias=False, **opts).fit(x, y)
    np.testing.assert_allclose(pa.raw_outputs(x), ce.raw_outputs(x), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- variants and methods
def test_variants_are_settings_of_the_same_classes():
    expected = {
        "dpah": ("dpah", {"gamma": 0.01, "lam": 0.01}),
        "dpah_no_kt": ("dpah", {"gamma": 0.0, "lam": 0.01}),
        "hpa_lambda0": ("dpah", {"gamma": 0.0, "lam": 0.0}),
        "softmax_ce": ("softmax_ce", {"gamma": 0.0, "beta": 1.0}),
        "softmax_kt": ("softmax_ce", {"gamma": 0.01, "beta": 1.0}),
    }
    for name, (base, params) in expected.items():
        cls = get_method(name)
        assert issubclass(cls, get_method(base))
        method = cls(n_bits=16)
        for key, value in params.items():
            assert getattr(method, key) == value, (name, key)
    assert get_method("dpah_no_kt")(gamma=0.5).gamma == 0.5  # explicit keyword overrides
    assert DPAH().t == 10 and DPAH().alpha == 0.2 and DPAH().beta == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": -1}, "alpha"),
        ({"center_param": "tanh"}, "center_param"),
        ({"balance_mode": "x"}, "balance_mode"),
        ({"gamma": "a"}, "gamma"),
    ],
)
def test_bad_dpah_parameters_are_rejected(kwargs, match):
    x, y = _toy(n=20)
    with pytest.raises(ValueError, match=match):
        DPAH(n_bits=4, backbone="mlp", epochs=1, progress=False, **kwargs).fit(x, y)


def test_dpah_fit_multi_label_raw_outputs_and_centers():
    x, y = _toy(multi=True)
    m = DPAH(
        n_bits=8, backbone="mlp", mlp_hidden=32, epochs=3, batch_size=32, progress=False, lr=0.05
    ).fit(x, y)
    u = m.raw_outputs(x)
    assert u.shape == (96, 8) and u.dtype == np.float32
    np.testing.assert_array_equal(m.encode(x), (u >= 0).astype(np.uint8))
    theta = m.centers()
    assert theta.shape == (4, 8) and np.all((theta > 0) & (theta < 1))
    assert [h["epoch"] for h in m.history_] == [1, 2, 3]
    assert {"inter", "intra", "reg", "kt", "loss"} <= set(m.history_[0])
    assert m.history_[-1]["loss"] < m.history_[0]["loss"]


def test_clamp_centers_stay_in_unit_interval():
    x, y = _toy()
    m = DPAH(
        n_bits=8,
        backbone="linear",
        center_param="clamp",
        center_init="binary",
        lr=5.0,
        epochs=2,
        batch_size=32,
        progress=False,
    ).fit(x, y)
    theta = m.centers()
    assert np.all((theta >= 0) & (theta <= 1))


def test_printed_eq6_scale_collapses_and_default_does_not():
    """The finding behind ``quant_norm="bits_mean"``: on real data (scikit-learn's digits, the
    smoke preset's setting) Eq. (6) as printed (quantization summed over K, beta = 1) drives every
    item to one code; SSDH's 1/K scaling does not."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(digits.target))[:600]
    X = (digits.data[idx] / 16.0).astype(np.float32)
    Y = np.eye(10, dtype=np.uint8)[digits.target[idx]]
    opts = {"n_bits": 32, "backbone": "mlp", "from_scratch": True, "epochs": 10,
            "batch_size": 64, "lr": 0.05, "progress": False}
    printed = get_method("dpah")(quant_norm="sum", **opts).fit(X, Y)
    default = get_method("dpah")(**opts).fit(X, Y)
    assert len(np.unique(printed.encode(X), axis=0)) == 1
    assert printed.convergence_report(printed.encode(X))["converged"] is False
    codes = default.encode(X)
    assert len(np.unique(codes, axis=0)) > 100
    assert map_at_k(codes, codes, Y, Y) > 0.5


# ---------------------------------------------------------------------- center_lr_mult (issue 11)
def test_center_lr_mult_scales_only_the_centers_group():
    m = DPAH(n_bits=8, lr=0.01, hash_lr_mult=3.0, center_lr_mult=7.0)
    backbone = torch.nn.Linear(5, 6)
    head = m.build_head(6, 4)
    groups = m.param_groups(backbone, head)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(head.center_weight)]["lr"] == pytest.approx(0.01 * 3.0 * 7.0)
    assert by_param[id(head.hash.weight)]["lr"] == pytest.approx(0.01 * 3.0)
    assert by_param[id(backbone.weight)]["lr"] == pytest.approx(0.01)
    assert DPAH().center_lr_mult == 1.0  # the paper's single rate
    with pytest.raises(ValueError, match="center_lr_mult"):
        DPAH(center_lr_mult=0.0).build_head(6, 4)


def test_center_shift_report_on_a_tiny_run():
    x, y = _toy()
    opts = {"n_bits": 8, "backbone": "mlp", "mlp_hidden": 32, "epochs": 3, "batch_size": 32,
            "progress": False, "lr": 0.05}
    with pytest.raises(Exception, match="not fitted"):
        DPAH(**opts).center_shift_report()
    slow = DPAH(**opts).fit(x, y)
    report = slow.center_shift_report()
    assert set(report) == {"mean_abs_change", "max_abs_change", "sign_flip_fraction"}
    change = np.abs(slow.centers() - slow.initial_centers_)
    assert report["mean_abs_change"] == pytest.approx(float(change.mean()))
    assert report["max_abs_change"] == pytest.approx(float(change.max()))
    assert 0 < report["mean_abs_change"] <= report["max_abs_change"]
    flips = np.mean((slow.centers() >= 0.5) != (slow.initial_centers_ >= 0.5))
    assert report["sign_flip_fraction"] == pytest.approx(float(flips))
    # the same run (same seed, same initial centers) with centers learning 100x faster moves them more
    fast = DPAH(center_lr_mult=100.0, **opts).fit(x, y)
    np.testing.assert_array_equal(fast.initial_centers_, slow.initial_centers_)
    assert fast.center_shift_report()["mean_abs_change"] > 5 * report["mean_abs_change"]
