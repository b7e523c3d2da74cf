"""``--tune N``: an equal budget, chosen on validation data only, resumable, failures recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import run_all
from benchmarks.runner.results import ResultStore
from benchmarks.runner.tuning import TuneSpec, TuningError, tune, validation_split
from methods.search import Uniform
from methods.shallow.lsh import LSH


class CountingLSH(LSH):
    """LSH with a dummy knob; counts fits, and diverges where ``knob`` > 0.8."""

    name = "counting_lsh"
    search_space = {"knob": Uniform(0.0, 1.0)}  # noqa: RUF012
    fits: list[float] = []  # noqa: RUF012

    def __init__(self, n_bits: int = 16, seed: int = 0, knob: float = 0.5) -> None:
        super().__init__(n_bits=n_bits, seed=seed)
        self.knob = knob

    def _fit(self, X, Y):
        CountingLSH.fits.append(self.knob)
        if self.knob > 0.8:
            raise FloatingPointError("loss became NaN (planted)")
        return super()._fit(X, Y)


def _data(n: int = 200):
    rng = np.random.default_rng(0)
    Y = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, n)]
    X = (Y @ rng.normal(size=(4, 16)) * 3 + rng.normal(size=(n, 16))).astype(np.float32)
    return X, Y


@pytest.fixture(autouse=True)
def _reset():
    CountingLSH.fits = []


def test_validation_split_is_seeded_disjoint_and_inside_train():
    spec = TuneSpec(n_trials=1, val_fraction=0.2, max_val_queries=30)
    val, rest = validation_split(200, spec)
    assert len(val) == 30 and len(rest) == 170
    assert not np.intersect1d(val, rest).size and np.union1d(val, rest).tolist() == list(range(200))
    again, _ = validation_split(200, spec)
    np.testing.assert_array_equal(val, again)


def test_a_killed_run_resumes_and_no_finished_trial_runs_twice(tmp_path):
    X, Y = _data()
    spec3 = TuneSpec(n_trials=3, bits=16)
    out = tune(CountingLSH, {}, X, Y, spec3, tmp_path, "study")
    assert len(CountingLSH.fits) == 3 and out["n_trials"] == 3
    # a process killed mid-trial leaves a RUNNING trial; the next run marks it failed
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="study", storage=JournalStorage(
        JournalFileBackend(str(tmp_path / "study.journal"))))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = study.ask()
    trial.set_user_attr("host", __import__("socket").gethostname())
    trial.set_user_attr("pid", dead.pid)
    out = tune(CountingLSH, {}, X, Y, TuneSpec(n_trials=5, bits=16), tmp_path, "study")
    # only the missing trials ran (3 done); the killed one is marked failed and interrupted and
    # does not use up the budget: 5 trials of the method's own, like every other method's
    assert len(CountingLSH.fits) == 3 + 2
    assert out["interrupted_trials"] == [3]
    assert [t["number"] for t in out["trials"]] == [0, 1, 2, 4, 5]
    assert not any((t["fail_reason"] or "").startswith("interrupted") for t in out["trials"])
    stored = study.trials[3]
    assert stored.state.name == "FAIL" and stored.user_attrs["fail_reason"].startswith("interrupted")
    assert tune(CountingLSH, {}, X, Y, spec3, tmp_path, "study")["best_raw"] == \
        tune(CountingLSH, {}, X, Y, spec3, tmp_path, "study")["best_raw"]
    assert len(CountingLSH.fits) == 5  # reusing a finished study trains nothing


def test_a_diverging_trial_is_recorded_failed_and_the_search_goes_on(tmp_path):
    X, Y = _data()
    out = tune(CountingLSH, {}, X, Y, TuneSpec(n_trials=12, bits=16), tmp_path, "s")
    failed = [t for t in out["trials"] if t["state"] == "FAIL"]
    assert failed and all("planted" in t["fail_reason"] for t in failed)
    assert len(out["trials"]) == 12 and out["best_raw"]["knob"] <= 0.8
    history = json.loads((tmp_path / "s.json").read_text())
    assert {"params", "val_map", "epochs_run", "seconds", "state"} <= set(history["trials"][0])


def test_every_trial_failing_is_an_error_naming_the_reason(tmp_path):
    X, Y = _data()

    class AlwaysNaN(CountingLSH):
        search_space = {"knob": Uniform(0.9, 1.0)}  # noqa: RUF012

    with pytest.raises(TuningError, match="none of 2 trials completed .*planted"):
        tune(AlwaysNaN, {}, X, Y, TuneSpec(n_trials=2, bits=16), tmp_path, "bad")


def test_tune_below_one_trial_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_all.main(["--table", "3", "--preset", "test", "--tune", "0",
                      "--results-dir", str(tmp_path)])
    assert exc.value.code == 2 and "--tune needs at least 1 trial, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--tune needs a number of trials >= 1"):
        TuneSpec(n_trials=0)


SPY = textwrap.dedent('''
    import numpy as np

    from methods import register
    from methods.search import Uniform
    from methods.shallow.lsh import LSH

    SEEN = []


    @register("spy_lsh")
    class SpyLSH(LSH):
        """Records the rows it is trained on and encodes."""

        search_space = {"knob": Uniform(0.0, 1.0)}

        def __init__(self, n_bits=16, seed=0, knob=0.5):
            super().__init__(n_bits=n_bits, seed=seed)
            self.knob = knob

        def _fit(self, X, Y):
            SEEN.append(("fit", np.asarray(X).copy()))
            return super()._fit(X, Y)

        def _encode(self, X):
            SEEN.append(("encode", np.asarray(X).copy()))
            return super()._encode(X)
''')


def test_tuning_never_sees_the_queries_or_the_database(tmp_path):
    plugin = tmp_path / "spy.py"
    plugin.write_text(SPY)
    results = tmp_path / "res"
    assert run_all.main(["--table", "3", "--preset", "test", "--plugin", str(plugin), "--methods",
                         "spy_lsh", "--bits", "16", "--tune", "3", "--results-dir", str(results),
                         "--no-progress", "-q"]) == 0
    seen = sys.modules["hashbench_plugin_spy"].SEEN
    from data_protocols import get_protocol

    bench = get_protocol("digits").load(None, 0, input_kind="features", progress=False)
    rows = {bytes(r.tobytes()): part for part in ("train", "query", "database")
            for r in np.asarray(bench.inputs(part), dtype=np.float64)}
    train_rows = {bytes(r.tobytes()) for r in np.asarray(bench.inputs("train"), np.float64)}
    n_trial_calls = 3 * 3  # per trial: one fit, then encode validation queries and the rest
    for _what, X in seen[:n_trial_calls]:
        assert all(bytes(r.tobytes()) in train_rows for r in X.astype(np.float64)), _what
    assert len(rows) > len(train_rows)  # queries exist that the trials never touched
    record = next(ResultStore(results, "test").iter_records())
    assert record["recipe"] == "tuned" and set(record["tuned_values"]) == {"knob"}
    assert record["tuning"]["n_trials"] == 3 and len(record["tuning"]["trials"]) == 3


def test_tiny_tuning_run_of_a_deep_method_on_the_smoke_preset(tmp_path):
    results = tmp_path / "res"
    assert run_all.main(["--table", "3", "--preset", "smoke", "--methods", "dpah", "--bits",
                         "16,32", "--tune", "2", "--results-dir", str(results),
                         "--no-progress", "-q"]) == 0
    records = sorted(ResultStore(results, "smoke").iter_records(), key=lambda r: r["bits"])
    assert [r["bits"] for r in records] == [16, 32]
    a, b = (r["tuning"] for r in records)
    assert a["study"] == b["study"] and a["bits"] == b["bits"] == 16  # tuned once, reused
    assert set(a["values"]) == {"lr", "alpha", "center_lr_mult"}
    for r in records:
        assert r["tuned_values"]["lr"] == dict(r["method"]["params"])["lr"]
    studies = list((results / "smoke" / "tuning").glob("*.journal"))
    assert len(studies) == 1
    assert Path(studies[0]).stat().st_size > 0
    table = (results / "smoke" / "tuned-2" / "tables" / "table3.md").read_text()  # own folder
    assert "Recipes (deep rows:" in table and "tuned: DPAH" in table
    assert "2 trials per method and column, at 16 bits, reused at the other lengths" in table


def test_the_first_trial_is_the_recipe_tuning_starts_from(tmp_path):
    """Trial 0 trains the method's defaults (the base recipe overriding them), so the chosen
    configuration is never worse than the untuned one on the validation data."""
    X, Y = _data()
    out = tune(CountingLSH, {"knob": 0.3}, X, Y, TuneSpec(n_trials=3, bits=16), tmp_path, "s")
    assert CountingLSH.fits[0] == 0.3
    assert out["trials"][0]["params"] == {"knob": 0.3} and out["trials"][0]["start"] == "defaults"
    assert out["best_val_map"] >= out["trials"][0]["val_map"]
    assert [t["start"] for t in out["trials"][1:]] == [None, None]
    CountingLSH.fits = []
    tune(CountingLSH, {}, X, Y, TuneSpec(n_trials=2, bits=16, start_from_defaults=False),
         tmp_path, "drawn")
    assert CountingLSH.fits[0] != 0.5  # the class default: not enqueued, drawn by the sampler


def test_default_point_inverts_code_length_scaling_and_skips_what_it_cannot_place():
    from methods import get_method
    from methods.search import default_point

    dsh, hashnet = get_method("dsh"), get_method("hashnet")
    point, skipped = default_point(dsh, dsh(n_bits=32).get_params(), 32)
    assert point["margin"] == 2.0 and not skipped  # None stands for 2K
    assert dsh.search_space["margin"].resolve(point["margin"], 32) == dsh(n_bits=32).margin_value()
    point, _ = default_point(hashnet, {**hashnet().get_params(), "alpha_s": 0.5}, 20)
    assert point["alpha_s"] == pytest.approx(10.0)  # an explicit 0.5 at 20 bits is 10 / K
    point, skipped = default_point(CountingLSH, {"knob": 7.0}, 16)
    assert point == {} and "outside the searched range" in skipped["knob"]
    from methods.search import Categorical, IntRange

    assert IntRange(1, 5).contains(3) and not IntRange(1, 5).contains(3.5)
    assert Categorical(("a", "b")).contains("b") and not Categorical(("a", "b")).contains("c")
    assert not Uniform(0.0, 1.0).contains(True) and not Uniform(0.0, 1.0).contains(None)


def test_every_none_default_in_a_search_space_says_what_it_stands_for():
    from methods import get_method, list_methods
    from methods.search import default_point

    for name in list_methods():
        cls = get_method(name)
        _, skipped = default_point(cls, cls().get_params(), 48)
        assert not skipped, f"{name}: {skipped}"


def test_a_starting_trial_a_killed_run_interrupted_is_queued_again(tmp_path):
    """Killed while trial 0 (the recipe) ran: the next run marks it interrupted and runs the
    recipe again, so an interruption never costs a study its starting point."""
    import socket

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    X, Y = _data()
    study = optuna.create_study(study_name="s", direction="maximize", storage=JournalStorage(
        JournalFileBackend(str(tmp_path / "s.journal"))))
    study.enqueue_trial({"knob": 0.3}, user_attrs={"start": "defaults"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = study.ask()  # the queued recipe, left RUNNING by a dead process
    assert trial.suggest_float("knob", 0.0, 1.0) == 0.3
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", dead.pid)
    out = tune(CountingLSH, {"knob": 0.3}, X, Y, TuneSpec(n_trials=3, bits=16), tmp_path, "s")
    assert out["interrupted_trials"] == [0]
    assert CountingLSH.fits[0] == 0.3
    assert [t["start"] for t in out["trials"]] == ["defaults", None, None]


def test_workers_starting_one_study_at_once_queue_its_starting_trial_once(tmp_path, monkeypatch):
    """Two workers (here threads) open the same study at the same instant: the recipe is queued
    and trained once, not once per worker. The slowed-down check-then-queue makes the race
    certain without the study's setup lock."""
    import threading
    import time as _time

    from benchmarks.runner import tuning

    real = tuning.default_point

    def slow_default_point(*args, **kwargs):
        _time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "default_point", slow_default_point)
    X, Y = _data()
    outs: list[dict] = []
    workers = [threading.Thread(target=lambda: outs.append(tune(
        CountingLSH, {"knob": 0.3}, X, Y, TuneSpec(n_trials=3, bits=16), tmp_path, "s")))
        for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(outs) == 2
    starts = [t for t in outs[-1]["trials"] if t["start"]]
    assert len(starts) == 1 and starts[0]["params"] == {"knob": 0.3}
    assert CountingLSH.fits.count(0.3) == 1
    assert not list(tmp_path.glob("*.lock"))  # released


def test_reusing_a_finished_study_leaves_its_tracked_files_untouched(tmp_path):
    """Other code lengths and seeds reuse a finished study: its journal and summary (tracked in
    git) must not change, or every reuse would show up as a modified result."""
    X, Y = _data()
    spec = TuneSpec(n_trials=2, bits=16)
    first = tune(CountingLSH, {}, X, Y, spec, tmp_path, "s")
    journal, summary = (tmp_path / "s.journal").read_bytes(), (tmp_path / "s.json").read_bytes()
    fits = len(CountingLSH.fits)
    again = tune(CountingLSH, {}, X, Y, spec, tmp_path, "s")
    assert len(CountingLSH.fits) == fits  # no trial ran
    assert again["best_params"] == first["best_params"]
    assert (tmp_path / "s.journal").read_bytes() == journal
    assert (tmp_path / "s.json").read_bytes() == summary


class SlowLSH(CountingLSH):
    """CountingLSH whose fit takes 0.2 s, so two workers' trials overlap."""

    def _fit(self, X, Y):
        import time as _time

        _time.sleep(0.2)
        return super()._fit(X, Y)


def test_each_worker_logs_the_trial_it_ran_not_another_workers_running_one(tmp_path, caplog):
    import logging
    import threading

    X, Y = _data()
    caplog.set_level(logging.INFO, logger="hashbench.runner")
    workers = [threading.Thread(target=tune, args=(SlowLSH, {}, X, Y, TuneSpec(n_trials=6,
                                                                                bits=16),
                                                   tmp_path, "s")) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    lines = [r.getMessage() for r in caplog.records if ": trial " in r.getMessage()]
    assert len(lines) >= 6
    assert not [line for line in lines if " RUNNING " in line], lines


def _study_with_trial_1_running(tmp_path: Path, pid: int):
    """Study ``s``: trial 0 finished (knob 0.1, value 0.5), trial 1 running in the live process
    ``pid`` of this host, as another worker's trial would. Returns (study, distributions, trial 1)."""
    import socket

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.create_study(study_name="s", direction="maximize", storage=JournalStorage(
        JournalFileBackend(str(tmp_path / "s.journal"))))
    dist = {"knob": optuna.distributions.FloatDistribution(0.0, 1.0)}
    study.add_trial(optuna.trial.create_trial(params={"knob": 0.1}, distributions=dist,
                                              value=0.5))
    other = study.ask(dist)
    other.set_user_attr("host", socket.gethostname())
    other.set_user_attr("pid", pid)
    return study, dist, other


def test_the_budget_is_the_first_trials_by_number_whatever_order_they_finish_in(tmp_path):
    """Trial 1 still runs (another worker) while trials 0, 2 and 3 are finished: with a budget
    of 3 the study waits for trial 1 and chooses among trials 0-2, as every other worker does,
    not among the first three to finish (0, 2, 3)."""
    import threading
    import time as _time

    import optuna

    X, Y = _data()
    study, dist, other = _study_with_trial_1_running(tmp_path, os.getpid())  # this process
    for knob, value in ((0.2, 0.6), (0.3, 0.7)):  # trials 2 and 3
        study.add_trial(optuna.trial.create_trial(params={"knob": knob}, distributions=dist,
                                                  value=value))

    def finish_other() -> None:
        _time.sleep(3.0)  # after the waiting worker's first look (every 2 s)
        study.tell(other, 0.9)

    threading.Thread(target=finish_other).start()
    out = tune(CountingLSH, {}, X, Y, TuneSpec(n_trials=3, bits=16, start_from_defaults=False),
               tmp_path, "s")
    assert [t["number"] for t in out["trials"]] == [0, 1, 2]
    assert out["best_trial"] == 1 and out["best_val_map"] == 0.9
    assert not CountingLSH.fits  # no trial was run: the budget was full


def _ask_values(tmp_path: Path, order: list[int], n_workers: int) -> list[dict]:
    """Trials asked by ``n_workers`` processes' studies on one journal, in ``order`` (worker
    index per trial), each worker with its own sampler object, as separate processes have."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from benchmarks.runner.tuning import trial_seeded_tpe

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp_path.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "s.journal")))
    workers = [optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                   direction="maximize", sampler=trial_seeded_tpe(0, 3))
               for _ in range(n_workers)]
    out = []
    for w in order:
        trial = workers[w].ask()
        x, y = trial.suggest_float("lr", 1e-5, 1e-1, log=True), trial.suggest_float("m", 0, 1)
        out.append({"number": trial.number, "lr": x, "m": y})
        workers[w].tell(trial, -((np.log10(x) + 2) ** 2) - (y - 0.5) ** 2)
    return out


def test_a_worker_joining_a_study_draws_new_values_not_the_first_workers_again(tmp_path):
    """With one random stream per process, the second worker's first draw repeated the first
    worker's (two trials of the budget with the same values); seeded by trial number, every
    trial draws its own, whichever worker runs it."""
    order = [0, 0, 1, 0, 1, 1, 0, 1]  # a second worker joins after two trials
    two = _ask_values(tmp_path / "two", order, 2)
    values = [(t["lr"], t["m"]) for t in two]
    assert len(set(values)) == len(values)
    assert len({t["lr"] for t in two}) == len(two) and len({t["m"] for t in two}) == len(two)
    # the same trials as one worker would draw: the draw depends on the trial, not the worker
    one = _ask_values(tmp_path / "one", [0] * len(order), 1)
    assert one == two


def test_a_value_the_run_fixes_is_pinned_and_the_method_s_study_is_reused(tmp_path):
    """``--set knob=...`` under ``--tune`` (as a figure's sweep value or Fig. 7's alpha = 0):
    the value stays as set, the other values come from the method's own study, and no trial
    runs again."""
    plugin = tmp_path / "spy.py"
    plugin.write_text(SPY)
    results = tmp_path / "res"
    common = ["--table", "3", "--preset", "test", "--plugin", str(plugin), "--methods",
              "spy_lsh", "--bits", "16", "--tune", "3", "--results-dir", str(results),
              "--no-progress", "-q"]
    assert run_all.main(common) == 0
    assert run_all.main([*common, "--set", "knob=0.123"]) == 0
    records = {r["cell_id"]: r for r in ResultStore(results, "test").iter_records()}
    assert len(records) == 2
    plain, fixed = sorted(records.values(), key=lambda r: "pinned" in r["cell"])
    assert fixed["cell"]["pinned"] == ["knob"] and "pinned" not in plain["cell"]
    assert dict(fixed["method"]["params"])["knob"] == 0.123
    assert fixed["tuning"]["pinned"] == {"knob": 0.123} and "knob" not in fixed["tuned_values"]
    assert fixed["tuning"]["study"] == plain["tuning"]["study"]
    assert len(list((results / "test" / "tuning").glob("*.journal"))) == 1
    assert len(fixed["tuning"]["trials"]) == 3  # the study's trials, none run for this cell
    table = results / "test" / "tuned-3-set-knob=0.123" / "tables" / "table3.md"
    assert "knob=0.123 (pinned, not tuned)" in table.read_text()


def test_under_tune_every_sweep_point_pins_its_value_the_default_too():
    """Tuned, Fig. 7's points vary alpha alone: each cell fixes its alpha (0.2 included, which
    untuned is the tables' plain DPAH cell) and shares DPAH's study; untuned ids are unchanged."""
    from dataclasses import replace

    from benchmarks.runner.experiments import FIG_ALPHA, TABLE3, cells_for, get_preset

    preset = get_preset("cpu")
    tuned = replace(preset, tune=(("n_trials", 10),))
    cells = cells_for(FIG_ALPHA, tuned, seeds=(0,))
    assert sorted({dict(c.hyper)["alpha"] for c in cells}) == sorted(FIG_ALPHA.sweep)
    assert all(c.pinned == ("alpha",) and "alpha" not in dict(c.study_hyper) for c in cells)
    plain_dpah = {c.dataset.key: c for c in cells_for(TABLE3, tuned, seeds=(0,))
                  if c.method == "dpah" and c.bits == 16}
    # the tuned alpha is no sweep point, and each point tunes (or reuses) the plain cell's study
    assert not {c.cell_id for c in plain_dpah.values()} & {c.cell_id for c in cells}
    for c in cells:
        plain = plain_dpah[c.dataset.key]
        assert (c.study_hyper, c.study_train) == (plain.hyper, plain.train)
    untuned = cells_for(FIG_ALPHA, preset, seeds=(0,))
    assert all(not c.pinned for c in untuned)
    assert any("alpha" not in dict(c.hyper) for c in untuned)  # the default point: plain DPAH


def test_a_swept_parameter_tuning_does_not_search_is_pinned_too():
    """Fig. 6 sweeps t, which DPAH's search space leaves out: its points still share DPAH's
    study (one study, not one per t); a --set of a training option likewise."""
    from dataclasses import replace

    from benchmarks.runner.experiments import FIG_T, TABLE3, cells_for, get_preset, make_cell

    preset = replace(get_preset("cpu"), tune=(("n_trials", 10),))
    plain = {c.dataset.key: c for c in cells_for(TABLE3, preset, seeds=(0,))
             if c.method == "dpah" and c.bits == 16}
    sweep = [c for c in cells_for(FIG_T, preset, seeds=(0,)) if c.method == "dpah"]
    assert sweep and all(c.pinned == ("t",) for c in sweep)
    assert {(c.study_hyper, c.study_train) for c in sweep} == {
        (plain[c.dataset.key].hyper, plain[c.dataset.key].train) for c in sweep}
    longer = replace(preset, overrides=(("epochs", 400),))
    cell = make_cell(longer, "dpah", plain["cifar10_mobilenet"].dataset, 16, 0)
    assert cell.pinned == ("epochs",) and dict(cell.train)["epochs"] == 400
    assert dict(cell.study_train) == dict(plain["cifar10_mobilenet"].train)


def test_a_study_whose_last_trials_run_elsewhere_is_busy_not_waited_for_on_request(tmp_path):
    """``wait=False``: every trial of the budget is taken and one still runs in another live
    process, so tune raises StudyBusy naming it, runs nothing and chooses nothing."""


    from benchmarks.runner.tuning import StudyBusy

    X, Y = _data()
    study, _, other = _study_with_trial_1_running(tmp_path, os.getppid())  # the test's parent
    spec = TuneSpec(n_trials=2, bits=16, start_from_defaults=False)
    with pytest.raises(StudyBusy, match=rf"trial 1 running in another process .*pid {os.getppid()}"):
        tune(CountingLSH, {}, X, Y, spec, tmp_path, "s", wait=False)
    assert not CountingLSH.fits and not (tmp_path / "s.json").exists()
    study.tell(other, 0.9)  # the other worker finishes: the study is now simply reused
    out = tune(CountingLSH, {}, X, Y, spec, tmp_path, "s", wait=False)
    assert out["best_trial"] == 1 and not CountingLSH.fits


def test_a_worker_computes_other_cells_while_a_study_s_last_trial_runs_elsewhere(
        tmp_path, monkeypatch):
    """Two workers share a study: the one that did not draw its last trial sets the cell aside
    (``deferred``), computes the next cell, and comes back to the first at the end, waiting then
    if it must. Before, it waited idle for the other worker's trial."""
    from benchmarks.runner import tuning

    real, waits = tuning.tune, []

    def busy_once(*args, wait=True, **kwargs):
        waits.append(wait)
        if len(waits) == 1:
            raise tuning.StudyBusy("tuning s: trial 2 running in another process (h pid 1)")
        return real(*args, wait=wait, **kwargs)

    monkeypatch.setattr(tuning, "tune", busy_once)
    plugin = tmp_path / "spy.py"
    plugin.write_text(SPY)
    results = tmp_path / "res"
    assert run_all.main(["--table", "3", "--preset", "test", "--plugin", str(plugin),
                         "--methods", "spy_lsh", "--tune", "3", "--results-dir", str(results),
                         "--no-progress", "-q"]) == 0
    # the 16-bit cell set aside without waiting, the 32-bit one computed, then the 16-bit one
    assert waits == [False, False, True]
    records = list(ResultStore(results, "test").iter_records())
    assert sorted(r["cell"]["bits"] for r in records) == [16, 32]
    assert records[0]["tuning"]["study"] == records[1]["tuning"]["study"]
    assert not list((results / "test").rglob("*.lock"))
    assert not [p for p in (results / "test").rglob("*") if "fail" in p.name]


def test_the_smoke_presets_shallow_methods_can_be_tuned(tmp_path):
    """A tuning trial trains on the training split less its validation part: the smoke
    preset's settings must fit that smaller set (KSH's labelled budget once equalled the whole
    training split, and every trial, the defaults included, failed)."""
    results = tmp_path / "res"
    assert run_all.main(["--table", "3", "--preset", "smoke", "--methods", "ksh,sdh", "--bits",
                         "16", "--tune", "2", "--results-dir", str(results),
                         "--no-progress", "-q"]) == 0
    records = {r["method"]["name"]: r for r in ResultStore(results, "smoke").iter_records()}
    assert set(records) == {"ksh", "sdh"}
    for r in records.values():
        assert r["status"] == "ok" and r["tuning"]["trials"][0]["state"] == "COMPLETE"
