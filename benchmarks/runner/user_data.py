"""A user's own dataset on the command line (``run_all.py --user-data PATH``).

The data goes through the ``folder``, ``csv`` or ``npz`` protocol of ``data_protocols`` (inferred
from the path: a folder, a ``.csv``, a ``.npz``), with the split sizes of the command line. It is
checked here, before anything runs, so that a wrong path, an unknown extension or split sizes the
data cannot hold stop the command with a message naming the path and the numbers.

Its :class:`~benchmarks.runner.experiments.DatasetSpec` has the key ``<name>-<hash>``, the hash (8 hex
digits) taken over the protocol, the resolved path and the split options: two different files, or
one file split two ways, never share a cell, and no built-in dataset key has that form. The spec's
variant (``path``, ``n_query``, ``n_train``) is passed to the protocol's ``load`` and is part of
every cell key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runner.experiments import DatasetSpec, canonical_json

__all__ = ["EXTENSIONS", "USER_PROTOCOLS", "UserData", "UserDataError", "infer_protocol",
           "resolve_user_data", "split_sizes"]

USER_PROTOCOLS = ("folder", "csv", "npz")
#: file extension -> protocol (a folder is the ``folder`` protocol)
EXTENSIONS = {".csv": "csv", ".npz": "npz"}
ACCEPTED = ("a folder of class sub-folders (<path>/<class>/<image>), a .csv of 'path,labels' rows, "
            "or a .npz with 'features' and/or 'images' and 'labels'")
_KIND = {"folder": "image folder", "csv": "CSV of images", "npz": "npz"}


class UserDataError(ValueError):
    """The user's data cannot be used as given (the message says why and what to do)."""


@dataclass(frozen=True)
class UserData:
    """A user's dataset, checked, with the split it will get."""

    name: str
    protocol: str
    path: Path
    n_items: int  # labelled items (those the protocol keeps)
    n_labels: int
    multi_label: bool
    n_query: int | None  # as given on the command line (None: the protocol's default)
    n_train: int | None
    sizes: dict[str, int]  # query / database / train the protocol will draw
    spec: DatasetSpec

    @property
    def key(self) -> str:
        return self.spec.key

    def summary(self) -> str:
        s = self.sizes
        return (f"your data `{self.name}` ({self.protocol}: {self.path}): {self.n_items:,} "
                f"labelled items, {self.n_labels} labels; query {s['query']:,} / database "
                f"{s['database']:,} / train {s['train']:,}; dataset key {self.key}")


def infer_protocol(path: Path) -> str:
    """``folder`` for a directory, else from the extension (``.csv``, ``.npz``)."""
    if path.is_dir():
        return "folder"
    ext = path.suffix.lower()
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    raise UserDataError(
        f"--user-data {path}: unknown extension {ext or '(none)'!r}; accepted: {ACCEPTED} "
        f"(extensions {', '.join(EXTENSIONS)}). Give --user-protocol {{folder,csv,npz}} to read "
        "it as one of those anyway.")


def split_sizes(n: int, n_query: int | None, n_train: int | None, where: str = "the data"
                ) -> dict[str, int]:
    """The sizes the user protocols draw (``data_protocols.protocols._user_split``): ``n_query``
    random queries (default min(1000, N/10)), the rest the database, ``n_train`` of the database
    for training (default: all of it). Raises :class:`UserDataError` naming the numbers."""
    for flag, value in (("--n-query", n_query), ("--n-train", n_train)):
        if value is not None and value < 1:
            raise UserDataError(f"{flag} must be at least 1, got {value}")
    nq = min(1000, max(1, n // 10)) if n_query is None else n_query
    if nq >= n:
        raise UserDataError(
            f"--n-query {nq} leaves no database: {where} has {n:,} labelled items "
            f"(at most --n-query {n - 1:,})")
    n_db = n - nq
    nt = n_db if n_train is None else n_train
    if nt > n_db:
        raise UserDataError(
            f"--n-query {nq:,} + --n-train {nt:,} = {nq + nt:,} is more than the {n:,} labelled "
            f"items of {where}: the training items are drawn from the database "
            f"({n:,} - {nq:,} = {n_db:,} items)")
    return {"query": nq, "database": n_db, "train": nt}


def _count_folder(path: Path) -> tuple[int, int, bool, dict[str, Any]]:
    from data_protocols import readers

    try:
        paths, _y, classes = readers.read_image_folder(path)
    except FileNotFoundError as exc:  # DatasetNotFoundError: no images in class folders
        raise UserDataError(f"--user-data {path}: {exc}") from None
    return len(paths), len(classes), False, {}


def _count_csv(path: Path) -> tuple[int, int, bool, dict[str, Any]]:
    from data_protocols import readers

    try:
        paths, names = readers.read_image_csv(path)
    except (OSError, ValueError) as exc:
        raise UserDataError(f"--user-data {path}: {exc}") from None
    kept = [p for p, ns in zip(paths, names, strict=True) if ns]
    missing = [p for p in kept if not Path(p).is_file()]
    if missing:
        raise UserDataError(
            f"--user-data {path}: {len(missing):,} of {len(kept):,} listed images do not exist, "
            f"e.g. {missing[:3]} (relative paths are relative to the CSV's folder)")
    vocab = {n for ns in names for n in ns}
    multi = any(len(set(ns)) > 1 for ns in names)
    return len(kept), len(vocab), multi, {"n_unlabelled": len(paths) - len(kept)}


def _count_npz(path: Path) -> tuple[int, int, bool, dict[str, Any]]:
    from data_protocols import readers

    try:
        lab, feats, imgs = readers.read_npz(path)
    except (KeyError, ValueError) as exc:
        raise UserDataError(f"--user-data: {exc.args[0]}") from None
    keys = [k for k, a in (("features", feats), ("images", imgs)) if a is not None]
    has = {"features": "features" in keys, "images": "images" in keys}
    if lab.ndim == 1:
        n, c, multi = lab.shape[0], len(np.unique(lab)), False
    elif lab.ndim == 2:
        per_item = lab.astype(bool).sum(1)
        n, multi = int((per_item > 0).sum()), bool((per_item > 1).any())
        c = int(lab.astype(bool).any(0).sum())  # labels some item carries
    else:
        raise UserDataError(f"--user-data {path}: 'labels' must be N class ids or N x C "
                            f"multi-hot, got shape {lab.shape}")
    return n, c, multi, {"n_unlabelled": int(lab.shape[0] - n), **has}


def content_hash(where: Path, protocol: str) -> str:
    """A fingerprint of the data itself, part of every cell key: a fixed or replaced file gives
    new cells instead of reusing results computed on the old content.

    The bytes of an npz or CSV; for the images of a folder or CSV, each file's path, size and
    modification time (reading every image would cost as much as decoding it).
    """
    digest = hashlib.sha1(protocol.encode())
    if where.is_file():
        with open(where, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    if protocol == "folder":
        images = sorted(p for p in where.rglob("*") if p.is_file())
    elif protocol == "csv":
        from data_protocols import readers

        images = sorted({Path(p) for p in readers.read_image_csv(where)[0]})
    else:
        images = []
    for p in images:
        st = p.stat()
        digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def _safe_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-")
    return safe or "data"


def resolve_user_data(
    path: str | Path,
    protocol: str | None = None,
    name: str | None = None,
    n_query: int | None = None,
    n_train: int | None = None,
    image_backbone: str | None = "raw",
) -> UserData:
    """Check the user's data and build its dataset spec.

    ``image_backbone``: features for image inputs (folder, csv, an npz with only images), the
    preset's (:func:`benchmarks.runner.experiments.image_feature_backbone`); an npz with ``features``
    uses those.
    """
    raw = Path(path).expanduser()
    if not raw.exists():
        raise UserDataError(f"--user-data {raw}: no such file or folder "
                            f"(resolved: {raw.resolve()})")
    where = raw.resolve()
    if protocol is None:
        protocol = infer_protocol(where)
    elif protocol not in USER_PROTOCOLS:
        raise UserDataError(f"--user-protocol {protocol!r}: choose one of {USER_PROTOCOLS}")
    if protocol == "folder" and not where.is_dir():
        raise UserDataError(f"--user-protocol folder needs a folder; {where} is a file")
    if protocol != "folder" and not where.is_file():
        raise UserDataError(f"--user-protocol {protocol} needs a file; {where} is a folder "
                            "(a folder of class sub-folders is --user-protocol folder)")
    count = {"folder": _count_folder, "csv": _count_csv, "npz": _count_npz}[protocol]
    n, n_labels, multi, extra = count(where)
    if n == 0:
        raise UserDataError(f"--user-data {where}: no labelled items")
    if n_labels < 2:
        raise UserDataError(
            f"--user-data {where}: every item has the same label ({n_labels} label in use): "
            "every item is relevant to every query, so any ranking scores mAP 1.0. Give data "
            "with at least 2 classes")
    sizes = split_sizes(n, n_query, n_train, where=str(where))

    name = _safe_name(name if name else (where.stem if where.is_file() else where.name))
    options = {k: v for k, v in (("n_query", n_query), ("n_train", n_train)) if v is not None}
    content = content_hash(where, protocol)
    digest = hashlib.sha1(canonical_json(
        {"protocol": protocol, "path": str(where), "content": content, **options}
    ).encode()).hexdigest()[:8]
    features = None if protocol == "npz" and extra.get("features") else image_backbone
    unlabelled = (f", {extra['n_unlabelled']:,} unlabelled dropped"
                  if extra.get("n_unlabelled") else "")
    given = ", ".join(f"{k}={v}" for k, v in options.items()) or "protocol defaults"
    note = (
        f"{n:,} labelled items{unlabelled}, {n_labels} labels "
        f"({'multi-label' if multi else 'single-label'}); split seed 0 ({given}): "
        f"query {sizes['query']:,} / database {sizes['database']:,} / train {sizes['train']:,}; "
        f"features: {features or 'from the npz'}; content hash {content}"
    )
    spec = DatasetSpec(
        key=f"{name}-{digest}",
        protocol=protocol,
        label=f"{_KIND[protocol]} {where}",
        offline=True,
        variant=tuple(sorted({"path": str(where), **options}.items())),
        feature_backbone=features,
        note=note,
    )
    return UserData(name=name, protocol=protocol, path=where, n_items=n, n_labels=n_labels,
                    multi_label=multi, n_query=n_query, n_train=n_train, sizes=sizes, spec=spec)
