"""The result store: one JSON file per finished cell, with its codes beside it.

Layout under the results directory (default ``results/``)::

    <preset>/cells/<cell_id>.json        the result record (written last: its presence = finished)
    <preset>/cells/<cell_id>.codes.npz   packed query/database codes and labels (bitorder "little")
    <preset>/cells/<cell_id>.tsne.csv    2-D t-SNE embedding of a sample of database codes
    <preset>/failed/<cell_id>.json       the last failure of a cell (not a result; retried)
    <preset>/damaged/<cell_id>.<time>.json  a record that failed to parse or lacked fields, moved
                                         aside (never deleted) before its cell is recomputed
    <preset>/locks/<cell_id>.lock        held while a process computes the cell (pid, host)
    <preset>/splits/<dataset>-<hash>/    the split index files of every dataset used
    <preset>/tables/, <preset>/figures/  rendered from the records above
    <preset>/user/<dataset key>/{tables,figures}/  the same for a user's own dataset (--user-data)

Every write goes to a temporary file in the same folder and is moved into place with
``os.replace``, so an interrupted run never leaves a partial file under a final name. Files are
written with the usual permissions (0644 under the common umask 022), not mkstemp's 0600.

Several processes may share one results directory (two sweeps, many Slurm jobs): a process claims a
cell with an atomic lock file (:meth:`ResultStore.claim`) before computing it, so every cell is
computed once; a lock left by a process that died is detected by its pid and host and taken over.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runner.experiments import results_version

__all__ = [
    "REQUIRED_FIELDS",
    "SCHEMA_VERSION",
    "TIE_RULE",
    "CellLock",
    "DamagedRecordError",
    "ResultStore",
    "atomic_save_npz",
    "atomic_write_bytes",
    "atomic_write_json",
    "environment",
    "git_commit",
    "load_results",
    "pack_codes",
    "to_jsonable",
    "unpack_codes",
    "utc_now",
]

log = logging.getLogger("hashbench.runner")

SCHEMA_VERSION = 1
#: fields every cell record must have (with these types) to count as a finished cell
REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "cell_id": str, "cell": dict, "converged": bool, "metrics": (dict, type(None)),
}
#: the ranking rule of ``benchmarks.metrics`` (DESIGN.md 3), recorded in every result
TIE_RULE = "ascending Hamming distance; ties broken by ascending database index"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_jsonable(obj: Any) -> Any:
    """Numpy scalars/arrays, tuples and paths to plain JSON types; non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int)):
        return obj
    return repr(obj)


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: 0666 minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())  # mkstemp creates 0600; outputs are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    _atomic(Path(path), lambda fh: fh.write(data))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode())


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` atomically."""
    _atomic(Path(path), lambda fh: np.savez_compressed(fh, **arrays))


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """N x K {0,1} -> N x ceil(K/8) uint8, least-significant bit first (FAISS layout)."""
    return np.packbits(np.asarray(codes, dtype=np.uint8), axis=1, bitorder="little")


def unpack_codes(packed: np.ndarray, n_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`."""
    return np.unpackbits(packed, axis=1, count=n_bits, bitorder="little")


def git_commit(cwd: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` (``"unknown"`` outside a checkout), ``+dirty`` with local edits.

    Edits under ``results/`` do not count: a sweep rewrites tracked result files as it goes, and
    the commit is there to name the code that produced a number.
    """
    cwd = cwd or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
            check=False,
        )
        if head.returncode != 0:
            return "unknown"
        commit = head.stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=False,
        )
        return commit + ("+dirty" if status.returncode == 0 and status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_ENV_CACHE: dict[str, Any] = {}


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment(device: str | None = None) -> dict[str, Any]:
    """Where a result was computed: platform, CPU model and count, torch version, device and CPU
    kernel ISA, git commit."""
    if not _ENV_CACHE:
        env: dict[str, Any] = {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "numpy": np.__version__,
            "git_commit": git_commit(),
        }
        try:
            import torch

            env["torch"] = torch.__version__
            env["cuda_available"] = bool(torch.cuda.is_available())
            env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
            env["torch_threads"] = torch.get_num_threads()
            # the vector ISA torch dispatches its CPU kernels to: runs on CPUs that differ here
            # differ in the last float digits, which 200 epochs can grow into mAP differences
            env["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        except Exception:  # noqa: BLE001 — torch is optional for shallow-only runs
            env["torch"] = None
            env["gpu"] = None
        _ENV_CACHE.update(env)
    return {**_ENV_CACHE, "device": device or "cpu", "utc_time": utc_now(),
            "host": socket.gethostname(), "pid": os.getpid()}


class DamagedRecordError(ValueError):
    """A cell record that does not parse or lacks required fields (names the file and why)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"damaged cell record {path}: {reason}")
        self.path = path
        self.reason = reason


def check_record(record: Any, path: Path) -> None:
    """Raise :class:`DamagedRecordError` unless ``record`` is a complete cell record for ``path``."""
    if not isinstance(record, dict):
        raise DamagedRecordError(path, f"a JSON {type(record).__name__}, not an object")
    for name, kind in REQUIRED_FIELDS.items():
        if name not in record:
            raise DamagedRecordError(path, f"no {name!r} field")
        if not isinstance(record[name], kind):
            raise DamagedRecordError(path, f"field {name!r} is {type(record[name]).__name__}")
    if record["cell_id"] != path.name[: -len(".json")]:
        raise DamagedRecordError(path, f"its cell_id {record['cell_id']!r} is not its file name")
    if record["converged"] and not isinstance(record["metrics"].get("map_at") if record["metrics"]
                                              else None, dict):
        raise DamagedRecordError(path, "a converged record without metrics.map_at")


def read_record(path: Path) -> dict[str, Any]:
    """Parse and check one record file (:class:`DamagedRecordError` if it is not a record)."""
    try:
        with open(path, "rb") as fh:
            record = json.loads(fh.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedRecordError(path, f"not valid JSON ({exc})") from None
    check_record(record, path)
    return record


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class CellLock:
    """An atomic lock file claiming one cell for this process (``O_CREAT | O_EXCL``).

    The file holds ``{"pid", "host", "utc_time"}``. A lock whose process is gone (same host, pid
    not alive) is stale and is taken over; a lock from another host cannot be checked and is
    respected (its message says which file to delete if that run is dead).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.owner: dict[str, Any] = {}

    def acquire(self) -> bool:
        """Take the lock; False if another live process holds it (see :attr:`owner`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "utc_time": utc_now()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _file_mode())
            except FileExistsError:
                self.owner = self._read()
                if not self.is_stale(self.owner):
                    return False
                self._break_stale(self.owner)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.owner = me
            return True
        return False

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {"unreadable": True}

    @staticmethod
    def is_stale(owner: dict[str, Any]) -> bool:
        """A lock is stale when it is gone, unreadable for a while, or its local process is dead."""
        if not owner:
            return True  # released between our attempt and our read
        if owner.get("unreadable"):
            return False  # being written right now; try again later
        if owner.get("host") != socket.gethostname():
            return False
        return not _process_alive(int(owner.get("pid", -1)))

    def _break_stale(self, seen: dict[str, Any]) -> None:
        """Remove a stale lock, unless it changed owner since we read it."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = {}
        if seen and moved != seen:  # someone else took the lock meanwhile: give it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        else:
            log.warning("took over the stale lock %s of pid %s on %s (that process is gone)",
                        self.path, seen.get("pid"), seen.get("host"))
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        if self.owner.get("pid") == os.getpid() and self._read() == self.owner:
            self.path.unlink(missing_ok=True)
        self.owner = {}

    def describe(self) -> str:
        o = self.owner
        return (f"held by pid {o.get('pid')} on {o.get('host')} since {o.get('utc_time')} "
                f"(if that run is dead, delete {self.path})")


class ResultStore:
    """Reads and writes the cell records of one preset (see the module docstring)."""

    def __init__(self, results_dir: str | Path, preset: str, outputs: str | None = None) -> None:
        """``outputs``: a sub-folder of ``<preset>/`` for the tables and figures (a user's own
        dataset: ``user/<dataset key>``), so they never overwrite the preset's own; cells,
        failures and splits stay in the preset's folders (their names are unique)."""
        self.root = Path(results_dir)
        self.preset = preset
        self.base = self.root / preset
        self.cells_dir = self.base / "cells"
        self.failed_dir = self.base / "failed"
        out = self.base / outputs if outputs else self.base
        self.tables_dir = out / "tables"
        self.figures_dir = out / "figures"
        self.splits_dir = self.base / "splits"
        self.damaged_dir = self.base / "damaged"
        self.locks_dir = self.base / "locks"
        #: damaged records seen by :meth:`load` / :meth:`iter_records` (path, reason), in order
        self.damaged: list[tuple[Path, str]] = []

    # ------------------------------------------------------------------ paths
    def record_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def codes_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.codes.npz"

    def tsne_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.tsne.csv"

    def save_tsne(
        self, cell_id: str, embedding: np.ndarray, classes: np.ndarray, index: np.ndarray
    ) -> None:
        """Write a t-SNE embedding as CSV (``index,class,x,y``: database row, class, 2-D point)."""
        lines = ["index,class,x,y"] + [
            f"{int(i)},{int(c)},{x:.17g},{y:.17g}"
            for i, c, (x, y) in zip(index, classes, np.asarray(embedding, dtype=np.float64))
        ]
        atomic_write_bytes(self.tsne_path(cell_id), ("\n".join(lines) + "\n").encode())

    def load_tsne(self, cell_id: str) -> dict[str, np.ndarray]:
        """Inverse of :meth:`save_tsne`: ``index``, ``classes`` (int) and ``embedding`` (N x 2)."""
        table = np.loadtxt(self.tsne_path(cell_id), delimiter=",", skiprows=1, ndmin=2)
        return {
            "index": table[:, 0].astype(np.int64),
            "classes": table[:, 1].astype(np.int64),
            "embedding": table[:, 2:4],
        }

    def query_ap_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.query_ap.csv"

    def save_query_ap(self, cell_id: str, arrays: dict[str, np.ndarray]) -> None:
        """Per-query APs as CSV (``query_index,ap_all,ap_<K>...``; empty = left out): small text
        that is tracked with the record, so shipped tables can state significance without the
        (untracked) codes."""
        names = sorted(k for k in arrays if k.startswith("query_ap_"))
        cols = [np.asarray(arrays[n], dtype=np.float64) for n in names]
        lines = ["query_index," + ",".join("ap_" + n[len("query_ap_"):] for n in names)]
        for i, q in enumerate(np.asarray(arrays["query_index"])):
            lines.append(f"{int(q)}," + ",".join("" if not np.isfinite(c[i]) else f"{c[i]:.17g}"
                                                 for c in cols))
        atomic_write_bytes(self.query_ap_path(cell_id), ("\n".join(lines) + "\n").encode())

    def load_query_ap(self, cell_id: str) -> dict[str, np.ndarray] | None:
        """Inverse of :meth:`save_query_ap`: ``query_index`` and ``query_ap_<key>`` (NaN = left
        out), or None when the file is absent."""
        path = self.query_ap_path(cell_id)
        if not path.is_file():
            return None
        rows = path.read_text().splitlines()
        header = rows[0].split(",")
        table = [r.split(",") for r in rows[1:] if r]
        out = {"query_index": np.array([int(r[0]) for r in table], dtype=np.int64)}
        for j, name in enumerate(header[1:], 1):
            out["query_" + name] = np.array([float(r[j]) if r[j] else np.nan for r in table])
        return out

    def failure_path(self, cell_id: str) -> Path:
        return self.failed_dir / f"{cell_id}.json"

    def checkpoint_dir(self, cell_id: str) -> Path:
        """Per-cell training checkpoints (ignored by git: ``results/checkpoints/``)."""
        return self.root / "checkpoints" / self.preset / cell_id

    # ------------------------------------------------------------------ records
    def is_done(self, cell_id: str) -> bool:
        """Is there a complete record? A damaged one is moved aside (reported) and is not done."""
        path = self.record_path(cell_id)
        if not path.is_file():
            return False
        try:
            read_record(path)
        except DamagedRecordError as exc:
            self.quarantine(path, exc.reason)
            return False
        return True

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a damaged record (and its codes, which may be of another run) aside, never delete."""
        self.damaged_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        cell_id = path.name[: -len(".json")]
        target = self.damaged_dir / f"{cell_id}.{stamp}.json"
        try:
            os.replace(path, target)
        except FileNotFoundError:  # another process moved it first
            return target
        codes = self.codes_path(cell_id)
        if codes.exists():
            os.replace(codes, self.damaged_dir / f"{cell_id}.{stamp}.codes.npz")
        log.warning("damaged cell record %s (%s): moved to %s; the cell will be recomputed",
                    path, reason, target)
        return target

    def load(self, cell_id: str) -> dict[str, Any] | None:
        """The cell's record, or None when there is none or it is damaged (noted in ``damaged``)."""
        path = self.record_path(cell_id)
        if not path.is_file():
            return None
        try:
            return read_record(path)
        except DamagedRecordError as exc:
            self._note_damaged(path, exc.reason)
            return None

    def _note_damaged(self, path: Path, reason: str) -> None:
        if (path, reason) not in self.damaged:
            self.damaged.append((path, reason))
            log.error("damaged cell record %s: %s (left in place; a run recomputes it)", path,
                      reason)

    def claim(self, cell_id: str) -> CellLock:
        """A lock for the cell; call ``acquire()`` (False: another live process computes it)."""
        return CellLock(self.locks_dir / f"{cell_id}.lock")

    def save(self, record: dict[str, Any], codes: dict[str, np.ndarray] | None = None) -> Path:
        """Write codes (if any) first, then the record: the record marks the cell finished."""
        cell_id = record["cell_id"]
        record = dict(record)
        record.setdefault("schema", SCHEMA_VERSION)
        if codes is not None:
            atomic_save_npz(self.codes_path(cell_id), **codes)
            record.setdefault("artifacts", {})["codes"] = self.codes_path(cell_id).name
            if "query_index" in codes and any(k.startswith("query_ap_") for k in codes):
                self.save_query_ap(cell_id, codes)
                record["artifacts"]["query_ap"] = self.query_ap_path(cell_id).name
        else:  # e.g. a run that did not converge: codes of an earlier run must not stay beside it
            self.codes_path(cell_id).unlink(missing_ok=True)
            self.query_ap_path(cell_id).unlink(missing_ok=True)
        atomic_write_json(self.record_path(cell_id), record)
        failure = self.failure_path(cell_id)
        if failure.exists():
            failure.unlink()
        return self.record_path(cell_id)

    def save_failure(self, cell_id: str, info: dict[str, Any]) -> None:
        atomic_write_json(self.failure_path(cell_id), {"cell_id": cell_id, **info})

    def load_failure(self, cell_id: str) -> dict[str, Any] | None:
        path = self.failure_path(cell_id)
        if not path.is_file():
            return None
        try:
            with open(path, "rb") as fh:
                return json.loads(fh.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return {"cell_id": cell_id, "reason": f"unreadable failure file {path}: {exc}"}

    def remove(self, cell_id: str) -> None:
        """Forget a cell's result (``--force``): record first, so it is never half-removed."""
        for path in (self.record_path(cell_id), self.codes_path(cell_id), self.tsne_path(cell_id),
                     self.query_ap_path(cell_id)):
            if path.exists():
                path.unlink()

    def iter_records(self) -> Iterator[dict[str, Any]]:
        if not self.cells_dir.is_dir():
            return
        for path in sorted(self.cells_dir.glob("*.json")):
            try:
                yield read_record(path)
            except DamagedRecordError as exc:
                self._note_damaged(path, exc.reason)

    def load_codes(self, cell_id: str) -> dict[str, np.ndarray]:
        """Unpacked codes and labels of a finished cell."""
        record = self.load(cell_id)
        if record is None:
            raise FileNotFoundError(f"no result for cell {cell_id} under {self.cells_dir}")
        n_bits = int(record["cell"]["bits"])
        path = self.codes_path(cell_id)
        if not path.is_file():
            raise FileNotFoundError(
                f"no stored codes for cell {cell_id}: {path} does not exist (codes are not tracked "
                "by git, so shipped results have none; recompute the cell with --force)")
        with np.load(path) as data:
            out = {
                "query_codes": unpack_codes(data["query_codes"], n_bits),
                "db_codes": unpack_codes(data["db_codes"], n_bits),
            }
            n_labels = int(data["n_labels"])
            for part in ("query", "db"):
                out[f"{part}_labels"] = unpack_codes(data[f"{part}_labels"], n_labels)
        return out


#: columns of :func:`load_results`, in order
RESULT_COLUMNS = ["cell_id", "method", "dataset", "protocol", "backbone", "bits", "seed", "hyper",
                  "train", "recipe", "tune", "results_version", "current", "status", "converged",
                  "metric", "value", "commit", "utc_time", "fit_s", "host"]


def _metric_rows(metrics: dict[str, Any] | None) -> list[tuple[str, float]]:
    """(name, value) for every scalar metric of a record: ``mAP@all``/``mAP@K``, ``P@K``, ``R@K``
    and the engine's other floats (tie-aware, optimistic/pessimistic mAP, precision_radius2)."""
    if not metrics:
        return []
    out = [(f"mAP@{k}", float(v)) for k, v in (metrics.get("map_at") or {}).items()]
    for key, prefix in (("precision_at_k", "P"), ("recall_at_k", "R")):
        out += [(f"{prefix}@{k}", float(v)) for k, v in (metrics.get(key) or {}).items()]
    skip = {"map", "map_at_k", "k", "n_bits"}  # already above as mAP@all / mAP@K, or not metrics
    out += [(k, float(v)) for k, v in metrics.items()
            if k not in skip and isinstance(v, float)]
    return out


def load_results(results_dir: str | Path = "results", preset: str = "cpu") -> Any:
    """Every stored cell of a preset as a tidy pandas DataFrame: one row per cell and metric.

    Columns: :data:`RESULT_COLUMNS` (``hyper`` and ``train`` as canonical JSON strings, so rows
    group and compare; ``recipe`` is the record's training recipe, ``"shared"`` for records that
    predate recipes; ``tune`` the tuning budget of a tuned cell as canonical JSON, ``{}`` when
    untuned; ``results_version`` the method's version that stored the record and ``current``
    whether that is the registered method's present one: keep ``df[df.current]`` to leave out
    records of code that has changed its numbers since, which the tables no longer use). A cell without metrics (N/C) keeps one row with ``metric`` and ``value``
    empty, so it is never dropped silently. Damaged records are left out and reported in the
    log. Example::

        df = load_results("results", "cpu")
        df = df[df.current & (df.tune == "{}")]
        df[df.metric == "mAP@all"].pivot_table(index="method", columns="bits", values="value")
    """
    import pandas as pd

    store = ResultStore(results_dir, preset)
    rows: list[dict[str, Any]] = []
    for record in store.iter_records():
        cell = record["cell"]
        env = record.get("environment") or {}
        base = {
            "cell_id": record["cell_id"],
            "method": cell.get("method"),
            "dataset": cell.get("dataset"),
            "protocol": cell.get("protocol"),
            "backbone": record.get("backbone"),
            "bits": cell.get("bits"),
            "seed": cell.get("seed"),
            "hyper": json.dumps(cell.get("hyper", {}), sort_keys=True, default=str),
            "train": json.dumps(cell.get("train", {}), sort_keys=True, default=str),
            "recipe": record.get("recipe", "shared"),
            "tune": json.dumps(cell.get("tune", {}), sort_keys=True, default=str),
            "results_version": cell.get("results_version", 1),
            # stored by the method's present code, not by code that changed its numbers since
            "current": cell.get("results_version", 1) == results_version(cell.get("method", "")),
            "status": record.get("status") or ("ok" if record["converged"] else "nc"),
            "converged": record["converged"],
            "commit": env.get("git_commit"),
            "utc_time": record.get("utc_time"),
            "fit_s": (record.get("timing") or {}).get("fit_s"),
            "host": env.get("host"),
        }
        metric_rows = _metric_rows(record["metrics"]) or [(None, math.nan)]
        rows += [{**base, "metric": name, "value": value} for name, value in metric_rows]
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return frame.astype({"bits": "Int64", "seed": "Int64", "value": "float64"})
