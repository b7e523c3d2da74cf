"""LSH: random hyperplanes through the training mean (data-independent baseline of Table 3)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from methods.base import HashMethod, register


@register("lsh")
class LSH(HashMethod):
    """Sign random projections (Charikar 2002; the random-hyperplane LSH of hashing benchmarks).

    Features are centred by the training mean, then projected on ``n_bits`` hyperplanes with
    i.i.d. N(0, 1) normals drawn from ``seed``; bit k is 1 where the projection is >= 0
    (METHODS.md 2.1). The only "learning" is the mean, so labels are ignored.
    """

    paper = "Gionis, Indyk, Motwani, VLDB 1999; Charikar, STOC 2002 (random hyperplanes)"
    supervised = False
    #: data-independent: nothing to tune (the empty space of HashMethod, stated here on purpose)
    search_space: ClassVar[dict[str, Any]] = {}

    def __init__(self, n_bits: int = 48, seed: int = 0) -> None:
        super().__init__(n_bits=n_bits, seed=seed)

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        rng = np.random.default_rng(self.seed)
        self.mean_ = X.mean(axis=0)
        self.projection_ = rng.standard_normal((X.shape[1], self.n_bits))

    def _encode(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) @ self.projection_ >= 0
