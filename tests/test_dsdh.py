"""DSDH: the discrete step and the network loss against loop transcriptions of the official
MatConvNet code (train.m, RRC.m), the per-item state, bad labels, and the per-epoch variant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hand_batch import MULTI, SINGLE, B, K, labels_of, outputs

from methods.deep.base import TrainStep
from methods.deep.dsdh import DSDH, dsdh_discrete_step, dsdh_loss

STEP = TrainStep(epoch=0, iteration=0, iterations_per_epoch=1, total_epochs=1)
SMALL = {"backbone": "mlp", "epochs": 2, "batch_size": 32, "progress": False}


def sgn(v: float) -> float:
    return float(v > 0) - float(v < 0)


def discrete_step_reference(u, rows, eta, nu, sweeps=10, tol=1e-6):
    """train.m's batch step with explicit loops: W = RRC(sign(U0), Y, nu); Q = eta U0 + Y W';
    DCC from zeros with column k removed from B and row k from W, as the MATLAB code does."""
    n, k, c = len(u), len(u[0]), len(rows[0])
    S = np.array([[sgn(v) for v in row] for row in u])
    Y = np.array(rows, dtype=float)
    W = np.linalg.solve(S.T @ S + nu * np.eye(k), S.T @ Y)  # RRC.m, K x C
    Q = [[eta * u[i][b] + sum(Y[i][j] * W[b][j] for j in range(c)) for b in range(k)]
         for i in range(n)]
    Bm = [[0.0] * k for _ in range(n)]
    for _ in range(sweeps):
        Z0 = [row[:] for row in Bm]
        for b in range(k):
            others = [j for j in range(k) if j != b]
            for i in range(n):
                # (Zk * Wk * Wkk')_i = sum_{j != b} B_ij sum_c W_jc W_bc
                s = sum(Bm[i][j] * sum(W[j][cc] * W[b][cc] for cc in range(c)) for j in others)
                Bm[i][b] = float(sgn(Q[i][b] - s))
        diff = math.sqrt(sum((Bm[i][j] - Z0[i][j]) ** 2 for i in range(n) for j in range(k)))
        if diff < tol * math.sqrt(sum(v * v for row in Z0 for v in row)):
            break
    return np.array(Bm), W


@pytest.mark.parametrize("rows", [SINGLE, MULTI], ids=["single", "multi"])
@pytest.mark.parametrize(("eta", "nu"), [(55.0, 0.1), (0.05, 0.5)])
def test_discrete_step_matches_the_official_loop(rows, eta, nu):
    u = outputs(3).detach()
    ref_B, ref_W = discrete_step_reference(u.tolist(), rows, eta, nu)
    Bt, Wt = dsdh_discrete_step(u, labels_of(rows), eta=eta, nu=nu)
    np.testing.assert_array_equal(Bt.numpy(), ref_B)
    np.testing.assert_allclose(Wt.numpy(), ref_W, rtol=1e-10, atol=1e-12)
    assert set(np.unique(ref_B)) <= {-1.0, 1.0}
    if eta < 1:  # the classifier matters when eta is small: B is not just sign(u)
        assert not np.array_equal(ref_B, np.sign(u.numpy()))


def test_one_sweep_and_the_stopping_rule():
    u = outputs(4).detach()
    one, _ = dsdh_discrete_step(u, labels_of(MULTI), eta=0.5, nu=1.0, max_sweeps=1)
    ref, _ = discrete_step_reference(u.tolist(), MULTI, 0.5, 1.0, sweeps=1)
    np.testing.assert_array_equal(one.numpy(), ref)


@pytest.mark.parametrize("rows", [SINGLE, MULTI], ids=["single", "multi"])
def test_network_loss_matches_the_loop_and_its_gradient_is_the_official_dJdU(rows):
    eta = 55.0
    u = outputs(5, scale=0.7)
    g = torch.Generator().manual_seed(1)
    n = 9  # training items; the batch is items 2..7
    stored = torch.randn(n, K, generator=g, dtype=torch.float64)
    stored[2:8] = u.detach()
    all_rows = [[1, 0, 0], [0, 1, 1], *rows, [0, 0, 1]]
    assert len(all_rows) == n
    S = (labels_of(rows) @ labels_of(all_rows).T > 0).double()
    codes, _ = dsdh_discrete_step(u.detach(), labels_of(rows), eta=eta)
    terms = dsdh_loss(u, codes, stored, S, eta)

    x, U, Bc = u.tolist(), stored.tolist(), codes.tolist()
    lik, quant = 0.0, 0.0
    for i in range(B):
        for j in range(n):
            theta = 0.5 * sum(x[i][k] * U[j][k] for k in range(K))
            lik += math.log(1.0 + math.exp(theta)) - S[i, j].item() * theta
        quant += sum((x[i][k] - Bc[i][k]) ** 2 for k in range(K))
    assert terms["likelihood"].item() == pytest.approx(2 * lik / (B * n), rel=1e-12)
    assert terms["quantization"].item() == pytest.approx(eta * quant / (B * n), rel=1e-12)

    # train.m: dJdU = (S - A) U - 2 eta (U0 - B); update.m divides it by batch * N (ascent on J)
    sum(terms.values()).backward()
    A = torch.sigmoid(u.detach() @ stored.T / 2)
    dJdU = (S - A) @ stored - 2 * eta * (u.detach() - codes)
    torch.testing.assert_close(u.grad, -dJdU / (B * n), rtol=1e-10, atol=1e-13)


def test_all_zero_label_row_is_a_clear_error_not_nan():
    u = outputs(6).detach()
    rows = [r[:] for r in SINGLE]
    rows[3] = [0, 0, 0]
    with pytest.raises(ValueError, match=r"all zero.*\[3\]"):
        dsdh_discrete_step(u, labels_of(rows))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    Y = np.eye(3, dtype=np.uint8)[rng.integers(0, 3, 40)]
    Y[7] = 0
    with pytest.raises(ValueError, match="all zero"):
        DSDH(n_bits=8, **SMALL).fit(X, Y)
    with pytest.raises(ValueError, match="nu"):
        dsdh_discrete_step(u, labels_of(SINGLE), nu=0.0)


def test_loss_terms_store_the_batch_outputs_only_in_training_mode():
    method = DSDH(n_bits=K)
    head = method.build_head(4, 3).double()
    labels = labels_of(SINGLE + [[0, 1, 0], [0, 0, 1]])
    method.prepare_state(head, labels.float(), torch.arange(8))
    head.double()
    u = outputs(7)
    rows = torch.tensor([1, 2, 3, 4, 5, 6])
    step = TrainStep(0, 0, 1, 1, batch_index=rows)
    method.loss_terms(head, u, labels[rows], step)
    np.testing.assert_array_equal(head.stored_u[rows].numpy(), u.detach().numpy())
    assert not head.stored_u[[0, 7]].any()  # DSDH.m: U starts at zero
    head.eval()
    method.loss_terms(head, u * 2, labels[rows], step)  # validation batches never write U
    np.testing.assert_array_equal(head.stored_u[rows].numpy(), u.detach().numpy())
    with pytest.raises(RuntimeError, match="batch_index"):
        method.loss_terms(head, u, labels[rows], STEP)


def blobs(n=200, d=12, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    X = (rng.normal(size=(c, d))[y] * 3 + rng.normal(size=(n, d))).astype(np.float32)
    return X, np.eye(c, dtype=np.uint8)[y]


def test_epoch_variant_solves_codes_of_all_items_from_the_final_outputs():
    X, Y = blobs()
    m = DSDH(n_bits=8, seed=0, discrete_step="epoch", lr=0.01, **SMALL).fit(X, Y)
    assert m.needs_epoch_outputs and not DSDH(n_bits=8).needs_epoch_outputs
    head = m.model_.head
    u = torch.from_numpy(m.raw_outputs(X))
    np.testing.assert_array_equal(head.stored_u.numpy(), u.numpy())  # refreshed by the hook
    expected, _ = dsdh_discrete_step(u, torch.from_numpy(Y).float())
    np.testing.assert_array_equal(head.stored_b.numpy(), expected.numpy())
    np.testing.assert_array_equal(m.encode(X), (u.numpy() > 0).astype(np.uint8))
    with pytest.raises(ValueError, match="discrete_step"):
        DSDH(n_bits=8, discrete_step="never", **SMALL).fit(X, Y)
