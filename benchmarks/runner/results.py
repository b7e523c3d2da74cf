"""The result store: one JSON file per finished cell, with its codes beside it.

Layout under the results directory (default ``results/``)::

    <preset>/cells/<cell_id>.json        the result record (written last: its presence = finished)
    <preset>/cells/<cell_id>.codes.npz   packed query/database codes and labels (bitorder "little")
    <preset>/cells/<cell_id>.tsne.csv    2-D t-SNE embedding of a sample of database codes
    <preset>/failed/<cell_id>.json       the last failure of a cell (not a result; retried)
    <preset>/splits/<dataset>-<hash>/    the split index files of every dataset used
    <preset>/tables/, <preset>/figures/  rendered from the records above
    <preset>/user/<dataset key>/{tables,figures}/  the same for a user's own dataset (--user-data)

Every write goes to a temporary file in the same folder and is moved into place with
``os.replace``, so an interrupted run never leaves a partial file under a final name.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SCHEMA_VERSION",
    "TIE_RULE",
    "ResultStore",
    "atomic_save_npz",
    "atomic_write_bytes",
    "atomic_write_json",
    "environment",
    "git_commit",
    "pack_codes",
    "to_jsonable",
    "unpack_codes",
    "utc_now",
]

SCHEMA_VERSION = 1
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


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def environment(device: str | None = None) -> dict[str, Any]:
    """Where a result was computed: platform, CPU count, torch version and device, git commit."""
    if not _ENV_CACHE:
        env: dict[str, Any] = {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
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
        except Exception:  # noqa: BLE001 — torch is optional for shallow-only runs
            env["torch"] = None
            env["gpu"] = None
        _ENV_CACHE.update(env)
    return {**_ENV_CACHE, "device": device or "cpu", "utc_time": utc_now()}


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

    def failure_path(self, cell_id: str) -> Path:
        return self.failed_dir / f"{cell_id}.json"

    def checkpoint_dir(self, cell_id: str) -> Path:
        """Per-cell training checkpoints (ignored by git: ``results/checkpoints/``)."""
        return self.root / "checkpoints" / self.preset / cell_id

    # ------------------------------------------------------------------ records
    def is_done(self, cell_id: str) -> bool:
        return self.record_path(cell_id).is_file()

    def load(self, cell_id: str) -> dict[str, Any] | None:
        path = self.record_path(cell_id)
        if not path.is_file():
            return None
        with open(path) as fh:
            return json.load(fh)

    def save(self, record: dict[str, Any], codes: dict[str, np.ndarray] | None = None) -> Path:
        """Write codes (if any) first, then the record: the record marks the cell finished."""
        cell_id = record["cell_id"]
        record = dict(record)
        record.setdefault("schema", SCHEMA_VERSION)
        if codes is not None:
            atomic_save_npz(self.codes_path(cell_id), **codes)
            record.setdefault("artifacts", {})["codes"] = self.codes_path(cell_id).name
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
        with open(path) as fh:
            return json.load(fh)

    def remove(self, cell_id: str) -> None:
        """Forget a cell's result (``--force``): record first, so it is never half-removed."""
        for path in (self.record_path(cell_id), self.codes_path(cell_id), self.tsne_path(cell_id)):
            if path.exists():
                path.unlink()

    def iter_records(self) -> Iterator[dict[str, Any]]:
        if not self.cells_dir.is_dir():
            return
        for path in sorted(self.cells_dir.glob("*.json")):
            with open(path) as fh:
                yield json.load(fh)

    def load_codes(self, cell_id: str) -> dict[str, np.ndarray]:
        """Unpacked codes and labels of a finished cell."""
        record = self.load(cell_id)
        if record is None:
            raise FileNotFoundError(f"no result for cell {cell_id} under {self.cells_dir}")
        n_bits = int(record["cell"]["bits"])
        with np.load(self.codes_path(cell_id)) as data:
            out = {
                "query_codes": unpack_codes(data["query_codes"], n_bits),
                "db_codes": unpack_codes(data["db_codes"], n_bits),
            }
            n_labels = int(data["n_labels"])
            for part in ("query", "db"):
                out[f"{part}_labels"] = unpack_codes(data[f"{part}_labels"], n_labels)
        return out
