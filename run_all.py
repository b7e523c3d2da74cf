#!/usr/bin/env python
"""Regenerate the DPAH paper's tables and figures: run the missing cells, then render from results.

Examples::

    python run_all.py --table 3 --preset smoke        # two minutes on a laptop CPU (digits)
    python run_all.py --table 3                       # Table 3 on real offline data (cpu preset)
    python run_all.py --all --preset paper --launcher submitit --slurm-partition gpu
    python run_all.py --table 3 --dry-run             # what would run, what is already done
    python run_all.py --list-methods
    python run_all.py --list-datasets
    python run_all.py --table 3 --preset smoke --user-data mine.npz --n-query 200 --n-train 1000

Every finished cell is one JSON file under ``<results-dir>/<preset>/cells/``; a re-run skips
finished cells (``--force`` recomputes them) and an interrupted sweep resumes where it stopped.
Tables (Markdown, CSV, LaTeX) and figures (PNG, PDF) are rendered from those files only.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.runner.experiments import (
    FIGURES,
    PRESETS,
    TABLES,
    Cell,
    Experiment,
    Preset,
    cells_for,
    dedupe,
    get_preset,
    image_feature_backbone,
    map_name,
    user_preset,
)

log = logging.getLogger("hashbench.runner")

TABLE_CHOICES = list(TABLES)
FIGURE_CHOICES = list(FIGURES)


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_all.py",
        description=(
            "Run the benchmark cells a table or figure needs (skipping finished ones), then render "
            "the table (Markdown/CSV/LaTeX) or figure (PNG/PDF) from the stored results."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "presets:\n"
            + "\n".join(f"  {name:6s} {p.description}" for name, p in PRESETS.items())
            + "\n\nResults: <results-dir>/<preset>/{cells,tables,figures}/ ."
        ),
    )
    what = p.add_argument_group("what to produce")
    what.add_argument("--table", action="append", choices=TABLE_CHOICES, default=[],
                      help="table to regenerate: 1 (PA module vs other losses), 2 (KT loss across "
                      "backbones), 3 (main comparison, every method x code length), appendix "
                      "(CIFAR-10/ImageNet-100 vs recent methods). Repeatable.")
    what.add_argument("--figure", action="append", choices=FIGURE_CHOICES, default=[],
                      help="figure to regenerate: pr (Fig. 8, precision-recall at 48 bits), "
                      "t-sensitivity (Fig. 6), alpha-sensitivity (Fig. 7), kt-loss (Fig. 4), "
                      "distribution (Figs. 3/5, u before thresholding), tsne (Fig. 9). Repeatable.")
    what.add_argument("--all", action="store_true",
                      help="every table and every figure")
    what.add_argument("--preset", choices=list(PRESETS), default="cpu",
                      help="setting and data: smoke (digits, ~2 min on a CPU), cpu (real offline "
                      "data: CIFAR-10 + MIRFlickr-25K, <1 h on 2 cores), paper (the paper's "
                      "datasets and AlexNet, 200 epochs: a GPU job), test (tiny, for the tests). "
                      "Default: cpu")
    what.add_argument("--list-methods", action="store_true",
                      help="print the method registry (name, shallow/deep, paper) and exit")
    what.add_argument("--list-datasets", action="store_true",
                      help="print every data protocol: whether its data is present, where it "
                      "looked, split sizes; then exit")

    narrow = p.add_argument_group("narrow a run (tables still show every cell; others: missing)")
    narrow.add_argument("--datasets", type=_str_list, default=None, metavar="A,B",
                        help="only cells on these datasets (our dataset key, e.g. digits, "
                        "cifar10_mobilenet, mirflickr25k; or protocol name; or the paper "
                        "column: nus_wide, coco, imagenet100, cifar10)")
    narrow.add_argument("--methods", type=_str_list, default=None, metavar="M,N",
                        help="only cells of these registry names (see --list-methods)")
    narrow.add_argument("--bits", type=_int_list, default=None, metavar="16,32",
                        help="only cells with these code lengths")
    narrow.add_argument("--seeds", type=_int_list, default=None, metavar="0,1,2",
                        help="seeds to run and aggregate (mean +- std); default: the preset's (0)")

    user = p.add_argument_group(
        "your own data (every table/figure then has one dataset column: yours, mAP@all, no "
        "paper numbers; the preset still sets epochs, lr, backbones and feature backbone)")
    user.add_argument("--user-data", default=None, metavar="PATH",
                      help="run on your own dataset alone instead of the preset's: an image "
                      "folder (<PATH>/<class>/<image>), a .csv of 'path,labels' rows (labels "
                      "separated by | or ;, several allowed; image paths relative to the CSV), "
                      "or a .npz with 'features' (N x D) and/or 'images' and 'labels' (N class "
                      "ids or N x C multi-hot). Images are turned into features by the preset's "
                      "feature backbone (raw pixels in smoke/test). Tables and figures go to "
                      "<results-dir>/<preset>/user/<name>-<hash>/")
    user.add_argument("--user-protocol", choices=["folder", "csv", "npz"], default=None,
                      help="read --user-data with this protocol (default: from the path: a "
                      "folder, .csv or .npz)")
    user.add_argument("--user-name", default=None, metavar="NAME",
                      help="name of your dataset in tables, cell ids and folders (default: the "
                      "file's or folder's name without extension)")
    user.add_argument("--n-query", type=_positive_int, default=None, metavar="N",
                      help="with --user-data: number of random queries (default: the protocol's, "
                      "min(1000, N/10)); every other item is the database")
    user.add_argument("--n-train", type=_positive_int, default=None, metavar="N",
                      help="with --user-data: number of training items, drawn from the database "
                      "(default: the protocol's, the whole database); n-query + n-train must "
                      "not exceed the labelled items")

    where = p.add_argument_group("where")
    where.add_argument("--data-root", default=None,
                       help="folder holding the datasets (default: ../shared/data relative to the "
                       "repository, or $HASHBENCH_DATA_ROOT)")
    where.add_argument("--download", action="store_true",
                       help="fetch a missing CIFAR-10 or Fashion-MNIST into --data-root with "
                       "torchvision's downloader (needs internet); other datasets cannot be "
                       "downloaded automatically: --list-datasets says how to get them")
    where.add_argument("--results-dir", default="results",
                       help="where cell results, tables and figures go (default: results/)")
    where.add_argument("--device", default=None,
                       help="torch device for deep methods, e.g. cpu, cuda, cuda:1 "
                       "(default: the method's own choice)")

    how = p.add_argument_group("how")
    how.add_argument("--dry-run", action="store_true",
                     help="list the cells that would run and those already done; run nothing")
    how.add_argument("--force", action="store_true",
                     help="recompute cells that already have a result (and drop their checkpoints)")
    how.add_argument("--render-only", action="store_true",
                     help="run no cell; only render the tables/figures from stored results")
    how.add_argument("--launcher", choices=["local", "submitit"], default="local",
                     help="local: run cells one after the other in this process (default); "
                     "submitit: one Slurm job per cell through the submitit package")
    how.add_argument("--slurm-partition", default=None,
                     help="submitit: Slurm partition to submit to")
    how.add_argument("--slurm-timeout", type=int, default=240, metavar="MIN",
                     help="submitit: time limit of each job in minutes (default 240)")
    how.add_argument("--slurm-gpus", type=int, default=1,
                     help="submitit: GPUs per job (default 1; a cell uses one GPU)")
    how.add_argument("--slurm-cpus", type=int, default=8,
                     help="submitit: CPUs per job (default 8)")
    how.add_argument("--submitit-cluster", choices=["slurm", "local", "debug"], default=None,
                     help="submitit: force the executor (default: Slurm if available, else "
                     "local processes); 'debug' runs jobs in this process")
    how.add_argument("--no-progress", action="store_true", help="no progress bars")
    how.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


# ------------------------------------------------------------------------------ listings
def list_methods() -> str:
    """The registry as a table: name, kind, input, variant of, paper."""
    try:
        from methods import registry
    except Exception as exc:  # noqa: BLE001
        return f"the methods package is not importable: {type(exc).__name__}: {exc}"
    lines = [f"{'name':14s} {'kind':8s} {'input':9s} {'variant of':12s} paper"]
    for name, cls in sorted(registry().items(), key=lambda kv: (kv[1].kind != "shallow", kv[0])):
        lines.append(f"{name:14s} {cls.kind:8s} {cls.input_kind:9s} "
                     f"{getattr(cls, 'variant_of', '') or '-':12s} {getattr(cls, 'paper', '')}")
    lines.append(f"{len(lines) - 1} methods registered")
    return "\n".join(lines)


def list_datasets(data_root: str | None) -> str:
    """Every protocol: present?, where it looked, split sizes (from data_protocols)."""
    try:
        import data_protocols as dp

        described = dp.describe_protocols(data_root)
    except Exception as exc:  # noqa: BLE001
        return f"data_protocols is not available: {type(exc).__name__}: {exc}"
    lines = []
    for d in described:
        d = dict(d)
        name = d.pop("name", "?")
        present = d.pop("present", None)
        flag = {True: "present", False: "NOT FOUND", None: "?"}.get(present, str(present))
        kind = "multi-label" if d.pop("multi_label", False) else "single-label"
        if d.pop("construction", False):
            kind += ", a construction"
        k = d.pop("default_k", None)
        lines.append(f"{name}  [{flag}]  {kind}, default cutoff {map_name(k)}")
        if d.get("description"):
            lines.append(f"    {d.pop('description')}")
        looked = str(d.pop("looked_in", "?"))
        lines.append(f"    looked in: {looked}")
        sizes = d.pop("sizes", None)
        if isinstance(sizes, dict):
            sizes = ", ".join(
                f"{part} {n:,}" if isinstance(n, int) else f"{part} {n}"
                for part, n in sizes.items()
            )
        lines.append(f"    split sizes: {sizes}")
        how = d.pop("how_to_get", None)
        if how and not present and str(how) not in looked:
            lines.append(f"    how to get it: {how}")
        for key, value in d.items():
            lines.append(f"    {key.replace('_', ' ')}: {value}")
    used = sorted({c.dataset.protocol for p in PRESETS.values() for c in p.columns
                   if c.dataset is not None})
    lines.append(f"protocols used by the presets: {', '.join(used)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ planning
def selected_experiments(args: argparse.Namespace) -> list[Experiment]:
    tables = TABLE_CHOICES if args.all else args.table
    figures = FIGURE_CHOICES if args.all else args.figure
    out = [TABLES[t] for t in dict.fromkeys(tables)]
    out += [FIGURES[f] for f in dict.fromkeys(figures)]
    return out


def plan_cells(exps: list[Experiment], preset: Preset, args: argparse.Namespace) -> list[Cell]:
    """Cells of the selected experiments, deduplicated, narrowed by the command-line filters."""
    cells: list[Cell] = []
    for exp in exps:
        cells += cells_for(exp, preset, tuple(args.seeds) if args.seeds else None)
    cells = dedupe(cells)
    if args.methods:
        cells = [c for c in cells if c.method in args.methods]
    if args.bits:
        cells = [c for c in cells if c.bits in args.bits]
    if args.datasets:
        paper_keys = {col.paper_key: col.dataset.key for col in
                      preset.columns + preset.appendix_columns if col.dataset is not None}
        wanted = set(args.datasets) | {paper_keys[d] for d in args.datasets if d in paper_keys}
        cells = [c for c in cells if c.dataset.key in wanted or c.dataset.protocol in wanted]
    return cells


def user_data(args: argparse.Namespace, preset: Preset, parser: argparse.ArgumentParser):
    """``--user-data``: the checked dataset (or a parser error naming the problem)."""
    user_only = [flag for flag, value in (("--n-query", args.n_query),
                                          ("--n-train", args.n_train),
                                          ("--user-protocol", args.user_protocol),
                                          ("--user-name", args.user_name)) if value is not None]
    if args.user_data is None:
        if user_only:
            verb = "applies" if len(user_only) == 1 else "apply"
            parser.error(f"{', '.join(user_only)} only {verb} to your own data: give "
                         "--user-data PATH (a folder, a .csv or a .npz)")
        return None
    from benchmarks.runner.user_data import UserDataError, resolve_user_data

    try:
        return resolve_user_data(args.user_data, args.user_protocol, args.user_name,
                                 args.n_query, args.n_train,
                                 image_backbone=image_feature_backbone(preset))
    except UserDataError as exc:
        parser.error(str(exc))


def dry_run(cells: list[Cell], preset: Preset, args: argparse.Namespace,
            outputs: str | None = None) -> str:
    from benchmarks.runner.results import ResultStore

    store = ResultStore(args.results_dir, preset.name, outputs)
    done = [c for c in cells if store.is_done(c.cell_id)]
    todo = [c for c in cells if not store.is_done(c.cell_id)]
    lines = [f"dry run, preset {preset.name}: {len(cells)} cells, {len(done)} done, "
             f"{len(todo)} to run" + (" (--force: all would be recomputed)" if args.force else "")]
    if preset.user_data:
        lines.append(f"  {preset.columns[0].dataset.label}: {preset.columns[0].dataset.note}")
        lines.append(f"  cells in {store.cells_dir}, tables/figures in {store.tables_dir.parent}")
    for c in todo:
        lines.append(f"  TO RUN  {c.cell_id}  ({c.describe()})")
    for c in done:
        lines.append(f"  {'FORCE ' if args.force else 'DONE  '}  {c.cell_id}  ({c.describe()})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", force=True,
    )
    if args.list_methods:
        print(list_methods())
        return 0
    if args.list_datasets:
        print(list_datasets(args.data_root))
        return 0
    exps = selected_experiments(args)
    if not exps:
        parser.error("nothing to do: give --table, --figure or --all (or --list-methods / "
                     "--list-datasets)")
    preset = get_preset(args.preset)
    ud = user_data(args, preset, parser)
    outputs = None
    if ud is not None:
        preset = user_preset(preset, ud.spec, ud.name)
        outputs = f"user/{ud.key}"
        log.info("%s", ud.summary())
    cells = plan_cells(exps, preset, args)
    if args.dry_run:
        print(dry_run(cells, preset, args, outputs))
        return 0

    from benchmarks.render import render_figure, render_table
    from benchmarks.runner.cell import RunOptions, eval_ks_for
    from benchmarks.runner.launchers import Summary, make_executor, run_local, run_submitit
    from benchmarks.runner.results import ResultStore

    store = ResultStore(args.results_dir, preset.name, outputs)
    opts = RunOptions(
        results_dir=str(Path(args.results_dir).resolve()), preset=preset.name,
        data_root=args.data_root, device=args.device, force=args.force,
        progress=not args.no_progress, download=args.download, eval_ks=eval_ks_for(preset),
        tsne_per_class=preset.tsne_per_class, tsne_classes=preset.tsne_classes,
    )
    t0 = time.perf_counter()
    log.info("preset %s: %d cells for %s", preset.name, len(cells),
             ", ".join(e.name for e in exps))
    summary = Summary()
    if not args.render_only and cells:
        if args.launcher == "submitit":
            executor = make_executor(
                store.base / "submitit", cluster=args.submitit_cluster,
                partition=args.slurm_partition, timeout_min=args.slurm_timeout,
                gpus=args.slurm_gpus, cpus=args.slurm_cpus,
            )
            summary = run_submitit(cells, opts, executor, progress=not args.no_progress)
        else:
            summary = run_local(cells, opts, progress=not args.no_progress)

    seeds = tuple(args.seeds) if args.seeds else None
    written: list[Any] = []
    for exp in exps:
        try:
            if exp.kind == "table":
                paths = render_table(exp, preset, store, seeds)
                print()
                print(paths["md"].read_text())
            else:
                paths = render_figure(exp, preset, store, seeds)
            written += list(paths.values())
        except Exception:  # one broken renderer must not hide the rest
            log.exception("rendering %s failed", exp.name)
    for path in written:
        print(f"wrote {path}")
    summary.wall_s = time.perf_counter() - t0
    for line in summary.problems():
        print(line)
    print(summary.line())
    return 1 if summary.count("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
