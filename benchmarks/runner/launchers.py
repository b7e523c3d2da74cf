"""Launchers: run many cells, one after the other in this process or as submitit (Slurm) jobs.

Both call the same :func:`benchmarks.runner.cell.run_cell`, so a cell's result files are the same
whichever launcher ran it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.runner.cell import Outcome, RunOptions, run_cell
from benchmarks.runner.experiments import Cell
from benchmarks.runner.results import ResultStore

__all__ = ["Summary", "make_executor", "run_local", "run_submitit"]

log = logging.getLogger("hashbench.runner")


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0

    def count(self, *statuses: str) -> int:
        return sum(o.status in statuses for o in self.outcomes)

    def line(self) -> str:
        """The one-line summary printed at the end of every run."""
        parts = [
            f"cells run: {self.count('done', 'nc')}"
            + (f" ({self.count('nc')} N/C)" if self.count("nc") else ""),
            f"skipped (already done): {self.count('skipped')}",
            f"missing: {self.count('missing')}",
            f"failed: {self.count('failed')}",
            f"wall time: {self.wall_s:.1f} s",
        ]
        return "SUMMARY  " + " | ".join(parts)

    def problems(self) -> list[str]:
        """Failed and missing cells grouped by reason (one line per reason, with a count)."""
        groups: dict[tuple[str, str], list[str]] = {}
        for o in self.outcomes:
            if o.status in ("failed", "missing"):
                groups.setdefault((o.status, o.reason), []).append(o.cell_id)
        lines = []
        for (status, reason), ids in groups.items():
            example = ids[0] + (f" and {len(ids) - 1} more" if len(ids) > 1 else "")
            lines.append(f"  {status.upper()} ({len(ids)} cell{'s' * (len(ids) > 1)}: {example}): "
                         f"{reason}")
        return lines


#: seconds between two looks at a cell that another process is computing
BUSY_POLL_S = 2.0


def run_local(
    cells: Sequence[Cell], opts: RunOptions, progress: bool = True,
    on_outcome: Callable[[Cell, Outcome], None] | None = None,
) -> Summary:
    """Run cells one after the other in this process (tqdm over cells, or a log line per cell).

    A cell another process is computing (its lock is held) is set aside and taken up at the end:
    this run waits for the other one's result, or computes the cell itself when that process
    died or failed, so two runs on one results directory share the work and both end complete.
    A tuned cell whose study has all its trials taken, the last ones still running in another
    process, is set aside too (``"deferred"``) and taken up after the other cells, then waiting
    for the study if it must: the worker computes other cells instead of idling meanwhile.
    """
    from tqdm.auto import tqdm

    summary = Summary()
    t0 = time.perf_counter()
    busy: list[Cell] = []
    deferred: list[Cell] = []
    first_pass = replace(opts, wait_for_studies=False)
    bar = tqdm(cells, desc=f"cells ({opts.preset})", unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(f"{cell.method} {cell.dataset.key} {cell.bits}b", refresh=False)
        outcome = run_cell(cell, first_pass)
        if outcome.status in ("busy", "deferred"):
            (busy if outcome.status == "busy" else deferred).append(cell)
            continue
        _record(summary, cell, outcome, on_outcome)
    waiting = replace(opts, wait_for_studies=True)
    for cell in deferred:  # mostly computed meanwhile by the worker that ran the study's last trial
        outcome = run_cell(cell, waiting)
        if outcome.status == "busy":
            busy.append(cell)
            continue
        if outcome.status == "skipped":
            outcome.reason = "computed by another process"
        _record(summary, cell, outcome, on_outcome)
    if busy:
        _wait_for_busy(busy, opts, summary, on_outcome)
    summary.wall_s = time.perf_counter() - t0
    return summary


def _record(summary: Summary, cell: Cell, outcome: Outcome,
            on_outcome: Callable[[Cell, Outcome], None] | None) -> None:
    summary.outcomes.append(outcome)
    if outcome.status in ("done", "nc"):
        log.info("%-8s %s (%.1f s)", outcome.status, cell.describe(), outcome.wall_s)
    if on_outcome is not None:
        on_outcome(cell, outcome)


def _wait_for_busy(busy: list[Cell], opts: RunOptions, summary: Summary,
                   on_outcome: Callable[[Cell, Outcome], None] | None) -> None:
    """Wait for the cells other processes hold; compute those they leave unfinished."""
    log.info("waiting for %d cell(s) that another process is computing", len(busy))
    # the other process decides what --force means for the cells it holds: do not redo them
    patient = replace(opts, force=False, wait_for_studies=True)
    pending = list(busy)
    while pending:
        still: list[Cell] = []
        for cell in pending:
            outcome = run_cell(cell, patient)
            if outcome.status == "busy":
                still.append(cell)
                continue
            if outcome.status == "skipped":
                outcome.reason = "computed by another process"
            _record(summary, cell, outcome, on_outcome)
        pending = still
        if pending:
            time.sleep(BUSY_POLL_S)


def make_executor(
    folder: str | Path,
    cluster: str | None = None,
    partition: str | None = None,
    timeout_min: int = 240,
    gpus: int = 1,
    cpus: int = 8,
    mem_gb: int | None = None,
) -> Any:
    """A submitit executor: Slurm when available (``cluster=None``), or ``"local"``/``"debug"``."""
    try:
        import submitit
    except ImportError:
        raise SystemExit(
            "--launcher submitit needs the submitit package: pip install submitit "
            "(or pip install -e '.[slurm]')"
        ) from None
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = {"timeout_min": timeout_min, "cpus_per_task": cpus}
    if executor.cluster != "debug":
        params["gpus_per_node"] = gpus
    if mem_gb is not None:
        params["mem_gb"] = mem_gb
    if partition:
        params["slurm_partition"] = partition
    executor.update_parameters(**params)
    return executor


def run_submitit(
    cells: Sequence[Cell], opts: RunOptions, executor: Any, progress: bool = True
) -> Summary:
    """One submitit job per cell that is not done yet; wait for all and collect their outcomes.

    Jobs call the same :func:`run_cell`, so the result files are the same as a local run's.
    """
    from tqdm.auto import tqdm

    summary = Summary()
    t0 = time.perf_counter()
    store = ResultStore(opts.results_dir, opts.preset)
    todo: list[Cell] = []
    for cell in cells:
        if store.is_done(cell.cell_id) and not opts.force:
            summary.outcomes.append(Outcome(cell.cell_id, "skipped", "already done"))
        else:
            todo.append(cell)
    job_opts = replace(opts, progress=False)
    jobs = []
    if todo:
        if hasattr(executor, "batch"):
            with executor.batch():
                for cell in todo:
                    jobs.append((cell, executor.submit(run_cell, cell, job_opts)))
        else:
            jobs = [(cell, executor.submit(run_cell, cell, job_opts)) for cell in todo]
        log.info("submitted %d jobs (%s)", len(jobs), type(executor).__name__)
    busy: list[Cell] = []
    for cell, job in tqdm(jobs, desc="jobs", unit="job", disable=not progress):
        try:
            outcome = job.result()
        except Exception as exc:  # noqa: BLE001 — the job itself died (timeout, node failure, ...)
            outcome = Outcome(cell.cell_id, "failed", f"job {getattr(job, 'job_id', '?')}: {exc}")
        if outcome.status == "busy":  # another sweep holds the cell: its result is awaited below
            busy.append(cell)
            continue
        summary.outcomes.append(outcome)
    if busy:
        _wait_for_busy(busy, opts, summary, None)
    summary.wall_s = time.perf_counter() - t0
    return summary
