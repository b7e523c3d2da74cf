"""Appendix-table methods on the shared engine: each loss against a loop transcription of its
published formula on a hand-made batch, plus a small end-to-end fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hand_batch import MULTI, SINGLE, B, K, labels_of, outputs

from methods.deep.base import TrainStep
from methods.deep.greedyhash import (
    GreedyHash,
    GreedyHashHead,
    greedy_penalty,
    sign_straight_through,
)
from methods.deep.talr import TALR, apr_loss, default_nbins

STEP = TrainStep(epoch=0, iteration=0, iterations_per_epoch=1, total_epochs=1)
SMALL = {"backbone": "mlp", "epochs": 2, "batch_size": 32, "progress": False}


def blobs(n: int = 300, d: int = 16, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    X = (rng.normal(size=(c, d))[y] * 3 + rng.normal(size=(n, d))).astype(np.float32)
    return X, np.eye(c, dtype=np.float32)[y]


# ---------------------------------------------------------------------- Greedy Hash
def test_greedy_sign_is_sign_forward_and_identity_backward():
    h = outputs()
    b = sign_straight_through(h)
    assert torch.equal(b.detach(), torch.sign(h.detach()))
    upstream = torch.arange(B * K, dtype=torch.float64).view(B, K)
    (b * upstream).sum().backward()
    assert torch.equal(h.grad, upstream)  # dL/dh := dL/db


def test_greedy_penalty_and_total_match_loops():
    h = outputs(1)
    x = h.tolist()
    penalty = sum(abs(abs(v) - 1.0) ** 3 for row in x for v in row) / (B * K)
    assert greedy_penalty(h).item() == pytest.approx(penalty, rel=1e-12)

    method = GreedyHash(n_bits=K, alpha=0.1)
    head = GreedyHashHead(4, K, 3).double()
    W = head.classifier.weight.tolist()  # C x K, no bias
    assert head.classifier.bias is None

    def scores_of(n: int) -> list[float]:
        b = [math.copysign(1.0, v) if v != 0 else 0.0 for v in x[n]]
        return [sum(W[c][k] * b[k] for k in range(K)) for c in range(3)]

    # single-label: softmax cross-entropy on W sgn(h)
    ce = 0.0
    for n, row in enumerate(SINGLE):
        s = scores_of(n)
        ce += -(s[row.index(1)] - math.log(sum(math.exp(v) for v in s)))
    terms = method.loss_terms(head, h, labels_of(SINGLE), STEP)
    assert terms["classification"].item() == pytest.approx(ce / B, rel=1e-10)
    assert terms["penalty"].item() == pytest.approx(0.1 * penalty, rel=1e-10)

    # multi-label: sigmoid cross-entropy summed over classes, batch mean
    bce = 0.0
    for n, row in enumerate(MULTI):
        for c, s in enumerate(scores_of(n)):
            p = 1.0 / (1.0 + math.exp(-s))
            bce += -(row[c] * math.log(p) + (1 - row[c]) * math.log(1 - p))
    terms = method.loss_terms(head, h, labels_of(MULTI), STEP)
    assert terms["classification"].item() == pytest.approx(bce / B, rel=1e-10)


def test_greedy_fits_and_codes_are_sign_of_h():
    X, Y = blobs()
    m = GreedyHash(n_bits=16, seed=0, lr=0.05, **{**SMALL, "epochs": 5}).fit(X, Y)
    u = m.raw_outputs(X)
    np.testing.assert_array_equal(m.encode(X), (u >= 0).astype(np.uint8))
    assert m.convergence_report(m.encode(X))["converged"]
    with pytest.raises(ValueError, match="one label per item"):
        GreedyHash(n_bits=8, classification="softmax", **SMALL).fit(X, np.ones_like(Y))
    with pytest.raises(ValueError, match="alpha"):
        GreedyHash(n_bits=8, alpha=-1, **SMALL).fit(X, Y)


# ---------------------------------------------------------------------- TALR
def apr_reference(x: list[list[float]], rows: list[list[int]], nbins: int, gamma: float,
                  delta: float) -> list[float]:
    """Per-query APr written out as in apr_s_forward.m, with explicit loops."""
    n, k = len(x), len(x[0])
    phi = [[2.0 / (1.0 + math.exp(-gamma * v)) - 1.0 for v in row] for row in x]
    step = k / nbins
    centres = [lv * step for lv in range(nbins + 1)]
    width = step * delta
    out = []
    for q in range(n):
        cp = [0.0] * len(centres)
        call = [0.0] * len(centres)
        n_pos = 0
        for j in range(n):
            similar = any(a and b for a, b in zip(rows[q], rows[j]))
            positive, negative = similar and j != q, not similar
            n_pos += positive
            d = (k - sum(a * b for a, b in zip(phi[q], phi[j]))) / 2.0
            for lv, c in enumerate(centres):
                pulse = 1.0 - abs(d - c) / width if c - width < d <= c + width else 0.0
                cp[lv] += pulse * positive
                call[lv] += pulse * (positive or negative)
        total, C_prev, Cp_prev, C, Cp = 0.0, 0.0, 0.0, 0.0, 0.0
        for lv in range(len(centres)):
            C, Cp = C + call[lv], Cp + cp[lv]
            total += cp[lv] * (Cp_prev + Cp + 1.0) / (C_prev + C + 1.0)
            C_prev, Cp_prev = C, Cp
        out.append(total / n_pos / delta if n_pos else 0.0)
    return out


@pytest.mark.parametrize("rows", [SINGLE, MULTI], ids=["single", "multi"])
@pytest.mark.parametrize(("nbins", "gamma", "delta"), [(5, 1.0, 1.0), (2, 3.0, 1.5)])
def test_apr_loss_matches_the_official_forward(rows, nbins, gamma, delta):
    x = outputs(2)
    ref = apr_reference(x.tolist(), rows, nbins, gamma, delta)
    y = labels_of(rows)
    assert apr_loss(x, y, nbins, gamma, delta).item() == pytest.approx(-sum(ref), rel=1e-10)
    mean = apr_loss(x, y, nbins, gamma, delta, "mean").item()
    assert mean == pytest.approx(-sum(ref) / B, rel=1e-10)
    apr_loss(x, y, nbins, gamma, delta).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_apr_is_one_for_a_perfect_ranking_and_lower_for_a_reversed_one():
    y = labels_of([[1, 0], [1, 0], [0, 1], [0, 1]])
    perfect = torch.tensor([[1.0] * 8, [1.0] * 8, [-1.0] * 8, [-1.0] * 8], dtype=torch.float64) * 50
    assert apr_loss(perfect, y, nbins=8, reduction="mean").item() == pytest.approx(-1.0, abs=1e-9)
    # each item now shares its code with an irrelevant item; its one relevant item sits at distance
    # 8 tied with the other irrelevant one: cp_8 = 1, C_7 = 1, C_8 = 3, so APr = 1 * 2 / 5
    reversed_ = perfect[[0, 2, 1, 3]]
    assert apr_loss(reversed_, y, nbins=8, reduction="mean").item() == pytest.approx(-0.4, abs=1e-9)


def test_talr_nbins_default_and_fit():
    assert [default_nbins(k) for k in (12, 24, 32, 48, 64)] == [12, 24, 16, 24, 32]
    X, Y = blobs()
    m = TALR(n_bits=16, seed=0, lr=0.05, **{**SMALL, "epochs": 5}).fit(X, Y)
    assert m.nbins_value() == 16
    np.testing.assert_array_equal(m.encode(X), (m.raw_outputs(X) >= 0).astype(np.uint8))
    assert m.convergence_report(m.encode(X))["converged"]
    with pytest.raises(ValueError, match="nbins"):
        TALR(n_bits=8, nbins=0, **SMALL).fit(X, Y)
    with pytest.raises(ValueError, match="reduction"):
        TALR(n_bits=8, reduction="max", **SMALL).fit(X, Y)
