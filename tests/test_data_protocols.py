"""Data protocols: sizes, disjointness, per-class counts, seeded determinism (with a hard-coded
hash so cross-machine stability is tested), the released list files, tiny image trees written
here in the exact formats, and bad input."""

from __future__ import annotations

import csv
import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_protocols import (
    DEFAULT_DATA_ROOT,
    DatasetNotFoundError,
    ImageSet,
    Split,
    describe_protocols,
    get_protocol,
    list_protocols,
    read_list_file,
)
from data_protocols.core import carve_val, quota_sample
from data_protocols.protocols import build_mosaics
from data_protocols.readers import (
    list_key,
    read_cifar10_folder_index,
    read_cifar10_pickles,
    read_idx,
)

DATA = DEFAULT_DATA_ROOT
LISTS = DATA / "lists"


def need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"offline data not found at {path} (see ../shared/data/README.md)")


def check_split(b, *, query_in_db=False, train_in_db=True):
    s = b.split
    if not query_in_db:
        assert np.intersect1d(s.query, s.database).size == 0
    if train_in_db:
        assert np.isin(s.train, s.database).all()
    assert np.intersect1d(s.train, s.query).size == 0
    assert np.union1d(s.query, s.database).max() < b.n_items


def write_jpg(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=95)


# ---------------------------------------------------------------------------------------------
# registry and Split
# ---------------------------------------------------------------------------------------------


def test_registry_and_describe():
    names = list_protocols()
    for n in ["cifar10", "mirflickr25k", "fashion_mnist", "digits", "cifar10_mosaic",
              "imagenet100", "coco", "nuswide21", "folder", "csv", "npz"]:
        assert n in names
    assert get_protocol("imagenet100").default_k == 1000
    assert get_protocol("coco").default_k == 5000
    assert get_protocol("nuswide21").default_k == 50000
    assert get_protocol("cifar10").default_k is None
    assert get_protocol("cifar10_mosaic").construction
    assert not get_protocol("cifar10").construction
    with pytest.raises(KeyError, match="unknown data protocol 'nope'.*cifar10"):
        get_protocol("nope")
    rows = {r["name"]: r for r in describe_protocols()}
    assert rows["digits"]["present"] is True
    for r in rows.values():
        assert {"name", "present", "looked_in", "sizes", "multi_label", "construction",
                "description"} <= set(r)


def test_split_hash_is_a_transcription_and_order_free(tmp_path):
    s = Split(query=[5, 1], database=[0, 2, 3, 4], train=[3, 2])
    h = hashlib.sha256()
    for name, arr in (("query", [1, 5]), ("database", [0, 2, 3, 4]), ("train", [2, 3]),
                      ("val", [])):
        h.update(f"{name}:{len(arr)};".encode())
        h.update(np.asarray(arr, dtype="<i8").tobytes())
    assert s.hash() == h.hexdigest()[:12]
    assert Split(query=[1, 5], database=[4, 3, 2, 0], train=[2, 3]).hash() == s.hash()
    assert Split(query=[1, 5], database=[0, 2, 3, 4], train=[2]).hash() != s.hash()
    assert s.sizes() == {"query": 2, "database": 4, "train": 2, "val": 0}
    s.save(tmp_path / "sp")
    assert Split.load(tmp_path / "sp").hash() == s.hash()
    assert Split.load(tmp_path / "sp") == s
    (tmp_path / "sp" / "train.txt").write_text("2\n")
    with pytest.raises(ValueError, match="does not match"):
        Split.load(tmp_path / "sp")
    with pytest.raises(ValueError, match="duplicate"):
        Split(query=[1, 1], database=[0], train=[0])


def test_split_check_rejects_empty_and_overlap():
    with pytest.raises(ValueError, match="'query' is empty"):
        Split(query=[], database=[0, 1], train=[0]).check(2)
    with pytest.raises(ValueError, match="overlap"):
        Split(query=[0], database=[0, 1], train=[1]).check(2)
    with pytest.raises(ValueError, match="outside the database"):
        Split(query=[0], database=[1, 2], train=[3]).check(4)


def test_carve_val_from_train_only():
    train = np.arange(10, 110)
    tr, val = carve_val(train, 0.2, seed=3)
    assert val.size == 20 and tr.size == 80
    assert np.intersect1d(tr, val).size == 0
    assert np.array_equal(np.union1d(tr, val), train)
    with pytest.raises(ValueError, match="val_fraction"):
        carve_val(train, 1.0, 0)


def test_quota_sample_hand_case():
    # items 0-3 carry label 0 only, 4-7 label 1 only, 8 both: quota 2 must give 2 of each label,
    # every chosen item counted once, so exactly 4 items.
    L = np.zeros((9, 2), dtype=np.uint8)
    L[:4, 0] = 1
    L[4:8, 1] = 1
    L[8] = 1
    got = quota_sample(L, np.arange(9), 2, np.random.default_rng(0))
    assert got.size == 4
    with pytest.raises(ValueError, match="could not reach 5"):
        quota_sample(L, np.arange(9), 5, np.random.default_rng(0))


def test_imageset_array_and_subset():
    grey = np.arange(4 * 3 * 2, dtype=np.uint8).reshape(4, 3, 2)
    ims = ImageSet(array=grey)
    im = ims[2]
    assert im.mode == "RGB" and im.size == (2, 3)
    assert np.array_equal(np.asarray(im)[:, :, 1], grey[2])
    sub = ims.subset([3, 1])
    assert len(sub) == 2 and np.array_equal(sub.array, grey[[3, 1]])
    assert np.array_equal(sub.subset([1]).array, grey[[1]])
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(array=grey.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# digits (always available): the reference for cross-machine hash stability
# ---------------------------------------------------------------------------------------------


def test_digits_protocol_sizes_counts_and_hash():
    b = get_protocol("digits").load(seed=0)
    assert b.split.sizes() == {"query": 100, "database": 1697, "train": 500, "val": 0}
    check_split(b)
    yq = b.targets("query").argmax(1)
    yt = b.targets("train").argmax(1)
    assert np.bincount(yq).tolist() == [10] * 10
    assert np.bincount(yt).tolist() == [50] * 10
    assert b.inputs("train").shape == (500, 64) and b.features.dtype == np.float32
    assert 0.0 <= b.features.min() and b.features.max() <= 1.0
    # Hard-coded: the same seed gives this split on any machine (numpy default_rng(PCG64)
    # doubles, stable argsort, little-endian int64 hashing).
    assert b.split.hash() == "18a8cb120b1f"
    assert b.info["split_hash"] == "18a8cb120b1f"
    assert get_protocol("digits").load(seed=0).split.hash() == b.split.hash()
    assert get_protocol("digits").load(seed=1).split.hash() != b.split.hash()


def test_digits_images_and_val():
    b = get_protocol("digits").load(seed=0, input_kind="images", val_fraction=0.1)
    assert b.features is None and len(b.images) == 1797
    b0 = get_protocol("digits").load(seed=0)
    assert np.array_equal(b.split.query, b0.split.query)  # val never touches the queries
    assert b.split.val.size == 50 and b.split.train.size == 450
    assert np.array_equal(np.union1d(b.split.train, b.split.val), b0.split.train)
    assert len(b.inputs("val")) == 50 and b.inputs("val")[0].mode == "RGB"


def test_export_lists_hashnet_format(tmp_path):
    b = get_protocol("digits").load(seed=0)
    b.export_lists(tmp_path)
    lines = (tmp_path / "test.txt").read_text().splitlines()
    assert len(lines) == 100 and not (tmp_path / "val.txt").exists()
    first = lines[0].split()
    assert first[0] == f"#{b.split.query[0]}"
    assert [int(v) for v in first[1:]] == b.labels[b.split.query[0]].tolist()
    assert len(read_list_file(tmp_path / "database.txt")) == 1697


def test_bad_options_and_seed():
    p = get_protocol("digits")
    with pytest.raises(ValueError, match="unknown option"):
        p.load(n_query=3)
    with pytest.raises(ValueError, match="seed"):
        p.load(seed=-1)
    with pytest.raises(ValueError, match="class 0 has only 178 candidate items, 200 needed"):
        p.load(n_query_per_class=200)
    with pytest.raises(ValueError, match="input_kind"):
        get_protocol("mirflickr25k").load(input_kind="images")


# ---------------------------------------------------------------------------------------------
# real offline data
# ---------------------------------------------------------------------------------------------


def test_cifar10_real_split_without_decoding():
    need(DATA / "cifar-10-jpg")
    b = get_protocol("cifar10").load(seed=0, input_kind="images", decode=False)
    assert b.split.sizes() == {"query": 1000, "database": 59000, "train": 5000, "val": 0}
    check_split(b)
    assert np.bincount(b.targets("query").argmax(1)).tolist() == [100] * 10
    assert np.bincount(b.targets("train").argmax(1)).tolist() == [500] * 10
    assert b.n_items == 60000 and b.labels.sum(1).max() == 1
    # official order: train 0, 1 then test 0 (original_order.csv)
    assert b.labels[0].argmax() == 6 and b.labels[1].argmax() == 9
    assert b.paths[0].endswith("train/frog/0000.jpg") and "/test/" in b.paths[50000]
    assert b.images[0].size == (32, 32)


def test_fashion_mnist_real():
    need(DATA / "fashion-mnist")
    b = get_protocol("fashion_mnist").load(seed=0)
    assert b.split.sizes() == {"query": 1000, "database": 69000, "train": 5000, "val": 0}
    check_split(b)
    assert b.features.shape == (70000, 784)
    assert np.bincount(b.targets("train").argmax(1)).tolist() == [500] * 10


def test_mirflickr_real():
    need(DATA / "mirflickr25k")
    b = get_protocol("mirflickr25k").load(seed=0)
    assert b.split.sizes() == {"query": 2000, "database": 18015, "train": 10000, "val": 0}
    check_split(b)
    assert b.labels.shape == (20015, 24) and b.features.shape == (20015, 1386)
    assert b.multi_label and b.images is None
    assert b.info["n_dropped_unlabelled"] == 0 and b.info["also_report_k"] == 5000


def test_released_lists_counts_and_containment():
    need(LISTS)
    hn = LISTS / "hashnet"
    counts = {("imagenet", "train.txt"): 13000, ("imagenet", "test.txt"): 5000,
              ("imagenet", "database.txt"): 128503, ("coco", "train.txt"): 10000,
              ("coco", "test.txt"): 5000, ("coco", "database.txt"): 112218}
    width = {"imagenet": 100, "coco": 80}
    lf = {}
    for (ds, f), n in counts.items():
        lf[ds, f] = read_list_file(hn / ds / f)
        assert len(lf[ds, f]) == n and lf[ds, f].labels.shape[1] == width[ds]
    nus = LISTS / "deephash-pytorch" / "nuswide_21"
    assert read_list_file(nus / "train.txt").labels.shape == (10500, 21)
    assert read_list_file(nus / "test.txt").labels.shape == (2100, 21)
    assert set(lf["imagenet", "train.txt"].item_keys()) <= set(
        lf["imagenet", "database.txt"].item_keys())
    assert set(lf["coco", "test.txt"].item_keys()) <= set(lf["coco", "database.txt"].item_keys())
    # the protocol indexes (no images needed)
    li = get_protocol("imagenet100").read_lists()
    assert (li.query.size, li.database.size, li.train.size) == (5000, 128503, 13000)
    assert np.isin(li.train, li.database).all()
    assert np.bincount(li.labels[li.train].argmax(1)).tolist() == [130] * 100
    li = get_protocol("coco").read_lists()
    assert len(li.keys) == 122218
    assert (li.query.size, li.database.size, li.train.size) == (5000, 117218, 10000)
    assert np.isin(li.train, li.database).all() and not np.isin(li.query, li.database).any()
    li = get_protocol("coco").read_lists(coco_db="hashnet_list")
    assert li.database.size == 112218 and np.isin(li.query, li.database).all()
    assert li.info["coco_db"] == "hashnet_list"


# ---------------------------------------------------------------------------------------------
# tiny trees in the exact on-disk formats
# ---------------------------------------------------------------------------------------------


def make_cifar_tree(root: Path, per_class: int = 8, with_csv: bool = True) -> Path:
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
    d = root / "cifar-10-jpg"
    rows = []
    for split, n in (("train", per_class - 2), ("test", 2)):
        k = 0
        for j in range(n):
            for ci, c in enumerate(classes):
                f = f"{split}/{c}/{j:04d}.jpg"
                write_jpg(d / f, (ci * 20, j * 30, 100), (32, 32))
                rows.append((split, k, ci, f))
                k += 1
    if with_csv:
        with open(d / "original_order.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["split", "index", "label", "file"])
            w.writerows(rows)
    return d


def test_cifar_folder_tiny_tree_raw_features(tmp_path):
    d = make_cifar_tree(tmp_path / "data")
    paths, y, _ = read_cifar10_folder_index(d)
    assert len(paths) == 80 and y[:10].tolist() == list(range(10))
    assert paths[0].endswith("train/airplane/0000.jpg") and "test" in paths[60]
    with pytest.warns(UserWarning, match="not 60,000"):
        b = get_protocol("cifar10").load(tmp_path / "data", seed=0, feature_backbone="raw",
                                         cache_dir=tmp_path / "cache", n_query_per_class=2,
                                         n_train_per_class=3, progress=False)
    assert b.split.sizes()["query"] == 20 and b.split.sizes()["train"] == 30
    check_split(b)
    assert b.features.shape == (80, 32 * 32 * 3) and b.info["feature_backbone"] == "raw pixels"
    # decoded array and features cached with sidecars
    assert list((tmp_path / "cache" / "arrays").glob("*.npy.json"))
    assert list((tmp_path / "cache" / "features").glob("*__raw__*.npy"))
    # the raw feature of item 0 is its pixels / 255
    px = np.asarray(Image.open(paths[0]).convert("RGB"), dtype=np.float32).reshape(-1) / 255
    assert np.allclose(b.features[0], px)


def test_cifar_mosaic_tiny_tree(tmp_path):
    make_cifar_tree(tmp_path / "data", per_class=20)
    b = get_protocol("cifar10_mosaic").load(
        tmp_path / "data", seed=0, input_kind="images", cache_dir=tmp_path / "cache",
        n_mosaics=12, n_query=3, n_train=4, progress=False)
    assert b.images.array.shape == (12, 64, 64, 3)
    assert b.info["construction"] is True and b.split.sizes()["database"] == 9
    assert 1 <= b.labels.sum(1).min() and b.labels.sum(1).max() <= 4


def test_build_mosaics_labels_are_union_of_tiles():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(400, 4, 4, 3), dtype=np.uint8)
    cls = np.arange(400) % 10
    x, lab, src = build_mosaics(imgs, cls, 40, seed=5)
    assert np.unique(src).size == src.size  # each source image used once
    for m in range(40):
        assert set(np.flatnonzero(lab[m])) == set(cls[src[m]].tolist())
        assert np.array_equal(x[m, :4, 4:], imgs[src[m, 1]])  # top-right tile
        assert np.array_equal(x[m, 4:, :4], imgs[src[m, 2]])  # bottom-left tile
    assert set(lab.sum(1).tolist()) <= {1, 2, 3, 4}
    x2, lab2, src2 = build_mosaics(imgs, cls, 40, seed=5)
    assert np.array_equal(src, src2) and np.array_equal(x, x2) and np.array_equal(lab, lab2)


def test_cifar_pickles_reader(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    all_x = []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        all_x.append(x)
        with open(d / name, "wb") as fh:
            pickle.dump({"data": x, "labels": [i, (i + 1) % 10]}, fh)
    x, y = read_cifar10_pickles(d)
    assert x.shape == (12, 32, 32, 3) and y.tolist()[:4] == [0, 1, 1, 2]
    assert np.array_equal(x[0, :, :, 0].reshape(-1), all_x[0][0, :1024])  # CHW -> HWC
    (d / "test_batch").unlink()
    with pytest.raises(DatasetNotFoundError, match="test_batch"):
        read_cifar10_pickles(d)


def test_idx_reader_and_truncation(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 2, 3, 4) + arr.tobytes()
    (tmp_path / "a.gz").write_bytes(gzip.compress(data))
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "b.gz").write_bytes(gzip.compress(data[:-3]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "b.gz")


def write_list(path: Path, rows: list[tuple[str, list[int]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(p + " " + " ".join(map(str, lab)) + "\n" for p, lab in rows))


def test_coco_format_tiny_tree_with_foreign_paths(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    names = [f"COCO_train2014_{i:012d}.jpg" for i in range(12)]
    labels = {n: (rng.random(80) < 0.05).astype(int) for n in names}
    for n in names:
        labels[n][int(rng.integers(80))] = 1
        write_jpg(root / "coco" / "train2014" / n, (10, 20, 30))
    foreign = "/home/releaser/run/dataset/coco/train2014/"
    test, train, rest = names[:3], names[3:7], names[7:]
    lists = root / "coco"
    write_list(lists / "test.txt", [(foreign + n, labels[n]) for n in test])
    write_list(lists / "train.txt", [(foreign + n, labels[n]) for n in train])
    # released database = all - train, with the queries, relative paths
    write_list(lists / "database.txt",
               [("./data/coco/train2014/" + n, labels[n]) for n in test + rest])
    b = get_protocol("coco").load(root, input_kind="images", progress=False)
    assert b.split.sizes() == {"query": 3, "database": 9, "train": 4, "val": 0}
    check_split(b)
    assert all(Path(p).exists() for p in b.paths)
    assert b.info["coco_db"] == "paper" and b.info["n_missing_images"] == 0
    bl = get_protocol("coco").load(root, input_kind="images", coco_db="hashnet_list",
                                   progress=False)
    assert bl.split.sizes()["database"] == 8 and np.isin(bl.split.query, bl.split.database).all()
    # a missing image is counted and named; too many missing is an error with counts
    (root / "coco" / "train2014" / rest[0]).unlink()
    with pytest.warns(UserWarning, match="1 of 12 listed images are missing"):
        b = get_protocol("coco").load(root, input_kind="images", max_missing_fraction=0.5,
                                      progress=False)
    assert b.info["n_missing_images"] == 1 and rest[0] in b.info["missing_examples"][0]
    assert b.split.sizes()["database"] == 8
    with pytest.raises(DatasetNotFoundError, match="1 of 12 listed images are missing"):
        get_protocol("coco").load(root, input_kind="images", progress=False)


def test_imagenet_format_tiny_tree(tmp_path):
    root = tmp_path / "data"
    db = [(f"n0000000{c}_{i}.JPEG", c) for c in range(3) for i in range(5)]
    q = [(f"ILSVRC2012_val_{i:08d}.JPEG", i % 3) for i in range(3)]
    for n, _ in db:
        write_jpg(root / "imagenet100" / "image" / n, (1, 2, 3))
    for n, _ in q:
        write_jpg(root / "imagenet100" / "val_image" / n, (1, 2, 3))
    oh = lambda c: [int(c == j) for j in range(100)]
    write_list(root / "imagenet100" / "database.txt",
               [("./data/imagenet/image/" + n, oh(c)) for n, c in db])
    write_list(root / "imagenet100" / "test.txt",
               [("/home/x/imagenet/val_image/" + n, oh(c)) for n, c in q])
    write_list(root / "imagenet100" / "train.txt",
               [("/home/x/imagenet/image/" + n, oh(c)) for n, c in db[::5]])
    b = get_protocol("imagenet100").load(root, input_kind="images", progress=False)
    assert b.split.sizes() == {"query": 3, "database": 15, "train": 3, "val": 0}
    check_split(b)
    assert b.images[0].size == (8, 8)
    # a train entry whose labels disagree with the database is an error naming the file
    write_list(root / "imagenet100" / "train.txt", [("/x/image/" + db[0][0], oh(2))])
    with pytest.raises(ValueError, match=r"train.txt, entry 1 .*labels differ"):
        get_protocol("imagenet100").read_lists(root)


def test_nuswide_all_list_tiny_tree(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        lab = [0] * 21
        lab[i % 21] = 1
        if i % 4 == 0:
            lab[int(rng.integers(21))] = 1
        rows.append((f"images/{i:04d}_{i * 7}.jpg", lab))
    rows.append(("images/9999_unlabelled.jpg", [0] * 21))
    for p, _ in rows:
        write_jpg(root / "nuswide21" / p, (5, 5, 5))
    write_list(root / "nuswide21" / "all.txt", [("/data/NUS/Flickr/" + p, lab) for p, lab in rows])
    write_list(root / "nuswide21" / "test.txt", rows[:21])
    write_list(root / "nuswide21" / "train.txt", rows[21:42])
    b = get_protocol("nuswide21").load(root, input_kind="images", progress=False)
    assert b.info["n_dropped_unlabelled"] == 1 and b.n_items == 60
    assert b.split.sizes() == {"query": 21, "database": 39, "train": 39, "val": 0}
    check_split(b)
    bb = get_protocol("nuswide21").load(root, input_kind="images", nus_train="budget",
                                        train_per_concept=1, progress=False)
    assert bb.split.sizes()["train"] == 21 and bb.split.sizes()["database"] == 39
    assert (bb.targets("train").sum(0) >= 1).all()  # every concept reached its quota
    check_split(bb)
    bs = get_protocol("nuswide21").load(root, seed=0, input_kind="images", nus_queries="sample",
                                        query_per_concept=1, progress=False)
    assert bs.split.sizes()["query"] == 21 and (bs.targets("query").sum(0) >= 1).all()
    bs1 = get_protocol("nuswide21").load(root, seed=1, input_kind="images", nus_queries="sample",
                                         query_per_concept=1, progress=False)
    assert bs1.split.hash() != bs.split.hash()
    with pytest.raises(ValueError, match="quota sampling for the training set.*reach 500"):
        get_protocol("nuswide21").load(root, input_kind="images", nus_train="budget",
                                       progress=False)


def test_malformed_list_files(tmp_path):
    f = tmp_path / "test.txt"
    f.write_text("a.jpg 0 1 0\nb.jpg 1 0\n")
    with pytest.raises(ValueError, match=r"test.txt, line 2: expected 3 labels.*found 2"):
        read_list_file(f)
    f.write_text("a.jpg 0 1 0\nb.jpg 1 0 2\n")
    with pytest.raises(ValueError, match=r"line 2 \(b.jpg\).*0 or 1"):
        read_list_file(f)
    f.write_text("a.jpg 0 1\n")
    with pytest.raises(ValueError, match="expected 80 labels"):
        read_list_file(f, n_labels=80)
    f.write_text("")
    with pytest.raises(ValueError, match="no entries"):
        read_list_file(f)
    assert list_key("/home/x/run/coco/val2014/a.jpg", 2) == "val2014/a.jpg"
    assert list_key("./data/a.jpg") == "a.jpg"


def test_missing_dataset_root_names_where_it_looked(tmp_path):
    for name in ("cifar10", "mirflickr25k", "fashion_mnist", "coco", "nuswide21"):
        with pytest.raises(DatasetNotFoundError, match=str(tmp_path)) as e:
            get_protocol(name).load(tmp_path / "nowhere", progress=False)
        assert "How to get it" in str(e.value)
    st = get_protocol("cifar10").status(tmp_path)
    assert st["present"] is False and str(tmp_path) in st["looked_in"] and st["how_to_get"]


# ---------------------------------------------------------------------------------------------
# a user's own data
# ---------------------------------------------------------------------------------------------


def test_folder_protocol(tmp_path):
    for c in ("cat", "dog"):
        for i in range(6):
            write_jpg(tmp_path / "imgs" / c / f"{i}.png", (i, 0, 0))
    p = get_protocol("folder")
    b = p.load(path=tmp_path / "imgs", input_kind="images", n_query=2, n_train=3,
               per_class=True)
    assert b.split.sizes() == {"query": 4, "database": 8, "train": 6, "val": 0}
    assert np.bincount(b.targets("query").argmax(1)).tolist() == [2, 2]
    assert b.info["classes"] == ["cat", "dog"]
    with pytest.raises(ValueError, match="would be empty"):
        p.load(path=tmp_path / "imgs", input_kind="images", n_query=0)
    bf = p.load(path=tmp_path / "imgs", n_query=2, cache_dir=tmp_path / "cache", progress=False)
    assert bf.features.shape == (12, 8 * 8 * 3) and bf.info["feature_backbone"] == "raw pixels"
    write_jpg(tmp_path / "imgs" / "dog" / "big.png", (0, 0, 0), (9, 9))
    with pytest.raises(ValueError, match="'raw' needs images of one size"):
        p.load(path=tmp_path / "imgs", n_query=2, cache_dir=tmp_path / "cache", progress=False)


def test_csv_protocol_multilabel_and_unlabelled(tmp_path):
    for i in range(8):
        write_jpg(tmp_path / "im" / f"{i}.jpg", (i, i, i))
    with open(tmp_path / "data.csv", "w") as fh:
        fh.write("path,labels\n")
        for i in range(7):
            fh.write(f"im/{i}.jpg,{'cat|dog' if i % 2 else 'cat;bird'}\n")
        fh.write("im/7.jpg,\n")
    b = get_protocol("csv").load(path=tmp_path / "data.csv", input_kind="images", n_query=2)
    assert b.info["classes"] == ["bird", "cat", "dog"] and b.info["n_dropped_unlabelled"] == 1
    assert b.labels.tolist()[:2] == [[1, 1, 0], [0, 1, 1]]
    assert b.split.sizes() == {"query": 2, "database": 5, "train": 5, "val": 0}
    with open(tmp_path / "data.csv", "a") as fh:
        fh.write("im/missing.jpg,cat\n")
    with pytest.raises(DatasetNotFoundError, match="1 of 8 images do not exist.*missing.jpg"):
        get_protocol("csv").load(path=tmp_path / "data.csv", input_kind="images")


def test_npz_protocol(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6)).astype(np.float32)
    np.savez(tmp_path / "a.npz", features=X, labels=np.arange(50) % 5)
    b = get_protocol("npz").load(path=tmp_path / "a.npz", n_query=5, n_train=20)
    assert b.labels.shape == (50, 5) and np.array_equal(b.features, X)
    assert b.split.sizes() == {"query": 5, "database": 45, "train": 20, "val": 0}
    Y = (rng.random((50, 4)) < 0.4).astype(np.uint8)
    Y[:, 0] = 1
    Y[0] = 0
    np.savez(tmp_path / "b.npz", features=X, labels=Y)
    b = get_protocol("npz").load(path=tmp_path / "b.npz")
    assert b.info["n_dropped_unlabelled"] == 1 and b.n_items == 49
    np.savez(tmp_path / "c.npz", features=X, labels=Y[:10])
    with pytest.raises(ValueError, match="'features' has 50 rows but 'labels' 10"):
        get_protocol("npz").load(path=tmp_path / "c.npz")


def _fake_cifar10_download(calls: list):
    """Stands in for ``torchvision.datasets.CIFAR10``: with ``download=True`` it writes what the
    real one leaves on disk, ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}`` pickles
    (``data``: N x 3072 uint8 CHW rows, ``labels``), 4 images of each class per batch."""

    class FakeCIFAR10:
        def __init__(self, root, train=True, download=False, **kwargs):
            calls.append((root, train, download))
            d = Path(root) / "cifar-10-batches-py"
            d.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(0)
            for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
                labels = [c for c in range(10) for _ in range(4)]
                x = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
                with open(d / name, "wb") as fh:
                    pickle.dump({"data": x, "labels": labels}, fh)

    return FakeCIFAR10


def test_cifar10_download_writes_pickles_then_reads_them(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    calls: list = []
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _fake_cifar10_download(calls))
    opts = {"n_query_per_class": 2, "n_train_per_class": 5, "feature_backbone": "raw",
            "progress": False, "cache_dir": tmp_path / "cache"}
    with pytest.raises(DatasetNotFoundError):  # never downloads unless asked
        get_protocol("cifar10").load(tmp_path, seed=0, **opts)
    assert calls == []
    b = get_protocol("cifar10").load(tmp_path, seed=0, download=True, **opts)
    assert calls == [(str(tmp_path), True, True)]
    sizes = {p: len(b.targets(p)) for p in ("query", "database", "train")}
    assert sizes == {"query": 20, "database": 220, "train": 50}
    assert b.features.shape == (240, 3072)
    # data now on disk: a second load with download=True does not fetch again
    get_protocol("cifar10").load(tmp_path, seed=0, download=True, **opts)
    assert len(calls) == 1


def test_runner_download_flag_reaches_the_protocol(tmp_path, monkeypatch):
    """``run_all.py --download`` passes download=True to protocols that have the option."""
    torchvision = pytest.importorskip("torchvision")
    import data_protocols.core
    from benchmarks.runner import cell as cell_job
    from benchmarks.runner.experiments import DatasetSpec, get_preset, make_cell
    from benchmarks.runner.results import ResultStore

    calls: list = []
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _fake_cifar10_download(calls))
    monkeypatch.setattr(data_protocols.core, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    ds = DatasetSpec("cifar10_tiny", "cifar10", "CIFAR-10 (tiny fake download)",
                     feature_backbone="raw",
                     variant=(("n_query_per_class", 2), ("n_train_per_class", 5)))
    cell = make_cell(get_preset("test"), "lsh", ds, 16, 0)
    store = ResultStore(tmp_path / "res", "test")
    for download in (False, True):
        opts = cell_job.RunOptions(results_dir=str(tmp_path / "res"), preset="test",
                                    data_root=str(tmp_path / "data"), download=download)
        cell_job._BENCH_CACHE.clear()
        if not download:
            with pytest.raises(cell_job.MissingComponent, match="not found"):
                cell_job._load_benchmark(cell, "features", opts, store)
        else:
            bench = cell_job._load_benchmark(cell, "features", opts, store)
            assert len(bench.targets("query")) == 20
    assert calls == [(str(tmp_path / "data"), True, True)]
