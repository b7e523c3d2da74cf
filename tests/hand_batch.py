"""The hand-made batch the loss tests share: 6 items, 5 bits, 3 classes, single- and multi-label."""

from __future__ import annotations

import torch

SINGLE = [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]]
MULTI = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]]
B, K = 6, 5


def outputs(seed: int = 0, scale: float = 1.5) -> torch.Tensor:
    """Seeded raw outputs ``u`` (B x K, float64, requires grad)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, K, generator=g, dtype=torch.float64) * scale).requires_grad_(True)


def labels_of(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)
