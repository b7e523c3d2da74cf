"""Every table, figure and preset of the benchmark, defined as data in one place.

A *cell* is one job: (method, hyper-parameters, dataset, protocol variant, bits, backbone, seed,
training options). It writes one result file. Tables and figures are *experiments*: each lists the
cells it needs and how to lay them out. Cells shared by several experiments (Table 3's 48-bit DPAH
is also a point of Fig. 8, Fig. 4 and Fig. 9) are the same cell and run once.

A *preset* says on which data the paper's dataset columns are filled:

* ``paper``: the paper's setting (AlexNet fine-tuned, ImageNet-100 / MS COCO / NUS-WIDE-21,
  200 epochs, batch 256). A GPU job; datasets must be on disk.
* ``cpu``: real offline data on a CPU. CIFAR-10 (JPEG copy) stands in for the single-label
  ImageNet-100 column, MIRFlickr-25K (real multi-label tag features) for NUS-WIDE and COCO.
  Shallow methods on cached MobileNet features, deep methods train a hash head on the same frozen
  features. Not the paper's setting, and every table says so.
* ``smoke``: scikit-learn's digits, every Table 3 method, minutes on a laptop CPU.
* ``test``: a still smaller run for the test-suite.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = [
    "CLAIMS",
    "EXPERIMENTS",
    "FIGURES",
    "PRESETS",
    "REFERENCE_BITS",
    "REFERENCE_ROWS",
    "TABLE3_METHODS",
    "TABLES",
    "Cell",
    "Column",
    "DatasetSpec",
    "Experiment",
    "Preset",
    "Row",
    "canonical_json",
    "cells_for",
    "experiment_columns",
    "get_experiment",
    "get_preset",
    "image_feature_backbone",
    "reference_cells",
    "reference_rows",
    "user_preset",
]

TABLE3_BITS = (16, 32, 48, 64)
APPENDIX_CIFAR_BITS = (12, 24, 32, 48)
T_GRID = (5, 10, 15, 20, 25)
ALPHA_GRID = (0.0, 0.2, 0.4, 0.6, 0.8)
#: DPAH's paper defaults (METHODS.md 1.10); a cell that uses a default says nothing about it, so
#: the Table 3 DPAH cell and the t = 10 point of Fig. 6 are the same cell.
DPAH_DEFAULT_T = 10
DPAH_DEFAULT_ALPHA = 0.2

#: paper dataset keys (as in paper_numbers.csv) -> printable names and the paper's cutoff K
PAPER_DATASETS: dict[str, tuple[str, int | None]] = {
    "nus_wide": ("NUS-WIDE", 50000),
    "coco": ("MS COCO", 5000),
    "imagenet100": ("ImageNet-100", 1000),
    "cifar10": ("CIFAR-10", None),
}


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing cell keys."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# ---------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class DatasetSpec:
    """How one dataset is loaded: the protocol, its options and the input features.

    ``feature_backbone`` feeds feature-input methods (shallow methods, and deep methods whose
    backbone is ``"linear"``/``"mlp"``); ``None`` lets the protocol choose its natural features.
    ``image_input`` is False where the data has no pixels (MIRFlickr tag vectors): deep methods then
    always run on features. ``deep_train`` adds training options to every deep cell on this
    dataset (e.g. z-scoring sparse tag features: ``input_scaling="standardize"``).
    ``method_hyper`` holds hyper-parameters a method's own paper sets per dataset (e.g. Greedy
    Hash's ``alpha = 1`` on ImageNet); they go into the cell's ``hyper`` like a preset's.
    """

    key: str
    protocol: str
    label: str
    offline: bool = True
    variant: tuple[tuple[str, Any], ...] = ()
    feature_backbone: str | None = None
    split_seed: int = 0
    note: str = ""
    deep_train: tuple[tuple[str, Any], ...] = ()
    method_hyper: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def variant_dict(self) -> dict[str, Any]:
        return dict(self.variant)

    def hyper_for(self, method: str) -> dict[str, Any]:
        """This dataset's hyper-parameters for ``method`` (empty for most)."""
        return dict(dict(self.method_hyper).get(method, ()))


@dataclass(frozen=True)
class Column:
    """One dataset column of a table: the paper's dataset and what fills it in this preset."""

    paper_key: str  # key in paper_numbers.csv ("nus_wide", "coco", "imagenet100", "cifar10")
    dataset: DatasetSpec | None  # None: this preset has no data for the column
    k: int | None  # our cutoff (None = mAP@all)
    #: a column that is no paper dataset (a user's own data, ``paper_key="user"``): its name
    label: str = ""

    @property
    def is_paper(self) -> bool:
        """Whether the column is one of the paper's datasets (and so has paper numbers)."""
        return self.paper_key in PAPER_DATASETS

    @property
    def paper_label(self) -> str:
        if not self.is_paper:
            return self.label or self.paper_key
        return PAPER_DATASETS[self.paper_key][0]

    @property
    def paper_k(self) -> int | None:
        return PAPER_DATASETS[self.paper_key][1] if self.is_paper else None

    @property
    def metric_name(self) -> str:
        return map_name(self.k)


def map_name(k: int | None) -> str:
    """``mAP@5000`` or ``mAP@all``: the names used in paper_numbers.csv."""
    return "mAP@all" if k is None else f"mAP@{k}"


DIGITS = DatasetSpec(
    key="digits",
    protocol="digits",
    label="digits (sklearn, 8x8, offline)",
    feature_backbone="raw",
    note="scikit-learn's bundled digits, raw pixels; CIFAR-10-style protocol scaled down",
)
CIFAR10_OFFLINE = DatasetSpec(
    key="cifar10_mobilenet",
    protocol="cifar10",
    label="CIFAR-10 (offline JPEG copy)",
    feature_backbone="mobilenet_tflite",
    note="appendix protocol (1,000 queries / 59,000 database / 5,000 train); "
    "ImageNet-pretrained MobileNet features (1,024-d)",
)
MIRFLICKR = DatasetSpec(
    key="mirflickr25k",
    protocol="mirflickr25k",
    label="MIRFlickr-25K (offline, tag features)",
    feature_backbone=None,
    note="real multi-label (24 labels), 1,386-d binary tag features; 2,000 queries / "
    "18,015 database / 10,000 train; deep methods z-score the tags with training statistics "
    "(input_scaling=standardize)",
    # sparse 0/1 tags leave a fresh MLP at the pair-wise losses' zero-output saddle (HashNet at
    # log 2, DSH/DHN collapsed in a first cpu run): z-score them, as images are normalised
    deep_train=(("input_scaling", "standardize"),),
)
#: the paper's datasets: shallow methods on AlexNet fc7 features (METHODS.md 2.0)
IMAGENET100 = DatasetSpec(
    "imagenet100", "imagenet100", "ImageNet-100", offline=False, feature_backbone="alexnet",
    note="appendix methods with their papers' ImageNet settings: GreedyHash alpha=1 "
    "(official imagenet.py), TALR nbins=16, gamma=10 (official run_imagenet.m)",
    method_hyper=(
        ("greedyhash", (("alpha", 1.0),)),
        ("talr", (("gamma", 10.0), ("nbins", 16))),
    ),
)
COCO = DatasetSpec("coco", "coco", "MS COCO", offline=False, feature_backbone="alexnet",
                   note="paper's database variant (all images but the queries)")
NUSWIDE21 = DatasetSpec("nuswide21", "nuswide21", "NUS-WIDE-21", offline=False,
                        feature_backbone="alexnet")
CIFAR10_PAPER = DatasetSpec("cifar10", "cifar10", "CIFAR-10", offline=False,
                            feature_backbone="alexnet")
#: Figs. 10/11 on a CPU: an image dataset with multi-labels, built from the offline CIFAR-10 copy
CIFAR10_MOSAIC = DatasetSpec(
    key="cifar10_mosaic_mobilenet",
    protocol="cifar10_mosaic",
    label="CIFAR-10 mosaics (CONSTRUCTION from the offline JPEG copy)",
    feature_backbone="mobilenet_tflite",
    note="multi-label construction: 2x2 mosaics of real CIFAR-10 images, label set = the tiles' "
    "classes (1-4); 12,000 mosaics: 1,000 queries / 11,000 database / 5,000 train; "
    "ImageNet-pretrained MobileNet features (1,024-d) of the 64x64 mosaics",
)
#: ``--table unseen`` (data_protocols/unseen.py): held-out classes drawn by the split seed
CIFAR10_UNSEEN = DatasetSpec(
    key="cifar10_unseen_mobilenet",
    protocol="cifar10_unseen",
    label="CIFAR-10 unseen classes (offline JPEG copy)",
    feature_backbone="mobilenet_tflite",
    note="8 seen classes train (500 each), 2 held-out classes (the split seed's draw) give the "
    "queries (100 each) and the database; ImageNet-pretrained MobileNet features (1,024-d)",
)
MIRFLICKR_UNSEEN = DatasetSpec(
    key="mirflickr25k_unseen",
    protocol="mirflickr25k_unseen",
    label="MIRFlickr-25K held-out labels (offline, tag features)",
    feature_backbone=None,
    note="6 of the 24 labels held out (the split seed's draw): items with a held-out label give "
    "2,000 queries and the database, relevance on held-out labels only; items without one train",
    deep_train=(("input_scaling", "standardize"),),
)
CIFAR10_UNSEEN_PAPER = DatasetSpec("cifar10_unseen", "cifar10_unseen", "CIFAR-10 unseen classes",
                                   offline=False, feature_backbone="alexnet")
#: the unseen-class columns: no paper dataset (the DPAH paper has no such table)
UNSEEN_CIFAR_KEY, UNSEEN_MIRFLICKR_KEY = "cifar10_unseen", "mirflickr25k_unseen"
UNSEEN_CIFAR_LABEL = "CIFAR-10, unseen classes"
UNSEEN_MIRFLICKR_LABEL = "MIRFlickr-25K, held-out labels"


# ---------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    """Where and how the experiments run. See the module docstring."""

    name: str
    description: str
    paper_setting: bool
    #: Tables 1/3 and the figures: one column per paper dataset
    columns: tuple[Column, ...]
    #: appendix table columns (CIFAR-10 and ImageNet-100 in the paper)
    appendix_columns: tuple[Column, ...]
    #: Table 2: (paper backbone, our backbone) pairs, on ``table2_column``'s dataset
    table2_backbones: tuple[tuple[str, str], ...]
    table2_column: Column
    #: deep methods: backbone used for Tables 1/3, appendix and figures
    deep_backbone: str
    epochs: int
    batch_size: int
    lr: float | None = None  # None: each method's own default
    seeds: tuple[int, ...] = (0,)
    bits: tuple[int, ...] = TABLE3_BITS
    appendix_cifar_bits: tuple[int, ...] = APPENDIX_CIFAR_BITS
    #: restrict Table 3 to these methods (None: all eleven)
    table3_methods: tuple[str, ...] | None = None
    #: t-SNE: at most this many database items per class, at most ``tsne_classes`` classes
    tsne_per_class: int = 100
    tsne_classes: int = 20
    #: per-method hyper-parameter changes this preset needs (e.g. fewer SDH anchors on the
    #: 500-item digits training set); stored in every cell and printed under every table
    method_hyper: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the name of a user's own dataset when this preset runs on it alone (``user_preset``)
    user_data: str = ""
    #: ``--set`` overrides, ``(key, value)`` with key ``param`` (every method that has it; deep
    #: training options such as ``epochs``/``lr`` go to every deep cell) or ``method.param``;
    #: part of every cell's key and printed under every table
    overrides: tuple[tuple[str, Any], ...] = ()
    #: registered methods added as rows to every table (``--methods`` naming a method, e.g. a
    #: ``--plugin``'s, that the tables do not list)
    extra_methods: tuple[str, ...] = ()
    #: training recipe of deep methods: "shared" (this preset's one recipe for everyone) or
    #: "published" (each method's official recipe, ``methods.deep.recipes``); ``--recipe``
    recipe: str = "shared"
    #: ``--tune N``: the equal tuning budget (``benchmarks.runner.tuning.TuneSpec`` as a sorted
    #: tuple of fields; empty: no tuning); the cells' recipe is then "tuned"
    tune: tuple[tuple[str, Any], ...] = ()
    #: the code length a tuning run uses for every method and column (reused at the others)
    tune_bits: int = 48
    #: deep methods train until converged: early stopping after this many epochs without a
    #: better validation mAP (0: the fixed budget ``epochs``), evaluated every ``eval_every``
    #: epochs on ``val_fraction`` of the training items (``methods.deep.base.DeepHashMethod``)
    early_stopping: int = 0
    eval_every: int = 5
    val_fraction: float = 0.0
    #: ``--table unseen``: the unseen-class columns (train on 75 % of the classes, query and
    #: search the others); a column without data says so in the table
    unseen_columns: tuple[Column, ...] = ()
    #: Figs. 10/11 (``--figure retrieval``): the image datasets of the retrieval examples, one
    #: figure each (at most two; the column's paper key names the paper dataset it stands for)
    retrieval_columns: tuple[Column, ...] = ()

    def column_for(self, paper_key: str) -> Column | None:
        for col in self.columns + self.appendix_columns:
            if col.paper_key == paper_key:
                return col
        return None

    def train_options(self, backbone: str | None = None) -> dict[str, Any]:
        """Training options of deep cells (part of the cell key)."""
        opts: dict[str, Any] = {
            "backbone": backbone or self.deep_backbone,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
        }
        if self.lr is not None:
            opts["lr"] = self.lr
        if self.early_stopping:
            opts.update(early_stopping=self.early_stopping, eval_every=self.eval_every,
                        val_fraction=self.val_fraction)
        return opts

    def header(self) -> str:
        """One line for every table: which setting produced it."""
        changed = "; ".join(
            f"{m}: {', '.join(f'{k}={v}' for k, v in h.items())}"
            for m, h in self.method_hyper.items()
        )
        extra = f" Changed hyper-parameters: {changed}." if changed else ""
        if self.overrides:
            extra += " Overrides (--set): " + ", ".join(f"{k}={v!r}" for k, v in self.overrides)
            extra += "."
        if self.user_data:
            return (f"preset `{self.name}` on your own data: {self.description}{extra} "
                    "The paper has no numbers for this dataset (paper and difference: –).")
        if self.paper_setting:
            return f"preset `{self.name}`: {self.description}{extra}"
        return (
            f"preset `{self.name}` — NOT the paper's setting: {self.description}{extra} "
            "Compare with the paper's numbers only as a sanity check."
        )


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        description=(
            "the paper's setting: AlexNet (ImageNet weights) fine-tuned, 200 epochs, batch 256, "
            "ImageNet-100 (mAP@1000), MS COCO (mAP@5000), NUS-WIDE-21 (mAP@50000), "
            "shallow methods on AlexNet fc7 features. A GPU job."
        ),
        paper_setting=True,
        columns=(
            Column("nus_wide", NUSWIDE21, 50000),
            Column("coco", COCO, 5000),
            Column("imagenet100", IMAGENET100, 1000),
        ),
        appendix_columns=(
            Column("cifar10", CIFAR10_PAPER, None),
            Column("imagenet100", IMAGENET100, 1000),
        ),
        table2_backbones=(("vgg16", "vgg16"), ("resnet50", "resnet50"), ("resnet101", "resnet101")),
        table2_column=Column("imagenet100", IMAGENET100, 1000),
        deep_backbone="alexnet",
        recipe="published",
        epochs=200,
        batch_size=256,
        unseen_columns=(Column(UNSEEN_CIFAR_KEY, CIFAR10_UNSEEN_PAPER, None,
                               label=UNSEEN_CIFAR_LABEL),),
        # the paper's Figs. 10 (MS COCO) and 11 (NUS-WIDE)
        retrieval_columns=(Column("coco", COCO, 5000), Column("nus_wide", NUSWIDE21, 50000)),
    ),
    "cpu": Preset(
        name="cpu",
        description=(
            "real offline data on a CPU: CIFAR-10 (offline JPEG copy, mAP@all) in the column of "
            "the single-label ImageNet-100; MIRFlickr-25K (real multi-label tag features) in the "
            "columns of NUS-WIDE (mAP@all) and MS COCO (mAP@5000). Shallow methods on cached "
            "ImageNet-pretrained MobileNet features (CIFAR-10) or the tag vectors (MIRFlickr); "
            "deep methods train their hash layers on the same frozen features (backbone `mlp`), "
            "batch 128, lr 0.01, up to 200 epochs (the paper's count) with early stopping: "
            "stopped when the validation mAP (10% of the training items as queries against the "
            "rest; never the query set or database) has not improved for 25 epochs, evaluated "
            "every 5, and the best evaluated epoch kept."
        ),
        paper_setting=False,
        columns=(
            Column("nus_wide", MIRFLICKR, None),
            Column("coco", MIRFLICKR, 5000),
            Column("imagenet100", CIFAR10_OFFLINE, None),
        ),
        appendix_columns=(Column("cifar10", CIFAR10_OFFLINE, None),),
        table2_backbones=(("vgg16", "linear"), ("resnet50", "mlp")),
        table2_column=Column("imagenet100", CIFAR10_OFFLINE, None),
        deep_backbone="mlp",
        epochs=200,
        batch_size=128,
        lr=0.01,
        early_stopping=25,
        eval_every=5,
        val_fraction=0.1,
        unseen_columns=(
            Column(UNSEEN_CIFAR_KEY, CIFAR10_UNSEEN, None, label=UNSEEN_CIFAR_LABEL),
            Column(UNSEEN_MIRFLICKR_KEY, MIRFLICKR_UNSEEN, None, label=UNSEEN_MIRFLICKR_LABEL),
        ),
        # MIRFlickr has no pixels: multi-label CIFAR-10 mosaics for Fig. 10, CIFAR-10 for Fig. 11
        retrieval_columns=(Column("coco", CIFAR10_MOSAIC, None),
                           Column("nus_wide", CIFAR10_OFFLINE, None)),
    ),
    "smoke": Preset(
        name="smoke",
        description=(
            "scikit-learn's digits (1,797 8x8 images, offline) in the column of ImageNet-100 "
            "(mAP@all); shallow methods on raw pixels, deep methods an MLP on raw pixels, "
            "10 epochs, batch 64, lr 0.05. A check of about a minute (2 cores) that everything runs."
        ),
        paper_setting=False,
        columns=(Column("imagenet100", DIGITS, None),),
        appendix_columns=(Column("cifar10", DIGITS, None),),
        table2_backbones=(("vgg16", "linear"), ("resnet50", "mlp")),
        table2_column=Column("imagenet100", DIGITS, None),
        deep_backbone="mlp",
        epochs=10,
        batch_size=64,
        lr=0.05,
        # KSH's labelled budget fits the 400 items a --tune trial trains on (500 less the 20%
        # validation part); 500, the whole training split, left it no trial that could fit
        method_hyper={"sdh": {"n_anchors": 300}, "ksh": {"n_labelled": 400},
                      "dnnh": {"max_triplets_per_anchor": 16}},
        tune_bits=16,
        # no unseen-class protocol on digits: the unseen table says so
        unseen_columns=(Column(UNSEEN_CIFAR_KEY, None, None, label=UNSEEN_CIFAR_LABEL),),
        retrieval_columns=(Column("coco", DIGITS, None),),  # a single-label stand-in
    ),
    "test": Preset(
        name="test",
        description=(
            "test-suite preset: digits in the column of ImageNet-100 (mAP@all), shallow methods "
            "only, 16 and 32 bits."
        ),
        paper_setting=False,
        columns=(Column("imagenet100", DIGITS, None),),
        appendix_columns=(Column("cifar10", DIGITS, None),),
        table2_backbones=(("vgg16", "linear"),),
        table2_column=Column("imagenet100", DIGITS, None),
        deep_backbone="mlp",
        epochs=2,
        batch_size=64,
        lr=0.05,
        bits=(16, 32),
        appendix_cifar_bits=(16, 32),
        table3_methods=("lsh", "itq"),
        method_hyper={"sdh": {"n_anchors": 300}, "ksh": {"n_labelled": 500}},
        tune_bits=16,
        unseen_columns=(Column(UNSEEN_CIFAR_KEY, None, None, label=UNSEEN_CIFAR_LABEL),),
        retrieval_columns=(Column("coco", DIGITS, None),),
    ),
}


def image_feature_backbone(preset: Preset) -> str | None:
    """The feature backbone the preset gives image datasets (its image column's): ``raw`` in
    smoke/test, ``mobilenet_tflite`` in cpu, ``alexnet`` (fc7) in paper."""
    for col in (preset.column_for("imagenet100"), *preset.columns):
        if col is not None and col.dataset is not None:
            return col.dataset.feature_backbone
    return None


def user_preset(base: Preset, dataset: DatasetSpec, name: str) -> Preset:
    """``base`` run on a user's own dataset alone: one column (``name``, mAP@all, no paper
    numbers) for every table and figure; training settings, method hyper-parameters, code lengths
    and seeds stay the base preset's, and results go to the base preset's folder."""
    col = Column("user", dataset, None, label=name)
    lr = f"lr {base.lr}" if base.lr is not None else "each method's own lr"
    features = (f"`{dataset.feature_backbone}` features of the images" if dataset.feature_backbone
                else "the features in the file")
    description = (
        f"dataset `{name}` ({dataset.label}), mAP@all. Settings of preset "
        f"`{base.name}`: deep methods backbone `{base.deep_backbone}`, {base.epochs} epochs, "
        f"batch {base.batch_size}, {lr}; shallow methods (and feature-input deep methods) on "
        f"{features}."
    )
    return replace(base, description=description, paper_setting=False, columns=(col,),
                   appendix_columns=(col,), table2_column=col, user_data=name,
                   retrieval_columns=(col,))


def get_preset(name: str) -> Preset:
    """The preset called ``name``."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# ---------------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    """One job: everything that determines its result (and nothing else: not the experiment)."""

    method: str
    hyper: tuple[tuple[str, Any], ...]
    dataset: DatasetSpec
    bits: int
    seed: int
    train: tuple[tuple[str, Any], ...] = ()  # deep methods: backbone, epochs, batch size, lr
    kind: str = "deep"  # "shallow" or "deep" (decides whether ``train`` applies)
    needs: tuple[str, ...] = field(default=(), compare=False)  # extra artefacts: "u_hist", "tsne"
    recipe: str = "shared"  # "shared" | "published" | "tuned" (deep training recipe)
    tune: tuple[tuple[str, Any], ...] = ()  # the tuning budget (TuneSpec fields) when tuned
    #: published-recipe fields the trainer could not follow, and what was used instead
    recipe_gaps: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    #: under ``--tune``: the parameters this cell sets itself (a figure's sweep value, a row's
    #: setting such as Fig. 7's alpha = 0, a ``--set``). Tuning leaves them as they are; the
    #: other values come from the study of the same method without them (``study_hyper`` and
    #: ``study_train``: that cell's hyper and train, so both cells share one study)
    pinned: tuple[str, ...] = ()
    study_hyper: tuple[tuple[str, Any], ...] = field(default=(), compare=False)
    study_train: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    @property
    def backbone(self) -> str:
        if self.kind == "shallow":
            return f"features:{self.dataset.feature_backbone or 'default'}"
        return str(dict(self.train).get("backbone", "?"))

    def key(self) -> dict[str, Any]:
        """The identity of the cell, as stored in its result file."""
        return {
            "method": self.method,
            "hyper": dict(self.hyper),
            "dataset": self.dataset.key,
            "protocol": self.dataset.protocol,
            "variant": self.dataset.variant_dict(),
            "feature_backbone": self.dataset.feature_backbone,
            "split_seed": self.dataset.split_seed,
            "bits": self.bits,
            "seed": self.seed,
            "train": dict(self.train) if self.kind == "deep" else {},
            # only when not the default, so that the ids of earlier results stay valid
            **({"recipe": self.recipe} if self.recipe != "shared" else {}),
            **({"tune": dict(self.tune)} if self.tune else {}),
            **({"pinned": list(self.pinned)} if self.pinned else {}),
            # a method whose code changed its results (HashMethod.results_version): new cells
            **({"results_version": version} if (version := results_version(self.method)) != 1 else {}),
        }

    @property
    def cell_id(self) -> str:
        """Readable and unique: ``dpah-digits-48b-mlp-s0-1a2b3c4d``."""
        digest = hashlib.sha1(canonical_json(self.key()).encode()).hexdigest()[:8]
        bb = self.backbone.replace("features:", "f-").replace("/", "_")
        return f"{self.method}-{self.dataset.key}-{self.bits}b-{bb}-s{self.seed}-{digest}"

    def describe(self) -> str:
        hyper = ",".join(f"{k}={v}" for k, v in self.hyper)
        return (
            f"{self.method}{'[' + hyper + ']' if hyper else ''} {self.dataset.key} "
            f"{self.bits} bits {self.backbone} seed {self.seed}"
        )


#: options that say how a run executes, not what it learns: never settable with ``--set``
RUN_ONLY_OPTIONS = ("checkpoint_dir", "resume", "progress", "device", "num_workers")


@functools.cache
def method_params(method: str) -> frozenset[str]:
    """Constructor parameters of a registered method (empty when it is not importable)."""
    try:
        from methods import get_method

        params = set(get_method(method)().get_params())
        return frozenset(params - {"n_bits", "seed", *RUN_ONLY_OPTIONS})
    except Exception:  # noqa: BLE001 — not registered or not importable
        return frozenset()


def results_version(method: str) -> int:
    """The registered method's ``results_version``; 1 for a name the registry does not hold (a
    plugin not loaded yet, a row of a method not implemented). A registry that fails to import
    raises: falling back to 1 there would silently give version-1 ids to changed methods."""
    from methods import registry

    cls = registry().get(method)
    return int(cls.results_version) if cls is not None else 1


@functools.cache
def train_option_names() -> frozenset[str]:
    """The training options every deep method takes (``DeepHashMethod``'s parameters), less those
    that only say how a run is executed (checkpoints, progress, device: flags of their own)."""
    import inspect

    from methods.deep.base import DeepHashMethod

    names = set(inspect.signature(DeepHashMethod.__init__).parameters)
    return frozenset(names - {"self", "n_bits", "seed", *RUN_ONLY_OPTIONS})


def _apply_overrides(preset: Preset, method: str, kind: str, train: dict[str, Any],
                     hyper: dict[str, Any]) -> set[str]:
    """Put the preset's ``--set`` overrides that concern ``method`` into its train/hyper dicts;
    return the names of the parameters set."""
    applied: set[str] = set()
    if not preset.overrides:
        return applied
    train_names = train_option_names() if kind == "deep" else set()
    params = method_params(method)
    for key, value in preset.overrides:
        target, _, param = key.rpartition(".")
        if target and target != method:
            continue
        if param in train_names:
            train[param] = value
        elif param in params or target:
            hyper[param] = value
        else:
            continue
        applied.add(param)
    return applied


def _kind_of(method: str) -> str:
    """Shallow or deep, from the registry when importable, else from the known names."""
    try:
        from methods import get_method

        return get_method(method).kind
    except Exception:  # noqa: BLE001 — registry not importable: use known names
        return "shallow" if method in SHALLOW_METHODS else "deep"


def make_cell(
    preset: Preset,
    method: str,
    dataset: DatasetSpec,
    bits: int,
    seed: int,
    hyper: dict[str, Any] | None = None,
    backbone: str | None = None,
    needs: tuple[str, ...] = (),
) -> Cell:
    kind = _kind_of(method)
    explicit = dict(hyper or {})
    base_hyper = {**preset.method_hyper.get(method, {}), **dataset.hyper_for(method)}
    train_options = {**preset.train_options(backbone), **dict(dataset.deep_train)}
    hyper = {**base_hyper, **explicit}
    gaps: tuple[tuple[str, str], ...] = ()
    if kind == "deep" and preset.recipe == "published":
        gaps = _apply_published_recipe(method, dataset, train_options, hyper)
    # under --tune, what the row or the user sets stays fixed (see Cell.pinned); the study is
    # the one of the cell without those settings
    unset_hyper = {**{k: v for k, v in hyper.items() if k not in explicit},
                   **{k: v for k, v in base_hyper.items() if k in explicit}}
    unset_train = dict(train_options)
    overridden = _apply_overrides(preset, method, kind, train_options, hyper)
    pinned = tuple(sorted(set(explicit) | overridden)) if preset.tune else ()
    train = tuple(sorted(train_options.items())) if kind == "deep" else ()
    recipe = "tuned" if preset.tune else (preset.recipe if kind == "deep" else "shared")
    return Cell(
        method=method,
        hyper=tuple(sorted(hyper.items())),
        dataset=dataset,
        bits=bits,
        seed=seed,
        train=train,
        kind=kind,
        needs=needs,
        recipe=recipe,
        tune=tuple(sorted({**dict(preset.tune), "bits": preset.tune_bits}.items()))
        if preset.tune else (),
        recipe_gaps=gaps,
        pinned=pinned,
        study_hyper=_without(pinned, hyper, unset_hyper) if pinned else (),
        study_train=_without(pinned, train_options, unset_train)
        if pinned and kind == "deep" else (),
    )


def _without(pinned: tuple[str, ...], settings: dict[str, Any],
             unset: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """``settings`` with each pinned key back at its value in ``unset`` (or absent there)."""
    out = {k: v for k, v in settings.items() if k not in pinned}
    out.update({k: unset[k] for k in pinned if k in unset})
    return tuple(sorted(out.items()))


def _apply_published_recipe(method: str, dataset: DatasetSpec, train: dict[str, Any],
                            hyper: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A deep method's official recipe (``methods.deep.recipes``) on top of the preset's.

    A method with no published recipe (e.g. a reference row) keeps the preset's. A recipe whose
    length the official code leaves undetermined (iterations of an unknown training-set size)
    keeps the preset's epochs and a fixed rate: the cell's ``recipe_gaps`` says so (stored in
    its record and printed under the table), never silently.
    """
    from methods.deep.recipes import PUBLISHED, UnsupportedRecipeError, resolve_recipe

    if method not in PUBLISHED:
        return ()
    resolved = resolve_recipe(method, "published", dataset.protocol)
    gaps = dict(resolved.unsupported)
    kwargs = dict(resolved.kwargs)
    if "epochs" in gaps:
        gaps["epochs"] = f"{gaps['epochs']}: the preset's epochs are used"
    if "schedule" in gaps:
        gaps["schedule"] = f"{gaps['schedule']}: not convertible to epochs, a fixed lr is used"
    other = {k: v for k, v in gaps.items() if k not in ("epochs", "schedule")}
    if other:
        raise UnsupportedRecipeError(f"method {method!r}: published recipe fields the trainer "
                                     f"cannot express: {other}")
    names = train_option_names()
    for key, value in kwargs.items():
        (train if key in names else hyper)[key] = value
    return tuple(sorted((k, str(v)) for k, v in gaps.items()))


# ------------------------------------------------------------------------------------ experiments
SHALLOW_METHODS = ("lsh", "itq", "sdh", "ksh", "sitq")
#: Table 3 rows in the paper's order: (printed name = paper_numbers.csv name, registry name)
TABLE3_ROWS: tuple[tuple[str, str], ...] = (
    ("LSH", "lsh"),
    ("ITQ", "itq"),
    ("SDH", "sdh"),
    ("KSH", "ksh"),
    ("SITQ", "sitq"),
    ("DSH", "dsh"),
    ("HashNet", "hashnet"),
    ("DHN", "dhn"),
    ("DNNH", "dnnh"),
    ("SSDH", "ssdh"),
    ("DPAH", "dpah"),
)
TABLE3_METHODS = tuple(m for _, m in TABLE3_ROWS)


@dataclass(frozen=True)
class Row:
    """A table row or a figure series: printed label, registry name, hyper-parameters."""

    label: str
    method: str
    hyper: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(label: str, method: str, **hyper: Any) -> Row:
        return Row(label, method, tuple(sorted(hyper.items())))


@dataclass(frozen=True)
class Experiment:
    """A table or figure: its rows and how cells are laid out (``layout`` names a rule below)."""

    name: str
    kind: str  # "table" or "figure"
    title: str
    layout: str  # "bits_by_dataset" | "two_maps_by_dataset" | "backbones" | "appendix" | ...
    rows: tuple[Row, ...]
    bits: tuple[int, ...] = ()
    sweep: tuple[Any, ...] = ()  # values of the swept hyper-parameter (figures)
    sweep_param: str = ""
    baseline: Row | None = None  # dotted line of Figs. 6/7
    needs: tuple[str, ...] = ()
    paper_table: str = ""  # table key in paper_numbers.csv
    #: reference rows printed below the methods (one cell per column and seed, shown under
    #: every code length: their code length is set by the data; see REFERENCE_ROWS)
    reference_rows: tuple[Row, ...] = ()
    #: "columns" (the preset's Table 1/3 columns) or "unseen_columns" (``--table unseen``)
    columns: str = "columns"
    #: experiments whose cells this one reads (``--table claims``): its cells are theirs, run
    #: by the one runner like any other, and its rows theirs
    uses: tuple[Experiment, ...] = ()


TABLE1 = Experiment(
    name="table1",
    kind="table",
    title="Table 1: the PA module against other supervision (48 bits, no KT loss)",
    layout="two_maps_by_dataset",
    rows=(
        Row.of("contrastive", "contrastive"),
        Row.of("triplet", "triplet"),
        Row.of("maximum-margin", "max_margin"),
        Row.of("softmax+CE", "softmax_ce"),
        Row.of("softmax+PA", "softmax_pa"),
        Row.of("HPA(lambda=0)", "hpa_lambda0"),
        Row.of("HPA(lambda=0.01)", "dpah_no_kt"),
    ),
    bits=(48,),
    paper_table="table1",
)
TABLE2 = Experiment(
    name="table2",
    kind="table",
    title="Table 2: the KT loss across backbones (48 bits)",
    layout="backbones",
    rows=(
        Row.of("softmax", "softmax_ce"),
        Row.of("softmax+KT", "softmax_kt"),
        Row.of("DPAH-without-KT", "dpah_no_kt"),
        Row.of("DPAH", "dpah"),
    ),
    bits=(48,),
    paper_table="table2",
)
#: the bits of a reference cell: 0 = its code length is set by the data (C bits for classifier
#: codes, float features for unhashed ones), so one cell fills every code-length column
REFERENCE_BITS = 0
#: reference rows (Sablayrolles et al., ICASSP 2017; methods/reference.py): a classifier on the
#: shallow methods' features, the same head as the deep methods trained with cross-entropy, and
#: cosine ranking on the unhashed features
REFERENCE_ROWS: tuple[Row, ...] = (
    Row.of("reference: classifier codes, logistic regression on the features (C bits)",
           "classifier_codes"),
    Row.of("reference: classifier codes, deep head with cross-entropy (C bits)",
           "classifier_codes_deep"),
    Row.of("reference: unhashed features, cosine ranking (float)", "unhashed_features"),
)
TABLE3 = Experiment(
    name="table3",
    kind="table",
    title="Table 3: mAP of Hamming ranking, every method and code length",
    layout="bits_by_dataset",
    rows=tuple(Row.of(label, m) for label, m in TABLE3_ROWS),
    bits=TABLE3_BITS,
    paper_table="table3",
    reference_rows=REFERENCE_ROWS,
)
UNSEEN = Experiment(
    name="unseen",
    kind="table",
    title="Unseen classes: mAP of Hamming ranking on classes the hash function never saw "
    "(trained on 75 % of the classes; Sablayrolles et al., ICASSP 2017)",
    layout="bits_by_dataset",
    rows=TABLE3.rows,
    bits=TABLE3_BITS,
    reference_rows=REFERENCE_ROWS,
    columns="unseen_columns",
)
APPENDIX = Experiment(
    name="appendix",
    kind="table",
    title="Appendix Table: recent methods (CIFAR-10 and ImageNet-100)",
    layout="appendix",
    rows=(
        Row.of("DSDH", "dsdh"),
        Row.of("TALR", "talr"),
        Row.of("HBMP", "hbmp"),
        Row.of("GreedyHash", "greedyhash"),
        Row.of("DPAH", "dpah"),
    ),
    paper_table="appendix",
)
FIG_PR = Experiment(
    name="pr",
    kind="figure",
    title="Fig. 8: precision-recall curves by Hamming radius (48 bits)",
    layout="pr",
    rows=TABLE3.rows,
    bits=(48,),
)
FIG_T = Experiment(
    name="t-sensitivity",
    kind="figure",
    title="Fig. 6: mAP vs the KT threshold t (16 bits); dotted: without KT",
    layout="sweep",
    rows=(Row.of("DPAH", "dpah"),),
    bits=(16,),
    sweep=T_GRID,
    sweep_param="t",
    baseline=Row.of("without KT", "dpah_no_kt"),
    needs=("u_hist",),
)
FIG_ALPHA = Experiment(
    name="alpha-sensitivity",
    kind="figure",
    title="Fig. 7: mAP vs the margin alpha (16 bits); dotted: no margin (alpha = 0)",
    layout="sweep",
    rows=(Row.of("DPAH", "dpah"),),
    bits=(16,),
    sweep=ALPHA_GRID,
    sweep_param="alpha",
    baseline=Row.of("no margin", "dpah", alpha=0.0),
)
FIG_KT = Experiment(
    name="kt-loss",
    kind="figure",
    title="Fig. 4: DPAH with and without the KT loss across code lengths",
    layout="series_by_bits",
    rows=(Row.of("w/o KT", "dpah_no_kt"), Row.of("w/ KT", "dpah")),
    bits=TABLE3_BITS,
)
FIG_DIST = Experiment(
    name="distribution",
    kind="figure",
    title="Figs. 3 and 5: distribution of u before thresholding (training set, 16 bits)",
    layout="histograms",
    rows=(
        Row.of("w/o KT", "dpah_no_kt"),
        Row.of("t = 15", "dpah", t=15),
        Row.of("t = 10", "dpah"),
        Row.of("t = 5", "dpah", t=5),
    ),
    bits=(16,),
    needs=("u_hist",),
)
FIG_TSNE = Experiment(
    name="tsne",
    kind="figure",
    title="Fig. 9: t-SNE of 48-bit database codes",
    layout="tsne",
    rows=(Row.of("DNNH", "dnnh"), Row.of("HashNet", "hashnet"), Row.of("DPAH", "dpah")),
    bits=(48,),
    needs=("tsne",),
)
FIG_RETRIEVAL = Experiment(
    name="retrieval",
    kind="figure",
    title="Figs. 10 and 11: top-5 retrievals of two seeded queries (64 bits), with the Jaccard "
    "similarity of labels",
    layout="retrieval",
    # the paper's order, top to bottom; 64 bits as in the paper's captions
    rows=(Row.of("DPAH", "dpah"), Row.of("HashNet", "hashnet"), Row.of("DNNH", "dnnh")),
    bits=(64,),
    columns="retrieval_columns",
)

#: ``--table claims``: a verdict on each of the paper's claims (benchmarks/render/claims.py),
#: computed from the cells of Tables 1-3 and Fig. 7
CLAIMS = Experiment(
    name="claims",
    kind="table",
    title="The paper's claims: do they hold here?",
    layout="claims",
    rows=(),
    uses=(TABLE1, TABLE2, TABLE3, FIG_ALPHA),
)

TABLES: dict[str, Experiment] = {"1": TABLE1, "2": TABLE2, "3": TABLE3, "appendix": APPENDIX,
                                  "unseen": UNSEEN, "claims": CLAIMS}
FIGURES: dict[str, Experiment] = {
    e.name: e for e in (FIG_PR, FIG_T, FIG_ALPHA, FIG_KT, FIG_DIST, FIG_TSNE, FIG_RETRIEVAL)
}
EXPERIMENTS: dict[str, Experiment] = {
    **{e.name: e for e in TABLES.values()},
    **{f"fig-{e.name}": e for e in FIGURES.values()},
}


def get_experiment(name: str) -> Experiment:
    """A table (``"1"``, ``"2"``, ``"3"``, ``"appendix"``, ``"unseen"``, ``"claims"``) or a
    figure (``"pr"``, ...)."""
    if name in TABLES:
        return TABLES[name]
    if name in FIGURES:
        return FIGURES[name]
    raise KeyError(
        f"unknown experiment {name!r}; tables: {', '.join(TABLES)}; figures: {', '.join(FIGURES)}"
    )


def sweep_hyper(exp: Experiment, value: Any, tuned: bool = False) -> dict[str, Any]:
    """Hyper-parameters of one sweep point; the paper default is the method's own default.

    Untuned, the default point is the method's plain cell (shared with the tables). Under
    ``--tune`` every point names its value, the default too: the value is then pinned
    (``Cell.pinned``) while the other parameters take the study's, so the curve varies the
    swept parameter alone instead of showing the tuned value at every point.
    """
    default = {"t": DPAH_DEFAULT_T, "alpha": DPAH_DEFAULT_ALPHA}.get(exp.sweep_param)
    return {} if value == default and not tuned else {exp.sweep_param: value}


def table_rows(exp: Experiment, preset: Preset) -> tuple[Row, ...]:
    """The rows of a table or figure under a preset (a table also gets the preset's extra
    methods, e.g. a plugin's, as rows of their own; an experiment that ``uses`` others: theirs)."""
    if exp.uses:
        return tuple(dict.fromkeys(r for e in exp.uses for r in table_rows(e, preset)))
    rows = exp.rows
    if exp.kind == "table" and exp.rows is TABLE3.rows and preset.table3_methods is not None:
        rows = tuple(r for r in rows if r.method in preset.table3_methods)
    if exp.kind == "table":
        listed = {r.method for r in rows + exp.reference_rows}
        rows += tuple(Row.of(m, m) for m in preset.extra_methods if m not in listed)
    return rows


def reference_rows(exp: Experiment, preset: Preset) -> tuple[Row, ...]:
    """The reference rows of a table under a preset (``table3_methods`` restricts them too)."""
    if preset.table3_methods is None:
        return exp.reference_rows
    return tuple(r for r in exp.reference_rows if r.method in preset.table3_methods)


def experiment_columns(exp: Experiment, preset: Preset) -> tuple[Column, ...]:
    """The dataset columns of a ``bits_by_dataset`` table: Table 3's, or the unseen ones."""
    return getattr(preset, exp.columns)


def reference_cells(exp: Experiment, preset: Preset, row: Row, dataset: DatasetSpec,
                    seeds: tuple[int, ...]) -> list[Cell]:
    """The cells of one reference row in one column, one per seed: ``REFERENCE_BITS`` (shown
    under every code length), the preset's shared recipe and no tuning (a reference is no
    method under comparison)."""
    plain = replace(preset, tune=(), recipe="shared")
    return [make_cell(plain, row.method, dataset, REFERENCE_BITS, s, dict(row.hyper),
                      needs=exp.needs) for s in seeds]


def cells_for(exp: Experiment, preset: Preset, seeds: tuple[int, ...] | None = None) -> list[Cell]:
    """Every cell an experiment needs under a preset (columns without data are left out; an
    experiment that ``uses`` others needs all of theirs)."""
    seeds = tuple(seeds) if seeds else preset.seeds
    if exp.uses:
        return dedupe([c for e in exp.uses for c in cells_for(e, preset, seeds)])
    out: list[Cell] = []

    def add(row: Row, ds: DatasetSpec | None, bits: int, hyper=None, backbone=None) -> None:
        if ds is None:
            return
        h = dict(row.hyper) if hyper is None else hyper
        for seed in seeds:
            out.append(make_cell(preset, row.method, ds, bits, seed, h, backbone, exp.needs))

    rows = table_rows(exp, preset)
    if exp.layout == "backbones":
        for row in rows:
            for _paper_bb, our_bb in preset.table2_backbones:
                add(row, preset.table2_column.dataset, exp.bits[0], backbone=our_bb)
    elif exp.layout == "appendix":
        for row in rows:
            for col in preset.appendix_columns:
                bits = preset.appendix_cifar_bits if col.paper_key == "cifar10" else preset.bits
                for b in bits:
                    add(row, col.dataset, b)
    elif exp.layout == "sweep":
        for col in preset.columns:
            for row in rows:
                for value in exp.sweep:
                    add(row, col.dataset, exp.bits[0], hyper={
                        **dict(row.hyper), **sweep_hyper(exp, value, bool(preset.tune))})
            if exp.baseline is not None:
                add(exp.baseline, col.dataset, exp.bits[0])
    elif exp.layout == "tsne":
        col = preset.column_for("imagenet100") or preset.columns[0]
        for row in rows:
            add(row, col.dataset, exp.bits[0])
    else:
        bits = exp.bits if exp.layout != "bits_by_dataset" else preset.bits
        if exp.layout == "series_by_bits":
            bits = preset.bits
        for col in experiment_columns(exp, preset):
            for row in rows:
                for b in bits:
                    add(row, col.dataset, b)
            for row in reference_rows(exp, preset) if col.dataset is not None else ():
                out.extend(reference_cells(exp, preset, row, col.dataset, seeds))
    return dedupe(out)


def dedupe(cells: list[Cell]) -> list[Cell]:
    """Drop repeated cells (the same dataset can fill two columns), merging their needs."""
    seen: dict[str, Cell] = {}
    for c in cells:
        if c.cell_id in seen:
            prev = seen[c.cell_id]
            needs = tuple(sorted(set(prev.needs) | set(c.needs)))
            seen[c.cell_id] = Cell(**{**asdict_shallow(prev), "needs": needs})
        else:
            seen[c.cell_id] = c
    return list(seen.values())


def asdict_shallow(cell: Cell) -> dict[str, Any]:
    """Field dict of a cell without recursing into the dataset spec."""
    return {f: getattr(cell, f) for f in cell.__dataclass_fields__}


def dataset_spec_dict(ds: DatasetSpec) -> dict[str, Any]:
    return asdict(ds)
