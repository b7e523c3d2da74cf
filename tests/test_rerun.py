"""The rerun report pairs two results directories by cell id and says what moved."""

from __future__ import annotations

import json
import shutil

import pytest

import run_all
from benchmarks.evidence import rerun
from benchmarks.runner.results import ResultStore


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The test preset's tuned Table 3 at ITQ and LSH (16 bits), run twice from nothing by one
    worker."""
    dirs = []
    for name in ("a", "b"):
        root = tmp_path_factory.mktemp(name)
        assert run_all.main(["--table", "3", "--preset", "test", "--methods", "itq,lsh",
                             "--bits", "16", "--tune", "2", "--results-dir", str(root),
                             "--no-progress", "-q"]) == 0
        dirs.append(root)
    return dirs


def test_one_worker_reruns_reproduce_every_tuned_cell_exactly(two_runs):
    report = rerun.compare(*two_runs, "test")
    assert len(report["cells"]) == 2 and report["only_a"] == report["only_b"] == 0
    assert all(c["same_tuned_values"] and c["same_map"] for c in report["cells"])
    text = rerun.format_markdown(report)
    assert "cells with the same mAP to the last digit: 2" in text
    assert "| itq |" in text and "+0.0000 | 0.0000 |" in text


def test_a_changed_study_and_number_are_reported_with_its_change_and_ranks(two_runs, tmp_path):
    a, b = two_runs
    changed = tmp_path / "changed"
    shutil.copytree(b, changed)
    store = ResultStore(changed, "test")
    path = next(p for p in store.cells_dir.glob("itq-*.json"))
    record = json.loads(path.read_text())
    before = record["metrics"]["map_at"]["all"]
    record["metrics"]["map_at"]["all"] = before + 0.5  # planted: ITQ now far ahead of LSH
    record["tuning"]["best_raw"] = {"n_iter": -1}
    path.write_text(json.dumps(record))
    report = rerun.compare(a, changed, "test")
    moved = [c for c in report["cells"] if not c["same_map"]]
    assert [c["cell_id"] for c in moved] == [record["cell_id"]]
    assert not moved[0]["same_tuned_values"]
    col = next(c for c in report["columns"] if c["key"] == "mAP@all")
    itq = next(r for r in col["methods"] if r["method"] == "itq")
    assert itq["max_abs_change"] == pytest.approx(0.5)
    assert itq["change"] == pytest.approx(0.5)
    assert itq["rank_b"] == 1


def test_a_folder_without_the_preset_is_refused(tmp_path, capsys):
    assert rerun.main(["--a", str(tmp_path), "--b", str(tmp_path), "--preset", "test"]) == 2
    assert f"{tmp_path}/test is not a results directory" in capsys.readouterr().err
