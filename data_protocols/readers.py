"""Readers for the on-disk formats: community list files, CIFAR-10 (pickles or image folder),
IDX ``.gz`` (Fashion-MNIST), MATLAB ``.mat`` (MIRFlickr-25K), and a user's folder / CSV / npz.

Readers return plain arrays and path lists; the protocols (``protocols.py``) turn them into splits.
"""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data_protocols.core import (
    DatasetNotFoundError,
    load_cached_array,
    open_rgb,
    save_cached_array,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ListFile",
    "decode_images",
    "list_key",
    "read_cifar10_folder_index",
    "read_cifar10_pickles",
    "read_idx",
    "read_image_csv",
    "read_image_folder",
    "read_list_file",
    "read_mat_array",
    "read_npz",
    "resolve_image_paths",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


# --------------------------------------------------------------------------------------------
# Community list format: "<path> <0/1> <0/1> ..."
# --------------------------------------------------------------------------------------------


@dataclass
class ListFile:
    """A parsed list file: ``paths`` as written in the file, ``labels`` N x C uint8."""

    file: Path
    paths: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def item_keys(self, depth: int = 1) -> list[str]:
        return [list_key(p, depth) for p in self.paths]


def read_list_file(path: str | os.PathLike, n_labels: int | None = None) -> ListFile:
    """Read a HashNet / DeepHash-pytorch list file: each non-empty line is an image path followed
    by a 0/1 label vector, separated by whitespace.

    Every line must have the same number of labels (``n_labels`` when given, else the first
    line's); a wrong count or a value other than 0/1 raises ValueError naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"list file {path} does not exist")
    paths: list[str] = []
    chunks: list[str] = []
    lines: list[int] = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if n_labels is None:
                n_labels = len(parts) - 1
                if n_labels < 1:
                    raise ValueError(f"{path}, line {lineno}: no labels after the path {parts[0]!r}")
            if len(parts) - 1 != n_labels:
                raise ValueError(f"{path}, line {lineno}: expected {n_labels} labels after the path, "
                                 f"found {len(parts) - 1}")
            paths.append(parts[0])
            chunks.append("".join(parts[1:]))
            lines.append(lineno)
    if not paths:
        raise ValueError(f"list file {path} has no entries")
    # every label is the single character 0 or 1, so the joined labels are n_labels bytes a line
    joined = "".join(chunks).encode()
    codes = np.frombuffer(joined, dtype=np.uint8) if len(joined) == len(paths) * n_labels \
        else None
    if codes is None or ((codes != 48) & (codes != 49)).any():
        for j, c in enumerate(chunks):
            if len(c) != n_labels or set(c) - {"0", "1"}:
                raise ValueError(f"{path}, line {lines[j]} ({paths[j]}): labels must be 0 or 1, "
                                 f"got {line_labels(c)}")
    labels = (codes - 48).reshape(len(paths), n_labels)
    return ListFile(file=path, paths=paths, labels=labels.astype(np.uint8))


def line_labels(c: str) -> str:
    return c if len(c) <= 40 else c[:40] + "..."


def list_key(path: str, depth: int = 1) -> str:
    """The last ``depth`` components of a list path (``/`` or ``\\`` separated): the identity
    used to match entries across lists whose prefixes differ."""
    comps = [c for c in path.replace("\\", "/").split("/") if c not in ("", ".")]
    return "/".join(comps[-depth:])


def resolve_image_paths(
    paths: list[str], image_roots: list[Path], *, max_depth: int = 3,
    progress: bool = True, desc: str = "locating images",
) -> tuple[list[str | None], dict]:
    """Map list paths (the releasers' absolute paths) onto files under ``image_roots`` by their
    tail: for each path try its last 1, 2, ... ``max_depth`` components under each root (and the
    path itself). Returns one resolved path (or None when missing) per entry and a report
    ``{"n_missing", "missing_examples", "tail_depth"}``. The depth that worked last is tried first.
    """
    out: list[str | None] = []
    order = [(root, d) for d in range(1, max_depth + 1) for root in image_roots]
    depth_hits: dict[int, int] = {}
    missing: list[str] = []
    for p in tqdm(paths, desc=desc, disable=not progress or len(paths) < 5000, unit="img"):
        found = None
        if os.path.isabs(p) and os.path.isfile(p):
            found = p
        else:
            for k, (root, d) in enumerate(order):
                cand = root / list_key(p, d)
                if cand.is_file():
                    found = str(cand)
                    depth_hits[d] = depth_hits.get(d, 0) + 1
                    if k:  # move the successful (root, depth) to the front
                        order.insert(0, order.pop(k))
                    break
        if found is None:
            missing.append(p)
        out.append(found)
    report = {"n_missing": len(missing), "missing_examples": missing[:5],
              "tail_depth": depth_hits}
    return out, report


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")


def read_cifar10_pickles(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's ``cifar-10-batches-py``: the five training batches then the test batch, in
    the official order. Returns ``(images N x 32 x 32 x 3 uint8, labels N int64)``."""
    files = [folder / f"data_batch_{i}" for i in range(1, 6)] + [folder / "test_batch"]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise DatasetNotFoundError(f"CIFAR-10 pickles missing in {folder}: {missing}")
    xs, ys = [], []
    for f in files:
        with open(f, "rb") as fh:
            d = pickle.load(fh, encoding="latin1")
        xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(d["labels"], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


def read_cifar10_folder_index(folder: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """The image-folder layout ``<folder>/{train,test}/<class>/*.jpg``, in the official order.

    With ``original_order.csv`` (columns ``split,index,label,file``) the items are ordered train
    0..49,999 then test 0..9,999 and labelled from it; without it, files are taken sorted by
    (split, class, name) and labelled by their class folder. Returns (paths, labels, classes).
    """
    order = folder / "original_order.csv"
    classes = list(CIFAR10_CLASSES)
    if order.exists():
        rows = []
        with open(order, newline="") as fh:
            for r in csv.DictReader(fh):
                rows.append((0 if r["split"] == "train" else 1, int(r["index"]), int(r["label"]),
                             r["file"]))
        rows.sort()
        paths = [str(folder / r[3]) for r in rows]
        labels = np.asarray([r[2] for r in rows], dtype=np.int64)
        return paths, labels, classes
    paths, labels = [], []
    for split in ("train", "test"):
        d = folder / split
        if not d.is_dir():
            raise DatasetNotFoundError(f"CIFAR-10 image folder {d} does not exist")
        found = sorted(c.name for c in d.iterdir() if c.is_dir())
        classes = found if set(found) != set(CIFAR10_CLASSES) else list(CIFAR10_CLASSES)
        for ci, c in enumerate(classes):
            for f in sorted((d / c).iterdir()):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    paths.append(str(f))
                    labels.append(ci)
    return paths, np.asarray(labels, dtype=np.int64), classes


def decode_images(paths: list[str], size: tuple[int, int] | None, cache_file: Path | None,
                  key: dict, *, progress: bool = True) -> np.ndarray:
    """Decode image files into one uint8 ``N x H x W x 3`` array (resized to ``size`` = (W, H)
    when given, else all images must share a size), cached as ``.npy`` with a checksum sidecar so
    the decoding happens once."""

    if cache_file is not None:
        arr = load_cached_array(cache_file, key)
        if arr is not None:
            return arr
    first = None
    out = None
    for i, p in enumerate(tqdm(paths, desc=f"decoding {len(paths)} images", disable=not progress,
                               unit="img", mininterval=1.0)):
        a = np.asarray(open_rgb(p, size), dtype=np.uint8)
        if out is None:
            first = a.shape
            out = np.empty((len(paths),) + a.shape, dtype=np.uint8)
        elif a.shape != first:
            raise ValueError(f"image {p} has shape {a.shape}, expected {first} like the first "
                             "image; pass a size to resize")
        out[i] = a
    if out is None:
        raise ValueError("no images to decode")
    if cache_file is not None:
        save_cached_array(cache_file, out, key)
    return out


# --------------------------------------------------------------------------------------------
# IDX (Fashion-MNIST) and MATLAB (MIRFlickr-25K)
# --------------------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped), e.g. Fashion-MNIST's ``train-images-idx3-ubyte.gz``."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()})")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but the file holds {arr.size} values "
                         "(truncated?)")
    return arr.reshape(shape)


def read_mat_array(path: Path, name: str) -> np.ndarray:
    """Variable ``name`` of a MATLAB file: scipy for v4-v7.2, h5py (if installed) for v7.3."""
    import scipy.io

    try:
        d = scipy.io.loadmat(str(path), variable_names=[name])
    except NotImplementedError:  # v7.3 = HDF5
        try:
            import h5py
        except ImportError as e:
            raise ImportError(f"{path} is a MATLAB v7.3 (HDF5) file; install h5py to read it") from e
        with h5py.File(path, "r") as f:
            return np.asarray(f[name]).T  # HDF5 stores MATLAB arrays transposed
    if name not in d:
        raise KeyError(f"{path} has no variable {name!r}")
    return d[name]


# --------------------------------------------------------------------------------------------
# A user's own data
# --------------------------------------------------------------------------------------------


def read_image_folder(root: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """``<root>/<class>/<image>``: one class per sub-folder (sorted by name), files sorted by
    name. Returns (paths, class ids, class names)."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist")
    classes = sorted(c.name for c in root.iterdir() if c.is_dir() and not c.name.startswith("."))
    paths, labels = [], []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(f))
                labels.append(ci)
    if not paths:
        raise DatasetNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in class "
                                   f"folders under {root}")
    return paths, np.asarray(labels, dtype=np.int64), classes


def read_image_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """A CSV of ``path,labels`` rows (header optional; the first row is a header when its first
    cell is ``path``). ``labels`` holds one or more label names separated by ``|`` or ``;`` (an
    empty cell = no label). Relative image paths are relative to the CSV's folder. A UTF-8 byte
    order mark (Excel's "CSV UTF-8") is accepted; a binary file, a short row or an empty path cell
    is a ValueError naming the file and line. Returns (absolute paths, label-name lists)."""
    if not path.is_file():
        raise DatasetNotFoundError(f"CSV file {path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK\x03\x04"):
        raise ValueError(f"{path} is a zip archive (an .npz?), not a CSV of 'path,labels' rows")
    paths, names = [], []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        lineno = 0
        try:
            for lineno, row in enumerate(csv.reader(fh), 1):
                if not row or not "".join(row).strip():
                    continue
                if lineno == 1 and row[0].strip().lower() in ("path", "file", "image", "filename"):
                    continue
                if len(row) < 2:
                    raise ValueError(f"{path}, line {lineno}: expected 'path,labels', got {row}")
                p = row[0].strip()
                if not p:
                    raise ValueError(f"{path}, line {lineno}: the path cell is empty ({row})")
                cell = "|".join(row[1:]).replace(";", "|")
                labs = [t.strip() for t in cell.split("|") if t.strip()]
                paths.append(p if os.path.isabs(p) else str(path.parent / p))
                names.append(labs)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}, line {lineno + 1}: not UTF-8 text ({exc.reason}); is it "
                             "a CSV file?") from None
    if not paths:
        raise ValueError(f"CSV file {path} has no rows")
    return paths, names


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Read a user's ``.npz``: (``labels``, ``features`` float32 or None, ``images`` or None).

    Every problem is a ValueError (KeyError for a missing array) naming the file, the array and,
    for non-finite features, the first bad row *as numbered in the file* (0-based): not a zip,
    object or string arrays, features that are not N x D numbers, NaN or inf features.
    """
    import zipfile

    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(8)
        raise ValueError(f"{path} is not an .npz file (a zip of .npy arrays written by np.savez); "
                         f"it starts with bytes {head!r}")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 — a damaged zip
        raise ValueError(f"{path} is not a readable .npz: {type(exc).__name__}: {exc}") from None
    with z:
        keys = list(z.keys())
        if "labels" not in keys:
            raise KeyError(f"{path} has no 'labels' array (found {keys})")
        if "features" not in keys and "images" not in keys:
            raise KeyError(f"{path} has neither 'features' nor 'images' (found {keys})")
        arrays = {}
        for name in ("labels", "features", "images"):
            if name not in keys:
                continue
            try:
                arrays[name] = np.asarray(z[name])
            except ValueError as exc:  # object arrays refuse to load without pickle
                raise ValueError(f"{path}: array '{name}' holds Python objects ({exc}); save "
                                 f"numbers, e.g. np.savez(path, {name}=np.asarray(x, "
                                 f"dtype=np.float32))") from None
            except Exception as exc:  # noqa: BLE001 — a truncated member
                raise ValueError(f"{path}: array '{name}' cannot be read: "
                                 f"{type(exc).__name__}: {exc}") from None
    for name, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{path}: array '{name}' has dtype {a.dtype}, not numbers")
    feats = arrays.get("features")
    if feats is not None:
        if feats.ndim != 2:
            raise ValueError(f"{path}: 'features' must be N x D, got shape {feats.shape}")
        feats = feats.astype(np.float32)
        bad = ~np.isfinite(feats)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"{path}: 'features' row {row}, column {col} (0-based, as in the "
                             f"file) is {feats[row, col]}; {int(bad.any(1).sum())} rows hold "
                             "NaN or inf: clean them before hashing")
    return arrays["labels"], feats, arrays.get("images")
