"""The DNNH triplet-draw benchmark: its version-1 reference keeps the same triplets per anchor as
version 2 (both a capped subset of the valid ones), and the script runs and prints both ratios."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.speed import bench_dnnh_triplets as bench
from methods.deep.dnnh import sample_triplets


def test_reference_and_current_draw_agree_on_support_and_counts():
    for labels in bench.batches(32, seed=1).values():
        full = {tuple(t) for t in sample_triplets(labels, None).tolist()}
        per_anchor_full = np.bincount([t[0] for t in full], minlength=32)
        for draw in (bench.sample_triplets_v1, sample_triplets):
            got = draw(labels, 5, torch.Generator().manual_seed(0))
            assert {tuple(t) for t in got.tolist()} <= full
            np.testing.assert_array_equal(np.bincount(got[:, 0].numpy(), minlength=32),
                                          np.minimum(per_anchor_full, 5))


def test_script_prints_both_versions_and_ratios(capsys):
    bench.main(["--batch", "16", "--bits", "8", "--iters", "1", "--repeats", "1"])
    out = capsys.readouterr().out
    assert out.count("v1/v2") == 4 and "single-label" in out and "multi-label" in out
