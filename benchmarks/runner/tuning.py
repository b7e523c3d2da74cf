"""An equal tuning budget for every method, chosen on validation data only (``--tune N``).

For one method on one dataset column, :func:`tune` runs ``N`` Optuna trials over the method's
declared search space (``search_space`` next to its class, :mod:`methods.search`): ``lr`` for
deep methods plus at most two of the method's own knobs. Each trial

* trains on the training split **minus a validation part** (``val_fraction`` of the training items,
  at most ``max_val_queries``, drawn with the tuning seed), and
* is scored by the **validation mAP@all**: the validation items are the queries, ranked against
  the rest of the training split. The query set and the database are never seen.

The first trial is the configuration tuning starts from: the cell's recipe with the method's own
defaults (:func:`methods.search.default_point`; ``TuneSpec.start_from_defaults``), so what tuning
chooses is never worse than the untuned recipe on the validation data, and every method's budget
holds that one point plus ``N - 1`` drawn ones.

Deep trials train in four stages (a quarter of the epochs each, resuming the trial's checkpoint,
so the result equals one uninterrupted run) and report the validation mAP after each stage, so
Optuna's median pruner stops hopeless trials early. A trial whose loss diverges, or that raises,
is recorded as failed and the search goes on.

The study lives in an Optuna journal file, ``<results>/<preset>/tuning/<study>.journal``: a run
killed mid-way resumes from its stored trials (a finished trial is never run twice; a trial left
*running* by a dead process on this host is marked failed and interrupted, and replaced: it does
not count against the budget, so an interruption never leaves a method fewer trials), and several processes
(e.g. Slurm jobs through the submitit launcher) may add trials to one study at the same time.
The trial history (parameters, validation mAP, epochs run, seconds, state) goes into
``<study>.json`` beside it and into every cell record that uses the result.

Tuning happens at one code length per method and column (``TuneSpec.bits``); the chosen values
are reused at the other lengths and for every seed. The best configuration is then retrained on
the whole training split and evaluated once, by the ordinary cell job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runner.experiments import results_version
from methods.search import default_point

__all__ = ["StudyBusy", "TuneSpec", "TuningError", "resolve_for_bits", "study_name",
           "trial_seeded_tpe", "tune", "validation_split"]

log = logging.getLogger("hashbench.runner")

#: deep trials report the validation mAP after each of this many stages (for the pruner)
N_STAGES = 4


class TuningError(RuntimeError):
    """Tuning could not produce a configuration (every trial failed, a bad search space, ...)."""


class StudyBusy(Exception):
    """Every trial of the study's budget is taken and some still run in another live process.

    Raised by :func:`tune` with ``wait=False`` instead of waiting for them: a worker with other
    cells to compute sets this one aside and comes back to it (``run_local``), so that the last
    trial of each study does not leave one core idle.
    """


@dataclass(frozen=True)
class TuneSpec:
    """The tuning budget and protocol of a preset: equal for every method."""

    n_trials: int
    bits: int = 48  # code length tuned at; reused at the others
    seed: int = 0  # seed of the sampler, the validation split and every trial's training
    val_fraction: float = 0.2
    max_val_queries: int = 1000
    #: the first trial is the configuration tuning starts from (the cell's recipe and the method's
    #: defaults), so the chosen one is never worse than it on the validation data
    start_from_defaults: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise ValueError(f"--tune needs a number of trials >= 1, got {self.n_trials!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")


def validation_split(n_train: int, spec: TuneSpec) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into the training split) of the validation queries and of the rest.

    ``val_fraction`` of the training items, at most ``max_val_queries``, at least 1, drawn with
    ``default_rng(spec.seed)``; the rest is both the trials' training set and their database.
    """
    n_val = int(min(spec.max_val_queries, max(1, round(spec.val_fraction * n_train))))
    if n_train - n_val < 2:
        raise TuningError(f"a training split of {n_train} items is too small to hold out "
                          "validation queries for tuning")
    order = np.random.default_rng(spec.seed).permutation(n_train)
    return np.sort(order[:n_val]), np.sort(order[n_val:])


def study_name(method: str, dataset_key: str, split_hash: str, base: dict[str, Any],
               spec: TuneSpec) -> str:
    """Readable and unique: what is tuned, on which data, from which base settings.

    The number of trials is not part of it: a larger budget extends the same study, and a cell
    uses the first ``n_trials`` finished trials, so its result does not depend on later ones.
    """
    key = json.dumps({"method": method, "dataset": dataset_key, "split": split_hash,
                      "base": {k: repr(v) for k, v in sorted(base.items())},
                      "bits": spec.bits, "seed": spec.seed, "val_fraction": spec.val_fraction,
                      "max_val_queries": spec.max_val_queries,
                      "start_from_defaults": spec.start_from_defaults,
                      # only from version 2 on, so the names of earlier studies stay valid
                      **({"results_version": version}
                         if (version := results_version(method)) != 1 else {})},
                     sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    return f"{method}-{dataset_key}-{spec.bits}b-{digest}"


def resolve_for_bits(cls: type, raw: dict[str, Any], n_bits: int) -> dict[str, Any]:
    """Constructor values of tuned ``raw`` draws at ``n_bits`` (a margin searched as c·K is
    reused as c·K' at another length K')."""
    space = cls.search_space
    return {name: space[name].resolve(value, n_bits) for name, value in raw.items()}


def _subset(X: Any, idx: np.ndarray) -> Any:
    return X.subset(idx) if hasattr(X, "subset") else X[idx]


def _val_map(method: Any, X_val: Any, Y_val: np.ndarray, X_rest: Any, Y_rest: np.ndarray) -> float:
    from benchmarks import metrics

    value = float(metrics.map_at_k(method.encode(X_val), method.encode(X_rest), Y_val, Y_rest,
                                   k=None, no_hit="drop"))
    if not math.isfinite(value):
        raise FloatingPointError("validation mAP is not finite")
    return value


def _left_by_dead_process(trial: Any) -> bool:
    """Whether a RUNNING trial was started by a process of this host that is gone."""
    from benchmarks.runner.results import _process_alive

    return (trial.user_attrs.get("host") == socket.gethostname()
            and not _process_alive(int(trial.user_attrs.get("pid", -1))))


def _mark_interrupted(study: Any) -> int:
    """Fail the trials left RUNNING by a process of this host that is gone (killed mid-trial)."""
    from optuna.trial import TrialState

    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _left_by_dead_process(t):
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason",
                                               "interrupted: its process is gone")
            # not the method's failure: it does not use up the method's budget (_counted)
            study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed += 1
    return failed


def _counted(study: Any, states: tuple[Any, ...]) -> list[Any]:
    """The study's trials in ``states`` that count against the budget: all but those a killed
    process left behind (``_mark_interrupted``), so an interruption never costs a method a trial
    that the other methods got."""
    return [t for t in study.get_trials(deepcopy=False, states=states)
            if not t.user_attrs.get("interrupted")]


def _history(trials: list[Any]) -> list[dict[str, Any]]:
    """One entry per trial; ``cpu_seconds`` (the trial process's CPU time) only where the trial
    recorded it (trials run before it was recorded have ``seconds`` only, and their studies'
    summaries stay as they were)."""
    out = []
    for t in trials:
        entry = {"number": t.number, "state": t.state.name, "params": dict(t.params),
                 "val_map": t.value if t.state.name == "COMPLETE" else
                 t.user_attrs.get("last_val_map"),
                 "epochs_run": t.user_attrs.get("epochs_run"),
                 "seconds": t.user_attrs.get("seconds"),
                 "fail_reason": t.user_attrs.get("fail_reason"),
                 "start": t.user_attrs.get("start")}
        if t.user_attrs.get("cpu_seconds") is not None:
            entry["cpu_seconds"] = t.user_attrs["cpu_seconds"]
        out.append(entry)
    return out


@contextlib.contextmanager
def _setup_lock(path: Path, name: str, wait_s: float = 600.0) -> Iterator[None]:
    """Hold the study's setup lock while checking and queueing its starting trial, so that
    workers starting on one study at the same instant queue it once (a lock file, as for cells:
    a dead holder's lock is taken over)."""
    from benchmarks.runner.results import CellLock

    lock = CellLock(path)
    deadline = time.monotonic() + wait_s
    while not lock.acquire():
        if time.monotonic() > deadline:
            raise TimeoutError(f"tuning {name}: the study's setup lock is {lock.describe()}")
        time.sleep(0.05)
    try:
        yield
    finally:
        lock.release()


def _recover(study: Any, cls: type, base: dict[str, Any], spec: TuneSpec, name: str,
             storage_dir: Path, *, opening: bool) -> None:
    """Under the study's setup lock: mark the trials of dead local processes interrupted and
    queue the recipe tuning starts from when the study is opened (``opening``) or when the
    interrupted trial may have been that recipe."""
    with _setup_lock(storage_dir / f"{name}.setup.lock", name):
        interrupted = _mark_interrupted(study)
        if interrupted:
            log.warning("tuning %s: %d trial(s) of a killed run marked failed; resuming", name,
                        interrupted)
        if spec.start_from_defaults and (opening or interrupted):
            _enqueue_defaults(study, cls, base, spec, name)


def trial_seeded_tpe(seed: int, n_startup_trials: int) -> Any:
    """Optuna's TPE sampler, with the random numbers of each trial and parameter drawn from
    ``(seed, trial number, parameter name)`` instead of one stream per process.

    With one stream per process, every worker that joins a study starts that stream afresh, so
    its first draw repeats the first worker's: two trials of the budget with the same values
    (seen in 5 of 22 stored studies). Seeding by trial number gives every trial its own draw,
    the same whichever worker runs it; TPE itself (independent sampling, conditioned on the
    finished trials) is unchanged.
    """
    import zlib

    import optuna

    class TrialSeededTPE(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self.seed, self.n_startup_trials = seed, n_startup_trials

        def _tpe(self, number: int, name: str) -> Any:
            key = zlib.crc32(f"{self.seed}/{number}/{name}".encode())
            return optuna.samplers.TPESampler(seed=key, n_startup_trials=self.n_startup_trials)

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return {}

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
            return {}

        def sample_independent(self, study: Any, trial: Any, param_name: str,
                               param_distribution: Any) -> Any:
            return self._tpe(trial.number, param_name).sample_independent(
                study, trial, param_name, param_distribution)

    return TrialSeededTPE()


def _enqueue_defaults(study: Any, cls: type, base: dict[str, Any], spec: TuneSpec,
                      name: str) -> None:
    """Queue the recipe tuning starts from as the study's next trial, unless it is queued, has
    run or is running. A run of it that a killed process interrupted does not count: it is queued
    again, so an interruption never costs the study its starting point. Called under
    :func:`_setup_lock`, so concurrent workers queue it once."""
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("start") and not t.user_attrs.get("interrupted"):
            return  # queued (WAITING), running, or finished
    point, skipped = default_point(cls, {**cls(n_bits=spec.bits).get_params(), **base}, spec.bits)
    for param, reason in skipped.items():
        log.warning("tuning %s: the starting trial draws %s: %s", name, param, reason)
    if not point:
        return  # nothing of the recipe lies in the searched space: every trial is drawn
    study.enqueue_trial(point, user_attrs={"start": "defaults" if not skipped else
                                           "defaults, drawn: " + ", ".join(sorted(skipped))})


def tune(cls: type, base: dict[str, Any], X_train: Any, Y_train: np.ndarray, spec: TuneSpec,
         storage_dir: str | Path, name: str, *, progress: bool = False,
         wait: bool = True) -> dict[str, Any]:
    """Run (or resume, or reuse) the study ``name``; return its outcome.

    When every trial of the budget is taken and some still run in another process, ``wait``
    decides: wait for them (True), or raise :class:`StudyBusy` (False) without running anything.

    ``base``: the constructor keyword arguments every trial starts from (the cell's hyper-parameters
    and training options, and for deep methods its run options except the checkpoint). Returns
    ``{"study", "storage", "n_trials", "bits", "best_params", "best_val_map", "trials",
    "seconds"}``; the best trial is chosen among the first ``n_trials`` finished ones.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    from methods.search import suggest_params, validate_search_space

    validate_search_space(cls)
    if not cls.search_space:  # e.g. LSH: nothing to tune, the defaults are its only recipe
        return {"study": None, "n_trials": 0, "bits": spec.bits, "spec": asdict(spec),
                "trials": [], "best_raw": {}, "best_params": {}, "best_val_map": None,
                "seconds": 0.0, "note": f"{cls.__name__} declares no search space: defaults"}
    storage_dir = Path(storage_dir)
    storage_dir.mkdir(parents=True, exist_ok=True)
    journal = storage_dir / f"{name}.journal"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    search = {
        "sampler": trial_seeded_tpe(spec.seed, max(1, min(10, spec.n_trials // 3))),
        "pruner": optuna.pruners.MedianPruner(n_startup_trials=max(2, spec.n_trials // 4),
                                              n_warmup_steps=0),
    }
    try:  # an existing study is loaded, not created again: reusing it writes nothing
        study = optuna.load_study(study_name=name, storage=storage, **search)
    except KeyError:
        study = optuna.create_study(study_name=name, direction="maximize", load_if_exists=True,
                                    storage=storage, **search)
    _recover(study, cls, base, spec, name, storage_dir, opening=True)
    val_pos, rest_pos = validation_split(len(Y_train), spec)
    X_val, X_rest = _subset(X_train, val_pos), _subset(X_train, rest_pos)
    Y_val, Y_rest = Y_train[val_pos], Y_train[rest_pos]
    deep = cls.kind == "deep"
    epochs = int(base.get("epochs", 1)) if deep else 1
    stages = sorted({max(1, round(epochs * (i + 1) / N_STAGES)) for i in range(N_STAGES)})
    trial_root = storage_dir / f"{name}.trials"

    def objective(trial: Any) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        t0, cpu0 = time.perf_counter(), time.process_time()
        params = suggest_params(cls, trial, spec.bits)
        kwargs = {**base, **params}
        ckpt = trial_root / f"trial-{trial.number}"
        value = math.nan
        try:
            for step, stage in enumerate(stages if deep else [1]):
                extra = {"epochs": stage, "checkpoint_dir": str(ckpt), "resume": True} if deep \
                    else {}
                method = cls(n_bits=spec.bits, seed=spec.seed, **{**kwargs, **extra})
                method.fit(X_rest, Y_rest)
                value = _val_map(method, X_val, Y_val, X_rest, Y_rest)
                trial.set_user_attr("epochs_run", stage if deep else None)
                trial.set_user_attr("last_val_map", value)
                trial.set_user_attr("seconds", time.perf_counter() - t0)
                trial.set_user_attr("cpu_seconds", time.process_time() - cpu0)
                if deep and stage < stages[-1]:
                    trial.report(value, step)
                    # the recipe tuning starts from always runs to the end: with several workers
                    # on one study, trials finished elsewhere could otherwise prune it
                    if trial.user_attrs.get("start") is None and trial.should_prune():
                        raise optuna.TrialPruned()
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            trial.set_user_attr("cpu_seconds", time.process_time() - cpu0)
            raise
        finally:
            shutil.rmtree(ckpt, ignore_errors=True)
        return value

    t_start = time.perf_counter()
    finished_states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    ran: list[Any] = []  # the trials this process ran, in order
    # The budget is the study's first n_trials trials by number (an interrupted one replaced by
    # the next), whatever the order they finish in: every worker waits for the same set and so
    # chooses the same configuration. Workers starting a trial at once may add one beyond it;
    # that one is stored and not used.
    states = (*finished_states, TrialState.RUNNING, TrialState.WAITING)
    warned = False
    while True:
        trials = sorted(_counted(study, states), key=lambda t: t.number)[: spec.n_trials]
        if len(trials) < spec.n_trials or any(t.state == TrialState.WAITING for t in trials):
            # a new trial, or the queued one (the recipe) that optimize takes first
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True,
                           callbacks=[lambda _study, trial: ran.append(trial)])
            t = ran[-1]  # this worker's trial: the study's last one may be another worker's
            log.info("tuning %s: trial %d %s val mAP %s %s", name, t.number, t.state.name,
                     f"{t.value:.4f}" if t.value is not None else "-", dict(t.params))
            continue
        waiting = [t for t in trials if t.state == TrialState.RUNNING]
        if not waiting:
            break
        if any(_left_by_dead_process(t) for t in waiting):
            # a worker of this host died: its trial leaves the budget and is replaced
            _recover(study, cls, base, spec, name, storage_dir, opening=False)
            continue
        where = (", ".join(f"trial {t.number}" for t in waiting) + " running in another process ("
                 + ", ".join(f"{t.user_attrs.get('host')} pid {t.user_attrs.get('pid')}"
                             for t in waiting) + ")")
        if not wait:
            raise StudyBusy(f"tuning {name}: {where}")
        if not warned:
            log.warning("tuning %s: waiting for %s. A trial whose process died on another host "
                        "is not detected: if so, stop this run and delete the study's journal "
                        "%s to start its trials over", name, where, journal)
            warned = True
        time.sleep(2.0)
    interrupted = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                   if t.user_attrs.get("interrupted")]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    outcome: dict[str, Any] = {
        "study": name, "storage": journal.name, "n_trials": spec.n_trials, "bits": spec.bits,
        "spec": asdict(spec), "trials": _history(trials),
        "seconds": sum(t.user_attrs.get("seconds") or 0.0 for t in trials),
        # killed mid-trial (not counted against the budget, not in "trials"), for the record
        "interrupted_trials": [t.number for t in interrupted],
        "wall_s": time.perf_counter() - t_start,
    }
    if not complete:
        reasons = {t.user_attrs.get("fail_reason") or t.state.name for t in trials}
        raise TuningError(f"tuning {name}: none of {len(trials)} trials completed "
                          f"({'; '.join(sorted(map(str, reasons)))})")
    best = max(complete, key=lambda t: (t.value, -t.number))
    outcome.update(best_trial=best.number, best_raw=dict(best.params),
                   best_params=resolve_for_bits(cls, best.params, spec.bits),
                   best_val_map=best.value)
    _write_summary(storage_dir / f"{name}.json", outcome)
    return outcome


def _write_summary(path: Path, outcome: dict[str, Any]) -> None:
    """Write the study's summary beside its journal, unless it already says the same: reusing a
    finished study (other code lengths, other seeds) leaves the tracked file untouched, its
    ``wall_s`` that of the run that wrote it."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = None
    if isinstance(stored, dict):
        same = {k: v for k, v in stored.items() if k != "wall_s"}
        if same == json.loads(json.dumps({k: v for k, v in outcome.items() if k != "wall_s"},
                                         default=str)):
            return
    path.write_text(json.dumps(outcome, indent=1, default=str) + "\n")
