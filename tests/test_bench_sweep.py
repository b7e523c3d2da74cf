"""The sweep-cost benchmark reads what the runs stored: a study counted once, nothing estimated."""

from __future__ import annotations

import json

import pytest

import run_all
from benchmarks.runner.results import ResultStore
from benchmarks.speed import bench_sweep


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    common = ["--table", "3", "--preset", "test", "--results-dir", str(root), "--no-progress", "-q"]
    assert run_all.main(common) == 0
    assert run_all.main([*common, "--tune", "2"]) == 0
    return root


def test_tuned_cost_is_the_study_once_plus_every_retrained_cell(results):
    cost = bench_sweep.sweep_cost(results, "test", "3", n_trials=2)
    store = ResultStore(results, "test")
    itq = next(r for r in cost["rows"] if r["method"] == "itq")
    records = [json.loads(p.read_text()) for p in store.cells_dir.glob("itq-*.json")]
    tuned = [r for r in records if r.get("tuning")]
    untuned = [r for r in records if not r.get("tuning")]
    assert len(tuned) == 2 and len(untuned) == 2  # 16 and 32 bits, each way
    # one study serves both code lengths: its trials are counted once, not twice
    assert {r["tuning"]["study"] for r in tuned} == {tuned[0]["tuning"]["study"]}
    assert itq["studies"] == 1
    trials_s = sum(t["seconds"] for t in tuned[0]["tuning"]["trials"])
    assert itq["tuning_s"] == pytest.approx(trials_s)
    retrain = sum(sum(r["timing"][k] for k in ("fit_s", "encode_s", "eval_s")) for r in tuned)
    assert itq["retrain_s"] == pytest.approx(retrain)
    assert itq["ratio"] == pytest.approx((trials_s + retrain) / itq["untuned_s"])
    assert cost["totals"]["complete"] is True


def test_missing_cells_are_listed_not_estimated(results, tmp_path):
    cost = bench_sweep.sweep_cost(results, "test", "3", n_trials=5)  # no --tune 5 run stored
    assert cost["totals"]["complete"] is False
    assert cost["totals"]["ratio"] is None
    assert len(cost["missing"]["tuned"]) == 4 and not cost["missing"]["untuned"]
    text = bench_sweep.format_markdown(cost)
    assert "INCOMPLETE: 0 untuned and 4 tuned cells are not stored" in text


def test_tune_below_one_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench_sweep.main(["--tune", "0"])
    assert "--tune needs a number of trials >= 1" in capsys.readouterr().err


def test_a_misspelt_preset_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        bench_sweep.main(["--tune", "10", "--preset", "cpuu"])
    assert "unknown preset 'cpuu'; choose one of paper, cpu, smoke, test" in \
        capsys.readouterr().err


def test_a_resumed_cell_counts_the_epochs_before_its_resume():
    """A deep cell resumed after a kill times only the epochs after the resume in fit_s; its
    history keeps every epoch's seconds, and those are what the sweep cost."""
    resumed = {"timing": {"fit_s": 31.0, "encode_s": 0.5, "eval_s": 0.25},
               "history": [{"epoch": e, "time_s": 2.0} for e in range(1, 101)]}
    assert bench_sweep._job_seconds(resumed) == pytest.approx(200.0 + 0.75)
    whole = {"timing": {"fit_s": 210.0, "encode_s": 0.5, "eval_s": 0.25},
             "history": [{"epoch": e, "time_s": 2.0} for e in range(1, 101)]}
    assert bench_sweep._job_seconds(whole) == pytest.approx(210.75)  # setup included
    assert bench_sweep._job_seconds({"timing": {"fit_s": 3.0}}) == 3.0  # shallow: no history


def test_jobs_record_their_cpu_seconds_and_the_report_compares_them_with_job_time(results):
    """Job time grows when other jobs share the cores; every job now stores its process's CPU
    seconds too (cells: timing.cpu_s; trials: cpu_seconds), and the report sets one against the
    other."""
    store = ResultStore(results, "test")
    records = [json.loads(p.read_text()) for p in store.cells_dir.glob("*.json")]
    assert records
    for r in records:
        timing = r["timing"]
        assert 0.0 <= timing["fit_cpu_s"] <= timing["cpu_s"]
    trials = [t for r in records if r.get("tuning") for t in r["tuning"]["trials"]]
    assert trials and all(t["cpu_seconds"] >= 0.0 for t in trials)
    cost = bench_sweep.sweep_cost(results, "test", "3", n_trials=2)
    tuned = cost["totals"]["tuned_cpu"]
    # 4 retrained cells (2 methods x 2 code lengths) + ITQ's study of 2 trials (LSH has no
    # search space: no study)
    assert (tuned["jobs"], tuned["jobs_with_cpu"]) == (6, 6)
    assert tuned["cpu_s"] > 0 and tuned["wall_per_cpu"] == pytest.approx(
        tuned["wall_s"] / tuned["cpu_s"])
    assert "6 of 6 jobs recorded their CPU seconds" in bench_sweep.format_markdown(cost)


def test_cpu_seconds_follow_the_resume_rule_and_old_records_have_none():
    resumed = {"timing": {"fit_s": 31.0, "encode_s": 0.5, "eval_s": 0.25, "fit_cpu_s": 30.0,
                          "cpu_s": 30.5},
               "history": [{"epoch": e, "time_s": 2.0, "cpu_s": 1.0} for e in range(1, 101)]}
    assert bench_sweep._job_cpu_seconds(resumed) == pytest.approx(100.0 + 0.5)
    whole = {"timing": {"fit_s": 210.0, "fit_cpu_s": 105.0, "cpu_s": 106.0},
             "history": [{"epoch": e, "cpu_s": 1.0} for e in range(1, 101)]}
    assert bench_sweep._job_cpu_seconds(whole) == pytest.approx(106.0)
    assert bench_sweep._job_cpu_seconds({"timing": {"fit_s": 3.0}}) is None
    # resumed from epochs trained before jobs recorded CPU time: unknown, not undercounted
    partly = {"timing": {"fit_s": 31.0, "fit_cpu_s": 30.0, "cpu_s": 30.5},
              "history": [{"epoch": 1, "time_s": 2.0}, {"epoch": 2, "time_s": 2.0, "cpu_s": 1.0}]}
    assert bench_sweep._job_cpu_seconds(partly) is None


def test_calibration_reruns_a_stored_tuned_cell_and_reproduces_its_map(results, tmp_path):
    """--calibrate re-runs one tuned cell per dataset and method (study reused, so no trial
    runs again), in a scratch folder, and compares its CPU seconds with the stored job time."""
    journals = sorted((results / "test" / "tuning").glob("*.journal"))
    assert journals
    before = [p.read_bytes() for p in journals]
    rows = bench_sweep.calibrate(results, "test", "3", n_trials=2, methods=("itq",),
                                 work_dir=tmp_path)
    assert [(r["method"], r["same_map"]) for r in rows] == [("itq", True)]
    (row,) = rows
    assert row["rerun_cpu_s"] > 0 and row["stretch"] == pytest.approx(
        row["stored_job_s"] / row["rerun_cpu_s"])
    assert [p.read_bytes() for p in journals] == before  # the stored study untouched
    assert not any(tmp_path.iterdir())  # the scratch cell removed
    text = bench_sweep.format_calibration(rows, bench_sweep.sweep_cost(results, "test", "3", 2))
    assert "| itq |" in text and "ESTIMATE (not a measurement)" in text


def test_several_tables_count_each_shared_cell_and_study_once(results, capsys):
    """--table 3,claims is the sweep of both: the claims read every Table 3 cell, so together
    they cost what the claims alone cost, not that plus Table 3 again."""
    both = bench_sweep.sweep_cost(results, "test", "3,claims", n_trials=2)
    claims = bench_sweep.sweep_cost(results, "test", "claims", n_trials=2)
    table3 = bench_sweep.sweep_cost(results, "test", "3", n_trials=2)
    assert both["rows"] == claims["rows"] and both["missing"] == claims["missing"]
    assert both["totals"]["tuned_s"] == pytest.approx(claims["totals"]["tuned_s"])
    # the claims need cells Table 3 lacks: more cells, the same stored seconds
    assert len(both["missing"]["untuned"]) > len(table3["missing"]["untuned"])
    assert both["totals"]["tuned_s"] == pytest.approx(table3["totals"]["tuned_s"])
    assert bench_sweep.format_markdown(both).startswith("Tables 3,claims, preset `test`")
    with pytest.raises(SystemExit, match="unknown table 4; choose one or more"):
        bench_sweep.sweep_cost(results, "test", "3,4", n_trials=2)
    with pytest.raises(SystemExit):
        bench_sweep.main(["--tune", "2", "--table", "1,3", "--calibrate"])
    assert "give one --table" in capsys.readouterr().err


def test_a_method_without_a_search_space_is_not_called_tuned(results):
    """Under --tune, LSH (no search space, no study) runs its defaults; the table says so
    rather than listing it among the tuned rows."""
    table = (results / "test" / "tuned-2" / "tables" / "table3.md").read_text()
    recipes = next(line for line in table.splitlines() if line.startswith("- Recipes"))
    assert "defaults (no search space: nothing to tune): LSH" in recipes
    assert "tuned: ITQ" in recipes and "LSH" not in recipes.split("tuned: ")[-1]
