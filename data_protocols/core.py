"""The objects every protocol returns: :class:`Split`, :class:`Benchmark`, :class:`ImageSet`.

A protocol turns a dataset on disk into index sets (query, database, train and an optional
validation set carved from train) over one array of items, deterministically from a seed
(DESIGN.md section 4). The split's hash (:meth:`Split.hash`) is recorded in every result so two
runs can be checked to have used the same lists.

Also here: the sampling helpers shared by the protocols (seeded permutations, per-class draws, the
NUS-WIDE-21 quota procedure, the validation carve) and the array cache with checksums used for
decoded images and extracted features.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_DATA_ROOT",
    "PARTS",
    "Benchmark",
    "DatasetNotFoundError",
    "ImageSet",
    "Split",
    "carve_val",
    "load_cached_array",
    "permutation",
    "quota_sample",
    "resolve_cache_dir",
    "resolve_data_root",
    "sample_per_class",
    "save_cached_array",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: ``<repo root>/../shared/data``; the environment variable ``HASHBENCH_DATA_ROOT`` overrides it.
DEFAULT_DATA_ROOT = Path(
    os.environ.get("HASHBENCH_DATA_ROOT", str(REPO_ROOT.parent / "shared" / "data"))
).resolve()
#: ``<repo root>/results/cache`` (git-ignored); ``HASHBENCH_CACHE_DIR`` overrides it.
DEFAULT_CACHE_DIR = Path(
    os.environ.get("HASHBENCH_CACHE_DIR", str(REPO_ROOT / "results" / "cache"))
).resolve()

PARTS = ("query", "database", "train", "val")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where the protocol looked; the message says where and how to get
    them."""


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """``data_root`` as a Path, or :data:`DEFAULT_DATA_ROOT` when None."""
    return DEFAULT_DATA_ROOT if data_root is None else Path(data_root).expanduser().resolve()


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir`` as a Path, or :data:`DEFAULT_CACHE_DIR` when None."""
    return DEFAULT_CACHE_DIR if cache_dir is None else Path(cache_dir).expanduser().resolve()


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


class ImageReadError(ValueError):
    """An image file that cannot be decoded (truncated, corrupt, not an image): names the file."""


def open_rgb(path: str | os.PathLike, size: tuple[int, int] | None = None) -> Any:
    """Decode one image file as an RGB PIL image (resized to ``size`` = (W, H) when given).

    A truncated or corrupt file raises :class:`ImageReadError` naming it, instead of PIL's bare
    ``OSError: Truncated File Read``.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != tuple(size):
                im = im.resize(tuple(size), Image.BILINEAR)
            return im
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"image {path} cannot be decoded ({type(exc).__name__}: {exc}): a "
                             "truncated or corrupt file? Replace it or leave it out of the "
                             "dataset") from None


class ImageSet(Sequence):
    """A lazy, indexable collection of images; ``ims[i]`` is an RGB ``PIL.Image``.

    Backed either by a list of file paths (decoded on access) or by an in-memory uint8 array
    (``N x H x W x C`` or ``N x H x W`` grey). ``subset(idx)`` is cheap (no decoding). Deep methods
    wrap it in a torch ``Dataset`` with their own transforms; ``array`` (or None) and ``paths``
    (or None) expose the backing store for code that wants it directly.
    """

    def __init__(
        self,
        *,
        paths: Sequence[str | os.PathLike] | None = None,
        array: np.ndarray | None = None,
        indices: np.ndarray | None = None,
    ) -> None:
        if (paths is None) == (array is None):
            raise ValueError("ImageSet needs exactly one of paths= or array=")
        if array is not None:
            array = np.asarray(array)
            if array.dtype != np.uint8 or array.ndim not in (3, 4):
                raise ValueError(
                    "ImageSet array must be uint8 N x H x W (grey) or N x H x W x C, got "
                    f"{array.dtype} {array.shape}"
                )
            if array.ndim == 4 and array.shape[3] not in (1, 3):
                raise ValueError(f"ImageSet array must have 1 or 3 channels, got {array.shape}")
            n = len(array)
        else:
            paths = [str(p) for p in paths]
            n = len(paths)
        self._paths = paths
        self._array = array
        self._idx = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self._idx)

    def __getitem__(self, i):  # type: ignore[override]
        from PIL import Image

        if isinstance(i, slice):
            return self.subset(np.arange(len(self))[i])
        j = int(self._idx[i])
        if self._array is not None:
            a = self._array[j]
            if a.ndim == 3 and a.shape[2] == 1:
                a = a[:, :, 0]
            return Image.fromarray(a).convert("RGB")
        return open_rgb(self._paths[j])

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        """The images at ``indices`` (positions in this set), without decoding anything."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset index out of range for an ImageSet of {len(self)} images")
        sub = ImageSet.__new__(ImageSet)
        sub._paths, sub._array, sub._idx = self._paths, self._array, self._idx[idx]
        return sub

    @property
    def array(self) -> np.ndarray | None:
        """The images as a uint8 array (this subset's rows), or None for path-backed sets."""
        return None if self._array is None else self._array[self._idx]

    @property
    def paths(self) -> list[str] | None:
        """The image file paths of this subset, or None for array-backed sets."""
        return None if self._paths is None else [self._paths[int(j)] for j in self._idx]

    def __repr__(self) -> str:
        kind = "array" if self._array is not None else "files"
        return f"ImageSet({len(self)} images, backed by {kind})"


# --------------------------------------------------------------------------------------------
# Split and Benchmark
# --------------------------------------------------------------------------------------------


def _as_index(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a if a is not None else [], dtype=np.int64).reshape(-1)
    if arr.size and arr.min() < 0:
        raise ValueError(f"split part {name!r} has negative indices")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"split part {name!r} has duplicate indices")
    arr = np.sort(arr)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Split:
    """Index sets into a benchmark's item arrays (int64, sorted ascending, read-only).

    ``val`` is empty unless requested; it is carved from the training set (never from the
    queries) and ``train`` then excludes it. The database order is ascending item index: the
    evaluation breaks Hamming-distance ties by database position, so this order is part of the
    protocol.
    """

    query: np.ndarray
    database: np.ndarray
    train: np.ndarray
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        for name in PARTS:
            object.__setattr__(self, name, _as_index(getattr(self, name), name))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return all(np.array_equal(getattr(self, n), getattr(other, n)) for n in PARTS)

    def __hash__(self) -> int:
        return hash(self.hash())

    def hash(self) -> str:
        """12 hex digits of SHA-256 over the four index lists (little-endian int64, fixed part
        order), so the same split gives the same hash on any machine."""
        h = hashlib.sha256()
        for name in PARTS:
            arr = getattr(self, name)
            h.update(f"{name}:{arr.size};".encode())
            h.update(arr.astype("<i8").tobytes())
        return h.hexdigest()[:12]

    def sizes(self) -> dict[str, int]:
        """Number of items in each part."""
        return {name: int(getattr(self, name).size) for name in PARTS}

    def check(self, n_items: int, *, query_in_database: bool = False,
              train_in_database: bool = True) -> None:
        """Assert the protocol's invariants (FAISS-style self-check); raises ValueError."""
        for name in PARTS:
            arr = getattr(self, name)
            if arr.size and arr.max() >= n_items:
                raise ValueError(f"split part {name!r} indexes beyond the {n_items} items")
        for name in ("query", "database", "train"):
            if getattr(self, name).size == 0:
                raise ValueError(f"split part {name!r} is empty")
        if not query_in_database and np.intersect1d(self.query, self.database).size:
            raise ValueError("queries and database overlap but the protocol says they are disjoint")
        trainval = np.union1d(self.train, self.val)
        if train_in_database and np.setdiff1d(trainval, self.database).size:
            raise ValueError("training items outside the database but the protocol says train is "
                             "a subset of the database")
        if np.intersect1d(self.train, self.val).size:
            raise ValueError("train and val overlap")
        if np.intersect1d(self.val, self.query).size or np.intersect1d(self.train, self.query).size:
            raise ValueError("training/validation items overlap the queries")

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``query.txt``, ``database.txt``, ``train.txt``, ``val.txt`` (one item index a
        line) and ``split.json`` (sizes and hash) into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name in PARTS:
            np.savetxt(d / f"{name}.txt", getattr(self, name), fmt="%d")
        (d / "split.json").write_text(
            json.dumps({"hash": self.hash(), "sizes": self.sizes()}, indent=1) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Split:
        """Read a split written by :meth:`save`; the stored hash must match the lists."""
        d = Path(directory)
        parts = {}
        for name in PARTS:
            f = d / f"{name}.txt"
            if not f.exists():
                if name == "val":
                    parts[name] = np.zeros(0, dtype=np.int64)
                    continue
                raise FileNotFoundError(f"split file {f} is missing")
            parts[name] = np.asarray(f.read_text().split(), dtype=np.int64)
        split = cls(**parts)
        meta_file = d / "split.json"
        if meta_file.exists():
            stored = json.loads(meta_file.read_text()).get("hash")
            if stored and stored != split.hash():
                raise ValueError(f"split in {d}: stored hash {stored} does not match its index "
                                 f"lists ({split.hash()}); the files were edited or truncated")
        return split


@dataclass
class Benchmark:
    """One dataset under one protocol and seed: item labels, inputs, and the split.

    ``labels`` is ``N x C`` uint8 multi-hot (single-label data is one-hot). ``features`` is an
    ``N x D`` float32 array for feature-input methods (else None); ``images`` an
    :class:`ImageSet` for image-input methods (else None). ``info`` records provenance: protocol
    options, the feature backbone (or "raw pixels"), dropped/missing counts, split hash and sizes,
    and whether the data is a construction.
    """

    name: str
    protocol: str
    labels: np.ndarray
    split: Split
    features: np.ndarray | None = None
    images: ImageSet | None = None
    default_k: int | None = None
    info: dict = field(default_factory=dict)
    paths: list[str] | None = None

    def _idx(self, part: str) -> np.ndarray:
        if part not in PARTS:
            raise ValueError(f"unknown split part {part!r}; expected one of {PARTS}")
        return getattr(self.split, part)

    def inputs(self, part: str):
        """The inputs of a split part: ``features[idx]`` when features are loaded, else
        ``images.subset(idx)``."""
        idx = self._idx(part)
        if self.features is not None:
            return self.features[idx]
        if self.images is not None:
            return self.images.subset(idx)
        raise ValueError(f"benchmark {self.name!r} has neither features nor images loaded")

    def targets(self, part: str) -> np.ndarray:
        """``labels[idx]`` of a split part (``n x C`` uint8 multi-hot)."""
        return self.labels[self._idx(part)]

    @property
    def n_items(self) -> int:
        return int(self.labels.shape[0])

    @property
    def multi_label(self) -> bool:
        return bool((self.labels.sum(1) > 1).any())

    def export_lists(self, directory: str | os.PathLike) -> Path:
        """Write the split as HashNet-format lists (``test.txt`` = queries, ``database.txt``,
        ``train.txt``, ``val.txt`` if any): each line an item name (its path, or ``#<index>``
        when there is no file) then the 0/1 label vector (METHODS.md 3.1)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        names = self.paths if self.paths is not None else [f"#{i}" for i in range(self.n_items)]
        for part, fname in (("query", "test.txt"), ("database", "database.txt"),
                            ("train", "train.txt"), ("val", "val.txt")):
            idx = self._idx(part)
            if part == "val" and idx.size == 0:
                continue
            with open(d / fname, "w") as fh:
                fh.writelines(names[i] + " " + " ".join(map(str, self.labels[i].tolist())) + "\n" for i in idx)
        return d

    def __repr__(self) -> str:
        kind = "features" if self.features is not None else "images"
        return (f"Benchmark({self.name!r}, {self.n_items} items, {self.labels.shape[1]} labels, "
                f"{kind}, sizes={self.split.sizes()}, hash={self.split.hash()})")


# --------------------------------------------------------------------------------------------
# Sampling helpers (all driven by a numpy Generator; permutations use argsort of uniform doubles,
# the most stable part of numpy's random streams)
# --------------------------------------------------------------------------------------------


def permutation(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random permutation of ``range(n)``: stable argsort of ``n`` uniform doubles."""
    return np.argsort(rng.random(n), kind="stable").astype(np.int64)


def sample_per_class(
    class_ids: np.ndarray, candidates: np.ndarray, per_class: int, rng: np.random.Generator,
    *, what: str = "items",
) -> np.ndarray:
    """``per_class`` random items of every class among ``candidates`` (single-label data),
    classes in ascending id order. Errors name the class that has too few items."""
    out = []
    for c in np.unique(class_ids):
        pool = candidates[class_ids[candidates] == c]
        if pool.size < per_class:
            raise ValueError(f"class {c} has only {pool.size} candidate items, {per_class} "
                             f"needed for the {what}")
        out.append(pool[permutation(rng, pool.size)[:per_class]])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def sample_random(candidates: np.ndarray, n: int, rng: np.random.Generator,
                  *, what: str = "items") -> np.ndarray:
    """``n`` random items of ``candidates``."""
    if n > candidates.size:
        raise ValueError(f"{n} {what} requested but only {candidates.size} candidates exist")
    if n <= 0:
        raise ValueError(f"the {what} would be empty (n={n})")
    return np.sort(candidates[permutation(rng, candidates.size)[:n]])


def quota_sample(labels: np.ndarray, candidates: np.ndarray, per_class: int,
                 rng: np.random.Generator, *, what: str = "items") -> np.ndarray:
    """Multi-label quota sampling (the NUS-WIDE-21 procedure, METHODS.md 3.5): walk a random
    permutation of ``candidates``; an item is taken, and counted once, for the lowest-index label
    it carries whose quota of ``per_class`` is not yet full. Stops when every quota is full."""
    C = labels.shape[1]
    need = np.full(C, per_class, dtype=np.int64)
    chosen = []
    for i in candidates[permutation(rng, candidates.size)]:
        open_labels = np.flatnonzero(labels[i].astype(bool) & (need > 0))
        if open_labels.size:
            need[open_labels[0]] -= 1
            chosen.append(i)
            if not need.any():
                break
    if need.any():
        short = {int(c): int(per_class - need[c]) for c in np.flatnonzero(need)}
        raise ValueError(f"quota sampling for the {what}: labels {short} (label: items found) "
                         f"could not reach {per_class} items each")
    return np.sort(np.asarray(chosen, dtype=np.int64))


def carve_val(train: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``val_fraction`` of the training items off as a validation set (own random stream,
    so the query/database/train split does not depend on ``val_fraction``)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return train, np.zeros(0, dtype=np.int64)
    n_val = max(1, round(val_fraction * train.size))
    if n_val >= train.size:
        raise ValueError(f"val_fraction={val_fraction} leaves no training items "
                         f"(train has {train.size})")
    rng = np.random.default_rng([seed, 0x7A1])
    perm = permutation(rng, train.size)
    return np.sort(train[perm[n_val:]]), np.sort(train[perm[:n_val]])


# --------------------------------------------------------------------------------------------
# Array cache with checksums (decoded images, extracted features)
# --------------------------------------------------------------------------------------------


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def save_cached_array(path: str | os.PathLike, arr: np.ndarray, meta: dict) -> Path:
    """Write ``arr`` to ``path`` (``.npy``) atomically, then a JSON sidecar (``path + .json``)
    with ``meta``, the shape, dtype, byte size and SHA-256 of the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, arr)
        side = dict(meta)
        side.update(shape=list(arr.shape), dtype=str(arr.dtype), bytes=os.path.getsize(tmp),
                    sha256=_sha256_file(Path(tmp)))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    side_path = Path(str(path) + ".json")
    side_tmp = Path(str(side_path) + ".tmp")
    side_tmp.write_text(json.dumps(side, indent=1, sort_keys=True) + "\n")
    os.replace(side_tmp, side_path)
    return path


def load_cached_array(path: str | os.PathLike, meta: dict | None = None) -> np.ndarray | None:
    """The array cached at ``path``, or None (with a warning saying why) when it is absent,
    partial, corrupt (size or SHA-256 mismatch) or was built with different ``meta``."""
    path = Path(path)
    side_path = Path(str(path) + ".json")
    if not path.exists():
        return None
    if not side_path.exists():
        warnings.warn(f"cache file {path} has no sidecar {side_path.name}: rebuilding", stacklevel=2)
        return None
    try:
        side = json.loads(side_path.read_text())
    except (OSError, ValueError):
        warnings.warn(f"cache sidecar {side_path} is unreadable: rebuilding", stacklevel=2)
        return None
    for k, v in (meta or {}).items():
        if side.get(k) != v:
            warnings.warn(f"cache file {path} was built with {k}={side.get(k)!r}, not {v!r}: "
                          "rebuilding", stacklevel=2)
            return None
    size = os.path.getsize(path)
    if size != side.get("bytes"):
        warnings.warn(f"cache file {path} has {size} bytes, expected {side.get('bytes')} "
                      "(partial write?): rebuilding", stacklevel=2)
        return None
    if _sha256_file(path) != side.get("sha256"):
        warnings.warn(f"cache file {path} fails its SHA-256 check (corrupt): rebuilding",
                      stacklevel=2)
        return None
    arr = np.load(path, allow_pickle=False)
    if list(arr.shape) != side.get("shape") or str(arr.dtype) != side.get("dtype"):
        warnings.warn(f"cache file {path} has shape/dtype {arr.shape}/{arr.dtype}, expected "
                      f"{side.get('shape')}/{side.get('dtype')}: rebuilding", stacklevel=2)
        return None
    return arr
