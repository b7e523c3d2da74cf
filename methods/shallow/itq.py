"""ITQ and SITQ (CCA-ITQ): iterative quantization of a linear embedding (METHODS.md 2.2, 2.3).

Both methods learn an orthogonal rotation ``R`` of a K-dimensional embedding ``V`` that
minimises the quantization loss ``||B - V R||_F^2`` over ``B in {-1, +1}^{N x K}`` (Gong &
Lazebnik, CVPR'11, Eq. (2)). ITQ embeds by PCA (unsupervised); SITQ embeds by CCA with the labels,
each direction scaled by its canonical correlation (Gong et al., TPAMI'13, Sec. 4). Written from
the papers and checked against the authors' MATLAB ``ITQ.m`` and ``cca.m``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

from methods.base import HashMethod, register
from methods.search import IntRange, LogUniform

__all__ = ["ITQ", "SITQ", "itq_rotation"]


def itq_rotation(
    V: np.ndarray, n_iter: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[float]]:
    """Learn the ITQ rotation of the N x K embedding ``V`` by alternating minimisation.

    ``R`` starts as the orthonormalised (SVD, left factor) K x K standard Gaussian matrix. Each
    iteration fixes ``R`` and sets ``B = sgn(V R)`` (entries >= 0 -> +1), then fixes ``B`` and
    solves the orthogonal Procrustes problem: SVD ``B^T V = U_B S U_A^T``, ``R = U_A U_B^T``
    (Eq. (2) and Sec. 2.3 of the CVPR'11 paper). Returns ``R`` and the quantization loss
    ``||B - V R||_F^2`` before the first update and after every update (``n_iter + 1`` values,
    non-increasing: both half-steps are exact minimisers).
    """
    k = V.shape[1]
    R, _, _ = np.linalg.svd(rng.standard_normal((k, k)))
    losses: list[float] = []
    for _ in range(n_iter):
        Z = V @ R
        B = np.where(Z >= 0, 1.0, -1.0)
        losses.append(float(np.sum((B - Z) ** 2)))
        with threadpool_limits(limits=1, user_api="blas"):  # K x K: threads only slow it down
            U_B, _, U_At = np.linalg.svd(B.T @ V)
        R = U_At.T @ U_B.T
    Z = V @ R
    losses.append(float(np.sum((np.where(Z >= 0, 1.0, -1.0) - Z) ** 2)))
    return R, losses


def _check_dimension(method: HashMethod, X: np.ndarray) -> None:
    n, d = X.shape
    if method.n_bits > d:
        raise ValueError(
            f"{type(method).__name__} projects to n_bits={method.n_bits} dimensions, but the "
            f"features have only D={d}: n_bits must be <= D"
        )
    if method.n_bits > n:
        raise ValueError(
            f"{type(method).__name__} needs at least n_bits={method.n_bits} training items for a "
            f"rank-{method.n_bits} projection, got N={n}"
        )


def _top_eigenvectors(M: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenpairs of the symmetric matrix ``M``, in descending order."""
    d = M.shape[0]
    vals, vecs = scipy.linalg.eigh(M, subset_by_index=(d - k, d - 1))
    return vals[::-1], vecs[:, ::-1]


@register("itq")
class ITQ(HashMethod):
    """PCA-ITQ (Gong & Lazebnik, CVPR 2011; TPAMI 2013).

    Fit: centre the features by the training mean, project on the top ``n_bits`` principal
    directions (eigenvectors of the covariance), then learn the rotation with :func:`itq_rotation`.
    Encode: ``1[(x - mu)^T W_pca R >= 0]``.

    Hyper-parameters
    ----------------
    n_iter : 50 rotation updates, the paper's setting ("50 iterations", CVPR'11 Sec. 2.3). The
        authors' ``ITQ.m`` loops ``for iter = 0:n_iter`` and so performs 51 updates; the difference
        is immaterial (the loss has flattened by then) and we follow the paper's count.

    Learned state: ``mean_``, ``projection_`` (D x K, the PCA directions), ``rotation_`` (K x K,
    orthogonal) and ``quantization_loss_`` (``n_iter + 1`` values, non-increasing).

    ``n_bits`` must not exceed the feature dimension D (PCA has only D directions) nor the number
    of training items.
    """

    paper = "Gong & Lazebnik, Iterative Quantization, CVPR 2011 / TPAMI 2013"
    supervised = False
    #: the rotation updates around the paper's 50 ("usually enough", CVPR'11 Sec. 2.3); ITQ has
    #: one parameter
    search_space: ClassVar[dict[str, Any]] = {"n_iter": IntRange(10, 100)}

    def __init__(self, n_bits: int = 48, seed: int = 0, n_iter: int = 50) -> None:
        super().__init__(n_bits=n_bits, seed=seed)
        self.n_iter = n_iter

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        _check_dimension(self, X)
        rng = np.random.default_rng(self.seed)
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        n, d = Xc.shape
        if d <= n:
            _, self.projection_ = _top_eigenvectors(Xc.T @ Xc / max(n - 1, 1), self.n_bits)
        else:  # fewer items than dimensions: the right singular vectors are cheaper
            _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
            self.projection_ = Vt[: self.n_bits].T
        V = Xc @ self.projection_
        self.rotation_, self.quantization_loss_ = itq_rotation(V, self.n_iter, rng)

    def _encode(self, X: np.ndarray) -> np.ndarray:
        Xc = np.asarray(X, dtype=np.float64) - self.mean_
        return Xc @ (self.projection_ @ self.rotation_) >= 0


def cca_directions(
    X: np.ndarray, Y: np.ndarray, reg: float, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` leading canonical directions of ``X`` w.r.t. ``Y`` and their correlations.

    Regularised CCA as in Gong et al.'s ``cca.m``: joint covariance (N - 1 normalisation) of the
    centred views, ridge ``reg`` added to ``C_xx`` and ``C_yy``; with ``C_xx = R_x^T R_x``
    (Cholesky), the symmetric matrix ``Z = R_x^{-T} C_xy C_yy^{-1} C_yx R_x^{-1}`` is
    eigen-decomposed; correlations are the square roots of its eigenvalues (negatives from round-off
    clipped to 0) and directions are ``W_x = R_x^{-1} U``. Returns ``W_x`` (D x k) and ``r`` (k,),
    correlations in descending order.
    """
    n = X.shape[0]
    Xc = X - X.mean(axis=0)
    Yc = Y - Y.mean(axis=0)
    denom = max(n - 1, 1)
    Cxx = Xc.T @ Xc / denom + reg * np.eye(X.shape[1])
    Cyy = Yc.T @ Yc / denom + reg * np.eye(Y.shape[1])
    Cxy = Xc.T @ Yc / denom
    Rx = scipy.linalg.cholesky(Cxx, lower=False)  # Cxx = Rx^T Rx
    # M = Rx^{-T} Cxy, then Z = M Cyy^{-1} M^T
    M = scipy.linalg.solve_triangular(Rx, Cxy, trans="T", lower=False)
    Z = M @ scipy.linalg.solve(Cyy, M.T, assume_a="pos")
    Z = 0.5 * (Z + Z.T)
    vals, U = _top_eigenvectors(Z, k)
    r = np.sqrt(np.clip(vals, 0.0, None))
    Wx = scipy.linalg.solve_triangular(Rx, U, lower=False)
    return Wx, r


@register("sitq")
class SITQ(ITQ):
    """CCA-ITQ, the supervised ITQ of Gong et al. (TPAMI 2013, Sec. 4), called SITQ in DPAH.

    Fit: centre the features; regularised CCA between the features and the N x C multi-hot labels
    (:func:`cca_directions`); keep the first ``n_bits`` directions, scale column k by the k-th
    canonical correlation, embed ``V = (X - mu) W_x diag(r)`` and learn the ITQ rotation on ``V``.
    Encode: ``1[(x - mu)^T W_x diag(r) R >= 0]``.

    Caveat, kept faithfully (METHODS.md 2.3): at most ``rank(C_xy) <= C`` correlations are non-zero
    (C - 1 for one-hot labels, whose centred columns sum to 0), so when ``n_bits`` exceeds that the
    extra embedding dimensions are ~0 after scaling and the bits all come from a ``C``-dimensional
    subspace; mAP then saturates or drops with more bits (as in HashNet's CCA-ITQ row).

    Hyper-parameters
    ----------------
    reg : 1e-4, the ridge added to both covariances (the value in the authors' ``cca.m`` comment,
        "reg = 0.0001 which works well"; also needed because one-hot ``C_yy`` is singular).
    n_iter : 50 rotation updates, as ITQ.
    """

    paper = "Gong, Lazebnik, Gordo & Perronnin, Iterative Quantization, TPAMI 2013 (CCA-ITQ)"
    supervised = True
    #: n_iter as ITQ; the CCA ridge two decades either side of cca.m's 1e-4
    search_space: ClassVar[dict[str, Any]] = {
        "n_iter": IntRange(10, 100),
        "reg": LogUniform(1e-6, 1e-2),
    }

    def __init__(
        self, n_bits: int = 48, seed: int = 0, n_iter: int = 50, reg: float = 1e-4
    ) -> None:
        super().__init__(n_bits=n_bits, seed=seed, n_iter=n_iter)
        self.reg = reg

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        _check_dimension(self, X)
        if not self.reg > 0:
            raise ValueError(
                f"reg must be > 0 (the one-hot label covariance is singular), got {self.reg}"
            )
        rng = np.random.default_rng(self.seed)
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        Wx, self.correlations_ = cca_directions(X, Y.astype(np.float64), self.reg, self.n_bits)
        # the scaled CCA directions play the role of ITQ's PCA directions (shared encode)
        self.projection_ = Wx * self.correlations_
        V = (X - self.mean_) @ self.projection_
        self.rotation_, self.quantization_loss_ = itq_rotation(V, self.n_iter, rng)
