"""Published / shared training recipes (methods/deep/recipes.py) and search spaces (methods/search.py)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from methods import get_method, list_methods, registry
from methods.deep.dpah import DPAH
from methods.deep.recipes import (
    PUBLISHED,
    SHARED,
    TRAINER_UNSUPPORTED,
    UnsupportedRecipeError,
    dataset_kind,
    effective_schedule,
    iterations_to_epochs,
    published_recipe,
    recipe_kwargs,
    resolve_recipe,
)
from methods.search import (
    LR,
    Categorical,
    IntRange,
    LogUniform,
    Uniform,
    suggest_params,
    validate_search_space,
)

#: deep methods whose search space their own engineer declares (not yet: empty)
UNDECLARED: set[str] = set()
#: deep methods whose loss has no weight or margin of its own: lr only
NO_OWN_KNOB = {"hbmp"}
#: deep methods with fewer than two own knobs (documented next to each class)
ONE_OWN_KNOB = {"dhn", "greedyhash", "softmax_ce", "max_margin", "softmax_pa"}
#: registered deep methods (names starting with "_" are other tests' throw-away registrations)
DEEP = sorted({n for n in list_methods("deep")
               if not n.startswith("_") and not hasattr(get_method(n), "code_length")}
              | UNDECLARED)


# ---------------------------------------------------------------------- search spaces
@pytest.mark.parametrize("name", sorted(registry()))
def test_every_registered_search_space_validates(name):
    validate_search_space(get_method(name))


def test_deep_spaces_search_lr_plus_equal_numbers_of_own_knobs():
    for name in DEEP:
        space = get_method(name).search_space
        if name in UNDECLARED:
            continue
        assert space.get("lr") is LR, name  # one lr range for every method
        own = len(space) - 1
        expected = 0 if name in NO_OWN_KNOB else 1 if name in ONE_OWN_KNOB else 2
        assert own == expected, (name, list(space))
    assert get_method("dpah").search_space["center_lr_mult"] == LogUniform(1.0, 100.0)
    for name in list_methods("shallow"):
        assert "lr" not in get_method(name).search_space
        assert len(get_method(name).search_space) <= 3


def test_planted_bad_search_space_names_method_and_parameter():
    class Planted(DPAH):
        name = "planted_dpah"
        search_space: ClassVar[dict[str, Any]] = {"lr": LR, "margin_typo": Uniform(0.0, 1.0)}

    with pytest.raises(ValueError, match=r"Planted \(planted_dpah\).*'margin_typo'"):
        validate_search_space(Planted)

    class NoLr(DPAH):
        search_space: ClassVar[dict[str, Any]] = {"alpha": Uniform(0.0, 1.0)}

    with pytest.raises(ValueError, match="must search 'lr'"):
        validate_search_space(NoLr)

    class TooMany(DPAH):
        search_space: ClassVar[dict[str, Any]] = {
            "lr": LR, "alpha": Uniform(0.0, 1.0), "lam": LR, "beta": LR}

    with pytest.raises(ValueError, match="at most 2"):
        validate_search_space(TooMany)

    class BadRange(DPAH):
        search_space: ClassVar[dict[str, Any]] = {"lr": LogUniform(0.0, 1.0)}

    with pytest.raises(ValueError, match="'lr'.*0 < low < high"):
        validate_search_space(BadRange)


class FakeTrial:
    """Records the suggest_* calls a tuner would make; returns the range's upper end."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def suggest_float(self, name, low, high, log=False):
        self.calls.append(("float", name, (low, high, log)))
        return high

    def suggest_int(self, name, low, high, log=False):
        self.calls.append(("int", name, (low, high, log)))
        return high

    def suggest_categorical(self, name, choices):
        self.calls.append(("categorical", name, tuple(choices)))
        return choices[0]


def test_suggest_params_maps_to_suggest_calls_and_scales_per_bit_ranges():
    trial = FakeTrial()
    params = suggest_params(get_method("dsh"), trial, n_bits=12)
    assert params == {"lr": 0.1, "margin": 4.0 * 12, "alpha": 0.1}  # margin c K
    assert trial.calls[0] == ("float", "lr", (1e-5, 1e-1, True))
    hashnet = suggest_params(get_method("hashnet"), FakeTrial(), n_bits=48)
    assert hashnet["alpha_s"] == pytest.approx(100.0 / 48)  # alpha_s = c / K
    trial = FakeTrial()
    assert suggest_params(get_method("ksh"), trial, n_bits=16) == {"n_anchors": 500}
    assert trial.calls == [("int", "n_anchors", (100, 500, False))]
    assert Categorical(("a", "b")).suggest(FakeTrial(), "x") == "a"
    with pytest.raises(ValueError, match="low < high"):
        IntRange(5, 5).check()


def test_tuned_parameters_build_a_valid_method():
    for name in ("dpah", "hashnet", "contrastive", "sdh"):
        cls = get_method(name)
        params = suggest_params(cls, FakeTrial(), n_bits=16)
        method = cls(n_bits=16, **params)
        assert {k: method.get_params()[k] for k in params} == params


# ---------------------------------------------------------------------- recipes as data
def test_every_deep_method_has_a_cited_published_recipe():
    deep = set(DEEP)
    assert deep <= set(PUBLISHED), sorted(deep - set(PUBLISHED))
    assert set(PUBLISHED) <= deep  # no recipe for an unknown name
    for name, entries in PUBLISHED.items():
        for kind, recipe in entries.by_dataset.items():
            assert recipe.source.citation().strip(), (name, kind)
            assert recipe.source.paths and all(recipe.source.paths), (name, kind)
            assert recipe.lr > 0 and recipe.batch_size >= 2 and recipe.weight_decay >= 0
    assert SHARED.source.citation().strip()


@pytest.mark.parametrize("name", DEEP)
def test_shared_recipe_gives_constructor_kwargs_for_every_deep_method(name):
    kwargs = recipe_kwargs(name, "shared")
    assert kwargs == {"lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 256,
                      "hash_lr_mult": 1.0, "epochs": 200}
    method = get_method(name)(**kwargs)
    assert {k: method.get_params()[k] for k in kwargs} == kwargs


@pytest.mark.parametrize("name", DEEP)
def test_published_recipe_resolves_for_every_deep_method_and_dataset(name):
    for dataset in (None, "imagenet100", "coco", "nus_wide", "cifar10", "digits"):
        resolved = resolve_recipe(name, "published", dataset)
        assert set(resolved.unsupported) <= set(TRAINER_UNSUPPORTED)
        get_method(name)(**resolved.kwargs)  # every kwarg is a constructor parameter


def test_hashnet_published_recipe_per_dataset_from_the_released_prototxts():
    expected = {"imagenet": (2e-4, 100.0, 197, 39.4), "coco": (5e-5, 1.0, 256, 51.2),
                "nuswide": (5e-5, 5.0, 256, 51.2)}
    for kind, (lr, class_num, epochs, step) in expected.items():
        recipe = PUBLISHED["hashnet"].by_dataset[kind]
        options = dict(recipe.method_options)
        assert options == {"pair_weighting": "fixed", "class_num": class_num,
                           "continuous_similarity": True}
        assert (recipe.lr, recipe.epochs, recipe.schedule.every_epochs) == (lr, epochs, step)
        assert (recipe.head_lr_mult, recipe.iterations, recipe.batch_size) == (10.0, 10_000, 256)
    # 10,000 iterations x 256 / 13,000 ImageNet-100 training images = 196.9 epochs
    assert iterations_to_epochs(10_000, 256, 13_000) == pytest.approx(196.92, abs=0.01)


def test_schedules_and_bias_rules_become_trainer_options():
    resolved = resolve_recipe("hashnet", "published", "coco")
    assert resolved.dataset_entry == "coco" and resolved.unsupported == {}
    assert resolved.kwargs["lr"] == 5e-5 and resolved.kwargs["class_num"] == 1.0
    assert (resolved.kwargs["lr_schedule"], resolved.kwargs["lr_gamma"],
            resolved.kwargs["lr_step_epochs"]) == ("step", 0.5, 51.2)
    assert resolved.kwargs["bias_lr_mult"] == 2.0 and resolved.kwargs["bias_weight_decay"] is False
    ssdh = resolve_recipe("ssdh", "published", "cifar10")
    assert ssdh.kwargs["classifier_lr_mult"] == 10.0
    assert ssdh.kwargs["reg_normalisation"] == "caffe"  # HEAD of Caffe-DeepBinaryCode
    assert recipe_kwargs("talr", "published", "cifar10")["reduction"] == "mean"


def test_unsupported_fields_raise_naming_method_recipe_and_field():
    dnnh = resolve_recipe("dnnh", "published")
    assert set(dnnh.unsupported) == {"epochs", "schedule"}  # iterations of an unknown size
    assert "lr_schedule" not in dnnh.kwargs
    with pytest.raises(UnsupportedRecipeError, match=r"'dnnh'.*'published'.*epochs"):
        recipe_kwargs("dnnh", "published")


def test_dataset_kinds_and_fallback_to_the_default_entry():
    assert dataset_kind("imagenet100") == "imagenet" and dataset_kind("nus_wide") == "nuswide"
    assert dataset_kind("mirflickr25k") is None
    entry, recipe = published_recipe("greedyhash", "imagenet100")
    assert entry == "imagenet" and dict(recipe.method_options)["alpha"] == 1.0
    entry, _ = published_recipe("greedyhash", "digits")
    assert entry == "cifar10"  # the method's default entry
    assert resolve_recipe("greedyhash", "published", "digits").dataset_entry == "cifar10"
    with pytest.raises(KeyError, match="no published recipe"):
        published_recipe("lsh")
    with pytest.raises(ValueError, match="tuner"):
        resolve_recipe("dpah", "tuned")
    with pytest.raises(ValueError, match="recipe must be one of"):
        resolve_recipe("dpah", "best")


def test_step_beyond_the_run_is_effectively_fixed():
    dhn = PUBLISHED["dhn"].by_dataset["cifar10"]
    assert dhn.schedule.kind == "step" and dhn.schedule.every_epochs == 256.0
    assert dhn.epochs == 102 and effective_schedule(dhn).kind == "fixed"
    assert resolve_recipe("dhn", "published").unsupported == {}
    assert "lr_schedule" not in resolve_recipe("dhn", "published").kwargs


def test_method_option_the_class_lacks_is_an_error():
    class Bare(DPAH):
        pass

    with pytest.raises(ValueError, match="'pair_weighting', which Bare lacks"):
        resolve_recipe("hashnet", "published", "imagenet100", cls=Bare)
