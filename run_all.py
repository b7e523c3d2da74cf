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
import ast
import difflib
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
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
    method_params,
    table_rows,
    train_option_names,
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


def _seed_list(text: str) -> list[int]:
    seeds = _int_list(text)
    bad = [s for s in seeds if s < 0]
    if bad:
        raise argparse.ArgumentTypeError(f"seeds must be integers >= 0, got {bad[0]}")
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed, e.g. --seeds 0,1,2")
    return seeds


def _bits_list(text: str) -> list[int]:
    bits = _int_list(text)
    bad = [b for b in bits if b < 1]
    if bad:
        raise argparse.ArgumentTypeError(f"code lengths must be positive integers, got {bad[0]}")
    return bits


def _override(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value); the value is a Python literal when it parses as one."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. epochs=100), got {text!r}")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()  # a bare word: a string option such as backbone=linear
    return key, value


def _tune_trials(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tune needs a number of trials, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--tune needs at least 1 trial, got {value}")
    return value


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
                      "(CIFAR-10/ImageNet-100 vs recent methods), unseen (classes the hash "
                      "function never saw), claims (whether each of the paper's claims holds "
                      "here, with the numbers and a paired bootstrap: runs the cells of Tables "
                      "1-3 and Fig. 7, writes tables/claims.{md,csv}). Repeatable.")
    what.add_argument("--figure", action="append", choices=FIGURE_CHOICES, default=[],
                      help="figure to regenerate: pr (Fig. 8, precision-recall at 48 bits), "
                      "t-sensitivity (Fig. 6), alpha-sensitivity (Fig. 7), kt-loss (Fig. 4), "
                      "distribution (Figs. 3/5, u before thresholding), tsne (Fig. 9), "
                      "retrieval (Figs. 10/11: top-5 of two seeded queries, from stored codes). "
                      "Repeatable.")
    what.add_argument("--all", action="store_true",
                      help="every table (the claims included) and every figure")
    what.add_argument("--preset", choices=list(PRESETS), default="cpu",
                      help="setting and data: smoke (digits, about a minute on 2 cores), cpu (real offline "
                      "data: CIFAR-10 + MIRFlickr-25K, trained to convergence: Table 3 alone took 6.7 h of "
                      "one-thread job time here, so run it in the background; it resumes), paper "
                      "(the paper's "
                      "datasets and AlexNet, 200 epochs: a GPU job), test (tiny, for the tests). "
                      "Default: cpu")
    what.add_argument("--list-methods", action="store_true",
                      help="print the method registry (name, shallow/deep, paper) and exit; "
                      "with --verbose also every method's parameters (the keys of --set)")
    what.add_argument("--verbose", action="store_true",
                      help="with --list-methods: list each method's parameters too")
    what.add_argument("--list-datasets", action="store_true",
                      help="print every data protocol: whether its data is present, where it "
                      "looked, split sizes; then exit")

    narrow = p.add_argument_group("narrow a run (tables still show every cell; others: missing)")
    narrow.add_argument("--datasets", type=_str_list, default=None, metavar="A,B",
                        help="only cells on these datasets: a protocol name as --list-datasets "
                        "prints it (e.g. digits, cifar10, mirflickr25k), the dataset key a preset "
                        "gives it (e.g. cifar10_mobilenet, also listed there), or the paper's "
                        "column (nus_wide, coco, imagenet100). An unknown name is an error.")
    narrow.add_argument("--methods", type=_str_list, default=None, metavar="M,N",
                        help="only cells of these registry names (see --list-methods); a "
                        "registered method that a table does not list (e.g. from --plugin) is "
                        "added to it as a row of its own. An unknown name is an error.")
    narrow.add_argument("--bits", type=_bits_list, default=None, metavar="16,32",
                        help="only cells with these code lengths (one the selected tables do not "
                        "use is an error)")
    narrow.add_argument("--seeds", type=_seed_list, default=None, metavar="0,1,2",
                        help="seeds to run and aggregate (mean +- std); default: the preset's (0)")

    fair = p.add_argument_group("recipes and tuning (deep methods' training recipe; an equal "
                                "tuning budget for every method)")
    fair.add_argument("--recipe", choices=["shared", "published"], default=None,
                      help="deep methods' training recipe: shared (one recipe for everyone, the "
                      "preset's: what the DPAH paper implies) or published (each method's "
                      "official recipe, methods/deep/recipes.py, each entry citing its file). "
                      "Default: published in the paper preset, shared elsewhere. Every table "
                      "says which recipe each row used.")
    fair.add_argument("--tune", type=_tune_trials, default=None, metavar="N",
                      help="give every method the same N Optuna trials on each dataset column, "
                      "over the search space declared next to its class (lr plus at most two "
                      "of its own knobs), scored by mAP on validation queries drawn from the "
                      "training split and ranked against the rest of it (never the query set "
                      "or database); tuned at one code length (the preset's tune_bits) and "
                      "reused at the others; the best configuration is retrained on the whole "
                      "training split. Resumable: trials are stored in "
                      "<results>/<preset>/tuning/.")

    own = p.add_argument_group("your own method and settings")
    own.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                     help="import this Python file or module before the registry is read, so "
                     "that the methods it @register-s can be run (with --methods NAME). "
                     "Repeatable.")
    own.add_argument("--set", dest="overrides", action="append", type=_override, default=[],
                     metavar="KEY=VALUE",
                     help="override a setting; part of every cell's key (so it never reuses a "
                     "result computed without it) and printed under every table; the tables and "
                     "figures go to <results>/<preset>/set-KEY=VALUE,.../, never over the "
                     "preset's. KEY is a deep "
                     "training option, applied to every deep cell (epochs, lr, batch_size, "
                     "momentum, weight_decay, hash_lr_mult, backbone, mlp_hidden, input_scaling, "
                     "augment, val_fraction, amp, pretrained, from_scratch, weights_path), a "
                     "hyper-parameter name, applied to every method that has it (e.g. alpha), "
                     "or METHOD.PARAM for one method (e.g. dpah.alpha=0.4, sdh.n_anchors=500); "
                     "--list-methods --verbose lists each method's parameters. VALUE is a Python "
                     "literal (100, 0.005, True, 'linear') or a bare word. Repeatable.")

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
                       help="where cell results, tables and figures go (default: results/); "
                       "must be a writable folder (it is created if absent)")
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
    how.add_argument("--style", choices=["default", "paper"], default="default",
                     help="figures: default (titles, the preset banner and which offline data "
                     "fills which paper column) or paper (no banners or titles, (a)/(b)/(c) "
                     "panel labels, sizes and fonts for a paper column); tables are the same")
    how.add_argument("--no-progress", action="store_true",
                     help="no progress bars (they are off anyway when stderr is not a terminal: "
                     "then one log line per finished cell)")
    how.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


# ------------------------------------------------------------------------------ listings
def list_methods(verbose: bool = False) -> str:
    """The registry as a table: name, kind, input, variant of, what ``--tune`` searches (the
    class's ``search_space``), paper (and, verbose, every parameter)."""
    try:
        from methods import registry
    except Exception as exc:  # noqa: BLE001
        return f"the methods package is not importable: {type(exc).__name__}: {exc}"
    train = train_option_names()
    methods = sorted(registry().items(), key=lambda kv: (kv[1].kind != "shallow", kv[0]))
    searched = {name: ", ".join(getattr(cls, "search_space", None) or {}) or "-"
                for name, cls in methods}
    w_name = max(len("name"), *(len(name) for name, _ in methods))
    w_tune = max(len("--tune searches"), *(len(v) for v in searched.values()))
    header = (f"{'name':{w_name}s} {'kind':8s} {'input':9s} {'variant of':12s} "
              f"{'--tune searches':{w_tune}s} paper")
    lines = [header]
    for name, cls in methods:
        lines.append(f"{name:{w_name}s} {cls.kind:8s} {cls.input_kind:9s} "
                     f"{getattr(cls, 'variant_of', '') or '-':12s} {searched[name]:{w_tune}s} "
                     f"{getattr(cls, 'paper', '')}")
        if verbose:
            own = sorted(method_params(name) - train)
            lines.append(f"{'':{w_name}s} parameters: {', '.join(own) or '(none)'}")
    from methods.search import LR

    lines.append(f"{len(methods)} methods registered; --tune N gives each the same N trials per "
                 f"column over the parameters listed (lr: log-uniform {LR.low:g} to {LR.high:g} "
                 "for every deep method)")
    if verbose:
        lines.append(f"deep training options (every deep method): {', '.join(sorted(train))}")
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
        keys = sorted({c.dataset.key for pr in PRESETS.values()
                       for c in pr.columns + pr.appendix_columns
                       if c.dataset is not None and c.dataset.protocol == name})
        if keys and keys != [name]:
            lines.append(f"    dataset keys in the presets: {', '.join(keys)} (--datasets takes "
                         "either)")
        how = d.pop("how_to_get", None)
        if how and not present and str(how) not in looked:
            lines.append(f"    how to get it: {how}")
        for key, value in d.items():
            lines.append(f"    {key.replace('_', ' ')}: {value}")
    used = sorted({c.dataset.protocol for p in PRESETS.values() for c in p.columns
                   if c.dataset is not None})
    lines.append(f"protocols used by the presets: {', '.join(used)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ checks
class UsageError(Exception):
    """A command-line value that names nothing (reported by argparse's error, exit status 2)."""


def _nearest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(what: str, name: str, valid: list[str]) -> UsageError:
    return UsageError(f"unknown {what} {name!r}{_nearest(name, valid)}; valid: "
                      + ", ".join(valid))


def overrides_folder(overrides: list[tuple[str, Any]]) -> str:
    """The output folder name of a run with ``--set``: ``set-KEY=VALUE,...`` (characters a
    folder name should not hold become ``_``), or ``set-<hash>`` when that would be long."""
    import hashlib
    import re

    text = ",".join(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
                    for key, value in overrides)
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)
    if len(name) > 80:
        name = hashlib.sha1(text.encode()).hexdigest()[:12]
    return f"set-{name}"


def check_overrides(overrides: list[tuple[str, Any]], cells: list[Cell]) -> None:
    """Every ``--set`` key must name a parameter of at least one selected method."""
    from methods import registry

    names = sorted(registry())
    train = train_option_names()
    methods = sorted({c.method for c in cells})
    for key, _value in overrides:
        target, _, param = key.rpartition(".")
        if target:
            if target not in names:
                raise _unknown("method in --set", target, names)
            valid = sorted(method_params(target) | (train if registry()[target].kind == "deep"
                                                     else set()))
            if param not in valid:
                raise UsageError(f"--set {key}: {target} has no parameter {param!r}"
                                 f"{_nearest(param, valid)}; its parameters: "
                                 + (", ".join(valid) or "(none)"))
            continue
        deep = any(registry()[m].kind == "deep" for m in methods if m in names)
        valid = sorted(set(train if deep else ()).union(*(method_params(m) for m in methods)))
        if param not in valid:
            raise UsageError(f"--set {key}: no selected method has a parameter {param!r}"
                             f"{_nearest(param, valid)}; valid keys here: {', '.join(valid)} "
                             "(or METHOD.PARAM)")


def check_filters(args: argparse.Namespace, cells: list[Cell], preset: Preset) -> None:
    """Every name in --methods / --datasets / --bits must name something the run could do."""
    from methods import registry

    names = sorted(set(registry()) | {c.method for c in cells})
    for m in args.methods or []:
        if m not in names:
            raise _unknown("method", m, names)
    datasets = sorted({c.dataset.key for c in cells} | {c.dataset.protocol for c in cells}
                      | {col.paper_key for col in preset.columns + preset.appendix_columns
                         if col.dataset is not None})
    for d in args.datasets or []:
        if d not in datasets:
            raise _unknown("dataset", d, datasets)
    bits = sorted({c.bits for c in cells})
    for b in args.bits or []:
        if b not in bits:
            raise UsageError(f"no selected cell has {b} bits; the selected tables and figures "
                             f"use {', '.join(map(str, bits))}")


def check_results_dir(path: str) -> None:
    """Fail before any work when results cannot be written there (naming the path and why)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"--results-dir {p.resolve()} is a file, not a folder")
    probe_dir = p
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UsageError(f"--results-dir {p.resolve()}: {probe_dir} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".hashbench-write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"--results-dir {p.resolve()}: cannot write in {probe_dir.resolve()} "
                         f"({exc.strerror or exc}); choose a writable folder") from None


# ------------------------------------------------------------------------------ planning
def selected_experiments(args: argparse.Namespace) -> list[Experiment]:
    tables = TABLE_CHOICES if args.all else args.table
    figures = FIGURE_CHOICES if args.all else args.figure
    out = [TABLES[t] for t in dict.fromkeys(tables)]
    out += [FIGURES[f] for f in dict.fromkeys(figures)]
    return out


def plan_cells(exps: list[Experiment], preset: Preset, args: argparse.Namespace) -> list[Cell]:
    """Cells of the selected experiments, deduplicated, narrowed by the command-line filters.

    A name in a filter that matches nothing is an error (:class:`UsageError`), and so is a set of
    filters that together leave no cell.
    """
    cells: list[Cell] = []
    for exp in exps:
        cells += cells_for(exp, preset, tuple(args.seeds) if args.seeds else None)
    cells = dedupe(cells)
    check_filters(args, cells, preset)
    if args.overrides:
        check_overrides(args.overrides, cells)
    every = cells
    if args.methods:
        cells = [c for c in cells if c.method in args.methods]
    if args.bits:
        cells = [c for c in cells if c.bits in args.bits]
    if args.datasets:
        paper_keys = {col.paper_key: col.dataset.key for col in
                      preset.columns + preset.appendix_columns if col.dataset is not None}
        wanted = set(args.datasets) | {paper_keys[d] for d in args.datasets if d in paper_keys}
        cells = [c for c in cells if c.dataset.key in wanted or c.dataset.protocol in wanted]
    if every and not cells:
        given = " ".join(f"--{flag} {','.join(map(str, getattr(args, flag)))}"
                         for flag in ("methods", "datasets", "bits") if getattr(args, flag))
        raise UsageError(f"{given} leave no cell of {', '.join(e.name for e in exps)} "
                         f"(which has methods {', '.join(sorted({c.method for c in every}))}; "
                         f"datasets {', '.join(sorted({c.dataset.key for c in every}))}; "
                         f"bits {', '.join(map(str, sorted({c.bits for c in every})))})")
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
    # one read per cell, and nothing moved: a dry run only looks (a damaged record is "to run")
    finished = {c.cell_id for c in cells if store.load(c.cell_id) is not None}
    done = [c for c in cells if c.cell_id in finished]
    todo = [c for c in cells if c.cell_id not in finished]
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
    """The command line (also installed as the ``hashbench`` command)."""
    try:
        return _main(argv)
    except BrokenPipeError:  # e.g. `--dry-run | head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", force=True,
    )
    logging.captureWarnings(True)  # e.g. a damaged checkpoint's warning goes to the same log
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    from benchmarks.runner.plugins import PluginError, load_plugins

    plugins = tuple(str(Path(p).resolve()) if p.endswith(".py") or Path(p).exists() else p
                    for p in args.plugin)
    try:
        load_plugins(plugins)
    except PluginError as exc:
        parser.error(str(exc))
    if args.list_methods:
        print(list_methods(args.verbose))
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
    preset = replace(preset, overrides=tuple(args.overrides),
                     extra_methods=_extra_methods(args, exps, preset))
    # tables/figures of another recipe, a tuned run or --set overrides go to a folder of their
    # own, so they never overwrite the preset's
    variant = []
    if args.recipe and args.recipe != preset.recipe:
        variant.append(f"recipe-{args.recipe}")
    if args.tune:
        variant.append(f"tuned-{args.tune}")
    if args.overrides:
        variant.append(overrides_folder(args.overrides))
    if variant:
        outputs = "/".join(p for p in (outputs, "-".join(variant)) if p)
    if args.recipe:
        preset = replace(preset, recipe=args.recipe)
    if args.tune:
        from benchmarks.runner.tuning import TuneSpec

        spec = TuneSpec(n_trials=args.tune, bits=preset.tune_bits)
        preset = replace(preset, tune=tuple(sorted((k, v) for k, v in vars(spec).items()
                                                   if k != "bits")))
    try:
        cells = plan_cells(exps, preset, args)
    except UsageError as exc:
        parser.error(str(exc))
    if args.dry_run:
        print(dry_run(cells, preset, args, outputs))
        return 0
    try:
        check_results_dir(args.results_dir)
    except UsageError as exc:
        parser.error(str(exc))

    from benchmarks.render import (
        FIGURE_FILES,
        missing_inputs,
        render_claims,
        render_figure,
        render_table,
    )
    from benchmarks.runner.cell import RunOptions, eval_ks_for
    from benchmarks.runner.launchers import Summary, make_executor, run_local, run_submitit
    from benchmarks.runner.results import ResultStore

    progress = not args.no_progress and sys.stderr.isatty()
    store = ResultStore(args.results_dir, preset.name, outputs)
    opts = RunOptions(
        results_dir=str(Path(args.results_dir).resolve()), preset=preset.name,
        data_root=args.data_root, device=args.device, force=args.force,
        progress=progress, download=args.download, eval_ks=eval_ks_for(preset),
        tsne_per_class=preset.tsne_per_class, tsne_classes=preset.tsne_classes,
        plugins=plugins,
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
            summary = run_submitit(cells, opts, executor, progress=progress)
        else:
            summary = run_local(cells, opts, progress=progress)

    seeds = tuple(args.seeds) if args.seeds else None
    written: list[Any] = []
    render_failed: list[str] = []
    figure_gaps: list[str] = []
    for exp in exps:
        try:
            if exp.kind == "table":
                render = render_claims if exp.layout == "claims" else render_table
                paths = render(exp, preset, store, seeds)
                print()
                print(paths["md"].read_text())
            else:
                paths = render_figure(exp, preset, store, seeds, style=args.style,
                                      data_root=args.data_root)
                lacking = missing_inputs(exp, preset, store, seeds, data_root=args.data_root)
                if lacking:
                    files = FIGURE_FILES[exp.name]
                    files = files if isinstance(files, str) else ", ".join(files)
                    figure_gaps.append(f"{files}: {len(lacking)} input"
                                       f"{'s' * (len(lacking) > 1)} missing: "
                                       + "; ".join(lacking))
            written += list(paths.values())
        except Exception as exc:  # one broken renderer must not hide the rest
            log.exception("rendering %s failed", exp.name)
            render_failed.append(f"{exp.name}: {type(exc).__name__}: {exc}")
    for path in written:
        print(f"wrote {path}")
    summary.wall_s = time.perf_counter() - t0
    for line in summary.problems():
        print(line)
    for path, reason in store.damaged:
        print(f"  DAMAGED record {path}: {reason} (shown as missing; run without --render-only "
              "to move it aside and recompute the cell)")
    for line in figure_gaps:
        print(f"  FIGURE INCOMPLETE {line}")
    for line in render_failed:
        print(f"  RENDERING FAILED {line} (its old output, if any, was left in place)")
    print(summary.line())
    return 1 if summary.count("failed") or render_failed or store.damaged else 0


def _extra_methods(args: argparse.Namespace, exps: list[Experiment],
                   preset: Preset) -> tuple[str, ...]:
    """Registered methods named in --methods that no selected table lists: extra table rows."""
    if not args.methods:
        return ()
    from methods import registry

    listed = {r.method for e in exps for r in table_rows(e, preset)}
    if not any(e.kind == "table" for e in exps):
        return ()
    return tuple(m for m in args.methods if m in registry() and m not in listed)


if __name__ == "__main__":
    sys.exit(main())
