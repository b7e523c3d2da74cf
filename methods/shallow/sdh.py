"""SDH: Supervised Discrete Hashing (Shen, Shen, Liu & Shen, CVPR 2015; METHODS.md 2.4).

Written from the paper and checked against the authors' MATLAB ``SDH.m``, ``RRC.m`` and demo script
(the settings below are the demo's).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from methods.base import HashMethod, register
from methods.search import LogUniform, Uniform

__all__ = ["SDH", "drop_unlabelled", "rbf_features", "squared_distances"]

SIGMA_RULES = ("nearest_anchor_mean",)


def squared_distances(X: np.ndarray, A: np.ndarray, block: int = 4096) -> np.ndarray:
    """N x M squared Euclidean distances between rows of ``X`` and ``A`` (blocked, clipped >= 0)."""
    a2 = np.einsum("ij,ij->i", A, A)
    out = np.empty((X.shape[0], A.shape[0]))
    for start in range(0, X.shape[0], block):
        xb = X[start : start + block]
        d = np.einsum("ij,ij->i", xb, xb)[:, None] - 2.0 * (xb @ A.T) + a2[None, :]
        out[start : start + block] = np.maximum(d, 0.0)
    return out


def rbf_features(X: np.ndarray, anchors: np.ndarray, sigma: float) -> np.ndarray:
    """``phi(x) = [exp(-||x - a_j||^2 / (2 sigma^2))]_j`` followed by a constant 1 (bias column)."""
    phi = np.exp(-squared_distances(X, anchors) / (2.0 * sigma**2))
    return np.hstack([phi, np.ones((X.shape[0], 1))])


def drop_unlabelled(
    method: HashMethod, X: np.ndarray, Y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Drop training items with an all-zero label vector, with a warning giving their count.

    A supervised method has no target for them (SDH would regress them onto the zero vector; in
    KSH's pairwise matrix they would be dissimilar to everything, themselves included), so they are
    left out of the fit rather than silently mislabelled. All items unlabelled is an error.
    """
    keep = Y.any(axis=1)
    n_drop = int((~keep).sum())
    if n_drop == len(Y):
        raise ValueError(
            f"{type(method).__name__} is supervised but every training item has an all-zero label "
            "vector: give at least one label per item"
        )
    if n_drop:
        warnings.warn(
            f"{type(method).__name__}: dropped {n_drop} of {len(Y)} training items whose label "
            "vector is all zeros (a supervised method cannot use them)",
            UserWarning,
            stacklevel=3,
        )
        return X[keep], Y[keep]
    return X, Y


def _l2_normalise(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


@register("sdh")
class SDH(HashMethod):
    """Supervised Discrete Hashing with the L2 classification loss (Shen et al., CVPR 2015).

    Model and objective (paper Eq. (2)-(5), restated): the hash function is ``F(x) = P^T phi(x)``
    with ``phi`` an RBF map on ``n_anchors`` random training anchors plus a bias; codes
    ``B in {-1,1}^{N x K}``, a linear classifier ``W`` and ``P`` minimise

        ||Y - B W||^2 + lam ||W||^2 + nu (||B - Phi P||^2 + delta ||P||^2)

    (``delta`` is the ridge that the released code adds to the F-step). Alternation, as ``SDH.m``:
    ``B0 = sgn(randn)``; G-step ``W = (B^T B + lam I)^-1 B^T Y``; F-step
    ``P = (Phi^T Phi + delta I)^-1 Phi^T B``; then up to ``n_iter`` times: B-step by discrete cyclic
    coordinate descent (DCC, paper Eq. (9)-(10)) with ``Q = nu Phi P + Y W^T``, starting each
    B-step from ``B = 0`` as the code does, with up to ``dcc_sweeps`` sweeps of
    ``B[:, k] = sgn(Q[:, k] - B_{-k} W_{-k} W[k]^T)``, stopping sweeps when
    ``||B - B_prev||_F < 1e-6 ||B_prev||_F``; then G-step and F-step; stop early when
    ``||B - Phi P||_F < tol ||B||_F`` or ``||P - P_prev||_F < tol ||P_prev||_2`` (the code compares
    with the spectral norm of ``P_prev``). ``sgn(0) = 0`` as in MATLAB (columns not yet visited in
    the first sweep are 0). Encode: ``1[phi(x)^T P > 0]`` (the demo's symmetric mode).

    Hyper-parameters (defaults = the authors' demo)
    -----------------------------------------------
    n_anchors : 1000 random training items as RBF anchors.
    sigma : 0.4, the demo's RBF width "for normalized data"; ``"nearest_anchor_mean"`` is the rule
        kept as a comment in the demo: mean over training items of the distance to the nearest
        anchor, where (our deviation) an item's zero distance to itself when it is an anchor is
        skipped, else the rule gives sigma ~ 0 when all training items are anchors.
    normalize : True: features are L2-normalised before the RBF map (the demo's 0.4 assumes
        normalised data; METHODS.md 2.4 [D]).
    lam : 1 (``gmap.lambda``); nu : 1e-5 (``Fmap.nu``); delta : 0.01 (``Fmap.lambda``).
    n_iter : 5 outer iterations (``maxItr``); dcc_sweeps : 10; tol : 1e-5.

    Multi-label data: ``Y`` is the multi-hot matrix, used directly as the regression target.
    Training items whose labels are all zero are dropped with a warning (:func:`drop_unlabelled`).

    Learned state: ``anchors_``, ``sigma_``, ``projection_`` (P, (m + 1) x K), ``classifier_`` (W),
    ``objective_`` (the objective above after the initial G/F-steps and after every outer
    iteration), ``step_objective_`` ((iteration, step, value) after every B/G/F step) and
    ``dcc_objective_`` (per outer iteration, the B-subproblem value after each DCC sweep).
    """

    paper = "Shen, Shen, Liu & Shen, Supervised Discrete Hashing, CVPR 2015"
    supervised = True
    test_params: ClassVar[dict[str, Any]] = {"n_anchors": 50}
    #: the classifier ridge lam (demo 1), the code-fitting weight nu (demo 1e-5), each two decades
    #: either side of the demo's value, and the RBF width sigma around the demo's 0.4 "for
    #: normalized data" [D: ranges of this project]
    search_space: ClassVar[dict[str, Any]] = {
        "lam": LogUniform(1e-2, 1e2),
        "nu": LogUniform(1e-7, 1e-3),
        "sigma": Uniform(0.2, 0.8),
    }

    def __init__(
        self,
        n_bits: int = 48,
        seed: int = 0,
        n_anchors: int = 1000,
        sigma: float | str = 0.4,
        normalize: bool = True,
        lam: float = 1.0,
        nu: float = 1e-5,
        delta: float = 0.01,
        n_iter: int = 5,
        dcc_sweeps: int = 10,
        tol: float = 1e-5,
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed)
        self.n_anchors = n_anchors
        self.sigma = sigma
        self.normalize = normalize
        self.lam = lam
        self.nu = nu
        self.delta = delta
        self.n_iter = n_iter
        self.dcc_sweeps = dcc_sweeps
        self.tol = tol

    # ------------------------------------------------------------------ helpers
    def _prepare(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return _l2_normalise(X) if self.normalize else X

    def _check_params(self, n: int) -> None:
        if not isinstance(self.n_anchors, (int, np.integer)) or self.n_anchors < 1:
            raise ValueError(f"n_anchors must be a positive integer, got {self.n_anchors!r}")
        if n < self.n_anchors:
            raise ValueError(
                f"SDH needs at least n_anchors={self.n_anchors} labelled training items to draw "
                f"its RBF anchors from, got N={n}; lower n_anchors or give more training data"
            )
        if isinstance(self.sigma, str):
            if self.sigma not in SIGMA_RULES:
                raise ValueError(f"sigma must be a positive number or one of {SIGMA_RULES}")
        elif not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        for name in ("lam", "nu", "delta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def _objective(self, B, W, P, Phi, Y) -> float:
        """The SDH objective restated in the class docstring (with the F-step ridge)."""
        return float(
            np.sum((Y - B @ W) ** 2)
            + self.lam * np.sum(W**2)
            + self.nu * (np.sum((B - Phi @ P) ** 2) + self.delta * np.sum(P**2))
        )

    def _g_step(self, B: np.ndarray, Y: np.ndarray) -> np.ndarray:
        k = B.shape[1]
        return scipy.linalg.solve(B.T @ B + self.lam * np.eye(k), B.T @ Y, assume_a="pos")

    def _dcc(self, Q: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """B-step: min_B ||B W||^2 - 2 tr(B^T Q) over {-1,1} by discrete cyclic coordinate descent.

        (This is ``||Y - BW||^2 + nu ||B - Phi P||^2`` up to terms constant on {-1,1} codes.)
        ``B_{-k} W_{-k} W[k]^T`` is computed as ``B (W W[k]^T) - B[:, k] ||W[k]||^2``.
        """
        B = np.zeros_like(Q)
        WWt = W @ W.T
        history: list[float] = []
        for _ in range(self.dcc_sweeps):
            B_prev = B.copy()
            for k in range(B.shape[1]):
                rest = B @ WWt[:, k] - B[:, k] * WWt[k, k]
                B[:, k] = np.sign(Q[:, k] - rest)
            history.append(float(np.sum((B @ W) ** 2) - 2.0 * np.sum(B * Q)))
            if np.linalg.norm(B - B_prev) < 1e-6 * np.linalg.norm(B_prev):
                break
        return B, history

    # ------------------------------------------------------------------ contract
    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        X, Y = drop_unlabelled(self, X, Y)
        self._check_params(len(X))
        rng = np.random.default_rng(self.seed)
        Xn = self._prepare(X)
        Yf = Y.astype(np.float64)
        self.anchors_ = Xn[np.sort(rng.choice(len(Xn), size=self.n_anchors, replace=False))]
        if isinstance(self.sigma, str):  # "nearest_anchor_mean"
            D2 = squared_distances(Xn, self.anchors_)
            # an anchor's distance to itself (0 up to round-off) is not a nearest-anchor distance
            D2[D2 <= 1e-10 * D2.mean()] = np.inf
            nearest = D2.min(axis=1)
            nearest = nearest[np.isfinite(nearest)]
            self.sigma_ = float(np.mean(np.sqrt(nearest))) if nearest.size else 0.0
            if not self.sigma_ > 0:
                raise ValueError(
                    "sigma rule 'nearest_anchor_mean' gave 0: every training item coincides with "
                    "an anchor; give a numeric sigma"
                )
        else:
            self.sigma_ = float(self.sigma)
        Phi = rbf_features(Xn, self.anchors_, self.sigma_)
        m1 = Phi.shape[1]
        # F-step solver, reused every iteration: (Phi^T Phi + delta I)^-1 Phi^T via Cholesky
        chol = scipy.linalg.cho_factor(Phi.T @ Phi + self.delta * np.eye(m1))

        def f_step(B: np.ndarray) -> np.ndarray:
            return scipy.linalg.cho_solve(chol, Phi.T @ B)

        B = np.sign(rng.standard_normal((len(Xn), self.n_bits)))
        W = self._g_step(B, Yf)
        P = f_step(B)
        self.objective_ = [self._objective(B, W, P, Phi, Yf)]
        self.step_objective_: list[tuple[int, str, float]] = [(0, "F", self.objective_[0])]
        self.dcc_objective_: list[list[float]] = []
        for it in tqdm(range(1, self.n_iter + 1), desc="SDH", leave=False, disable=None):
            Q = self.nu * (Phi @ P) + Yf @ W.T
            B, history = self._dcc(Q, W)
            self.dcc_objective_.append(history)
            self.step_objective_.append((it, "B", self._objective(B, W, P, Phi, Yf)))
            W = self._g_step(B, Yf)
            self.step_objective_.append((it, "G", self._objective(B, W, P, Phi, Yf)))
            P_prev = P
            P = f_step(B)
            self.objective_.append(self._objective(B, W, P, Phi, Yf))
            self.step_objective_.append((it, "F", self.objective_[-1]))
            if np.linalg.norm(B - Phi @ P) < self.tol * np.linalg.norm(B):
                break
            if np.linalg.norm(P - P_prev) < self.tol * np.linalg.norm(P_prev, 2):
                break
        self.projection_ = P
        self.classifier_ = W

    def _encode(self, X: np.ndarray) -> np.ndarray:
        return rbf_features(self._prepare(X), self.anchors_, self.sigma_) @ self.projection_ > 0
