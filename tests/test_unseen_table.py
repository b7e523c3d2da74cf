"""``--table unseen``: every Table 3 method on the unseen-class protocols (data_protocols/unseen.py),
laid out like Table 3, with the reference rows; training labels no training item carries are
dropped before fitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import run_all
from benchmarks.runner import cell as cell_job
from benchmarks.runner.experiments import (
    REFERENCE_BITS,
    TABLE3_METHODS,
    TABLES,
    UNSEEN,
    cells_for,
    get_preset,
    make_cell,
)
from benchmarks.runner.results import ResultStore


def test_unseen_is_a_table_choice_with_every_table3_method_on_both_protocols():
    assert TABLES["unseen"] is UNSEEN and "unseen" in run_all.TABLE_CHOICES
    assert run_all.build_parser().parse_args(["--table", "unseen"]).table == ["unseen"]
    cells = cells_for(UNSEEN, get_preset("cpu"))
    assert {c.dataset.protocol for c in cells} == {"cifar10_unseen", "mirflickr25k_unseen"}
    methods = {c.method for c in cells if c.bits != REFERENCE_BITS}
    assert methods == set(TABLE3_METHODS)
    assert {c.bits for c in cells} == {16, 32, 48, 64, REFERENCE_BITS}
    assert len(cells) == 2 * (len(TABLE3_METHODS) * 4 + 3)
    cifar = next(c for c in cells if c.dataset.protocol == "cifar10_unseen")
    assert cifar.dataset.feature_backbone == "mobilenet_tflite"
    # no cell is shared with Table 3: other data, other keys
    assert not {c.cell_id for c in cells} & {c.cell_id for c in cells_for(TABLES["3"],
                                                                          get_preset("cpu"))}
    paper = cells_for(UNSEEN, get_preset("paper"))
    assert {(c.dataset.protocol, c.dataset.feature_backbone) for c in paper} == {
        ("cifar10_unseen", "alexnet")}


def test_unseen_table_without_data_says_not_available(tmp_path, capsys):
    assert run_all.main(["--table", "unseen", "--preset", "test", "--results-dir",
                         str(tmp_path), "--no-progress"]) == 0
    md = (Path(tmp_path) / "test" / "tables" / "unseen.md").read_text()
    assert "Unseen classes" in md and "not available in preset `test`" in md
    assert "Seeds: 0" in md


class _Split:
    def __init__(self) -> None:
        idx = np.arange(240)
        self.train, self.query, self.database = idx[:120], idx[120:150], idx[150:]
        self.val = idx[:0]

    def hash(self) -> str:
        return "unseensplit0"

    def sizes(self) -> dict[str, int]:
        return {"query": 30, "database": 90, "train": 120}

    def save(self, directory) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        return d


class _UnseenBench:
    """4 classes: 0 and 1 train (columns 2 and 3 all zero there), 2 and 3 query/database."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        y = np.r_[rng.integers(0, 2, 120), rng.integers(2, 4, 120)]
        self.labels = np.eye(4, dtype=np.uint8)[y]
        self.features = rng.normal(size=(4, 16))[y] * 2 + rng.normal(size=(240, 16))
        self.split = _Split()
        self.info = {"held_out_classes": [2, 3]}

    def inputs(self, part: str) -> np.ndarray:
        return self.features[getattr(self.split, part)]

    def targets(self, part: str) -> np.ndarray:
        return self.labels[getattr(self.split, part)]


def test_held_out_label_columns_are_dropped_before_fitting(tmp_path, monkeypatch):
    monkeypatch.setattr(cell_job, "_load_benchmark", lambda *a, **k: _UnseenBench())
    monkeypatch.setattr(cell_job, "_split_is_complete", lambda *a: True)
    preset = get_preset("cpu")
    ds = preset.unseen_columns[0].dataset
    opts = cell_job.RunOptions(results_dir=str(tmp_path), preset="cpu")
    store = ResultStore(tmp_path, "cpu")
    for method in ("classifier_codes", "sdh"):
        bits = REFERENCE_BITS if method == "classifier_codes" else 16
        cell = make_cell(preset, method, ds, bits, 0, {"n_anchors": 50} if method == "sdh" else {})
        assert cell_job.run_cell(cell, opts).status == "done"
        record = store.load(cell.cell_id)
        assert record["dataset"]["train_label_columns_dropped"] == [2, 3]
    # the classifier predicts one of the 2 seen classes: a 2-bit code
    assert record["metrics"]["map_at"]["all"] > 0
    lr = store.load(make_cell(preset, "classifier_codes", ds, REFERENCE_BITS, 0).cell_id)
    assert lr["metrics"]["code_length"] == 2 and "query_exact_match" not in lr["metrics"]


def test_blocks_without_paper_numbers_show_our_column_only(tmp_path):
    """The paper never ran the unseen-class protocols: their blocks have one column per code
    length, not empty paper and Δ columns; Table 3 keeps ours | paper | Δ."""
    from benchmarks.render.tables import build_table, format_latex, format_markdown

    preset, store = get_preset("cpu"), ResultStore(tmp_path, "cpu")
    unseen = build_table(UNSEEN, preset, store)
    md = format_markdown(unseen, store)
    assert "| method | 16 bits | 32 bits | 48 bits | 64 bits |" in md
    assert "paper | Δ" not in md and "Each entry: ours (the paper has no numbers" in md
    assert "ours & paper" not in format_latex(unseen, store)
    table3 = format_markdown(build_table(TABLES["3"], preset, store), store)
    assert "| 16 bits ours | paper | Δ |" in table3 and "Each entry: ours | paper | ours − paper." \
        in table3
