# ruff: noqa: RUF012  (class-level option/size tables are read-only; load() copies them)
"""The data protocols: one :class:`Protocol` per dataset, each turning files on disk into a
:class:`~data_protocols.core.Benchmark` (items, labels, inputs and a seeded split).

Protocol table (sizes and sources): ``data_protocols/README.md``. Every random choice is drawn
from ``numpy.random.default_rng(seed)`` through :func:`~data_protocols.core.permutation`, so a
seed gives the same split, and the same split hash, on any machine.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_protocols import readers as rd
from data_protocols.core import (
    Benchmark,
    DatasetNotFoundError,
    ImageSet,
    Split,
    carve_val,
    permutation,
    quota_sample,
    resolve_cache_dir,
    resolve_data_root,
    sample_per_class,
    sample_random,
)

__all__ = [
    "PROTOCOLS",
    "ListIndex",
    "Protocol",
    "describe_protocols",
    "get_protocol",
    "list_protocols",
]

INPUT_KINDS = ("features", "images")


def _one_hot(ids: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    n = int(ids.max()) + 1 if n_classes is None else n_classes
    out = np.zeros((ids.size, n), dtype=np.uint8)
    out[np.arange(ids.size), ids] = 1
    return out


def _short_hash(strings: list[str]) -> str:
    h = hashlib.sha256()
    for s in strings:
        h.update(s.encode() + b"\n")
    return h.hexdigest()[:12]


@dataclass
class _Built:
    """What a protocol's ``_build`` hands back to :meth:`Protocol.load`."""

    labels: np.ndarray
    query: np.ndarray
    database: np.ndarray
    train: np.ndarray
    features: np.ndarray | None = None
    images: ImageSet | None = None
    dataset_key: str = ""
    paths: list[str] | None = None
    info: dict = field(default_factory=dict)
    query_in_database: bool = False
    train_in_database: bool = True


class Protocol:
    """A dataset and its paper protocol. Subclasses set the class attributes and implement
    ``_locate`` (find the files or raise DatasetNotFoundError) and ``_build``."""

    name: str = ""
    description: str = ""
    multi_label: bool = False
    construction: bool = False
    default_k: int | None = None
    paper_sizes: dict = {}
    input_kinds: tuple[str, ...] = INPUT_KINDS
    default_backbone: str = "raw"
    how_to_get: str = ""
    options: dict[str, Any] = {}

    # ----------------------------------------------------------------------------- public
    def status(self, data_root: str | os.PathLike | None = None) -> dict:
        """Whether the data is present, where the protocol looked, how to get it, the sizes."""
        root = resolve_data_root(data_root)
        try:
            where = self._locate(root, dict(self.options))
            present, looked = True, str(where)
        except DatasetNotFoundError as e:
            present, looked = False, str(e)
        return {"present": present, "looked_in": looked, "how_to_get": self.how_to_get,
                "sizes": dict(self.paper_sizes)}

    def load(
        self,
        data_root: str | os.PathLike | None = None,
        seed: int = 0,
        *,
        input_kind: str = "features",
        feature_backbone: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        val_fraction: float = 0.0,
        progress: bool = True,
        weights: str | os.PathLike | None = None,
        **variant_options: Any,
    ) -> Benchmark:
        """Read the dataset under ``data_root`` and split it with ``seed``.

        ``input_kind="features"`` fills ``Benchmark.features`` (a protocol's own features, or
        ``feature_backbone`` run once over the images and cached under ``cache_dir/features``);
        ``"images"`` fills ``Benchmark.images``. ``val_fraction`` carves a validation set from
        the training items. ``variant_options`` are the protocol's options (see ``options``).
        """
        if input_kind not in self.input_kinds:
            raise ValueError(f"protocol {self.name!r} supports input_kind in {self.input_kinds}, "
                             f"got {input_kind!r}")
        unknown = set(variant_options) - set(self.options)
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for protocol {self.name!r}; "
                             f"known: {sorted(self.options) or 'none'}")
        opts = {**self.options, **variant_options}
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        root = resolve_data_root(data_root)
        cache = resolve_cache_dir(cache_dir)
        rng = np.random.default_rng(int(seed))
        b = self._build(root, rng, opts, input_kind=input_kind, cache=cache, progress=progress)

        train, val = carve_val(np.asarray(b.train, dtype=np.int64), val_fraction, int(seed))
        split = Split(query=b.query, database=b.database, train=train, val=val)
        split.check(len(b.labels), query_in_database=b.query_in_database,
                    train_in_database=b.train_in_database)

        features, images = b.features, b.images
        backbone_info = None
        if input_kind == "features":
            native_ok = feature_backbone in (None, "native") or (
                feature_backbone == "raw" and b.info.get("raw"))
            if features is not None and native_ok:
                backbone_info = b.info.get("features", "provided")
            else:
                if images is None:
                    raise ValueError(f"protocol {self.name!r} has no images, only its own "
                                     f"features ({b.info.get('features')}); feature_backbone "
                                     f"{feature_backbone!r} does not apply")
                backbone = feature_backbone or self.default_backbone
                from data_protocols.features import BACKBONES, extract_features

                features = extract_features(images, backbone, cache / "features", b.dataset_key,
                                            weights=weights, progress=progress, data_root=root)
                backbone_info = ("raw pixels" if backbone == "raw"
                                 else f"{backbone}: {BACKBONES[backbone].description}")
            images = None
        else:
            features = None
            if images is None:
                raise ValueError(f"protocol {self.name!r} has no images")
        info = {
            "protocol": self.name, "description": self.description, "seed": int(seed),
            "data_root": str(root), "options": opts, "input_kind": input_kind,
            "feature_backbone": backbone_info, "val_fraction": val_fraction,
            "multi_label": self.multi_label, "construction": self.construction,
            "default_k": self.default_k, "n_items": len(b.labels),
            "n_labels": int(b.labels.shape[1]), "n_dropped_unlabelled": 0,
            "n_missing_images": 0, **b.info,
            "split_hash": split.hash(), "sizes": split.sizes(),
            "query_in_database": b.query_in_database, "train_in_database": b.train_in_database,
        }
        info.pop("raw", None)
        return Benchmark(name=self.name, protocol=self.name, labels=b.labels, split=split,
                         features=None if features is None else np.asarray(features, np.float32),
                         images=images, default_k=self.default_k, info=info, paths=b.paths)

    # ----------------------------------------------------------------------------- override
    def _locate(self, root: Path, opts: dict) -> Path:
        raise NotImplementedError

    def _build(self, root: Path, rng: np.random.Generator, opts: dict, *, input_kind: str,
               cache: Path, progress: bool) -> _Built:
        raise NotImplementedError

    def _not_found(self, looked: list[Path], what: str = "files") -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"{self.name}: {what} not found. Looked in: {', '.join(map(str, looked))}. "
            f"How to get it: {self.how_to_get}")

    def __repr__(self) -> str:
        return f"<Protocol {self.name}: {self.description}>"


def _class_protocol_split(y: np.ndarray, rng: np.random.Generator, q_per: int, t_per: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10 appendix protocol: ``q_per`` queries a class from all items, the rest the
    database, ``t_per`` a class of the database as training items."""
    allidx = np.arange(y.size, dtype=np.int64)
    query = sample_per_class(y, allidx, q_per, rng, what="queries")
    database = np.setdiff1d(allidx, query)
    train = sample_per_class(y, database, t_per, rng, what="training set")
    return query, database, train


# ============================================================================================
# CIFAR-10
# ============================================================================================


class Cifar10(Protocol):
    name = "cifar10"
    description = ("CIFAR-10 appendix protocol: train+test merged (60,000); 100/class queries; "
                   "the rest database; 500/class of the database train")
    default_k = None
    paper_sizes = {"query": 1000, "database": 59000, "train": 5000}
    default_backbone = "mobilenet_tflite"
    how_to_get = ("torchvision's cifar-10-batches-py under <root>/ (run with download=True / "
                  "--download), or the image-folder copy <root>/cifar-10-jpg/{train,test}/<class>/"
                  " with original_order.csv")
    options = {"n_query_per_class": 100, "n_train_per_class": 500, "download": False,
               "decode": True}

    def _candidates(self, root: Path) -> list[Path]:
        return [root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py",
                root / "cifar-10-jpg", root / "cifar10-jpg", root / "cifar10"]

    def _locate(self, root: Path, opts: dict) -> Path:
        for c in self._candidates(root):
            if c.name.endswith("batches-py") and (c / "data_batch_1").exists():
                return c
            if (c / "train").is_dir() and (c / "test").is_dir():
                return c
        raise self._not_found(self._candidates(root))

    def source(self, root: Path, opts: dict, cache: Path, *, need_array: bool, progress: bool
               ) -> tuple[np.ndarray, ImageSet, str, list[str] | None, str]:
        """(labels, images, dataset key, paths, source description) in the official order."""
        if opts.get("download"):
            try:
                self._locate(root, opts)
            except DatasetNotFoundError:
                import torchvision

                torchvision.datasets.CIFAR10(root=str(root), train=True, download=True)
        where = self._locate(root, opts)
        if where.name.endswith("batches-py"):
            x, y = rd.read_cifar10_pickles(where)
            return y, ImageSet(array=x), "cifar10-pickles", None, f"pickles at {where}"
        paths, y, _ = rd.read_cifar10_folder_index(where)
        rel = [str(Path(p).relative_to(where)) for p in paths]
        key = f"cifar10-jpg-{len(paths)}-{_short_hash(rel)}"
        if need_array:
            x = rd.decode_images(paths, None, cache / "arrays" / f"{key}.npy",
                                 {"dataset": key, "n_images": len(paths)}, progress=progress)
            ims = ImageSet(array=x)
        else:
            ims = ImageSet(paths=paths)
        return y, ims, key, paths, f"JPEG image folder at {where}"

    def _build(self, root, rng, opts, *, input_kind, cache, progress):
        y, ims, key, paths, src = self.source(root, opts, cache, need_array=bool(opts["decode"]),
                                              progress=progress)
        if y.size != 60000:
            import warnings

            warnings.warn(f"CIFAR-10 at {root} has {y.size} images, not 60,000", stacklevel=3)
        q, d, t = _class_protocol_split(y, rng, opts["n_query_per_class"],
                                        opts["n_train_per_class"])
        return _Built(labels=_one_hot(y, 10), query=q, database=d, train=t, images=ims,
                      dataset_key=key, paths=paths, info={"source": src})


# ============================================================================================
# Fashion-MNIST and digits
# ============================================================================================


class FashionMNIST(Protocol):
    name = "fashion_mnist"
    description = ("Fashion-MNIST with the CIFAR-10 protocol: train+test merged (70,000); "
                   "100/class queries; the rest database; 500/class of the database train")
    paper_sizes = {"query": 1000, "database": 69000, "train": 5000}
    default_backbone = "raw"
    how_to_get = ("the four IDX .gz files in <root>/fashion-mnist/ or <root>/FashionMNIST/raw/ "
                  "(torchvision.datasets.FashionMNIST(root, download=True), or download=True)")
    options = {"n_query_per_class": 100, "n_train_per_class": 500, "download": False}
    FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

    def _locate(self, root, opts):
        cands = [root / "fashion-mnist", root / "FashionMNIST" / "raw", root / "fashion_mnist"]
        for c in cands:
            if all((c / f).exists() for f in self.FILES):
                return c
        raise self._not_found(cands, "the four IDX .gz files")

    def _build(self, root, rng, opts, *, input_kind, cache, progress):
        if opts.get("download"):
            try:
                self._locate(root, opts)
            except DatasetNotFoundError:
                import torchvision

                torchvision.datasets.FashionMNIST(root=str(root), train=True, download=True)
        where = self._locate(root, opts)
        x = np.concatenate([rd.read_idx(where / self.FILES[0]), rd.read_idx(where / self.FILES[2])])
        y = np.concatenate([rd.read_idx(where / self.FILES[1]),
                            rd.read_idx(where / self.FILES[3])]).astype(np.int64)
        if len(x) != len(y):
            raise ValueError(f"Fashion-MNIST in {where}: {len(x)} images but {len(y)} labels")
        q, d, t = _class_protocol_split(y, rng, opts["n_query_per_class"],
                                        opts["n_train_per_class"])
        feats = (x.reshape(len(x), -1).astype(np.float32) / 255.0) if input_kind == "features" \
            else None
        return _Built(labels=_one_hot(y, 10), query=q, database=d, train=t, features=feats,
                      images=ImageSet(array=x), dataset_key="fashion_mnist",
                      info={"source": f"IDX files at {where}", "raw": True,
                            "features": "raw pixels (28x28 grey, scaled to [0, 1], flattened)"})


class Digits(Protocol):
    name = "digits"
    description = ("scikit-learn digits (1,797 8x8 grey images), CIFAR-10-style protocol scaled "
                   "down: 10/class queries; the rest database; 50/class of the database train")
    paper_sizes = {"query": 100, "database": 1697, "train": 500}
    how_to_get = "bundled with scikit-learn (sklearn.datasets.load_digits): always available"
    options = {"n_query_per_class": 10, "n_train_per_class": 50}

    def _locate(self, root, opts):
        return Path("sklearn.datasets.load_digits")

    def _build(self, root, rng, opts, *, input_kind, cache, progress):
        from sklearn.datasets import load_digits

        d = load_digits()
        y = d.target.astype(np.int64)
        q, db, t = _class_protocol_split(y, rng, opts["n_query_per_class"],
                                         opts["n_train_per_class"])
        imgs = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
        return _Built(labels=_one_hot(y, 10), query=q, database=db, train=t,
                      features=(d.data / 16.0).astype(np.float32), images=ImageSet(array=imgs),
                      dataset_key="digits",
                      info={"source": "sklearn.datasets.load_digits", "raw": True,
                            "features": "raw pixels (8x8 grey, 0..16 scaled to [0, 1], flattened)"})


# ============================================================================================
# MIRFlickr-25K
# ============================================================================================


def _drop_unlabelled(labels: np.ndarray) -> tuple[np.ndarray, int]:
    keep = np.flatnonzero(labels.any(1))
    return keep, int(labels.shape[0] - keep.size)


class MIRFlickr25K(Protocol):
    name = "mirflickr25k"
    description = ("MIRFlickr-25K (20,015-image cleared set, 24 labels, real multi-label), "
                   "1,386-d binary tag features: 2,000 random queries, the rest database, "
                   "10,000 of the database train; report mAP@all and mAP@5000")
    multi_label = True
    default_k = None
    paper_sizes = {"query": 2000, "database": 18015, "train": 10000}
    input_kinds = ("features",)
    how_to_get = ("mirflickr25k-lall.mat (LAll, N x 24) and mirflickr25k-yall.mat (YAll, "
                  "N x 1386) in <root>/mirflickr25k/ (the cleared set used by cross-modal hashing "
                  "papers)")
    options = {"n_query": 2000, "n_train": 10000}

    def _locate(self, root, opts):
        c = root / "mirflickr25k"
        if (c / "mirflickr25k-lall.mat").exists() and (c / "mirflickr25k-yall.mat").exists():
            return c
        raise self._not_found([c], "mirflickr25k-lall.mat / mirflickr25k-yall.mat")

    def _build(self, root, rng, opts, *, input_kind, cache, progress):
        where = self._locate(root, opts)
        L = np.asarray(rd.read_mat_array(where / "mirflickr25k-lall.mat", "LAll"))
        Y = np.asarray(rd.read_mat_array(where / "mirflickr25k-yall.mat", "YAll"))
        if L.shape[0] != Y.shape[0]:
            raise ValueError(f"{where}: LAll has {L.shape[0]} rows but YAll {Y.shape[0]}")
        keep, dropped = _drop_unlabelled(L)
        L = (L[keep] > 0).astype(np.uint8)
        Y = Y[keep].astype(np.float32)
        allidx = np.arange(len(L), dtype=np.int64)
        q = sample_random(allidx, opts["n_query"], rng, what="queries")
        d = np.setdiff1d(allidx, q)
        t = sample_random(d, opts["n_train"], rng, what="training items")
        return _Built(labels=L, query=q, database=d, train=t, features=Y,
                      dataset_key="mirflickr25k",
                      info={"source": f"MATLAB files at {where}", "n_dropped_unlabelled": dropped,
                            "features": "user-tag bag of words (1,386-d binary)",
                            "also_report_k": 5000})


# ============================================================================================
# CIFAR-10 2x2 mosaics (a multi-label construction from real images)
# ============================================================================================


def build_mosaics(images: np.ndarray, classes: np.ndarray, n_mosaics: int, seed: int,
                  n_classes: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2x2 mosaics of real images, each source image used at most once.

    For each mosaic: draw k ~ uniform{1..4} and k distinct classes; the four tiles get those k
    classes plus (4 - k) repeats drawn from them, in random tile order; each tile is the next
    unused image of its class (classes' images visited in a random order). Label set = the k
    classes. Returns (mosaics n x 2H x 2W x C uint8, labels n x n_classes uint8,
    source indices n x 4 in tile order top-left, top-right, bottom-left, bottom-right).
    """
    rng = np.random.default_rng([seed, 0x305A1C])
    pools = [np.flatnonzero(classes == c)[permutation(rng, int((classes == c).sum()))]
             for c in range(n_classes)]
    nxt = np.zeros(n_classes, dtype=np.int64)
    H, W = images.shape[1:3]
    out = np.empty((n_mosaics, 2 * H, 2 * W) + images.shape[3:], dtype=np.uint8)
    labels = np.zeros((n_mosaics, n_classes), dtype=np.uint8)
    src = np.empty((n_mosaics, 4), dtype=np.int64)
    for m in range(n_mosaics):
        k = 1 + int(rng.random() * 4)
        chosen = permutation(rng, n_classes)[:k]
        extra = chosen[(rng.random(4 - k) * k).astype(np.int64)]
        tiles = np.concatenate([chosen, extra])[permutation(rng, 4)]
        for t, c in enumerate(tiles):
            if nxt[c] >= pools[c].size:
                raise ValueError(f"mosaic construction ran out of images of class {c} after "
                                 f"{m} mosaics; ask for fewer mosaics")
            i = pools[c][nxt[c]]
            nxt[c] += 1
            src[m, t] = i
            r, col = divmod(t, 2)
            out[m, r * H:(r + 1) * H, col * W:(col + 1) * W] = images[i]
        labels[m, chosen] = 1
    return out, labels, src


class Cifar10Mosaic(Protocol):
    name = "cifar10_mosaic"
    description = ("CONSTRUCTION: 2x2 mosaics (64x64) of real CIFAR-10 images, label set = union "
                   "of the tiles' classes (1-4); 12,000 mosaics, each source image used once: "
                   "1,000 random queries, the rest database, 5,000 of the database train")
    multi_label = True
    construction = True
    default_k = None
    paper_sizes = {"query": 1000, "database": 11000, "train": 5000}
    default_backbone = "mobilenet_tflite"
    how_to_get = Cifar10.how_to_get
    options = {"n_mosaics": 12000, "n_query": 1000, "n_train": 5000, "mosaic_seed": 0,
               "download": False}

    def _locate(self, root, opts):
        return Cifar10()._locate(root, opts)

    def _build(self, root, rng, opts, *, input_kind, cache, progress):
        copts = {**Cifar10.options, "download": opts["download"]}
        y, ims, key, _, src = Cifar10().source(root, copts, cache, need_array=True,
                                               progress=progress)
        n = int(opts["n_mosaics"])
        if not 0 < n <= 14000:
            raise ValueError(f"n_mosaics must be in 1..14,000 (each source image used once), "
                             f"got {n}")
        x, labels, srcidx = build_mosaics(ims.array, y, n, int(opts["mosaic_seed"]))
        allidx = np.arange(n, dtype=np.int64)
        q = sample_random(allidx, opts["n_query"], rng, what="queries")
        d = np.setdiff1d(allidx, q)
        t = sample_random(d, opts["n_train"], rng, what="training items")
        counts = np.bincount(labels.sum(1), minlength=5)[1:].tolist()
        return _Built(labels=labels, query=q, database=d, train=t, images=ImageSet(array=x),
                      dataset_key=f"{key}-mosaic-{n}-s{opts['mosaic_seed']}",
                      info={"source": f"mosaics of CIFAR-10 ({src})",
                            "mosaic_label_count_histogram": counts,
                            "mosaic_sources_hash": _short_hash([str(v) for v in srcidx.ravel()])})


# ============================================================================================
# List-file datasets: ImageNet-100, MS COCO, NUS-WIDE-21
# ============================================================================================


@dataclass
class ListIndex:
    """The items of a list-file dataset before any image is looked up: ``list_paths`` (as in
    the lists), ``keys`` (the matching identity: the file name), ``labels``, and the split."""

    list_paths: list[str]
    keys: list[str]
    labels: np.ndarray
    query: np.ndarray
    database: np.ndarray
    train: np.ndarray
    info: dict
    query_in_database: bool = False
    train_in_database: bool = True


def _index_of(keys: list[str], table: dict[str, int], lf: rd.ListFile, labels: np.ndarray
              ) -> np.ndarray:
    """Positions of a list's entries in the item table; the labels must agree."""
    idx = np.asarray([table[k] for k in keys], dtype=np.int64)
    bad = np.flatnonzero((labels[idx] != lf.labels).any(1))
    if bad.size:
        raise ValueError(f"{lf.file}, entry {bad[0] + 1} ({lf.paths[bad[0]]}): labels differ "
                         "from the same image's labels in another list")
    return idx


class _Items:
    """Accumulates unique items (by key) from several list files."""

    def __init__(self) -> None:
        self.table: dict[str, int] = {}
        self.paths: list[str] = []
        self.labels: list[np.ndarray] = []

    def add(self, lf: rd.ListFile) -> np.ndarray:
        keys = lf.item_keys()
        seen: dict[str, int] = {}
        for j, k in enumerate(keys):
            if k in seen:
                raise ValueError(f"{lf.file}: line {j + 1} repeats image {k!r} (first on line "
                                 f"{seen[k] + 1})")
            seen[k] = j
        for j, k in enumerate(keys):
            if k not in self.table:
                self.table[k] = len(self.paths)
                self.paths.append(lf.paths[j])
                self.labels.append(lf.labels[j])
        return _index_of(keys, self.table, lf, np.asarray(self.labels))

    def finish(self) -> tuple[list[str], list[str], np.ndarray]:
        keys = [""] * len(self.table)
        for k, i in self.table.items():
            keys[i] = k
        return self.paths, keys, np.asarray(self.labels, dtype=np.uint8)


class _ListProtocol(Protocol):
    multi_label = True
    dir_names: tuple[str, ...] = ()
    shared_lists: str = ""  # lists folder relative to the data root
    n_labels: int = 0
    list_names: tuple[str, ...] = ("train.txt", "test.txt", "database.txt")
    default_backbone = "alexnet"

    def list_dir(self, root: Path, opts: dict) -> Path:
        """Where the list files are: ``list_dir`` option, else ``<root>/<dataset>/`` when it holds
        ``test.txt``, else the released lists under ``<root>/<shared_lists>``."""
        if opts.get("list_dir"):
            d = Path(opts["list_dir"]).expanduser()
            if not (d / "test.txt").exists():
                raise DatasetNotFoundError(f"{self.name}: list_dir {d} has no test.txt")
            return d
        cands = [root / n for n in self.dir_names] + [root / self.shared_lists]
        for d in cands:
            if (d / "test.txt").exists():
                return d
        raise self._not_found(cands, "list files (test.txt, train.txt, database.txt)")

    def image_dir(self, root: Path, opts: dict) -> Path:
        if opts.get("image_root"):
            d = Path(opts["image_root"]).expanduser()
            if d.is_dir():
                return d
            raise DatasetNotFoundError(f"{self.name}: image_root {d} does not exist. "
                                       f"How to get it: {self.how_to_get}")
        cands = [root / n for n in self.dir_names]
        for d in cands:
            if d.is_dir():
                return d
        raise self._not_found(cands, "image folder")

    def _locate(self, root, opts):
        self.list_dir(root, opts)
        return self.image_dir(root, opts)

    def status(self, data_root=None):
        st = super().status(data_root)
        try:
            st["lists"] = str(self.list_dir(resolve_data_root(data_root), dict(self.options)))
        except DatasetNotFoundError:
            st["lists"] = None
        return st

    def read_lists(self, data_root: str | os.PathLike | None = None, seed: int = 0,
                   **options: Any) -> ListIndex:
        """Read the list files and build the split, without touching any image."""
        opts = {**self.options, **options}
        root = resolve_data_root(data_root)
        return self._index(root, np.random.default_rng(seed), opts)

    def _index(self, root: Path, rng: np.random.Generator, opts: dict) -> ListIndex:
        raise NotImplementedError

    def _read(self, d: Path, name: str) -> rd.ListFile:
        return rd.read_list_file(d / name, self.n_labels)

    def _build(self, root, rng, opts, *, input_kind, cache, progress):
        li = self._index(root, rng, opts)
        img_root = self.image_dir(root, opts)
        found, rep = rd.resolve_image_paths(li.list_paths, [img_root], progress=progress,
                                            desc=f"locating {self.name} images")
        n = len(found)
        n_missing = rep["n_missing"]
        if n_missing:
            frac = n_missing / n
            msg = (f"{self.name}: {n_missing} of {n} listed images are missing under {img_root} "
                   f"(tried the last 1-3 path components of each list path); e.g. "
                   f"{rep['missing_examples']}")
            if n_missing == n or frac > opts["max_missing_fraction"]:
                raise DatasetNotFoundError(msg + f" (max_missing_fraction="
                                           f"{opts['max_missing_fraction']}). How to get it: "
                                           f"{self.how_to_get}")
            import warnings

            warnings.warn(msg + ": those items are left out", stacklevel=3)
        keep = np.asarray([p is not None for p in found])
        new = np.cumsum(keep) - 1

        def remap(a: np.ndarray) -> np.ndarray:
            a = a[keep[a]]
            return new[a]

        paths = [p for p in found if p is not None]
        key = f"{self.name}-{_short_hash([k for k, ok in zip(li.keys, keep) if ok])}"
        info = dict(li.info, n_missing_images=n_missing,
                    missing_examples=rep["missing_examples"], image_root=str(img_root),
                    source=f"lists in {self.list_dir(root, opts)}")
        return _Built(labels=li.labels[keep], query=remap(li.query),
                      database=remap(li.database), train=remap(li.train),
                      images=ImageSet(paths=paths), dataset_key=key, paths=paths, info=info,
                      query_in_database=li.query_in_database,
                      train_in_database=li.train_in_database)


class ImageNet100(_ListProtocol):
    name = "imagenet100"
    description = ("ImageNet-100 (HashNet lists): 5,000 validation images as queries, 128,503 "
                   "training images of the 100 classes as database, 13,000 (130/class) of the "
                   "database as train")
    multi_label = False
    default_k = 1000
    paper_sizes = {"query": 5000, "database": 128503, "train": 13000}
    dir_names = ("imagenet100", "imagenet")
    shared_lists = "lists/hashnet/imagenet"
    n_labels = 100
    how_to_get = ("ILSVRC-2012 train and val images under <root>/imagenet100/ (any layout whose "
                  "last 1-3 path components match the lists, e.g. image/<wnid>_<n>.JPEG and "
                  "val_image/ILSVRC2012_val_<n>.JPEG); lists: HashNet's released "
                  "train/test/database.txt (in <root>/lists/hashnet/imagenet/)")
    options = {"list_dir": None, "image_root": None, "max_missing_fraction": 0.01}

    def _index(self, root, rng, opts):
        d = self.list_dir(root, opts)
        items = _Items()
        db = items.add(self._read(d, "database.txt"))
        q = items.add(self._read(d, "test.txt"))
        tr_lf = self._read(d, "train.txt")
        missing = [p for p in tr_lf.item_keys() if p not in items.table]
        if missing:
            raise ValueError(f"{d / 'train.txt'}: {len(missing)} training images are not in "
                             f"database.txt, e.g. {missing[:3]}")
        t = items.add(tr_lf)
        paths, keys, labels = items.finish()
        return ListIndex(paths, keys, labels, q, db, t, info={"lists": str(d)})


class Coco(_ListProtocol):
    name = "coco"
    description = ("MS COCO (HashNet lists, 122,218 images with >= 1 of 80 categories): 5,000 "
                   "queries, database = the rest (117,218; coco_db='paper') or HashNet's released "
                   "database (112,218, contains the queries; coco_db='hashnet_list'), 10,000 "
                   "train")
    default_k = 5000
    paper_sizes = {"query": 5000, "database": 117218, "train": 10000}
    dir_names = ("coco", "mscoco")
    shared_lists = "lists/hashnet/coco"
    n_labels = 80
    how_to_get = ("COCO-2014 train2014/ and val2014/ images under <root>/coco/ (from "
                  "cocodataset.org); lists: HashNet's released train/test/database.txt (in "
                  "<root>/lists/hashnet/coco/)")
    options = {"coco_db": "paper", "list_dir": None, "image_root": None,
               "max_missing_fraction": 0.01}
    VARIANTS = {"paper": "paper", "hashnet_list": "hashnet_list",
                "hashnet_caffe_list": "hashnet_list"}

    def _index(self, root, rng, opts):
        variant = self.VARIANTS.get(opts["coco_db"])
        if variant is None:
            raise ValueError(f"coco_db must be one of {sorted(self.VARIANTS)}, got "
                             f"{opts['coco_db']!r}")
        d = self.list_dir(root, opts)
        items = _Items()
        q = items.add(self._read(d, "test.txt"))
        t = items.add(self._read(d, "train.txt"))
        db_list = items.add(self._read(d, "database.txt"))
        paths, keys, labels = items.finish()
        allidx = np.arange(len(keys), dtype=np.int64)
        info = {"lists": str(d), "coco_db": variant, "n_all": len(keys),
                "n_released_database": int(db_list.size)}
        if variant == "paper":
            db = np.setdiff1d(allidx, q)
            return ListIndex(paths, keys, labels, q, db, t, info=info)
        return ListIndex(paths, keys, labels, q, db_list, t, info=info, query_in_database=True,
                         train_in_database=bool(np.isin(t, db_list).all()))


class NusWide21(_ListProtocol):
    name = "nuswide21"
    description = ("NUS-WIDE, 21 most frequent concepts: 2,100 queries (100/concept), the rest "
                   "database; train = the whole database (DPAH, nus_train='paper') or 10,500 "
                   "(500/concept quota sampling, nus_train='budget') or the released list")
    default_k = 50000
    paper_sizes = {"query": 2100, "database": 193734, "train": 193734}
    dir_names = ("nuswide21", "nus_wide", "nuswide", "NUS-WIDE")
    shared_lists = "lists/deephash-pytorch/nuswide_21"
    n_labels = 21
    how_to_get = ("NUS-WIDE images under <root>/nuswide21/ plus an all-images list "
                  "<root>/nuswide21/all.txt ('<path> <21 0/1 labels>' a line, every image of "
                  "the full copy, built from NUS-WIDE's concept label files); query/train lists: "
                  "DeepHash-pytorch's nuswide_21 test.txt/train.txt (in "
                  "<root>/lists/deephash-pytorch/nuswide_21/)")
    options = {"nus_train": "paper", "nus_queries": "list", "query_per_concept": 100,
               "train_per_concept": 500, "all_list": None, "list_dir": None,
               "image_root": None, "max_missing_fraction": 0.01}

    def all_list(self, root: Path, opts: dict) -> Path:
        if opts.get("all_list"):
            p = Path(opts["all_list"]).expanduser()
            if p.exists():
                return p
            raise DatasetNotFoundError(f"nuswide21: all_list {p} does not exist")
        cands = [root / n / f for n in self.dir_names for f in ("all.txt", "database.txt")]
        for p in cands:
            if p.exists():
                return p
        raise self._not_found(cands, "the all-images list (no released NUS-WIDE database list "
                                     "exists; the database is every other image of a full copy)")

    def _locate(self, root, opts):
        self.all_list(root, opts)
        return super()._locate(root, opts)

    def _index(self, root, rng, opts):
        if opts["nus_train"] not in ("paper", "budget", "list"):
            raise ValueError(f"nus_train must be 'paper', 'budget' or 'list', got "
                             f"{opts['nus_train']!r}")
        if opts["nus_queries"] not in ("list", "sample"):
            raise ValueError(f"nus_queries must be 'list' or 'sample', got "
                             f"{opts['nus_queries']!r}")
        d = self.list_dir(root, opts)
        all_lf = rd.read_list_file(self.all_list(root, opts), self.n_labels)
        keep, dropped = _drop_unlabelled(all_lf.labels)
        all_lf = rd.ListFile(all_lf.file, [all_lf.paths[i] for i in keep], all_lf.labels[keep])
        items = _Items()
        allidx = items.add(all_lf)
        test_lf = self._read(d, "test.txt") if opts["nus_queries"] == "list" else None
        train_lf = self._read(d, "train.txt") if opts["nus_train"] == "list" else None
        for lf in (test_lf, train_lf):
            if lf is not None:
                miss = [k for k in lf.item_keys() if k not in items.table]
                if miss:
                    raise ValueError(f"{lf.file}: {len(miss)} images are not in the all-images "
                                     f"list {all_lf.file}, e.g. {miss[:3]}")
        paths, keys, labels = items.finish()
        if test_lf is not None:
            q = np.sort(_index_of(test_lf.item_keys(), items.table, test_lf, labels))
        else:
            q = quota_sample(labels, allidx, opts["query_per_concept"], rng, what="queries")
        db = np.setdiff1d(np.arange(len(keys), dtype=np.int64), q)
        if opts["nus_train"] == "paper":
            t = db
        elif opts["nus_train"] == "budget":
            t = quota_sample(labels, db, opts["train_per_concept"], rng, what="training set")
        else:
            t = np.sort(_index_of(train_lf.item_keys(), items.table, train_lf, labels))
        info = {"lists": str(d), "all_list": str(all_lf.file), "nus_train": opts["nus_train"],
                "nus_queries": opts["nus_queries"], "n_dropped_unlabelled": dropped}
        return ListIndex(paths, keys, labels, q, db, t, info=info)


# ============================================================================================
# A user's own data: image folder, CSV, npz
# ============================================================================================


def _user_split(labels: np.ndarray, rng: np.random.Generator, opts: dict
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random (or per-class) queries, the rest database, training items from the database."""
    n = labels.shape[0]
    allidx = np.arange(n, dtype=np.int64)
    single = bool((labels.sum(1) == 1).all())
    nq, nt = opts["n_query"], opts["n_train"]
    if opts["per_class"]:
        if nq is None or nt is None:
            raise ValueError("per_class=True needs n_query and n_train (counts per class)")
        if single:
            y = labels.argmax(1)
            q = sample_per_class(y, allidx, nq, rng, what="queries")
            db = np.setdiff1d(allidx, q)
            t = sample_per_class(y, db, nt, rng, what="training set")
        else:
            q = quota_sample(labels, allidx, nq, rng, what="queries")
            db = np.setdiff1d(allidx, q)
            t = quota_sample(labels, db, nt, rng, what="training set")
        return q, db, t
    nq = min(1000, max(1, n // 10)) if nq is None else nq
    q = sample_random(allidx, nq, rng, what="queries")
    db = np.setdiff1d(allidx, q)
    t = db if nt is None else sample_random(db, nt, rng, what="training items")
    return q, db, t


_USER_OPTIONS = {"path": None, "n_query": None, "n_train": None, "per_class": False}


class _UserProtocol(Protocol):
    options = dict(_USER_OPTIONS)
    paper_sizes = {"query": "n_query (default min(1000, N/10))", "database": "the rest",
                   "train": "n_train of the database (default: all of it)"}

    def status(self, data_root=None):
        if data_root is None:
            return {"present": False, "looked_in": "user data: pass path=<your data>",
                    "how_to_get": self.how_to_get, "sizes": dict(self.paper_sizes)}
        return super().status(data_root)

    def _target(self, root: Path, opts: dict) -> Path:
        return Path(opts["path"]).expanduser().resolve() if opts.get("path") else root

    def _labels_from_names(self, names: list[list[str]]) -> tuple[np.ndarray, list[str]]:
        vocab = sorted({n for ns in names for n in ns},
                       key=lambda s: (0, int(s), s) if s.isdigit() else (1, 0, s))
        pos = {n: i for i, n in enumerate(vocab)}
        L = np.zeros((len(names), len(vocab)), dtype=np.uint8)
        for i, ns in enumerate(names):
            for n in ns:
                L[i, pos[n]] = 1
        return L, vocab


class FolderProtocol(_UserProtocol):
    name = "folder"
    description = ("your image folder <path>/<class>/<image>: single-label; n_query random (or "
                   "per class) queries, the rest database, n_train of the database as train")
    how_to_get = "pass path=<folder> (or data_root=<folder>) with one sub-folder per class"

    def _locate(self, root, opts):
        t = self._target(root, opts)
        if not t.is_dir():
            raise self._not_found([t], "image folder")
        return t

    def _build(self, root, rng, opts, *, input_kind, cache, progress):
        where = self._locate(root, opts)
        paths, y, classes = rd.read_image_folder(where)
        labels = _one_hot(y, len(classes))
        q, d, t = _user_split(labels, rng, opts)
        # the feature cache key: absolute paths, so two folders with the same name and file
        # names (two copies or versions of a dataset) never share cached features
        return _Built(labels=labels, query=q, database=d, train=t, images=ImageSet(paths=paths),
                      dataset_key=f"folder-{where.name}-{_short_hash(paths)}", paths=paths,
                      info={"source": f"image folder {where}", "classes": classes})


class CsvProtocol(_UserProtocol):
    name = "csv"
    description = ("your CSV of 'path,labels' rows (labels separated by '|' or ';'; multi-label "
                   "allowed); items without a label are dropped and counted")
    multi_label = True
    how_to_get = "pass path=<file.csv> (or data_root=<file.csv>)"

    def _locate(self, root, opts):
        t = self._target(root, opts)
        if not t.is_file():
            raise self._not_found([t], "CSV file")
        return t

    def _build(self, root, rng, opts, *, input_kind, cache, progress):
        where = self._locate(root, opts)
        paths, names = rd.read_image_csv(where)
        labels, vocab = self._labels_from_names(names)
        keep, dropped = _drop_unlabelled(labels)
        paths = [paths[i] for i in keep]
        labels = labels[keep]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise DatasetNotFoundError(f"{where}: {len(missing)} of {len(paths)} images do not "
                                       f"exist, e.g. {missing[:5]}")
        q, d, t = _user_split(labels, rng, opts)
        return _Built(labels=labels, query=q, database=d, train=t, images=ImageSet(paths=paths),
                      dataset_key=f"csv-{where.stem}-{_short_hash(paths)}", paths=paths,
                      info={"source": f"CSV {where}", "classes": vocab,
                            "n_dropped_unlabelled": dropped})


def _file_key(path: Path) -> str:
    """Path, size and modification time of a file: a feature-cache key that changes when the file
    is replaced or another file of the same name is used."""
    st = path.stat()
    return _short_hash([str(path), str(st.st_size), str(st.st_mtime_ns)])


class NpzProtocol(_UserProtocol):
    name = "npz"
    description = ("your .npz with 'features' (N x D) and 'labels' (N class ids or N x C "
                   "multi-hot), optionally 'images' (uint8 N x H x W [x C])")
    multi_label = True
    how_to_get = "pass path=<file.npz> (or data_root=<file.npz>)"

    def _locate(self, root, opts):
        t = self._target(root, opts)
        if not t.is_file():
            raise self._not_found([t], ".npz file")
        return t

    def _build(self, root, rng, opts, *, input_kind, cache, progress):
        where = self._locate(root, opts)
        lab, feats, imgs = rd.read_npz(where)
        if lab.ndim == 1:
            if not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0:
                raise ValueError(f"{where}: 1-D 'labels' must be non-negative int class ids")
            labels = _one_hot(lab)
        elif lab.ndim == 2:
            if not np.isin(lab, (0, 1)).all():
                raise ValueError(f"{where}: 2-D 'labels' must be 0/1 multi-hot")
            labels = lab.astype(np.uint8)
        else:
            raise ValueError(f"{where}: 'labels' must be 1-D ids or 2-D multi-hot, got {lab.shape}")
        n = labels.shape[0]
        for nm, a in (("features", feats), ("images", imgs)):
            if a is not None and len(a) != n:
                raise ValueError(f"{where}: '{nm}' has {len(a)} rows but 'labels' {n}")
        if feats is None and imgs is None:
            raise KeyError(f"{where} has neither 'features' nor 'images'")
        if feats is not None and feats.ndim != 2:
            raise ValueError(f"{where}: 'features' must be N x D, got {feats.shape}")
        keep, dropped = _drop_unlabelled(labels)
        labels = labels[keep]
        feats = None if feats is None else feats[keep]
        imgs = None if imgs is None else imgs[keep]
        if input_kind == "images" and imgs is None:
            raise ValueError(f"{where} has no 'images' array; use input_kind='features'")
        q, d, t = _user_split(labels, rng, opts)
        return _Built(labels=labels, query=q, database=d, train=t, features=feats,
                      images=None if imgs is None else ImageSet(array=imgs.astype(np.uint8)),
                      dataset_key=f"npz-{where.stem}-{_file_key(where)}",
                      info={"source": f"npz {where}", "n_dropped_unlabelled": dropped,
                            "features": "provided in the npz"})


# ============================================================================================
# registry
# ============================================================================================

# imported here, after the classes it subclasses are defined (unseen.py imports this module)

PROTOCOLS: dict[str, Protocol] = {
    p.name: p for p in (Cifar10(), MIRFlickr25K(), FashionMNIST(), Digits(), Cifar10Mosaic(),
                        ImageNet100(), Coco(), NusWide21(), FolderProtocol(), CsvProtocol(),
                        NpzProtocol())
}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add a protocol to :data:`PROTOCOLS` (modules built on this one register theirs, e.g.
    :mod:`data_protocols.unseen`, imported by the package)."""
    if protocol.name in PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is already registered")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def list_protocols() -> list[str]:
    """Names of every protocol, in a fixed order."""
    return list(PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; an unknown name lists the known ones."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown data protocol {name!r}; known: {list_protocols()}") from None


def describe_protocols(data_root: str | os.PathLike | None = None) -> list[dict]:
    """One row per protocol for ``--list-datasets``: name, present, looked_in, how_to_get,
    sizes, multi_label, construction, default_k, description."""
    rows = []
    for name, p in PROTOCOLS.items():
        st = p.status(data_root)
        rows.append({"name": name, "present": st["present"], "looked_in": st["looked_in"],
                     "how_to_get": st["how_to_get"], "sizes": st["sizes"],
                     "multi_label": p.multi_label, "construction": p.construction,
                     "default_k": p.default_k, "description": p.description})
    return rows
