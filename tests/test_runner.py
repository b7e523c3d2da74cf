"""The runner end to end: ``run_all.py --table 3 --preset test`` fills a table from stored results.

Two kinds of test:

* with the real stack (registry + ``data_protocols`` digits + ``benchmarks.metrics``), skipped
  while one of them is not importable;
* with small, hand-checkable stand-ins for the data protocol and the metric module (monkeypatched
  into :mod:`benchmarks.runner.cell`), so the runner's own behaviour (skip / force / dry run /
  failures / atomic files) is tested whatever state the other packages are in.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import run_all
from benchmarks.runner import cell as cell_job
from benchmarks.runner import launchers
from benchmarks.runner.experiments import TABLE3, get_preset
from benchmarks.runner.results import ResultStore

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ stand-ins
class _Split:
    def __init__(self, n: int) -> None:
        idx = np.arange(n)
        self.query, self.database = idx[idx % 5 == 0], idx[idx % 5 != 0]
        self.train = self.database[: len(self.database) // 2]

    def hash(self) -> str:
        return "fakesplit000"

    def sizes(self) -> dict[str, int]:
        return {"query": len(self.query), "database": len(self.database), "train": len(self.train)}

    def save(self, directory) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name in ("query", "database", "train"):
            np.savetxt(d / f"{name}.txt", getattr(self, name), fmt="%d")
        return d


class _Bench:
    """Digits-like data: 10 classes, 64-d clustered features, 300 items."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 10, size=300)
        self.labels = np.eye(10, dtype=np.uint8)[y]
        self.features = (rng.normal(size=(10, 64))[y] * 2 + rng.normal(size=(300, 64)))
        self.split = _Split(300)
        self.info = {"fake": True}

    def inputs(self, part: str) -> np.ndarray:
        return self.features[getattr(self.split, part)]

    def targets(self, part: str) -> np.ndarray:
        return self.labels[getattr(self.split, part)]


class _NotFound(FileNotFoundError):
    pass


def _fake_protocols() -> types.SimpleNamespace:
    class Protocol:
        def load(self, data_root, seed, **kwargs):
            return _Bench()

    return types.SimpleNamespace(
        get_protocol=lambda name: Protocol(), DEFAULT_DATA_ROOT="/nowhere",
        DatasetNotFoundError=_NotFound,
    )


def reference_ap(qc, dc, ql, dl, k=None, no_hit="drop") -> np.ndarray:
    """Plain per-query AP@K: stable sort by Hamming distance; NaN for a no-hit query."""
    aps = []
    for q in range(len(qc)):
        dist = (qc[q] != dc).sum(1)
        order = np.argsort(dist, kind="stable")[: k or len(dc)]
        rel = (dl[order] @ ql[q]) > 0
        if rel.sum() == 0:
            aps.append(np.nan)
            continue
        prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        aps.append(float((prec * rel).sum() / rel.sum()))
    return np.asarray(aps)


def reference_map(qc, dc, ql, dl, k=None) -> float:
    """Plain per-query mAP@K, no-hit queries dropped."""
    return float(np.nanmean(reference_ap(qc, dc, ql, dl, k)))


def _fake_metrics() -> types.SimpleNamespace:
    def evaluate(qc, dc, ql, dl, k=None, no_hit="drop"):
        return {"map_at_k": reference_map(qc, dc, ql, dl, k), "map": reference_map(qc, dc, ql, dl),
                "pr_radius": {"precision": [1.0, 0.5], "recall": [0.1, 1.0]}}

    return types.SimpleNamespace(evaluate=evaluate, per_query_ap=reference_ap,
                                 map_at_k=lambda qc, dc, ql, dl, k=None, no_hit="drop":
                                 reference_map(qc, dc, ql, dl, k))


@pytest.fixture
def fakes(monkeypatch):
    """Route the runner to the stand-in protocol and metrics; clear its dataset memo."""
    monkeypatch.setattr(cell_job, "_import_protocols", _fake_protocols)
    monkeypatch.setattr(cell_job, "_import_metrics", _fake_metrics)
    monkeypatch.setattr(cell_job, "_BENCH_CACHE", {})


def _run(tmp_path: Path, *extra: str) -> int:
    return run_all.main(["--table", "3", "--preset", "test", "--results-dir", str(tmp_path),
                         "--no-progress", "-q", *extra])


def _table_rows(tmp_path: Path) -> list[dict]:
    with open(tmp_path / "test" / "tables" / "table3.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _check_table_matches_store(tmp_path: Path) -> int:
    """Every method and code length of the preset is in the table; numbers equal the JSON."""
    preset = get_preset("test")
    rows = _table_rows(tmp_path)
    labels = {label for label, m in [(r.label, r.method) for r in TABLE3.rows]
              if m in preset.table3_methods}
    assert {r["row"] for r in rows} == labels
    assert {int(r["bits"]) for r in rows} == set(preset.bits)
    assert len(rows) == len(labels) * len(preset.bits)
    md = (tmp_path / "test" / "tables" / "table3.md").read_text()
    for label in labels:
        assert f"| {label} |" in md
    for b in preset.bits:
        assert f"{b} bits ours" in md
    assert "NOT the paper's setting" in md and "ties broken by ascending database index" in md
    store = ResultStore(tmp_path, "test")
    n_ok = 0
    for r in rows:
        (cell_id,) = r["cell_ids"].split(";")
        record = store.load(cell_id)
        if r["status"] == "ok":
            ours = record["metrics"]["map_at"]["all"]
            assert float(r["ours_mean"]) == ours
            assert f"{ours:.4f}" in md
            paper = float(r["paper"])
            assert float(r["diff"]) == pytest.approx(ours - paper)
            n_ok += 1
        else:
            assert r["status"] == "missing" and record is None
    return n_ok


# ------------------------------------------------------------------------------ tests
def test_table3_end_to_end_with_stand_ins(tmp_path, fakes, capsys):
    assert _run(tmp_path) == 0
    out = capsys.readouterr().out
    assert "SUMMARY" in out and "failed: 0" in out
    n_ok = _check_table_matches_store(tmp_path)
    assert n_ok >= 2  # at least LSH at both code lengths
    # the stored number is the reference mAP of the stored codes (recomputable without training)
    store = ResultStore(tmp_path, "test")
    rec = next(store.iter_records())
    codes = store.load_codes(rec["cell_id"])
    assert rec["metrics"]["map_at"]["all"] == reference_map(
        codes["query_codes"], codes["db_codes"], codes["query_labels"], codes["db_labels"])
    assert rec["dataset"]["split_hash"] == "fakesplit000"
    for key in ("git_commit", "utc_time", "platform", "cpu_count", "cpu_model",
                "torch_cpu_capability"):
        assert key in rec["environment"]
    assert rec["map_convention"]["no_hit"] == "drop"
    assert set(rec["timing"]) == {"fit_s", "encode_s", "eval_s", "fit_cpu_s", "cpu_s"}


def test_rerun_skips_and_force_recomputes(tmp_path, fakes, capsys):
    _run(tmp_path)
    n_done = sum(1 for _ in ResultStore(tmp_path, "test").iter_records())
    capsys.readouterr()
    _run(tmp_path)
    out = capsys.readouterr().out
    assert "cells run: 0" in out and f"skipped (already done): {n_done}" in out
    record_file = next((tmp_path / "test" / "cells").glob("*.json"))
    before = json.loads(record_file.read_text())["utc_time"], record_file.stat().st_mtime_ns
    _run(tmp_path, "--force", "--methods", "lsh")
    out = capsys.readouterr().out
    assert "cells run: 2" in out
    lsh_files = sorted((tmp_path / "test" / "cells").glob("lsh-*.json"))
    assert any(f.stat().st_mtime_ns != before[1] for f in lsh_files)


def test_bumped_results_version_reruns_only_that_methods_cells(tmp_path, fakes, monkeypatch, capsys):
    """A method whose code changed its numbers (results_version 2) gets new cells: its old records
    are not counted as done, the other methods' cells and ids are untouched."""
    from methods import get_method

    _run(tmp_path, "--methods", "lsh,itq")
    store = ResultStore(tmp_path, "test")
    before = {r["cell_id"] for r in store.iter_records()}
    assert all("results_version" not in store.load(c)["cell"] for c in before)  # version 1: ids kept
    capsys.readouterr()
    monkeypatch.setattr(get_method("lsh"), "results_version", 2)
    _run(tmp_path, "--methods", "lsh,itq")
    out = capsys.readouterr().out
    assert "cells run: 2" in out and "skipped (already done): 2" in out
    new = {r["cell_id"] for r in store.iter_records()} - before
    assert len(new) == 2 and all(c.startswith("lsh-") for c in new)
    assert all(store.load(c)["cell"]["results_version"] == 2 for c in new)


def test_dry_run_lists_cells_and_runs_nothing(tmp_path, fakes, capsys):
    assert _run(tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "0 done" in out and out.count("TO RUN") == 4
    assert not (tmp_path / "test").exists()
    _run(tmp_path, "--methods", "lsh")
    capsys.readouterr()
    _run(tmp_path, "--dry-run")
    out = capsys.readouterr().out
    assert out.count("DONE") == 2 and out.count("TO RUN") == 2


def test_failing_method_is_reported_and_the_rest_runs(tmp_path, fakes, monkeypatch, capsys):
    from methods.base import HashMethod

    class Broken(HashMethod):
        kind = "shallow"

        def _fit(self, X, Y):
            raise RuntimeError("deliberate failure in fit")

        def _encode(self, X):  # pragma: no cover - never reached
            return X[:, : self.n_bits] > 0

    real = cell_job._method_class
    monkeypatch.setattr(cell_job, "_method_class",
                        lambda name: Broken if name == "itq" else real(name))
    assert _run(tmp_path) == 1  # failures make the exit status non-zero
    out = capsys.readouterr().out
    assert "failed: 2" in out and "deliberate failure in fit" in out
    rows = _table_rows(tmp_path)
    assert {r["status"] for r in rows if r["method"] == "lsh"} == {"ok"}
    assert {r["status"] for r in rows if r["method"] == "itq"} == {"missing"}
    assert len(list((tmp_path / "test" / "failed").glob("itq-*.json"))) == 2


def test_unregistered_method_and_missing_data_show_as_missing(tmp_path, fakes, monkeypatch,
                                                              capsys):
    def not_found(*a, **k):
        raise _NotFound("digits not found under /nowhere; get it with ...")

    monkeypatch.setattr(_Bench, "__init__", not_found)
    assert _run(tmp_path) == 0
    out = capsys.readouterr().out
    assert "missing: 4" in out and "digits not found under /nowhere" in out
    assert {r["status"] for r in _table_rows(tmp_path)} == {"missing"}
    assert not list((tmp_path / "test" / "cells").glob("*.json"))


def test_interrupted_cell_leaves_no_result_and_is_rerun(tmp_path, fakes, monkeypatch):
    """A crash while writing a result leaves no partial file under a final name."""
    from benchmarks.runner import results

    calls = {"n": 0}
    real_replace = results.os.replace

    def replace_then_die(src, dst):
        calls["n"] += 1
        if str(dst).endswith(".json") and "cells" in str(dst):
            raise KeyboardInterrupt  # the user pressed Ctrl-C between tmp write and rename
        return real_replace(src, dst)

    monkeypatch.setattr(results.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "--methods", "lsh", "--bits", "16")
    cells_dir = tmp_path / "test" / "cells"
    assert not list(cells_dir.glob("*.json")) and not list(cells_dir.glob(".*tmp"))
    monkeypatch.setattr(results.os, "replace", real_replace)
    _run(tmp_path, "--methods", "lsh", "--bits", "16")
    assert len(list(cells_dir.glob("*.json"))) == 1


def test_help_mentions_every_flag():
    out = subprocess.run([sys.executable, str(REPO / "run_all.py"), "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0
    parser = run_all.build_parser()
    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    for flag in flags:
        assert flag in out.stdout, flag
    for flag in ("--table", "--figure", "--all", "--preset", "--datasets", "--methods", "--bits",
                 "--seeds", "--data-root", "--results-dir", "--device", "--dry-run", "--force",
                 "--launcher", "--list-methods", "--list-datasets"):
        assert flag in flags
    # every option has a help text
    assert all(a.help for a in parser._actions)


def test_list_methods_prints_the_registry(capsys):
    from methods import registry

    assert run_all.main(["--list-methods"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    tune_col = header.index("--tune searches")
    for name, cls in registry().items():
        line = next(ln for ln in rows if ln.startswith(name + " "))
        assert cls.kind in line
        # what --tune searches, in its own aligned column: the class's search space
        assert line[tune_col:].startswith(", ".join(cls.search_space) or "-")
    assert "same N trials per column" in out and "log-uniform 1e-05 to 0.1" in out


def test_submitit_job_construction(tmp_path, fakes):
    """Each cell becomes one submitit job writing the same result file (DebugExecutor)."""
    submitit = pytest.importorskip("submitit")
    preset = get_preset("test")
    args = run_all.build_parser().parse_args(["--table", "3", "--preset", "test",
                                              "--methods", "lsh"])
    cells = run_all.plan_cells(run_all.selected_experiments(args), preset, args)
    opts = cell_job.RunOptions(results_dir=str(tmp_path), preset="test",
                                eval_ks=cell_job.eval_ks_for(preset))
    executor = launchers.make_executor(tmp_path / "jobs", cluster="debug", timeout_min=5)
    assert isinstance(executor, submitit.AutoExecutor) and executor.cluster == "debug"
    summary = launchers.run_submitit(cells, opts, executor, progress=False)
    assert summary.count("done") == len(cells) == 2
    store = ResultStore(tmp_path, "test")
    assert all(store.is_done(c.cell_id) for c in cells)
    again = launchers.run_submitit(cells, opts, executor, progress=False)
    assert again.count("skipped") == 2


def _real_stack_available() -> bool:
    try:
        import data_protocols
        from benchmarks import metrics

        return hasattr(metrics, "evaluate") and hasattr(data_protocols, "get_protocol")
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(not _real_stack_available(),
                    reason="data_protocols or benchmarks.metrics not importable yet")
def test_table3_end_to_end_real_stack(tmp_path, capsys):
    """``run_all.py --table 3 --preset test`` on the real digits protocol and metrics."""
    cell_job._BENCH_CACHE.clear()
    assert _run(tmp_path) == 0
    assert "SUMMARY" in capsys.readouterr().out
    assert _check_table_matches_store(tmp_path) >= 2


def test_list_datasets_shows_every_protocol(capsys):
    dp = pytest.importorskip("data_protocols")
    if not hasattr(dp, "describe_protocols"):
        pytest.skip("data_protocols.describe_protocols not there yet")
    assert run_all.main(["--list-datasets"]) == 0
    out = capsys.readouterr().out
    for d in dp.describe_protocols(None):
        header = next(ln for ln in out.splitlines() if ln.startswith(d["name"] + "  ["))
        assert ("present" in header) if d.get("present") else ("NOT FOUND" in header)
    assert "looked in: " in out and "split sizes: query " in out
