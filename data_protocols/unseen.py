# ruff: noqa: RUF012  (class-level option/size tables are read-only; load() copies them)
"""Unseen-class protocols: retrieval of categories the hash function never saw in training.

Sablayrolles, Douze, Usunier, Jegou, "How should we evaluate supervised hashing?" (ICASSP 2017),
and the IJCV study of deep supervised hashing training paradigms (code aassxun/DSH_Analysis):
train on 75 % of the classes, then query and search a database made only of the other 25 %.

* ``cifar10_unseen``: the held-out classes are drawn by the split seed (or given); queries and
  database are items of the held-out classes only, training items of the seen classes only.
* ``mirflickr25k_unseen``: the label-held-out variant for multi-label data: items carrying any
  held-out label form the queries and the database, the training set is the items with no
  held-out label, and relevance is on the held-out labels only.

Both reuse the loading of :class:`~data_protocols.protocols.Cifar10` and
:class:`~data_protocols.protocols.MIRFlickr25K`; only the split differs. The rule for the number
of held-out classes, sizes and choices: ``data_protocols/README.md``, "Unseen-class protocols".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from data_protocols import readers as rd
from data_protocols.core import permutation, sample_per_class, sample_random
from data_protocols.protocols import (
    Cifar10,
    MIRFlickr25K,
    Protocol,
    _Built,
    _one_hot,
    register_protocol,
)

__all__ = ["SEEN_FRACTION", "Cifar10Unseen", "MIRFlickr25KUnseen", "held_out_classes"]

#: fraction of the classes (labels) the hash function is trained on
SEEN_FRACTION = 0.75


def held_out_classes(n_classes: int, rng: np.random.Generator, *,
                     seen_fraction: float = SEEN_FRACTION,
                     held_out: Sequence[int] | None = None, what: str = "classes") -> np.ndarray:
    """The held-out class ids (sorted): ``held_out`` when given, else the first
    ``n_classes - ceil(seen_fraction * n_classes)`` of a permutation drawn from ``rng``.

    So ceil(75 %) of the classes are seen: CIFAR-10 8 seen / 2 held out, MIRFlickr-25K 18 / 6.
    Fewer than two held-out classes, or no seen class left, is an error.
    """
    if held_out is not None:
        ids = np.asarray(list(held_out), dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= n_classes):
            raise ValueError(f"held_out must be {what} ids in 0..{n_classes - 1}, got "
                             f"{ids.tolist()}")
        if np.unique(ids).size != ids.size:
            raise ValueError(f"held_out repeats {what}: {ids.tolist()}")
        source = f"held_out={ids.tolist()}"
    else:
        if not 0.0 < float(seen_fraction) < 1.0:
            raise ValueError(f"seen_fraction must be in (0, 1), got {seen_fraction!r}")
        n_seen = math.ceil(round(float(seen_fraction) * n_classes, 9))
        ids = permutation(rng, n_classes)[:n_classes - n_seen]
        source = f"seen_fraction={seen_fraction} of {n_classes} {what} (ceil: {n_seen} seen)"
    if ids.size < 2:
        raise ValueError(f"an unseen-class split needs at least two held-out {what}, got "
                         f"{ids.size} from {source}: retrieval among fewer than two unseen "
                         f"{what} measures nothing")
    if ids.size >= n_classes:
        raise ValueError(f"{source} holds out all {n_classes} {what}: nothing is left to train on")
    return np.sort(ids)


def _per_class(y: np.ndarray, candidates: np.ndarray, per_class: int, rng: np.random.Generator,
               what: str) -> np.ndarray:
    """``per_class`` random items of every class present among ``candidates``."""
    pos = sample_per_class(y[candidates], np.arange(candidates.size), per_class, rng, what=what)
    return candidates[pos]


class Cifar10Unseen(Protocol):
    name = "cifar10_unseen"
    description = ("CIFAR-10 unseen classes: 2 of the 10 classes held out (drawn by the seed); "
                   "100/class queries and the rest database from the held-out classes only; "
                   "500/class train from the 8 seen classes only")
    default_k = None
    paper_sizes = {"query": 200, "database": 11800, "train": 4000}
    default_backbone = Cifar10.default_backbone
    how_to_get = Cifar10.how_to_get
    options = {"n_query_per_class": 100, "n_train_per_class": 500,
               "seen_fraction": SEEN_FRACTION, "held_out": None, "download": False,
               "decode": True}

    def _locate(self, root, opts):
        return Cifar10()._locate(root, opts)

    def _build(self, root, rng, opts, *, input_kind, cache, progress):
        copts = {**Cifar10.options, "download": opts["download"]}
        y, ims, key, paths, src = Cifar10().source(root, copts, cache,
                                                   need_array=bool(opts["decode"]),
                                                   progress=progress)
        held = held_out_classes(10, rng, seen_fraction=opts["seen_fraction"],
                                held_out=opts["held_out"])
        seen = np.setdiff1d(np.arange(10), held)
        unseen_items = np.flatnonzero(np.isin(y, held))
        seen_items = np.flatnonzero(np.isin(y, seen))
        q = _per_class(y, unseen_items, opts["n_query_per_class"], rng, "queries")
        d = np.setdiff1d(unseen_items, q)
        t = _per_class(y, seen_items, opts["n_train_per_class"], rng, "training set")
        names = list(rd.CIFAR10_CLASSES)
        info = {"source": src, "held_out_classes": held.tolist(),
                "held_out_class_names": [names[c] for c in held],
                "seen_classes": seen.tolist(),
                "unseen_rule": "query and database: held-out classes only; train: seen classes "
                               "only (held out: the seed's draw, or the held_out option)"}
        return _Built(labels=_one_hot(y, 10), query=q, database=d, train=t, images=ims,
                      dataset_key=key, paths=paths, info=info, train_in_database=False)


class MIRFlickr25KUnseen(MIRFlickr25K):
    name = "mirflickr25k_unseen"
    description = ("MIRFlickr-25K held-out labels: 6 of the 24 labels held out (drawn by the "
                   "seed); items with any held-out label: 2,000 random queries, the rest "
                   "database, relevance on held-out labels only; train: every item with no "
                   "held-out label")
    paper_sizes = {"query": 2000, "database": "the other items with a held-out label",
                   "train": "every item without a held-out label (n_train: a random subset)"}
    options = {"n_query": 2000, "n_train": None, "seen_fraction": SEEN_FRACTION,
               "held_out": None}

    def _build(self, root, rng, opts, *, input_kind, cache, progress):
        # the parent's reader (MATLAB files, unlabelled items dropped); its split, drawn from a
        # throwaway stream, is discarded
        base = super()._build(root, np.random.default_rng(0),
                              {**MIRFlickr25K.options, "n_query": 1, "n_train": 1},
                              input_kind=input_kind, cache=cache, progress=progress)
        L = base.labels
        n_labels = L.shape[1]
        held = held_out_classes(n_labels, rng, seen_fraction=opts["seen_fraction"],
                                held_out=opts["held_out"], what="labels")
        seen = np.setdiff1d(np.arange(n_labels), held)
        has_held = L[:, held].any(1)
        pool, train_pool = np.flatnonzero(has_held), np.flatnonzero(~has_held)
        q = sample_random(pool, opts["n_query"], rng, what="queries (items with a held-out label)")
        d = np.setdiff1d(pool, q)
        if opts["n_train"] is None:
            if train_pool.size == 0:
                raise ValueError(f"held-out labels {held.tolist()}: every item carries one, so "
                                 "no item is left to train on")
            t = train_pool
        else:
            t = sample_random(train_pool, opts["n_train"], rng,
                              what="training items (items without a held-out label)")
        labels = L.copy()
        labels[np.ix_(pool, seen)] = 0  # relevance among queries and database: held-out labels
        info = {**base.info, "held_out_labels": held.tolist(), "seen_labels": seen.tolist(),
                "n_items_with_held_out_label": int(pool.size),
                "n_items_without_held_out_label": int(train_pool.size),
                "unseen_rule": "query and database: items with any held-out label; train: items "
                               "with no held-out label",
                "relevance": "held-out labels only (the seen labels of query and database items "
                             "are cleared)"}
        return _Built(labels=labels, query=q, database=d, train=t, features=base.features,
                      dataset_key=base.dataset_key, info=info, train_in_database=False)


register_protocol(Cifar10Unseen())
register_protocol(MIRFlickr25KUnseen())
