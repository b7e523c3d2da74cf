"""Does a rerun reproduce the stored results? Two results directories, cell by cell.

A tuned cell's number depends on its study, and a study run by several workers at once depends on
the order its trials finish (TPE models the trials finished so far; the median pruner compares
with them), so a rerun from nothing can choose another configuration even from the same seed.
The stored journals are the data every tuned number is reproduced from; this report measures how
far a second run from nothing moves them. It pairs the records of the two directories by cell id
(same method, data, split, code length, seed, recipe and budget) and prints:

* per cell class: how many cells are in both, how many chose the same tuned values, and how many
  have the same mAP to the last digit;
* per dataset, mAP key and method: the mean over the paired cells in each run, the change, the
  largest change of one cell, and each method's rank in each run.

    python -m benchmarks.evidence.rerun --a results --b results/rerun-table3-tuned --preset cpu
    python -m benchmarks.evidence.rerun --a results --b /tmp/fresh --preset cpu --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.runner.results import ResultStore

__all__ = ["compare", "format_markdown", "main"]


def _maps(record: dict[str, Any]) -> dict[str, float]:
    return {f"mAP@{k}": float(v)
            for k, v in ((record.get("metrics") or {}).get("map_at") or {}).items()}


def _tuned(record: dict[str, Any]) -> Any:
    return (record.get("tuning") or {}).get("best_raw")


def compare(dir_a: str | Path, dir_b: str | Path, preset: str) -> dict[str, Any]:
    """Pair the cells of ``dir_a`` and ``dir_b`` (same preset) by cell id and compare them."""
    a = {r["cell_id"]: r for r in ResultStore(dir_a, preset).iter_records()}
    b = {r["cell_id"]: r for r in ResultStore(dir_b, preset).iter_records()}
    shared = sorted(set(a) & set(b))
    cells, groups = [], defaultdict(list)
    for cid in shared:
        ra, rb = a[cid], b[cid]
        ma, mb = _maps(ra), _maps(rb)
        cells.append({"cell_id": cid, "method": ra["cell"]["method"],
                      "dataset": ra["cell"]["dataset"], "bits": ra["cell"]["bits"],
                      "tuned": bool(ra.get("tuning")), "same_tuned_values": _tuned(ra) == _tuned(rb),
                      "same_map": ma == mb, "converged": (ra["converged"], rb["converged"])})
        for key in sorted(set(ma) & set(mb)):
            groups[(ra["cell"]["dataset"], key, ra["cell"]["method"])].append((ma[key], mb[key]))
    methods: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (dataset, key, method), pairs in sorted(groups.items()):
        mean_a = sum(p[0] for p in pairs) / len(pairs)
        mean_b = sum(p[1] for p in pairs) / len(pairs)
        methods[(dataset, key)].append({
            "method": method, "n": len(pairs), "a": mean_a, "b": mean_b, "change": mean_b - mean_a,
            "max_abs_change": max(abs(p[1] - p[0]) for p in pairs)})
    for rows in methods.values():
        for side in ("a", "b"):
            for rank, row in enumerate(sorted(rows, key=lambda r: -r[side]), start=1):
                row[f"rank_{side}"] = rank
    return {"a": str(dir_a), "b": str(dir_b), "preset": preset, "only_a": len(set(a) - set(b)),
            "only_b": len(set(b) - set(a)), "cells": cells,
            "columns": [{"dataset": d, "key": k, "methods": rows}
                        for (d, k), rows in methods.items()]}


def format_markdown(report: dict[str, Any]) -> str:
    cells = report["cells"]
    tuned = [c for c in cells if c["tuned"]]
    same_values = [c for c in tuned if c["same_tuned_values"]]
    lines = [
        f"# Rerun agreement: `{report['a']}` (A) vs `{report['b']}` (B), preset {report['preset']}",
        "",
        (f"- cells in both: {len(cells)} (only in A: {report['only_a']}, only in B: "
         f"{report['only_b']})"),
        f"- tuned cells: {len(tuned)}, with the same tuned values: {len(same_values)}",
        f"- cells with the same mAP to the last digit: {sum(c['same_map'] for c in cells)}",
        (f"  (untuned: {sum(c['same_map'] for c in cells if not c['tuned'])} of "
         f"{len(cells) - len(tuned)}; tuned with the same values: "
         f"{sum(c['same_map'] for c in same_values)} of {len(same_values)})"),
    ]
    for col in report["columns"]:
        lines += ["", f"## {col['dataset']}, {col['key']} (mean over the paired cells)", "",
                  "| method | A | rank A | B | rank B | B - A | largest cell change |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in sorted(col["methods"], key=lambda r: r["rank_a"]):
            lines.append(f"| {r['method']} | {r['a']:.4f} | {r['rank_a']} | {r['b']:.4f} | "
                         f"{r['rank_b']} | {r['change']:+.4f} | {r['max_abs_change']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="results directory of the first run (e.g. results)")
    ap.add_argument("--b", required=True, help="results directory of the rerun")
    ap.add_argument("--preset", default="cpu", help="preset whose cells to pair (default: cpu)")
    ap.add_argument("--json", metavar="FILE", help="also write the report as JSON here")
    args = ap.parse_args(argv)
    for d in (args.a, args.b):
        if not (Path(d) / args.preset).is_dir():
            print(f"error: {d}/{args.preset} is not a results directory of preset "
                  f"{args.preset!r}", file=sys.stderr)
            return 2
    report = compare(args.a, args.b, args.preset)
    if not report["cells"]:
        print("error: the two directories share no cell", file=sys.stderr)
        return 2
    print(format_markdown(report), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
