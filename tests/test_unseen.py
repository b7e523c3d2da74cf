"""Unseen-class protocols (data_protocols/unseen.py): class disjointness, sizes, seeding, the
held-out-label relevance, and bad input; on small files written here in the exact on-disk
formats, and on the offline data when it is there."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from benchmarks import metrics
from data_protocols import DEFAULT_DATA_ROOT, describe_protocols, get_protocol, list_protocols
from data_protocols.unseen import held_out_classes


def need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"offline data not found at {path} (see ../shared/data/README.md)")


def write_cifar_pickles(root: Path, per_class_per_batch: int = 2) -> Path:
    """torchvision's ``cifar-10-batches-py``: six pickles of ``data`` (N x 3072 uint8, CHW rows)
    and ``labels``; here ``per_class_per_batch`` images of every class in each."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        labels = [c for c in range(10) for _ in range(per_class_per_batch)]
        x = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(d / name, "wb") as fh:
            pickle.dump({"data": x, "labels": labels}, fh)
    return d


def classes_of(b, part: str) -> set[int]:
    return set(b.targets(part).argmax(1).tolist())


# ---------------------------------------------------------------------------------------------
# the held-out draw
# ---------------------------------------------------------------------------------------------


def test_held_out_count_rule_and_seeding():
    def rng(s):
        return np.random.default_rng(s)

    assert held_out_classes(10, rng(0)).size == 2  # ceil(7.5) = 8 seen
    assert held_out_classes(24, rng(0)).size == 6  # 18 seen
    assert held_out_classes(100, rng(0)).size == 25
    assert held_out_classes(10, rng(0), seen_fraction=0.7).size == 3
    np.testing.assert_array_equal(held_out_classes(10, rng(3)), held_out_classes(10, rng(3)))
    draws = {tuple(held_out_classes(10, rng(s))) for s in range(10)}
    assert len(draws) > 5  # the seed decides which classes are held out
    np.testing.assert_array_equal(held_out_classes(10, rng(0), held_out=(9, 8)), [8, 9])


@pytest.mark.parametrize("kwargs, match", [
    ({"seen_fraction": 0.85}, "at least two held-out classes, got 1"),  # ceil(8.5) = 9 seen
    ({"held_out": [3]}, r"at least two held-out classes, got 1 from held_out=\[3\]"),
    ({"held_out": []}, "at least two held-out classes, got 0"),
    ({"held_out": list(range(10))}, "nothing is left to train on"),
    ({"held_out": [2, 10]}, r"ids in 0..9"),
    ({"held_out": [2, 2]}, "repeats"),
    ({"seen_fraction": 1.0}, "seen_fraction"),
])
def test_held_out_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        held_out_classes(10, np.random.default_rng(0), **kwargs)


def test_registry_lists_both():
    assert {"cifar10_unseen", "mirflickr25k_unseen"} <= set(list_protocols())
    rows = {r["name"]: r for r in describe_protocols()}
    assert rows["mirflickr25k_unseen"]["multi_label"] is True
    assert rows["cifar10_unseen"]["sizes"] == {"query": 200, "database": 11800, "train": 4000}


# ---------------------------------------------------------------------------------------------
# cifar10_unseen on tiny pickles
# ---------------------------------------------------------------------------------------------


def load_tiny_cifar(root: Path, seed: int = 0, **kw):
    opts = {"n_query_per_class": 3, "n_train_per_class": 4, **kw}
    return get_protocol("cifar10_unseen").load(root, seed=seed, input_kind="images",
                                               progress=False, **opts)


def test_cifar10_unseen_tiny_split(tmp_path):
    write_cifar_pickles(tmp_path)  # 12 images a class
    b = load_tiny_cifar(tmp_path)
    held = set(b.info["held_out_classes"])
    assert len(held) == 2 and set(b.info["seen_classes"]) == set(range(10)) - held
    # queries and database: held-out classes only; train: seen classes only
    assert classes_of(b, "query") == held and classes_of(b, "database") == held
    assert classes_of(b, "train") == set(range(10)) - held
    s = b.split
    assert np.intersect1d(s.query, s.database).size == 0
    assert np.intersect1d(s.train, np.union1d(s.query, s.database)).size == 0
    # documented sizes: per class 3 queries, the other 9 items of a held-out class in the
    # database, 4 training items of every seen class
    assert s.sizes() == {"query": 6, "database": 18, "train": 32, "val": 0}
    assert np.bincount(b.targets("query").argmax(1), minlength=10)[sorted(held)].tolist() == [3, 3]
    assert b.info["train_in_database"] is False
    assert b.info["held_out_class_names"] == [
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
         "truck"][c] for c in sorted(held)]


def test_cifar10_unseen_seeded(tmp_path):
    write_cifar_pickles(tmp_path)
    a, a2 = load_tiny_cifar(tmp_path, 0), load_tiny_cifar(tmp_path, 0)
    assert a.split == a2.split and a.split.hash() == a2.split.hash()
    others = [load_tiny_cifar(tmp_path, s) for s in (1, 2, 3)]
    assert all(o.split.hash() != a.split.hash() for o in others)
    assert len({tuple(o.info["held_out_classes"]) for o in [a, *others]}) > 1
    # given classes: DSH_Analysis holds out the last two (ship, truck)
    f = load_tiny_cifar(tmp_path, 0, held_out=(8, 9))
    assert classes_of(f, "query") == {8, 9} and 8 not in classes_of(f, "train")


def test_cifar10_unseen_bad_input(tmp_path):
    write_cifar_pickles(tmp_path)
    with pytest.raises(ValueError, match="at least two held-out classes, got 1"):
        load_tiny_cifar(tmp_path, seen_fraction=0.9)
    with pytest.raises(ValueError, match="at least two held-out classes"):
        load_tiny_cifar(tmp_path, held_out=[4])
    with pytest.raises(ValueError, match="class .* has only 12 candidate items, 13 needed"):
        load_tiny_cifar(tmp_path, n_query_per_class=13)


def test_cifar10_unseen_real_split():
    need(DEFAULT_DATA_ROOT / "cifar-10-jpg")
    b = get_protocol("cifar10_unseen").load(seed=0, input_kind="images", decode=False)
    assert b.split.sizes() == {"query": 200, "database": 11800, "train": 4000, "val": 0}
    held = set(b.info["held_out_classes"])
    assert len(held) == 2 and classes_of(b, "query") == held == classes_of(b, "database")
    assert classes_of(b, "train") == set(range(10)) - held
    assert np.bincount(b.targets("train").argmax(1), minlength=10)[
        sorted(set(range(10)) - held)].tolist() == [500] * 8
    assert b.split.hash() == "df0b6dc2c747" and b.info["held_out_class_names"] == ["bird", "cat"]
    b1 = get_protocol("cifar10_unseen").load(seed=1, input_kind="images", decode=False)
    assert b1.split.hash() != b.split.hash()


# ---------------------------------------------------------------------------------------------
# mirflickr25k_unseen on tiny MATLAB files
# ---------------------------------------------------------------------------------------------


def write_mirflickr(root: Path, n: int = 300, n_labels: int = 8, seed: int = 0) -> np.ndarray:
    """``mirflickr25k/mirflickr25k-{lall,yall}.mat`` (LAll N x C, YAll N x D uint8); returns
    LAll. Item 0 has no label (the reader drops it)."""
    rng = np.random.default_rng(seed)
    L = (rng.random((n, n_labels)) < 0.2).astype(np.uint8)
    L[np.arange(1, n), rng.integers(0, n_labels, n - 1)] = 1
    L[0] = 0
    Y = (rng.random((n, 12)) < 0.3).astype(np.uint8)
    d = root / "mirflickr25k"
    d.mkdir(parents=True)
    scipy.io.savemat(d / "mirflickr25k-lall.mat", {"LAll": L})
    scipy.io.savemat(d / "mirflickr25k-yall.mat", {"YAll": Y})
    return L


def test_mirflickr_unseen_tiny_split(tmp_path):
    L = write_mirflickr(tmp_path)[1:]  # the unlabelled item 0 is dropped: item i = row i + 1
    b = get_protocol("mirflickr25k_unseen").load(tmp_path, seed=0, n_query=40)
    held = np.asarray(b.info["held_out_labels"])
    seen = np.asarray(b.info["seen_labels"])
    assert held.size == 2 and seen.size == 6  # 8 labels: ceil(6) seen
    s = b.split
    has_held = L[:, held].any(1)
    # every item with a held-out label is a query or in the database; the rest is the train set
    np.testing.assert_array_equal(np.union1d(s.query, s.database), np.flatnonzero(has_held))
    np.testing.assert_array_equal(s.train, np.flatnonzero(~has_held))
    assert s.sizes()["query"] == 40 and b.info["n_dropped_unlabelled"] == 1
    assert s.sizes()["database"] == has_held.sum() - 40
    assert np.intersect1d(s.train, np.union1d(s.query, s.database)).size == 0
    # training targets never carry a held-out label; query/database targets only held-out ones
    assert not b.targets("train")[:, held].any()
    np.testing.assert_array_equal(b.targets("train"), L[s.train])
    for part in ("query", "database"):
        t = b.targets(part)
        assert not t[:, seen].any() and t[:, held].any(1).all()
        np.testing.assert_array_equal(t[:, held], L[getattr(s, part)][:, held])
    assert b.features.shape == (299, 12)


def test_mirflickr_unseen_relevance_is_on_held_out_labels(tmp_path):
    L = write_mirflickr(tmp_path)[1:]
    b = get_protocol("mirflickr25k_unseen").load(tmp_path, seed=0, n_query=40)
    held = b.info["held_out_labels"]
    ql, dl = b.targets("query"), b.targets("database")
    orig_q, orig_d = L[b.split.query], L[b.split.database]
    rel_all = (orig_q.astype(int) @ orig_d.T.astype(int)) > 0
    rel_held = (orig_q[:, held].astype(int) @ orig_d[:, held].T.astype(int)) > 0
    assert (rel_all & ~rel_held).any()  # some pairs share only a seen label ...
    # ... and the engine does not count them: the fraction of relevant items in the whole
    # ranking (precision@N_db) is the held-out-label one
    codes_q = np.zeros((len(ql), 4), dtype=np.uint8)
    codes_d = np.zeros((len(dl), 4), dtype=np.uint8)
    p = metrics.precision_recall_at_k(codes_q, codes_d, ql, dl, ks=[len(dl)])["precision"][0]
    assert p == pytest.approx(rel_held.mean(), rel=1e-12)
    assert abs(p - rel_all.mean()) > 0.01


def test_mirflickr_unseen_seeded_and_options(tmp_path):
    write_mirflickr(tmp_path)
    p = get_protocol("mirflickr25k_unseen")
    a, a2 = p.load(tmp_path, seed=0, n_query=40), p.load(tmp_path, seed=0, n_query=40)
    assert a.split == a2.split
    others = [p.load(tmp_path, seed=s, n_query=40) for s in (1, 2, 3)]
    assert all(o.split.hash() != a.split.hash() for o in others)
    t = p.load(tmp_path, seed=0, n_query=40, n_train=30)
    assert t.split.sizes()["train"] == 30 and np.isin(t.split.train, a.split.train).all()
    g = p.load(tmp_path, seed=0, n_query=40, held_out=[0, 5])
    assert g.info["held_out_labels"] == [0, 5]
    with pytest.raises(ValueError, match="at least two held-out labels, got 1"):
        p.load(tmp_path, seed=0, n_query=40, held_out=[5])
    with pytest.raises(ValueError, match="at least two held-out labels, got 1"):
        p.load(tmp_path, seed=0, n_query=40, seen_fraction=0.8)  # ceil(6.4) = 7 of 8 seen
    with pytest.raises(ValueError, match="queries \\(items with a held-out label\\)"):
        p.load(tmp_path, seed=0, n_query=10_000)
    with pytest.raises(ValueError, match="input_kind"):
        p.load(tmp_path, input_kind="images")


def test_mirflickr_unseen_real():
    d = DEFAULT_DATA_ROOT / "mirflickr25k"
    need(d / "mirflickr25k-lall.mat")
    need(d / "mirflickr25k-yall.mat")
    b = get_protocol("mirflickr25k_unseen").load(seed=0)
    assert b.info["held_out_labels"] == [2, 3, 11, 13, 20, 21]
    assert b.split.sizes() == {"query": 2000, "database": 9033, "train": 8982, "val": 0}
    assert b.split.hash() == "63acee788fd7"
    assert not b.targets("train")[:, b.info["held_out_labels"]].any()
