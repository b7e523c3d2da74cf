"""What a sweep cost: the tuned table against the untuned one, from the stored records.

A table's wall time is the sum of its cells' jobs, so the real figure of a sweep is in its
records: each cell stores the seconds of ``fit``, ``encode`` and ``eval`` (``timing``), and a
tuned cell also the seconds of every trial of the study it used (``tuning.trials``; a study is
shared by every code length and seed of one method and column, so it is counted once). This
benchmark reads them for one table (or several: ``--table 1,3,appendix``, each shared cell and
study counted once) under one preset and prints, per dataset and method:

* **untuned**: the cells of the preset's own recipe (the reference, same cells without ``--tune``);
* **tuned**: the study's trials (``tuning``) plus the retraining of the chosen configuration at
  every code length and seed (``retrain``);
* a cell resumed after a kill counts every epoch's seconds from its history, not only those after
  the resume;
* cells that are the same in both runs (the reference rows, which are never tuned) count in
  both, as a tuned sweep from nothing computes them too;
* the ratio tuned / untuned, and what is still missing (cells not stored are not estimated: they
  are listed, so a partial sweep never reads as a finished one).

The seconds are the wall seconds of each job (the runner runs one job at a time per worker, one
torch thread per worker in the cpu sweeps). With more workers than cores they are stretched by
the jobs sharing the cores, so jobs also store their process's CPU seconds (cells:
``timing.cpu_s``, per epoch ``history[].cpu_s``; trials: ``cpu_seconds``): where they did, the
report prints both sums and their ratio, job time / CPU. Records stored before this have wall
seconds only; they are counted, never converted. The wall-clock span of the stored tuned cells
(first trial start to last record) is printed too, when the Optuna journals are present.

    python -m benchmarks.speed.bench_sweep --preset cpu --table 3 --tune 10
    python -m benchmarks.speed.bench_sweep --preset cpu --table 3 --tune 10 --json cost.json
    python -m benchmarks.speed.bench_sweep --preset cpu --table 1,3,appendix --tune 10 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["calibrate", "format_calibration", "format_markdown", "main", "sweep_cost"]

_TIMING_KEYS = ("fit_s", "encode_s", "eval_s")


def _job_seconds(record: dict[str, Any]) -> float:
    """``fit + encode + eval`` seconds of the cell's job. A deep cell resumed from a checkpoint
    (a killed run) times only the epochs after the resume in ``fit_s``; its per-epoch history
    keeps every epoch's seconds, so the fit counts as the larger of the two."""
    timing = record.get("timing") or {}
    history = record.get("history") or []
    epochs_s = sum(float(e.get("time_s") or 0.0) for e in history if isinstance(e, dict))
    fit_s = max(float(timing.get("fit_s") or 0.0), epochs_s)
    return fit_s + float(sum(timing.get(k) or 0.0 for k in _TIMING_KEYS if k != "fit_s"))


def _job_cpu_seconds(record: dict[str, Any]) -> float | None:
    """CPU seconds of the cell's job (``timing.cpu_s``, the same resume rule as
    :func:`_job_seconds` with the epochs' ``cpu_s``); None for records stored before jobs
    recorded their CPU time, and for a cell resumed from epochs trained before then (its CPU
    time is partly unknown)."""
    timing = record.get("timing") or {}
    if timing.get("cpu_s") is None:
        return None
    history = [e for e in record.get("history") or [] if isinstance(e, dict)]
    if any(e.get("cpu_s") is None for e in history):
        return None
    epochs_cpu = sum(float(e["cpu_s"]) for e in history)
    fit_cpu = float(timing.get("fit_cpu_s") or 0.0)
    return max(fit_cpu, epochs_cpu) + float(timing["cpu_s"]) - fit_cpu


def _tuned_preset(preset: Any, n_trials: int) -> Any:
    """The preset as ``run_all.py --tune n_trials`` makes it (same cell keys)."""
    from benchmarks.runner.tuning import TuneSpec

    spec = TuneSpec(n_trials=n_trials, bits=preset.tune_bits)
    return replace(preset, tune=tuple(sorted((k, v) for k, v in vars(spec).items()
                                             if k != "bits")))


def _parse_utc(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _study_start(tuning_dir: Path, study: str) -> datetime | None:
    """When a study's first trial started, from its Optuna journal (None without one)."""
    journal = tuning_dir / f"{study}.journal"
    if not journal.is_file():
        return None
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    starts = [t.datetime_start.astimezone() for t in trials if t.datetime_start]
    return min(starts) if starts else None


def _stored(cells: list[Any], store: Any, acc: dict[tuple[str, str], dict[str, Any]],
            kind: str, missing: dict[str, list[str]]):
    """Each finished record of ``cells`` with its (dataset, method) row, counting the row's
    ``<kind>_total`` and ``<kind>_cells`` and listing the cells without one in ``missing``."""
    for cell in cells:
        row = acc[(cell.dataset.key, cell.method)]
        row[f"{kind}_total"] += 1
        record = store.load(cell.cell_id)
        if record is None or record.get("status") != "ok":
            missing[kind].append(cell.cell_id)
            continue
        row[f"{kind}_cells"] += 1
        yield row, record


def sweep_cost(results_dir: str | Path, preset_name: str, table: str, n_trials: int,
               seeds: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Seconds of the untuned and the tuned sweep of ``table``, per dataset and method.
    ``table`` may name several tables, comma-separated ("1,3,appendix"): the sweep of all of
    them, where a cell or a study they share counts once.

    Returns ``{"rows": [...], "totals": {...}, "missing": {...}}``; every number is read from a
    stored record or study, none is estimated.
    """
    from benchmarks.runner.experiments import TABLES, cells_for, dedupe, get_preset
    from benchmarks.runner.results import ResultStore

    tables = [t.strip() for t in table.split(",") if t.strip()]
    unknown = [t for t in tables if t not in TABLES]
    if unknown or not tables:
        raise SystemExit(f"unknown table {', '.join(unknown) or repr(table)}; choose one or "
                         f"more (comma-separated) of {', '.join(TABLES)}")
    preset = get_preset(preset_name)
    store = ResultStore(results_dir, preset.name)
    # a cell that several tables share (Table 3's DPAH cells in the appendix) is one job
    untuned = dedupe([c for t in tables for c in cells_for(TABLES[t], preset, seeds)])
    tuned_preset = _tuned_preset(preset, n_trials)
    tuned = dedupe([c for t in tables for c in cells_for(TABLES[t], tuned_preset, seeds)])

    acc: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {
        "untuned_s": 0.0, "untuned_cells": 0, "untuned_total": 0, "tuning_s": 0.0,
        "retrain_s": 0.0, "tuned_cells": 0, "tuned_total": 0, "studies": set()})
    # every job (cell or trial), and the wall and CPU seconds of those that recorded CPU seconds
    cpu = {kind: {"jobs": 0, "jobs_with_cpu": 0, "wall_s": 0.0, "cpu_s": 0.0}
           for kind in ("untuned", "tuned")}

    def count_cpu(kind: str, wall_s: float, cpu_s: float | None) -> None:
        c = cpu[kind]
        c["jobs"] += 1
        if cpu_s is not None:
            c["jobs_with_cpu"] += 1
            c["wall_s"] += wall_s
            c["cpu_s"] += cpu_s

    missing: dict[str, list[str]] = {"untuned": [], "tuned": []}
    first: datetime | None = None
    last: datetime | None = None
    for row, record in _stored(untuned, store, acc, "untuned", missing):
        job_s = _job_seconds(record)
        row["untuned_s"] += job_s
        count_cpu("untuned", job_s, _job_cpu_seconds(record))
    for row, record in _stored(tuned, store, acc, "tuned", missing):
        job_s = _job_seconds(record)
        row["retrain_s"] += job_s
        count_cpu("tuned", job_s, _job_cpu_seconds(record))
        end = _parse_utc(record.get("utc_time"))
        if end is not None:
            last = end if last is None else max(last, end)
        tuning = record.get("tuning") or {}
        study = tuning.get("study")
        if study and study not in row["studies"]:
            row["studies"].add(study)
            row["tuning_s"] += float(sum(t.get("seconds") or 0.0 for t in tuning.get("trials", [])))
            for t in tuning.get("trials", []):
                count_cpu("tuned", float(t.get("seconds") or 0.0), t.get("cpu_seconds"))
            start = _study_start(store.base / "tuning", study)
            if start is not None:
                first = start if first is None else min(first, start)

    rows = []
    for (dataset, method), r in sorted(acc.items()):
        tuned_s = r["tuning_s"] + r["retrain_s"]
        complete = r["untuned_cells"] == r["untuned_total"] and r["tuned_cells"] == r["tuned_total"]
        rows.append({
            "dataset": dataset, "method": method,
            "untuned_s": r["untuned_s"], "untuned_cells": f"{r['untuned_cells']}/{r['untuned_total']}",
            "tuning_s": r["tuning_s"], "retrain_s": r["retrain_s"], "tuned_s": tuned_s,
            "tuned_cells": f"{r['tuned_cells']}/{r['tuned_total']}", "studies": len(r["studies"]),
            "ratio": (tuned_s / r["untuned_s"]) if complete and r["untuned_s"] > 0 else None,
        })
    totals = {
        "untuned_s": sum(r["untuned_s"] for r in rows),
        "tuning_s": sum(r["tuning_s"] for r in rows),
        "retrain_s": sum(r["retrain_s"] for r in rows),
        "tuned_s": sum(r["tuned_s"] for r in rows),
        "complete": not missing["untuned"] and not missing["tuned"],
        "tuned_wall_span_s": (last - first).total_seconds() if first and last else None,
    }
    for kind, c in cpu.items():
        totals[f"{kind}_cpu"] = {**c, "wall_per_cpu": c["wall_s"] / c["cpu_s"]
                                 if c["cpu_s"] > 0 else None}
    totals["ratio"] = (totals["tuned_s"] / totals["untuned_s"]
                       if totals["complete"] and totals["untuned_s"] else None)
    return {"preset": preset.name, "table": table, "n_trials": n_trials,
            "seeds": list(seeds or preset.seeds), "rows": rows, "totals": totals,
            "missing": missing}


def calibrate(results_dir: str | Path, preset_name: str, table: str, n_trials: int,
              methods: tuple[str, ...] | None = None, work_dir: str | Path | None = None
              ) -> list[dict[str, Any]]:
    """Re-run one stored tuned cell per dataset and method (the tuning code length, the first
    seed; its finished study copied, so only the retraining runs) in a scratch results folder,
    and set the CPU seconds it takes now against the job seconds its stored record took.

    Records stored before jobs recorded CPU time have wall seconds only, stretched by whatever
    shared the cores then; ``stored job s / CPU s`` of a re-run measures that stretch for each
    sampled cell. Each row also says whether the re-run reproduced the stored mAP (it should:
    same code path, seeded, on CPU).
    """
    import os
    import shutil
    import subprocess
    import tempfile

    from benchmarks.runner.experiments import TABLES, cells_for, get_preset
    from benchmarks.runner.results import ResultStore

    preset = get_preset(preset_name)
    store = ResultStore(results_dir, preset.name)
    tuned = cells_for(TABLES[table], _tuned_preset(preset, n_trials), None)
    seed = preset.seeds[0]
    chosen: dict[tuple[str, str], Any] = {}
    for cell in tuned:
        if cell.bits == preset.tune_bits and cell.seed == seed and \
                (methods is None or cell.method in methods):
            chosen.setdefault((cell.dataset.key, cell.method), cell)
    rows = []
    root = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    repo = Path(__file__).resolve().parents[2]
    for (dataset, method), cell in sorted(chosen.items()):
        record = store.load(cell.cell_id)
        if record is None or record.get("status") != "ok" or not record.get("tuning"):
            continue
        scratch = root / cell.cell_id
        shutil.rmtree(scratch, ignore_errors=True)
        tuning_dir = scratch / preset.name / "tuning"
        tuning_dir.mkdir(parents=True)
        study = record["tuning"]["study"]
        for suffix in (".journal", ".json"):
            src = store.base / "tuning" / f"{study}{suffix}"
            if src.is_file():
                shutil.copy2(src, tuning_dir / src.name)
        cmd = [sys.executable, str(repo / "run_all.py"), "--table", table, "--preset",
               preset.name, "--tune", str(n_trials), "--datasets", dataset, "--methods", method,
               "--bits", str(cell.bits), "--seeds", str(cell.seed), "--results-dir",
               str(scratch), "--no-progress", "-q"]
        subprocess.run(cmd, check=True, cwd=repo, env=os.environ.copy(),
                       stdout=subprocess.DEVNULL)
        rerun = ResultStore(scratch, preset.name).load(cell.cell_id)
        cpu_s = _job_cpu_seconds(rerun) if rerun else None
        stored_s = _job_seconds(record)
        same = (rerun is not None and rerun["metrics"]["map_at"] == record["metrics"]["map_at"])
        rows.append({"dataset": dataset, "method": method, "cell_id": cell.cell_id,
                     "stored_job_s": stored_s, "rerun_job_s": _job_seconds(rerun) if rerun else None,
                     "rerun_cpu_s": cpu_s, "stretch": stored_s / cpu_s if cpu_s else None,
                     "same_map": same})
        shutil.rmtree(scratch, ignore_errors=True)
    if work_dir is None:  # the scratch root this call made
        shutil.rmtree(root, ignore_errors=True)
    return rows


def format_calibration(rows: list[dict[str, Any]], cost: dict[str, Any] | None = None) -> str:
    lines = [("| dataset | method | stored job s | re-run job s | re-run CPU s | stored / CPU "
             "| same mAP |"), "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        stretch = "–" if r["stretch"] is None else f"{r['stretch']:.2f}"
        lines.append(f"| {r['dataset']} | {r['method']} | {_fmt_s(r['stored_job_s'])} | "
                     f"{_fmt_s(r['rerun_job_s'])} | {_fmt_s(r['rerun_cpu_s'])} | {stretch} | "
                     f"{'yes' if r['same_map'] else 'NO'} |")
    measured = [r for r in rows if r["rerun_cpu_s"]]
    if measured:
        stored = sum(r["stored_job_s"] for r in measured)
        cpu_s = sum(r["rerun_cpu_s"] for r in measured)
        stretches = sorted(r["stretch"] for r in measured)
        lines += ["", (f"sampled cells: {_fmt_s(stored)} s of stored job time, "
                  f"{_fmt_s(cpu_s)} s of CPU when re-run: stored / CPU = {stored / cpu_s:.2f} "
                  f"(per cell {stretches[0]:.2f} to {stretches[-1]:.2f})")]
        if cost is not None:
            total = cost["totals"]["tuned_s"]
            est = total / (stored / cpu_s)
            lines.append(f"ESTIMATE (not a measurement): the stored tuned job time "
                         f"{_fmt_s(total)} s at that ratio is {_fmt_s(est)} CPU s, "
                         f"{est / 3600:.2f} h on one core, {est / 7200:.2f} h on 2 cores if "
                         "perfectly split")
    return "\n".join(lines)


def _fmt_s(s: float | None) -> str:
    return "–" if s is None else f"{s:,.0f}"


def format_markdown(cost: dict[str, Any]) -> str:
    t = cost["totals"]
    lines = [
        (f"Table{'s' if ',' in cost['table'] else ''} {cost['table']}, "
         f"preset `{cost['preset']}`, seeds {cost['seeds']}, "
         f"--tune {cost['n_trials']} against the untuned cells (seconds of each job's process)"),
        "",
        ("| dataset | method | untuned s (cells) | tuning s (studies) | retrain s (cells) "
         "| tuned s | tuned / untuned |"),
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in cost["rows"]:
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        lines.append(
            f"| {r['dataset']} | {r['method']} | {_fmt_s(r['untuned_s'])} ({r['untuned_cells']}) "
            f"| {_fmt_s(r['tuning_s'])} ({r['studies']}) | {_fmt_s(r['retrain_s'])} "
            f"({r['tuned_cells']}) | {_fmt_s(r['tuned_s'])} | {ratio} |")
    ratio = "–" if t["ratio"] is None else f"{t['ratio']:.1f}x"
    lines.append(f"| **all** | | {_fmt_s(t['untuned_s'])} | {_fmt_s(t['tuning_s'])} | "
                 f"{_fmt_s(t['retrain_s'])} | {_fmt_s(t['tuned_s'])} | {ratio} |")
    lines.append("")
    hours = t["tuned_s"] / 3600
    lines.append(f"tuned sweep: {hours:.2f} h of one-worker job time "
                 f"({hours / 2:.2f} h on 2 cores with two one-thread workers, if perfectly split)")
    for kind in ("untuned", "tuned"):
        c = t.get(f"{kind}_cpu")
        if not c or not c["jobs"]:
            continue
        if not c["jobs_with_cpu"]:
            lines.append(f"{kind}: no job recorded its CPU seconds (stored before they were)")
            continue
        lines.append(
            f"{kind}: {c['jobs_with_cpu']} of {c['jobs']} jobs recorded their CPU seconds: "
            f"{_fmt_s(c['cpu_s'])} s of CPU for {_fmt_s(c['wall_s'])} s of job time "
            f"(job time / CPU = {c['wall_per_cpu']:.2f}: how much jobs sharing the cores "
            "stretched these jobs' seconds)")
    if t["tuned_wall_span_s"] is not None:
        lines.append(f"wall-clock span of the stored tuned cells: {t['tuned_wall_span_s'] / 3600:.2f} h")
    if not t["complete"]:
        lines.append(f"INCOMPLETE: {len(cost['missing']['untuned'])} untuned and "
                     f"{len(cost['missing']['tuned'])} tuned cells are not stored; their time "
                     "is not counted (no estimate is made)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", help="preset whose results are read (default cpu)")
    parser.add_argument("--table", default="3",
                        help="table: 1, 2, 3, appendix or unseen (default 3); several, "
                        "comma-separated (1,3,appendix), give their whole sweep, each shared "
                        "cell and study counted once")
    parser.add_argument("--tune", type=int, required=True, metavar="N",
                        help="the tuned run's number of trials (as given to run_all.py --tune)")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds (default: the preset's)")
    parser.add_argument("--results-dir", default="results", help="results folder (default results)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--calibrate", action="store_true",
                        help="also re-run one stored tuned cell per dataset and method (tuning "
                        "code length, first seed; the study reused) in a scratch folder and "
                        "compare its CPU seconds with the stored job seconds (how much sharing "
                        "the cores stretched them); takes that long")
    parser.add_argument("--methods", default=None,
                        help="with --calibrate: only these methods (comma-separated)")
    args = parser.parse_args(argv)
    if args.tune < 1:
        parser.error(f"--tune needs a number of trials >= 1, got {args.tune}")
    from benchmarks.runner.experiments import get_preset

    try:
        get_preset(args.preset)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    if args.calibrate and "," in args.table:
        parser.error("--calibrate re-runs the cells of one table; give one --table")
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    cost = sweep_cost(args.results_dir, args.preset, args.table, args.tune, seeds)
    print(format_markdown(cost))
    if args.calibrate:
        methods = tuple(args.methods.split(",")) if args.methods else None
        cost["calibration"] = calibrate(args.results_dir, args.preset, args.table, args.tune,
                                        methods)
        print()
        print(format_calibration(cost["calibration"], cost))
    if args.json:
        Path(args.json).write_text(json.dumps(cost, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
