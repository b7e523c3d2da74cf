"""Training recipes as data: each deep method's published recipe, and the one shared recipe.

``recipe="published"``: the optimiser, learning rates, schedule, batch size, length and weight
decay of the method's official code, per dataset where the official code sets them per dataset,
each entry citing the files it was read from (repository, paths, commit of the stored copy).
``recipe="shared"``: one recipe for every method, what the DPAH paper states for its own training
(Sec. 4.1: SGD, momentum 0.9, weight decay 5e-4, batch 256, lr 1e-3 fixed, 200 epochs).
``recipe="tuned"`` is not data: it comes from the tuner, which searches each class's
``search_space`` (:mod:`methods.search`).

Conventions
-----------
* ``lr`` is the backbone's (pre-trained layers') learning rate; ``head_lr_mult`` multiplies it for
  the hash layer and the method's own parameters (``hash_lr_mult`` of the trainer). Where the
  official code gives the new layers the base rate and the pre-trained ones a fraction
  (MatConvNet's ``lrmult``: TALR, HBMP), ``lr = base * lrmult`` and ``head_lr_mult = 1 / lrmult``.
  ``classifier_lr_mult`` is set where the official code gives a classifier on top of the codes
  another rate than the hash layer (SSDH). ``bias_lr_mult`` / ``bias_decay_mult`` are Caffe's
  per-blob ``lr_mult: 2`` / ``decay_mult: 0`` for biases.
* Iterations are converted to epochs with the official training-set size ``n_train``:
  ``epochs = iterations * batch_size / n_train`` (rounded to the nearest integer for the run's
  length, kept to one decimal for schedule steps). A user training on another dataset expects the
  same number of passes over the data, not the same number of steps; the official iteration
  counts stay in ``iterations`` and in each schedule's ``official`` text. Where ``n_train`` is not
  known (DNNH's third-party triplet database) ``epochs`` is None and the entry cannot be converted.
* A step schedule whose first step falls after the last epoch is effectively fixed
  (:func:`effective_schedule`), e.g. DHN's 2,000 iterations with a step at 5,000.
* Method-specific settings of the official configuration (HashNet's ``class_num`` and continuous
  similarity, TALR's ``nbins``/``gamma``, Greedy Hash's ``alpha``) are constructor keyword
  arguments in ``method_options``. HashNet's continuation keeps the released schedule in
  iterations (``continuation_step=200``, the defaults of :class:`methods.deep.hashnet.HashNet`),
  as the released code counts it.

Converting to constructor arguments
-----------------------------------
:func:`resolve_recipe` returns the keyword arguments the current trainer can express (``lr``,
``momentum``, ``weight_decay``, ``batch_size``, ``epochs``, ``hash_lr_mult`` and the method
options) *and*, separately, every field it cannot (:data:`TRAINER_UNSUPPORTED`: another optimiser,
Nesterov momentum, an lr schedule, a classifier-only or bias-only lr multiplier, no bias decay,
an unconvertible length); nothing is dropped silently. :func:`recipe_kwargs` returns the keyword
arguments and raises :class:`UnsupportedRecipeError` (naming the method, the recipe and each
unsupported field) when anything is left over.

Dataset kinds: ``"imagenet"``, ``"coco"``, ``"nuswide"``, ``"cifar10"``. :func:`dataset_kind` maps
the paper keys of the tables' columns (``"imagenet100"``, ``"nus_wide"``, ...) and protocol names
onto them; any other dataset (digits, MIRFlickr, a user's data) uses the method's default entry,
and the resolved recipe says which entry it used.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DATASET_KINDS",
    "PUBLISHED",
    "RECIPES",
    "SHARED",
    "TRAINER_UNSUPPORTED",
    "MethodRecipes",
    "Recipe",
    "ResolvedRecipe",
    "Schedule",
    "Source",
    "UnsupportedRecipeError",
    "dataset_kind",
    "effective_schedule",
    "iterations_to_epochs",
    "published_recipe",
    "recipe_kwargs",
    "resolve_recipe",
]

RECIPES = ("published", "shared")
DATASET_KINDS = ("imagenet", "coco", "nuswide", "cifar10")
SCHEDULE_KINDS = ("fixed", "step", "multistep", "logspace")
#: recipe fields the trainer (methods/deep/trainer.py: SGD; lr schedules fixed / step /
#: multistep / logspace; Caffe's bias rule; SSDH's classifier multiplier) cannot express
TRAINER_UNSUPPORTED = (
    "optimizer",
    "nesterov",
    "classifier_lr_mult",  # on a method without a classifier_lr_mult parameter
    "bias_decay_mult",  # other than 0 or 1
    "epochs",  # iterations of an unknown training-set size
    "schedule",  # milestones in such iterations
)

_DATASET_ALIASES = {
    "imagenet": "imagenet", "imagenet100": "imagenet", "imagenet-100": "imagenet",
    "coco": "coco", "mscoco": "coco",
    "nuswide": "nuswide", "nus_wide": "nuswide", "nuswide21": "nuswide", "nuswide_21": "nuswide",
    "nuswide_81": "nuswide", "nuswide81": "nuswide",
    "cifar10": "cifar10", "cifar10_mobilenet": "cifar10", "cifar-10": "cifar10",
}


class UnsupportedRecipeError(ValueError):
    """A recipe field the trainer cannot express (the message names method, recipe and field)."""


@dataclass(frozen=True)
class Source:
    """Where an entry was read: repository (or paper), files, commit of the stored copy."""

    repo: str
    paths: tuple[str, ...]
    commit: str = ""
    note: str = ""

    def citation(self) -> str:
        at = f" @{self.commit[:7]}" if self.commit else ""
        return f"{self.repo}{at}: {', '.join(self.paths)}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Schedule:
    """Learning-rate schedule in epochs; ``official`` states the rule in the code's own units.

    ``step``: lr x ``gamma`` every ``every_epochs``; ``multistep``: x ``gamma`` at each of
    ``milestones``; ``logspace``: lr log-linearly from ``lr`` to ``end_lr`` over the run (one value
    per epoch, MATLAB ``logspace``); ``fixed``: constant.
    """

    kind: str = "fixed"
    gamma: float | None = None
    every_epochs: float | None = None
    milestones: tuple[float, ...] = ()
    end_lr: float | None = None
    official: str = "fixed lr"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"schedule kind must be one of {SCHEDULE_KINDS}, got {self.kind!r}")


FIXED = Schedule()


@dataclass(frozen=True)
class Recipe:
    """One training recipe (see the module docstring for the conventions)."""

    source: Source
    lr: float
    batch_size: int
    epochs: int | None
    weight_decay: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    head_lr_mult: float = 1.0
    classifier_lr_mult: float | None = None
    bias_lr_mult: float = 1.0
    bias_decay_mult: float = 1.0
    schedule: Schedule = FIXED
    iterations: int | None = None
    n_train: int | None = None
    backbone: str = ""
    method_options: tuple[tuple[str, Any], ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class MethodRecipes:
    """A method's published recipes: one per dataset kind, and the one used for any other data."""

    default: str
    by_dataset: dict[str, Recipe] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default not in self.by_dataset:
            raise ValueError(f"default entry {self.default!r} missing from {sorted(self.by_dataset)}")


@dataclass(frozen=True)
class ResolvedRecipe:
    """What :func:`resolve_recipe` found: kwargs the trainer supports, and what it cannot express."""

    method: str
    recipe: str
    dataset_entry: str  # which entry was used ("shared" for the shared recipe)
    kwargs: dict[str, Any]
    unsupported: dict[str, Any]
    citation: str


def iterations_to_epochs(iterations: float, batch_size: int, n_train: int) -> float:
    """``iterations * batch_size / n_train``: passes over the training set."""
    if not (iterations > 0 and batch_size > 0 and n_train > 0):
        raise ValueError("iterations, batch_size and n_train must be positive")
    return iterations * batch_size / n_train


def _iter_recipe(*, iterations: int, n_train: int | None, batch_size: int,
                 steps: tuple[int, ...] = (), step_every: int | None = None,
                 gamma: float | None = None, official: str = "", **rest: Any) -> Recipe:
    """A recipe whose official code counts iterations: convert the length and the schedule."""
    def ep(it: int) -> float:
        return round(iterations_to_epochs(it, batch_size, n_train), 1)

    if n_train is None:
        epochs, schedule = None, Schedule("multistep" if steps else "step" if step_every else
                                          "fixed", gamma=gamma, official=official)
    else:
        epochs = max(1, round(iterations_to_epochs(iterations, batch_size, n_train)))
        if steps:
            schedule = Schedule("multistep", gamma=gamma, milestones=tuple(ep(s) for s in steps),
                                official=official)
        elif step_every:
            schedule = Schedule("step", gamma=gamma, every_epochs=ep(step_every), official=official)
        else:
            schedule = FIXED
    return Recipe(batch_size=batch_size, epochs=epochs, schedule=schedule, iterations=iterations,
                  n_train=n_train, **rest)


# ---------------------------------------------------------------------------------- shared
SHARED = Recipe(
    source=Source("DPAH paper (Wang et al., WACV 2020)", ("/work/shared/paper/dpah_paper.txt",),
                  note="Sec. 4.1: batch 256, momentum 0.9, weight decay 5e-4, lr fixed 0.001, "
                  "200 epochs"),
    lr=1e-3, batch_size=256, epochs=200, weight_decay=5e-4, momentum=0.9, backbone="alexnet",
    notes="one recipe for every method; no per-layer multipliers",
)

# ---------------------------------------------------------------------------------- published
_HASHNET = "thuml/HashNet"
_HASHNET_C = "85387b814fcf95daff887bd325cbaa0e8def7323"


def _hashnet(ds: str, lr: float, class_num: float, n_train: int, train_list: str) -> Recipe:
    return _iter_recipe(
        source=Source(_HASHNET, (f"caffe/models/train/{ds}/solver.prototxt",
                                 f"caffe/models/train/{ds}/train_val.prototxt", train_list),
                      _HASHNET_C),
        lr=lr, weight_decay=5e-4, head_lr_mult=10.0, bias_lr_mult=2.0, bias_decay_mult=0.0,
        iterations=10_000, n_train=n_train, batch_size=256, step_every=2000, gamma=0.5,
        official="step: lr x0.5 every 2,000 of 10,000 iterations",
        backbone="alexnet",
        method_options=(("pair_weighting", "fixed"), ("class_num", class_num),
                        ("continuous_similarity", True)),
        notes="two data layers of 256 images each; the loss uses the 256 x 256 cross pairs "
        "(here: the pairs within one batch of 256). fc8 (hash layer) lr_mult 10 / 20 (bias, "
        "decay_mult 0); sigmoid_param 10 / K; ScaleTanH continuation step 200, gamma 0.005, power "
        "0.5 (iterations, as released). The PyTorch port (pytorch/src/train.py) uses Nesterov "
        "SGD, batch 36 + 36 and the lr from the command line.",
    )


_SSDH = Source("kevinlin311tw/Caffe-DeepBinaryCode",
               ("examples/SSDH/solver.prototxt", "examples/SSDH/train_val.prototxt",
                "data/cifar10/train-file-list.txt"),
               "9eaa7662be47d49f475ecbeea2bd51be105270d2")
_GREEDY = ("ssppp/GreedyHash", "e5089b2354b8f283d662bb0584f1b006faf2c2db")
_TALR = ("kunhe/TALR", "9a932966ada9835becb5715bfe9398638bee1e1e")
_TALR_NOTE = (
    "MatConvNet (main/train_simplenn.m) divides every gradient by the batch size and apr_s_forward.m "
    "returns the sum of APr over the batch, so the official step is that of the mean over "
    "queries: reduction='mean'. lr is the new layer's; pre-trained layers x lrmult; momentum "
    "0.9 (train_simplenn.m default)."
)

_DPAH_FAMILY = (
    "dpah", "dpah_no_kt", "hpa_lambda0", "softmax_ce", "softmax_kt", "softmax_pa", "max_margin",
    "contrastive", "triplet",
)

PUBLISHED: dict[str, MethodRecipes] = {
    "hashnet": MethodRecipes("imagenet", {
        "imagenet": _hashnet("imagenet", 2e-4, 100.0, 13_000, "caffe/data/imagenet/train.txt"),
        "coco": _hashnet("coco", 5e-5, 1.0, 10_000, "caffe/data/coco/train.txt"),
        "nuswide": _hashnet("nuswide_81", 5e-5, 5.0, 10_000, "pytorch/data/nuswide_81/train.txt"),
    }),
    "dsh": MethodRecipes("cifar10", {
        "cifar10": _iter_recipe(
            source=Source("lhmRyan/deep-supervised-hashing-DSH",
                          ("CIFAR-10/solver.prototxt", "CIFAR-10/train_test.prototxt",
                           "CIFAR-10/train.txt"), "631901f82e2ab031fbac33f914a5b08ef8e21d57"),
            lr=1e-3, weight_decay=4e-3, bias_lr_mult=2.0, bias_decay_mult=0.0,
            iterations=70_000, n_train=50_000, batch_size=200, steps=(60_000, 65_000), gamma=0.1,
            official="multistep: lr x0.1 at 60,000 and 65,000 of 70,000 iterations",
            backbone="3-conv CNN from scratch",
            notes="CIFAR-10/finetune_solver.prototxt optionally continues 30,000 iterations at "
            "lr 1e-4 (step x0.6 every 4,000); NUS/solver.prototxt: step x0.6 every 20,000 of "
            "150,000 iterations, batch 200 (training-set size not in the repository). Margin 2K "
            "and alpha 0.01 are the class defaults.",
        ),
    }),
    "dhn": MethodRecipes("cifar10", {
        "cifar10": _iter_recipe(
            source=Source("thulab/DeepHash",
                          ("examples/dhn/train_val.sh", "examples/dhn/train_val_script.py",
                           "DeepHash/model/dhn/dhn.py", "data/cifar10/train.txt"),
                          "9907613e1b73818985bc585af613a960c8df7d20",
                          note="the authors' group's TensorFlow library; the AAAI'16 release was "
                          "not found"),
            lr=5e-5, weight_decay=0.0, head_lr_mult=10.0, bias_lr_mult=2.0,
            iterations=2000, n_train=5000, batch_size=256, step_every=5000, gamma=0.5,
            official="exponential_decay staircase: lr x0.5 every 5,000 iterations (2,000 run)",
            backbone="alexnet",
            notes="MomentumOptimizer 0.9, no weight-decay term in dhn.py; last layer gradient x10 "
            "(bias x20), other biases x2. Its loss (cosine-normalised inner product, alpha 10, "
            "squared quantisation, q_lambda 0 in train_val.sh) differs from the paper's DHN "
            "implemented here, so no loss options are taken from it.",
        ),
    }),
    "dnnh": MethodRecipes("cifar10", {
        "cifar10": _iter_recipe(
            source=Source("HYPJUDY/caffe-dnnh",
                          ("runtime/48bit/train48_solver.prototxt", "runtime/48bit/train48.prototxt"),
                          "ffd6143bd2098740a801aa0c92faa8b03d284996",
                          note="third-party Caffe reproduction; no official DNNH code was found"),
            lr=1e-3, weight_decay=5e-4, bias_lr_mult=2.0,
            iterations=100_000, n_train=None, batch_size=100, steps=(60_000, 70_000), gamma=0.1,
            official="multistep: lr x0.1 at 60,000 and 70,000 of 100,000 iterations",
            backbone="NIN-style CNN from scratch",
            notes="batches of 100 triplets from a pre-built triplet database whose size is not in "
            "the repository, so the length cannot be converted to epochs",
        ),
    }),
    "ssdh": MethodRecipes("cifar10", {
        "cifar10": _iter_recipe(
            source=_SSDH, lr=1e-3, weight_decay=5e-4, head_lr_mult=1.0, classifier_lr_mult=10.0,
            bias_lr_mult=2.0, iterations=50_000, n_train=50_000, batch_size=32,
            step_every=25_000, gamma=0.1,
            official="step: lr x0.1 every 25,000 of 50,000 iterations",
            backbone="alexnet (CaffeNet)",
            method_options=(("reg_normalisation", "caffe"),),
            notes="latent (hash) layer lr_mult 1, classifier fc9 lr_mult 10 (bias 20); loss "
            "weights 1; E2/E3 as the K1/K2 layers at HEAD (reg_normalisation='caffe')",
        ),
    }),
    "greedyhash": MethodRecipes("cifar10", {
        "cifar10": Recipe(
            source=Source(_GREEDY[0], ("cifar1.py",), _GREEDY[1]),
            lr=1e-3, batch_size=32, epochs=50, weight_decay=5e-4,
            schedule=Schedule("step", gamma=0.1, every_epochs=30,
                              official="lr x0.1 ** (epoch // 30), 50 epochs"),
            backbone="alexnet", method_options=(("alpha", 0.1),),
            notes="one lr for every layer; images resized to 224, no crop",
        ),
        "imagenet": Recipe(
            source=Source(_GREEDY[0], ("imagenet.py",), _GREEDY[1]),
            lr=1e-3, batch_size=32, epochs=100, weight_decay=5e-4,
            schedule=Schedule("step", gamma=0.1, every_epochs=80,
                              official="lr x0.1 ** (epoch // 80), 100 epochs"),
            backbone="alexnet", method_options=(("alpha", 1.0),),
            notes="one lr for every layer; resize 256, random crop 224, flip",
        ),
    }),
    "talr": MethodRecipes("cifar10", {
        "cifar10": Recipe(
            source=Source(_TALR[0], ("run_cifar_s1.m", "+demo/AP.m", "main/get_opts.m",
                                     "main/train_simplenn.m"), _TALR[1]),
            lr=1e-2 * 0.1, head_lr_mult=10.0, batch_size=250, epochs=50, weight_decay=5e-4,
            backbone="vggf",
            method_options=(("gamma", 1.0), ("reduction", "mean")),
            notes="run_cifar_s1.m: lr 1e-2, lrmult 0.1, lrdecay 0 (fixed), nbins K/2 for K >= 32 "
            "(the class default). " + _TALR_NOTE,
        ),
        "imagenet": Recipe(
            source=Source(_TALR[0], ("run_imagenet.m", "+demo/imagenet.m", "main/get_opts.m",
                                     "main/train_simplenn.m"), _TALR[1]),
            lr=0.05 * 0.01, head_lr_mult=100.0, batch_size=256, epochs=125, weight_decay=5e-4,
            schedule=Schedule("step", gamma=0.05, every_epochs=100,
                              official="lrdecay 0.05 every lrstep = 100 epochs, 125 epochs"),
            backbone="alexnet",
            method_options=(("gamma", 10.0), ("nbins", 16), ("reduction", "mean")),
            notes="run_imagenet.m: lr 0.05, lrmult 0.01. " + _TALR_NOTE,
        ),
        "nuswide": Recipe(
            source=Source(_TALR[0], ("run_nuswide_AP.m", "+demo/AP.m", "main/get_opts.m",
                                     "main/train_simplenn.m"), _TALR[1]),
            lr=0.02 * 0.01, head_lr_mult=100.0, batch_size=256, epochs=50, weight_decay=5e-4,
            backbone="vggf",
            method_options=(("gamma", 1.0), ("reduction", "mean")),
            notes="run_nuswide_AP.m: lr 0.02, lrmult 0.01, lrdecay 0 (fixed), nbins K/2. "
            + _TALR_NOTE,
        ),
    }),
    "dsdh": MethodRecipes("cifar10", {
        "cifar10": Recipe(
            source=Source("liqi-casia/DSDH-HashingCode", ("DSDH.m", "train.m", "update.m"),
                          "3735a387bb0d53d792c90b4043f9cedf0aa77dd7"),
            lr=1e-2, batch_size=128, epochs=150, weight_decay=5e-4, momentum=0.0,
            schedule=Schedule("logspace", end_lr=1e-6,
                              official="lr = logspace(-2, -6, 150): one value per epoch"),
            backbone="vggf",
            notes="plain gradient steps (no momentum, update.m), the same lr for every layer; "
            "the gradient of the (batch x all N) likelihood is divided by batch_size * N; "
            "RRC lambda 0.1 and 10 DCC sweeps per batch (train.m); eta is a command-line "
            "argument (no value in the repository)",
        ),
    }),
    "hbmp": MethodRecipes("cifar10", {
        "cifar10": Recipe(
            source=Source("fcakir/deep-mihash", ("get_opts.m", "demo.m"),
                          "0b060f0a9617a53a58d0c82f13b5280b3b2239aa",
                          note="code-base defaults: the hbmp branch publishes no per-dataset "
                          "commands (README: 'Coming Soon')"),
            lr=0.1 * 0.01, head_lr_mult=100.0, batch_size=256, epochs=50, weight_decay=5e-4,
            schedule=Schedule("step", gamma=0.5, every_epochs=10,
                              official="lrdecay 0.5 every lrstep = 10 epochs, 50 epochs"),
            backbone="vggf",
            notes="get_opts.m defaults: lr 0.1 for new layers, lrmult 0.01 for pre-trained ones; "
            "momentum 0.9 (MatConvNet train_simplenn default)",
        ),
    }),
}

_DPAH_PUBLISHED = Recipe(
    source=Source("DPAH paper (Wang et al., WACV 2020)", ("/work/shared/paper/dpah_paper.txt",),
                  note="Sec. 4.1; no DPAH code is public (METHODS.md 0.3), and the Table 1/2 rows "
                  "are the paper's own ablations, trained with its setting"),
    lr=1e-3, batch_size=256, epochs=200, weight_decay=5e-4, backbone="alexnet",
)
for _name in _DPAH_FAMILY:
    PUBLISHED[_name] = MethodRecipes("imagenet", {"imagenet": _DPAH_PUBLISHED})


# ---------------------------------------------------------------------------------- resolution
def dataset_kind(name: str | None) -> str | None:
    """The recipe dataset kind for a column's paper key or a protocol name (None: unknown)."""
    if name is None:
        return None
    return _DATASET_ALIASES.get(str(name).lower())


def published_recipe(method: str, dataset: str | None = None) -> tuple[str, Recipe]:
    """``(entry, recipe)``: the method's entry for ``dataset``'s kind, else its default entry."""
    try:
        entries = PUBLISHED[method]
    except KeyError:
        raise KeyError(f"no published recipe for method {method!r}; known: "
                       f"{', '.join(sorted(PUBLISHED))}") from None
    kind = dataset_kind(dataset)
    entry = kind if kind in entries.by_dataset else entries.default
    return entry, entries.by_dataset[entry]


def effective_schedule(recipe: Recipe) -> Schedule:
    """The schedule as it acts within the run: a step beyond the last epoch never fires."""
    s, epochs = recipe.schedule, recipe.epochs
    if epochs is None:
        return s
    if s.kind == "step" and s.every_epochs is not None and s.every_epochs >= epochs:
        return FIXED
    if s.kind == "multistep" and all(m >= epochs for m in s.milestones):
        return FIXED
    return s


def _trainer_fields(recipe: Recipe, params: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recipe's schedule, bias rule and classifier multiplier as trainer keyword arguments,
    and the fields the trainer cannot express (``TRAINER_UNSUPPORTED``)."""
    kwargs: dict[str, Any] = {}
    out: dict[str, Any] = {}
    if recipe.optimizer != "sgd":
        out["optimizer"] = recipe.optimizer
    if recipe.nesterov:
        out["nesterov"] = True
    schedule = effective_schedule(recipe)
    if schedule.kind == "step":
        kwargs.update(lr_schedule="step", lr_gamma=schedule.gamma,
                      lr_step_epochs=schedule.every_epochs)
    elif schedule.kind == "multistep" and schedule.milestones:
        kwargs.update(lr_schedule="multistep", lr_gamma=schedule.gamma,
                      lr_milestones=tuple(schedule.milestones))
    elif schedule.kind == "multistep":  # iteration milestones of an unknown training-set size
        out["schedule"] = schedule.official
    elif schedule.kind == "logspace":
        kwargs.update(lr_schedule="logspace", lr_end=schedule.end_lr)
    if recipe.classifier_lr_mult is not None and recipe.classifier_lr_mult != recipe.head_lr_mult:
        if "classifier_lr_mult" in params:
            kwargs["classifier_lr_mult"] = recipe.classifier_lr_mult
        else:
            out["classifier_lr_mult"] = recipe.classifier_lr_mult
    if recipe.bias_lr_mult != 1.0:
        kwargs["bias_lr_mult"] = recipe.bias_lr_mult
    if recipe.bias_decay_mult == 0.0:
        kwargs["bias_weight_decay"] = False
    elif recipe.bias_decay_mult != 1.0:
        out["bias_decay_mult"] = recipe.bias_decay_mult
    if recipe.epochs is None:
        out["epochs"] = f"{recipe.iterations} iterations, training-set size unknown"
    return kwargs, out


def _class_params(cls: type) -> list[str]:
    names = getattr(cls, "_param_names", None)
    if names is not None:
        return list(names())
    return [p for p in inspect.signature(cls).parameters if p != "self"]


def resolve_recipe(method: str, recipe: str = "published", dataset: str | None = None,
                   cls: type | None = None) -> ResolvedRecipe:
    """Turn (method, recipe, dataset) into constructor kwargs plus the fields left unsupported.

    ``cls`` (default: the registered class of ``method``) checks that every method option is a
    constructor parameter. Supported: ``lr``, ``momentum``, ``weight_decay``, ``batch_size``,
    ``epochs``, ``hash_lr_mult`` and the method options; the rest is in ``unsupported``.
    """
    if recipe == "tuned":
        raise ValueError("recipe 'tuned' is not data: it comes from the tuner (methods.search)")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES} (or 'tuned'), got {recipe!r}")
    if cls is None:
        from methods.base import get_method

        cls = get_method(method)
    if recipe == "shared":
        entry, r = "shared", SHARED
    else:
        entry, r = published_recipe(method, dataset)
    kwargs: dict[str, Any] = {
        "lr": r.lr, "momentum": r.momentum, "weight_decay": r.weight_decay,
        "batch_size": r.batch_size, "hash_lr_mult": r.head_lr_mult,
    }
    if r.epochs is not None:
        kwargs["epochs"] = r.epochs
    params = set(_class_params(cls))
    for key, value in r.method_options:
        if key not in params:
            raise ValueError(f"recipe {recipe!r} of {method!r} sets {key!r}, which "
                             f"{cls.__name__} lacks")
        kwargs[key] = value
    trainer_kwargs, unsupported = _trainer_fields(r, params)
    kwargs.update(trainer_kwargs)
    missing = [k for k in kwargs if k not in params]
    if missing:
        raise ValueError(f"{cls.__name__} ({method}) has no training option(s) {missing} for "
                         f"recipe {recipe!r}")
    return ResolvedRecipe(method, recipe, entry, kwargs, unsupported, r.source.citation())


def recipe_kwargs(method: str, recipe: str = "published", dataset: str | None = None,
                  cls: type | None = None) -> dict[str, Any]:
    """Constructor kwargs of ``method`` under ``recipe``; raises if a field cannot be expressed.

    :class:`UnsupportedRecipeError` names the method, the recipe, the dataset entry and every
    unsupported field with its value (use :func:`resolve_recipe` to get them separately).
    """
    resolved = resolve_recipe(method, recipe, dataset, cls)
    if resolved.unsupported:
        fields = "; ".join(f"{k}={v!r}" for k, v in resolved.unsupported.items())
        raise UnsupportedRecipeError(
            f"method {method!r}, recipe {recipe!r} (entry {resolved.dataset_entry!r}, "
            f"{resolved.citation}): the trainer cannot express {fields}"
        )
    return resolved.kwargs
