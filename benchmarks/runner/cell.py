"""The job of one cell, end to end (:func:`run_cell`); :mod:`benchmarks.runner.launchers` runs many.

A cell loads its dataset through ``data_protocols``, builds its method from the registry, fits,
encodes the queries and the database, evaluates with ``benchmarks.metrics`` and writes one result
record (plus packed codes) through :class:`~benchmarks.runner.results.ResultStore`. Nothing here is
invented: a method or protocol that is not importable, or data that is not on disk, makes the cell
*missing* (reported with the reason; re-run later), an exception makes it *failed* (reported; the
sweep goes on), and a training run whose loss went non-finite or that its method reports as not
converged is stored as *N/C*.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runner.experiments import Cell, Preset, dataset_spec_dict
from benchmarks.runner.results import (
    TIE_RULE,
    ResultStore,
    environment,
    pack_codes,
    utc_now,
)
from benchmarks.runner.tuning import StudyBusy

__all__ = [
    "MissingComponent",
    "Outcome",
    "RunOptions",
    "ensure_tsne",
    "eval_ks_for",
    "run_cell",
]

log = logging.getLogger("hashbench.runner")

#: u histograms (Figs. 3/5): bin edges from -40 to 40 in steps of 0.5 (the paper's axis is +-35)
U_HIST_EDGES = np.linspace(-40.0, 40.0, 161)


class MissingComponent(RuntimeError):
    """A method, protocol, metric module or dataset this cell needs is not available."""


class DegenerateDataError(ValueError):
    """Data on which no ranking is meaningful (refused rather than scored)."""


#: warn when more than this share of the database items get one and the same code
IDENTICAL_CODES_WARN = 0.5


def check_rankable(bench: Any, label: str) -> None:
    """Refuse data whose mAP would mean nothing: fewer than 2 labels in use among the queries
    and the database (every item relevant to every query: mAP 1.0 whatever the codes), or no
    query with a relevant item anywhere in the database (mAP 0 or undefined)."""
    q = np.asarray(bench.targets("query")).astype(bool)
    db = np.asarray(bench.targets("database")).astype(bool)
    in_use = int((q.any(0) | db.any(0)).sum())
    if in_use < 2:
        raise DegenerateDataError(
            f"{label}: its queries and database use {in_use} label: every item is relevant to "
            "every query, so every method would score mAP 1.0. Use data with at least 2 classes")
    with_relevant = int((q & db.any(0)).any(1).sum())
    if with_relevant == 0:
        raise DegenerateDataError(
            f"{label}: none of its {len(q):,} queries shares a label with any of the "
            f"{len(db):,} database items, so no ranking can find anything. Use more items or "
            "more queries (--n-query)")


def code_statistics(db_codes: np.ndarray) -> dict[str, Any]:
    """How many distinct database codes there are, and the share of the most common one."""
    packed = np.ascontiguousarray(pack_codes(db_codes))
    rows = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, counts = np.unique(rows, return_counts=True)
    return {"distinct_db_codes": len(counts),
            "largest_code_share": float(counts.max() / len(rows)) if len(rows) else 0.0}


@dataclass
class RunOptions:
    """Everything a cell needs besides its identity (picklable, so it travels to Slurm jobs)."""

    results_dir: str
    preset: str
    data_root: str | None = None
    device: str | None = None
    force: bool = False
    progress: bool = False
    #: let protocols that can (CIFAR-10, Fashion-MNIST) fetch missing data with torchvision
    download: bool = False
    #: evaluation cutoffs per dataset key (None = mAP@all); see :func:`eval_ks_for`
    eval_ks: dict[str, list[int | None]] = field(default_factory=dict)
    tsne_per_class: int = 100
    tsne_classes: int = 20
    #: ``--plugin`` files/modules, imported again in every cell's process (e.g. a Slurm job)
    plugins: tuple[str, ...] = ()
    #: a tuned cell whose study has every trial of its budget taken, some still running in
    #: another process, waits for them (True), or is set aside with the outcome ``"deferred"``
    #: (False: the local launcher's first pass, so the worker computes other cells meanwhile)
    wait_for_studies: bool = True


@dataclass
class Outcome:
    """What happened to one cell."""

    cell_id: str
    #: "done" | "nc" | "skipped" | "failed" | "missing" | "busy" (another process holds the
    #: cell) | "deferred" (its study's last trials run in another process: wait_for_studies)
    status: str
    reason: str = ""
    wall_s: float = 0.0


def eval_ks_for(preset: Preset) -> dict[str, list[int | None]]:
    """Cutoffs to evaluate on each dataset: every column's K, and always mAP@all."""
    ks: dict[str, list[int | None]] = {}
    cols = list(preset.columns) + list(preset.appendix_columns) + [preset.table2_column]
    cols += list(getattr(preset, "unseen_columns", ()))
    for col in cols:
        if col.dataset is None:
            continue
        lst = ks.setdefault(col.dataset.key, [None])
        if col.k not in lst:
            lst.append(col.k)
    return ks


# ------------------------------------------------------------------------------ components
def _import_protocols():
    try:
        import data_protocols
    except Exception as exc:  # noqa: BLE001 — not landed yet, or broken
        raise MissingComponent(
            f"data_protocols is not importable ({type(exc).__name__}: {exc})"
        ) from None
    return data_protocols


def _import_metrics():
    try:
        from benchmarks import metrics
    except Exception as exc:  # noqa: BLE001
        raise MissingComponent(
            f"benchmarks.metrics is not importable ({type(exc).__name__}: {exc})"
        ) from None
    if not hasattr(metrics, "evaluate") or not hasattr(metrics, "map_at_k"):
        raise MissingComponent("benchmarks.metrics has no evaluate()/map_at_k() yet")
    return metrics


def _method_class(name: str):
    try:
        from methods import get_method
    except Exception as exc:  # noqa: BLE001
        raise MissingComponent(
            f"methods is not importable ({type(exc).__name__}: {exc})"
        ) from None
    try:
        return get_method(name)
    except KeyError:
        raise MissingComponent(
            f"method {name!r} is not registered (not implemented yet?)"
        ) from None


_BENCH_CACHE: dict[tuple, Any] = {}


def _load_benchmark(cell: Cell, input_kind: str, opts: RunOptions, store: ResultStore):
    """Load (and memoise: a sweep reuses one dataset for many cells) the cell's benchmark."""
    ds = cell.dataset
    key = (ds.key, ds.protocol, ds.variant, ds.feature_backbone, ds.split_seed, input_kind,
           opts.data_root)
    if key in _BENCH_CACHE:
        return _BENCH_CACHE[key]
    dp = _import_protocols()
    try:
        protocol = dp.get_protocol(ds.protocol)
    except KeyError as exc:
        raise MissingComponent(f"protocol {ds.protocol!r} is not available: {exc}") from None
    data_root = opts.data_root if opts.data_root is not None else dp.DEFAULT_DATA_ROOT
    # the feature cache is the protocols' own (results/cache/ or $HASHBENCH_CACHE_DIR), shared by
    # every results directory: features are expensive and do not depend on the preset
    kwargs: dict[str, Any] = {"input_kind": input_kind, "progress": opts.progress}
    if input_kind == "features" and ds.feature_backbone is not None:
        kwargs["feature_backbone"] = ds.feature_backbone
    kwargs.update(ds.variant_dict())
    if opts.download and "download" in getattr(protocol, "options", {}):
        kwargs["download"] = True
    try:
        bench = protocol.load(data_root, ds.split_seed, **kwargs)
    except dp.DatasetNotFoundError as exc:
        raise MissingComponent(f"dataset {ds.label} not found: {exc}") from None
    if len(_BENCH_CACHE) >= 2:  # keep memory bounded: at most two datasets in memory
        _BENCH_CACHE.pop(next(iter(_BENCH_CACHE)))
    _BENCH_CACHE[key] = bench
    return bench


def _split_is_complete(directory: Path, split_hash: str) -> bool:
    """A split folder is trusted only when every list is there and matches its stored hash."""
    from data_protocols.core import Split

    try:
        return Split.load(directory).hash() == split_hash and (directory / "split.json").is_file()
    except (OSError, ValueError):
        return False


def _save_split(bench: Any, cell: Cell, store: ResultStore) -> str:
    """Write the cell's split under ``splits/`` once; safe with several writers at a time.

    Each writer builds the folder under its own temporary name and moves it into place; a folder
    that exists but is incomplete (a writer died half-way, files were edited) is replaced.
    """
    split_hash = str(bench.split.hash())
    target = store.splits_dir / f"{cell.dataset.key}-{split_hash}"
    if target.is_dir() and _split_is_complete(target, split_hash):
        return split_hash
    store.splits_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=store.splits_dir, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        bench.split.save(tmp)
        for path in tmp.iterdir():
            path.chmod(0o644)
        tmp.chmod(0o755)
        if target.exists() and not _split_is_complete(target, split_hash):
            log.warning("split folder %s is incomplete: rewriting it", target)
            aside = Path(tempfile.mkdtemp(dir=store.splits_dir, prefix=f".{target.name}.broken."))
            try:
                target.rename(aside / target.name)
            except OSError:  # another writer repaired it first
                pass
            shutil.rmtree(aside, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:  # another writer saved a complete copy first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return split_hash


def _is_nonfinite_failure(exc: BaseException) -> bool:
    """A training run that died of a NaN/inf loss did not converge (N/C), it did not crash."""
    if isinstance(exc, FloatingPointError):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(w in text for w in ("nan", "non-finite", "nonfinite", "not finite", "inf loss"))


def _u_histogram(method: Any, X: Any) -> dict[str, Any]:
    u = np.asarray(method.raw_outputs(X), dtype=np.float64).ravel()
    counts, _ = np.histogram(u, bins=U_HIST_EDGES)
    return {
        "edges": U_HIST_EDGES.tolist(),
        "counts": counts.tolist(),
        "below": int(np.sum(u < U_HIST_EDGES[0])),
        "above": int(np.sum(u > U_HIST_EDGES[-1])),
        "n": int(u.size),
        "min": float(u.min()),
        "max": float(u.max()),
        "mean": float(u.mean()),
        "std": float(u.std()),
        "part": "train",
    }


def _construct(cls: Any, cell: Cell, opts: RunOptions, store: ResultStore,
               tuned: dict[str, Any] | None = None) -> Any:
    kwargs: dict[str, Any] = {**dict(cell.hyper), **(tuned or {})}
    if cls.kind == "deep":
        kwargs.update({k: v for k, v in dict(cell.train).items() if k not in (tuned or {})})
        ckpt = store.checkpoint_dir(cell.cell_id)
        kwargs.update(checkpoint_dir=str(ckpt), resume=True, progress=opts.progress)
        if opts.device:
            kwargs["device"] = opts.device
        weights = _weights_in_data_root(kwargs.get("backbone"), opts.data_root)
        if weights is not None and kwargs.get("weights_path") is None:
            kwargs["weights_path"] = str(weights)
    try:
        return cls(n_bits=cell.bits, seed=cell.seed, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{cls.__name__} rejected the cell's settings {kwargs}: {exc}") from None


def _weights_in_data_root(backbone: str | None, data_root: str | None) -> Path | None:
    """A torchvision backbone's ImageNet weights under ``<--data-root>/weights/``, if there."""
    if backbone is None or data_root is None:
        return None
    from methods.deep.backbones import TORCHVISION_WEIGHT_FILES

    for name in TORCHVISION_WEIGHT_FILES.get(backbone, ()):
        path = Path(data_root).expanduser() / "weights" / name
        if path.is_file():
            return path
    return None


def _evaluate(metrics: Any, codes: dict[str, np.ndarray], ks: list[int | None]) -> dict[str, Any]:
    """The metrics dict of a cell: ``evaluate`` at the smallest cutoff plus mAP at every cutoff."""
    finite = sorted(k for k in ks if k is not None)
    primary = finite[0] if finite else None
    qc, dc, ql, dl = codes["query"], codes["db"], codes["query_labels"], codes["db_labels"]
    result = dict(metrics.evaluate(qc, dc, ql, dl, k=primary, no_hit="drop"))
    result["k"] = primary
    map_at: dict[str, float] = {}
    for k in [None, *finite]:
        name = "all" if k is None else str(k)
        if k is None and "map" in result:
            map_at[name] = float(result["map"])
        elif k == primary and "map_at_k" in result:
            map_at[name] = float(result["map_at_k"])
        else:
            map_at[name] = float(metrics.map_at_k(qc, dc, ql, dl, k=k, no_hit="drop"))
    result["map_at"] = map_at
    return result


# ------------------------------------------------- reference rows and per-query AP (issue 12)
#: record status of a reference cell that does not apply to its data (kept, shown in the table)
NOT_APPLICABLE = "not_applicable"


def drop_empty_label_columns(Y: Any) -> tuple[np.ndarray, list[int]]:
    """The training labels without the columns no training item carries, and their indices.

    The unseen-class protocols keep every label column, the held-out ones all zero in training;
    a class center (DPAH), a classifier head or SDH's regression target would otherwise be
    learned for a class with no example. Pair-wise similarities are unchanged; the query and
    database labels (relevance) keep every column.
    """
    Y = np.asarray(Y)
    empty = ~Y.any(axis=0)
    if not empty.any():
        return Y, []
    return Y[:, ~empty], np.flatnonzero(empty).tolist()


def _reference_not_applicable(cls: Any, cell: Cell, input_kind: str) -> str:
    """Why a reference method (``code_length`` set) cannot run on the cell's data, or ``""``:
    a feature reference on a protocol that gives images only."""
    if not getattr(cls, "code_length", "") or input_kind != "features":
        return ""
    try:
        protocol = _import_protocols().get_protocol(cell.dataset.protocol)
    except (MissingComponent, KeyError):
        return ""  # loading reports it
    if "features" in getattr(protocol, "input_kinds", ("features",)):
        return ""
    return (f"{cell.dataset.label} has no features (protocol {cell.dataset.protocol!r} gives "
            f"images only): the {cell.method} reference ranks features")


def _not_applicable_record(cell: Cell, opts: RunOptions, cls: Any, reason: str) -> dict:
    log.warning("n/a      %s: %s", cell.describe(), reason)
    return {
        "cell_id": cell.cell_id, "cell": cell.key(), "preset": opts.preset,
        "status": NOT_APPLICABLE, "converged": False, "metrics": None,
        "not_applicable_reason": reason,
        "method": {"name": cell.method, "kind": cls.kind, "paper": getattr(cls, "paper", "")},
        "dataset": dataset_spec_dict(cell.dataset), "bits": cell.bits, "seed": cell.seed,
        "backbone": cell.backbone, "environment": environment(opts.device), "utc_time": utc_now(),
    }


def _mean_kept(ap: np.ndarray) -> float:
    """The engine's mean: over the non-NaN entries, 0.0 if there are none."""
    kept = ap[~np.isnan(ap)]
    return float(kept.mean()) if kept.size else 0.0


def _per_query_aps(metrics: Any, codes: dict[str, np.ndarray],
                   map_at: dict[str, float]) -> dict[str, np.ndarray]:
    """``query_ap_<all|K>``: the per-query AP (``no_hit="drop"``: NaN = left out) behind every
    stored mAP, for the tables' paired bootstrap (benchmarks/stats.py) without recomputing."""
    out = {}
    for name in map_at:
        k = None if name == "all" else int(name)
        out[f"query_ap_{name}"] = metrics.per_query_ap(codes["query"], codes["db"],
                                                       codes["query_labels"], codes["db_labels"],
                                                       k=k, no_hit="drop")
    return out


def _classifier_metrics(cls: Any, codes: dict[str, np.ndarray]) -> dict[str, Any]:
    """Classifier codes: their length and, when code and label columns match, the share of
    queries whose predicted label set is their label set (single-label: accuracy)."""
    if getattr(cls, "code_length", "") != "n_classes":
        return {}
    q, ql = codes["query"], codes["query_labels"]
    out: dict[str, Any] = {"code_length": int(q.shape[1])}
    if q.shape == ql.shape:
        out["query_exact_match"] = float(np.all(q == ql, axis=1).mean())
    return out


def _job_timing(fit_s: float, encode_s: float | None, eval_s: float | None, fit_cpu_s: float,
                cpu0: float) -> dict[str, float | None]:
    """A record's ``timing``: wall seconds of fit, encode and eval, and the CPU seconds of this
    process for the fit (``fit_cpu_s``) and the whole job since the fit began (``cpu_s``). Wall
    seconds grow when other jobs share the cores; CPU seconds are what the job costs a core."""
    return {"fit_s": fit_s, "encode_s": encode_s, "eval_s": eval_s, "fit_cpu_s": fit_cpu_s,
            "cpu_s": time.process_time() - cpu0}


def _cosine_cell(method: Any, bench: Any, metrics: Any, record: dict, fit_s: float,
                 ks: list[int | None], fit_cpu_s: float, cpu0: float) -> tuple[dict, dict]:
    """A float-ranking reference (``ranking = "cosine"``): embed, rank by cosine similarity
    (``benchmarks.metrics.cosine_per_query_ap``), store per-query APs and no binary codes."""
    t0 = time.perf_counter()
    q, db = method.embed(bench.inputs("query")), method.embed(bench.inputs("database"))
    encode_s = time.perf_counter() - t0
    ql = np.asarray(bench.targets("query"), dtype=np.uint8)
    dl = np.asarray(bench.targets("database"), dtype=np.uint8)
    t0 = time.perf_counter()
    query_ap, map_at = {}, {}
    for k in [None, *sorted(k for k in ks if k is not None)]:
        name = "all" if k is None else str(k)
        query_ap[f"query_ap_{name}"] = metrics.cosine_per_query_ap(q, db, ql, dl, k=k,
                                                                   no_hit="drop")
        map_at[name] = _mean_kept(query_ap[f"query_ap_{name}"])
    finite = sorted(k for k in ks if k is not None)
    result = {"ranking": "cosine", "k": finite[0] if finite else None, "no_hit": "drop",
              "tie_rule": "descending cosine similarity; ties by ascending database index",
              "n_queries": len(q), "n_database": len(db), "embedding_dim": int(q.shape[1]),
              "map_at": map_at}
    record.update(status="ok", converged=True, nc_reason="", metrics=result,
                  timing=_job_timing(fit_s, encode_s, time.perf_counter() - t0, fit_cpu_s, cpu0),
                  history=None)
    record["map_convention"] = {**record["map_convention"], "tie_rule": result["tie_rule"]}
    packed = {
        "query_labels": pack_codes(ql), "db_labels": pack_codes(dl),
        "n_labels": np.array(ql.shape[1]),
        "query_index": np.asarray(bench.split.query),
        "db_index": np.asarray(bench.split.database),
        **query_ap,
    }
    return record, packed


def run_cell(cell: Cell, opts: RunOptions) -> Outcome:
    """Run one cell and store its result; a method or data problem is reported, not raised.

    The cell is claimed with a lock file first: when another live process holds it, nothing is
    computed and the outcome is ``"busy"`` (the local launcher waits for it and then reads its
    result).
    """
    store = ResultStore(opts.results_dir, opts.preset)
    t_start = time.perf_counter()
    if opts.plugins:
        from benchmarks.runner.plugins import load_plugins

        load_plugins(opts.plugins)
    cid = cell.cell_id  # after the plugins: a plugin method's results_version is part of the id
    if not opts.force and store.is_done(cid):
        return _skip(store, cell, opts)
    lock = store.claim(cid)
    if not lock.acquire():
        return Outcome(cid, "busy", lock.describe())
    try:
        if not opts.force and store.is_done(cid):  # finished by another process meanwhile
            return _skip(store, cell, opts)
        return _run_claimed(cell, opts, store, t_start)
    finally:
        lock.release()


def _skip(store: ResultStore, cell: Cell, opts: RunOptions) -> Outcome:
    if "tsne" in cell.needs:
        _embed(store, cell, opts)
    return Outcome(cell.cell_id, "skipped", "already done")


def _embed(store: ResultStore, cell: Cell, opts: RunOptions) -> None:
    """The cell's t-SNE embedding; a failure is logged, and the figure shows the panel missing."""
    try:
        ensure_tsne(store, cell, opts)
    except Exception as exc:  # noqa: BLE001 — the result itself is fine
        log.error("t-SNE of %s failed: %s", cell.cell_id, exc)


def _run_claimed(cell: Cell, opts: RunOptions, store: ResultStore, t_start: float) -> Outcome:
    cid = cell.cell_id
    if opts.force:
        shutil.rmtree(store.checkpoint_dir(cid), ignore_errors=True)
    try:
        record, codes = _compute(cell, opts, store)
    except StudyBusy as exc:
        log.info("deferred %s: %s; computing other cells meanwhile", cell.describe(), exc)
        return Outcome(cid, "deferred", str(exc), time.perf_counter() - t_start)
    except MissingComponent as exc:
        log.warning("missing  %s: %s", cell.describe(), exc)
        return Outcome(cid, "missing", str(exc), time.perf_counter() - t_start)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 — one method's bug must not end the sweep
        reason = f"{type(exc).__name__}: {exc}"
        log.error("failed   %s: %s", cell.describe(), reason)
        store.save_failure(cid, {
            "cell": cell.key(), "reason": reason, "traceback": traceback.format_exc(),
            "utc_time": utc_now(),
        })
        return Outcome(cid, "failed", reason, time.perf_counter() - t_start)
    # an embedding of the older codes is stale: recompute it from the new codes (never just drop
    # it, or a figure that another table's run needed would silently lose its input)
    had_tsne = store.tsne_path(cid).exists()
    store.save(record, codes)
    store.tsne_path(cid).unlink(missing_ok=True)
    if had_tsne or "tsne" in cell.needs:
        _embed(store, cell, opts)
    status = "done" if record["converged"] or record["status"] == NOT_APPLICABLE else "nc"
    return Outcome(cid, status, record.get("nc_reason", ""), time.perf_counter() - t_start)


def _compute(cell: Cell, opts: RunOptions, store: ResultStore) -> tuple[dict, dict]:
    """Fit, encode, evaluate: the record and the packed codes of one cell."""
    cls = _method_class(cell.method)
    metrics = _import_metrics()
    method = _construct(cls, cell, opts, store)
    input_kind = method.expected_input() if hasattr(method, "expected_input") else cls.input_kind
    skip = _reference_not_applicable(cls, cell, input_kind)  # reference rows: see below
    if skip:
        return _not_applicable_record(cell, opts, cls, skip), None
    bench = _load_benchmark(cell, input_kind, opts, store)
    check_rankable(bench, cell.dataset.label)
    split_hash = _save_split(bench, cell, store)
    X_train, Y_train = bench.inputs("train"), bench.targets("train")
    Y_train, dropped_labels = drop_empty_label_columns(Y_train)
    tuning = None
    if cell.tune:
        # a cell that pins settings tunes (or reuses) the study of the same cell without
        # them, then keeps its own values (Cell.pinned)
        study_method = method if not cell.pinned else _construct(
            cls, replace(cell, hyper=cell.study_hyper, train=cell.study_train, pinned=()),
            opts, store)
        tuning = _tune(cls, cell, opts, store, study_method, X_train, Y_train, split_hash)
        method = _construct(cls, cell, opts, store, tuned=tuning["values"])

    converged, nc_reason = True, ""
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        method.fit(X_train, Y_train)
    except Exception as exc:
        if cls.kind != "deep" or not _is_nonfinite_failure(exc):
            raise
        converged, nc_reason = False, f"training stopped: {type(exc).__name__}: {exc}"
    fit_s, fit_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0

    record: dict[str, Any] = {
        "cell_id": cell.cell_id,
        "cell": cell.key(),
        "preset": opts.preset,
        "status": None,
        "method": {
            "name": cell.method,
            "kind": cls.kind,
            "paper": getattr(cls, "paper", ""),
            "variant_of": getattr(cls, "variant_of", ""),
            "params": _safe_params(method),
        },
        "dataset": {
            **dataset_spec_dict(cell.dataset),
            "protocol_description": getattr(bench, "description", None),
            "split_hash": split_hash,
            "sizes": bench.split.sizes(),
            "input_kind": input_kind,
            "info": getattr(bench, "info", {}),
            "train_label_columns_dropped": dropped_labels,
        },
        "bits": cell.bits,
        "seed": cell.seed,
        "backbone": cell.backbone,
        "recipe": cell.recipe,
        "recipe_gaps": dict(cell.recipe_gaps),
        "tuned_values": tuning["values"] if tuning else None,
        "tuning": tuning,
        "map_convention": {
            "no_hit": "drop",
            "no_hit_meaning": "queries with no relevant item in the top K are left out of the "
            "mean (HashNet's convention)",
            "tie_rule": TIE_RULE,
            "relevance": "query and item share at least one label",
        },
        "environment": environment(opts.device),
        "utc_time": utc_now(),
    }
    if not converged:
        record.update(status="nc", converged=False, nc_reason=nc_reason, metrics=None,
                      timing=_job_timing(fit_s, None, None, fit_cpu_s, cpu0),
                      history=_history(method))
        return record, None
    if getattr(cls, "ranking", "") == "cosine":  # unhashed features: no binary code
        return _cosine_cell(method, bench, metrics, record, fit_s,
                            opts.eval_ks.get(cell.dataset.key, [None]), fit_cpu_s, cpu0)

    t0 = time.perf_counter()
    try:
        codes = {
            "query": method.encode(bench.inputs("query")),
            "db": method.encode(bench.inputs("database")),
        }
    except Exception as exc:  # a network whose outputs are NaN/inf did not converge
        if cls.kind != "deep" or not _is_nonfinite_failure(exc):
            raise
        record.update(status="nc", converged=False, metrics=None,
                      nc_reason=f"encoding failed: {type(exc).__name__}: {exc}",
                      timing=_job_timing(fit_s, None, None, fit_cpu_s, cpu0),
                      history=_history(method))
        return record, None
    encode_s = time.perf_counter() - t0
    code_stats = code_statistics(codes["db"])
    if code_stats["largest_code_share"] > IDENTICAL_CODES_WARN:
        n_db = len(codes["db"])
        log.warning("%s: %d of %d database items share one code (%d distinct codes): the "
                    "ranking is mostly ties (constant or uninformative features?)",
                    cell.describe(), round(code_stats["largest_code_share"] * n_db), n_db,
                    code_stats["distinct_db_codes"])
    codes["query_labels"] = np.asarray(bench.targets("query"), dtype=np.uint8)
    codes["db_labels"] = np.asarray(bench.targets("database"), dtype=np.uint8)

    convergence = None
    if cls.kind == "deep" and hasattr(method, "convergence_report"):
        report = method.convergence_report(codes=codes["db"])
        converged, nc_reason = bool(report.get("converged", True)), str(report.get("reason", ""))
        convergence = report
        if hasattr(method, "center_shift_report"):  # DPAH: how far its class centers moved
            convergence["center_shift"] = method.center_shift_report()
    t0 = time.perf_counter()
    result_metrics = _evaluate(metrics, codes, opts.eval_ks.get(cell.dataset.key, [None]))
    query_ap = _per_query_aps(metrics, codes, result_metrics["map_at"])
    result_metrics.update(_classifier_metrics(cls, codes))
    eval_s = time.perf_counter() - t0
    if not all(math.isfinite(v) for v in result_metrics["map_at"].values()):
        converged, nc_reason = False, nc_reason or "mAP is not finite"

    record.update(
        status="ok" if converged else "nc",
        converged=converged,
        nc_reason=nc_reason,
        metrics=result_metrics,
        timing=_job_timing(fit_s, encode_s, eval_s, fit_cpu_s, cpu0),
        history=_history(method),
        code_stats=code_stats,
        convergence=convergence,
    )
    if cls.kind == "deep" and hasattr(method, "raw_outputs"):
        try:
            record["u_hist"] = _u_histogram(method, X_train)
        except Exception as exc:  # noqa: BLE001 — optional: Figs. 3/5 show it as missing
            record["u_hist"] = None
            record["u_hist_error"] = f"{type(exc).__name__}: {exc}"
    packed = {
        "query_codes": pack_codes(codes["query"]),
        "db_codes": pack_codes(codes["db"]),
        "query_labels": pack_codes(codes["query_labels"]),
        "db_labels": pack_codes(codes["db_labels"]),
        "n_labels": np.array(codes["query_labels"].shape[1]),
        "n_bits": np.array(cell.bits),
        "query_index": np.asarray(bench.split.query),
        "db_index": np.asarray(bench.split.database),
        **query_ap,
    }
    if codes["query"].shape[1] != cell.bits:
        # a reference's C-bit code in a REFERENCE_BITS cell: ResultStore.load_codes unpacks
        # record["cell"]["bits"] bits, so these codes are not stored (per-query APs are)
        del packed["query_codes"], packed["db_codes"], packed["n_bits"]
    return record, packed


def _tune(cls: Any, cell: Cell, opts: RunOptions, store: ResultStore, method: Any,
          X_train: Any, Y_train: np.ndarray, split_hash: str) -> dict[str, Any]:
    """Tune the cell's method on validation data carved from its training split (or reuse the
    study another cell of the same method and column ran), then resolve the chosen values at
    this cell's code length. The query set and database are never used."""
    from benchmarks.runner.tuning import TuneSpec, resolve_for_bits, study_name, tune

    spec = TuneSpec(**dict(cell.tune))
    base = {k: v for k, v in method.get_params().items()
            if k not in ("n_bits", "seed", "checkpoint_dir", "resume")}
    from benchmarks.runner.experiments import RUN_ONLY_OPTIONS

    identity = {k: v for k, v in base.items() if k not in RUN_ONLY_OPTIONS}
    name = study_name(cell.method, cell.dataset.key, split_hash, identity, spec)
    outcome = tune(cls, base, X_train, Y_train, spec, store.base / "tuning", name,
                   progress=opts.progress, wait=opts.wait_for_studies)
    values = resolve_for_bits(cls, outcome["best_raw"], cell.bits)
    own = {**dict(cell.train), **dict(cell.hyper)}  # make_cell pins only keys set in these
    pinned = {k: own[k] for k in cell.pinned}
    out = {**{k: outcome.get(k) for k in ("study", "n_trials", "bits", "best_trial",
                                          "best_val_map", "best_raw", "seconds", "note")},
           "values": {k: v for k, v in values.items() if k not in pinned},
           "spec": outcome["spec"], "trials": outcome["trials"]}
    if pinned:  # only then, so that the records of unpinned cells keep their keys
        out["pinned"] = pinned
    return out


def _safe_params(method: Any) -> dict[str, Any]:
    try:
        return dict(method.get_params())
    except Exception as exc:  # noqa: BLE001
        return {"error": f"get_params failed: {exc}"}


def _history(method: Any) -> Any:
    hist = getattr(method, "history_", None)
    if hist is None:
        return None
    try:
        from benchmarks.runner.results import to_jsonable

        return to_jsonable(hist)
    except Exception:  # noqa: BLE001
        return None


# ------------------------------------------------------------------------------ t-SNE (Fig. 9)
def ensure_tsne(store: ResultStore, cell: Cell, opts: RunOptions) -> Path | None:
    """Embed a class-balanced sample of a finished cell's database codes in 2-D (sklearn TSNE).

    Written beside the record (``<cell_id>.tsne.csv``); computed once from the stored codes, so
    the figure never needs the model. Classes: at most ``tsne_classes`` (seeded choice), at most
    ``tsne_per_class`` items each, an item's class being its first label.
    """
    path = store.tsne_path(cell.cell_id)
    record = store.load(cell.cell_id)
    if path.exists() or record is None or not store.codes_path(cell.cell_id).exists():
        return path if path.exists() else None
    from sklearn.manifold import TSNE

    data = store.load_codes(cell.cell_id)
    codes, labels = data["db_codes"], data["db_labels"]
    first = labels.argmax(axis=1)
    has_label = labels.max(axis=1) > 0
    rng = np.random.default_rng(0)
    classes = np.unique(first[has_label])
    if len(classes) > opts.tsne_classes:
        classes = np.sort(rng.choice(classes, size=opts.tsne_classes, replace=False))
    picked = []
    for c in classes:
        idx = np.flatnonzero(has_label & (first == c))
        if len(idx) > opts.tsne_per_class:
            idx = np.sort(rng.choice(idx, size=opts.tsne_per_class, replace=False))
        picked.append(idx)
    index = np.concatenate(picked)
    perplexity = float(min(30.0, max(2.0, (len(index) - 1) / 3)))
    emb = TSNE(n_components=2, metric="hamming", init="random", perplexity=perplexity,
               random_state=0).fit_transform(codes[index].astype(np.float64))
    store.save_tsne(cell.cell_id, emb, first[index], index)
    return path


