"""Training to convergence and the published recipes' schedules, in the one training loop."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from methods import get_method
from methods.deep import trainer
from methods.deep.recipes import PUBLISHED, resolve_recipe

BASE = {"n_bits": 8, "backbone": "mlp", "mlp_hidden": 16, "batch_size": 16, "lr": 0.05,
        "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    Y = np.eye(3, dtype=np.uint8)[rng.integers(0, 3, 90)]
    X = (Y @ rng.normal(size=(3, 8)) * 2 + rng.normal(size=(90, 8))).astype(np.float32)
    return X, Y


def _schedule(**kw):
    defaults = {"lr_schedule": "fixed", "lr_gamma": 0.1, "lr_step_epochs": None,
                "lr_milestones": (), "lr_end": None, "lr": 0.01, "epochs": 5}
    return SimpleNamespace(**{**defaults, **kw})


def test_lr_factor_follows_caffe_and_matlab_rules():
    step = _schedule(lr_schedule="step", lr_gamma=0.5, lr_step_epochs=39.4)
    assert trainer.lr_factor(step, 39.3) == 1.0 and trainer.lr_factor(step, 39.4) == 0.5
    assert trainer.lr_factor(step, 80.0) == 0.25
    multi = _schedule(lr_schedule="multistep", lr_milestones=(240.0, 260.0))
    assert [trainer.lr_factor(multi, e) for e in (0, 239.9, 240, 265)] == \
        pytest.approx([1, 1, 0.1, 0.01])
    log = _schedule(lr_schedule="logspace", lr_end=1e-6, lr=1e-2, epochs=5)  # logspace(-2,-6,5)
    lrs = [1e-2 * trainer.lr_factor(log, e + 0.5) for e in range(5)]
    assert lrs == pytest.approx(np.logspace(-2, -6, 5).tolist())
    assert trainer.lr_factor(_schedule(), 123.0) == 1.0


def test_bias_rule_puts_biases_in_their_own_groups():
    method = get_method("dsh")(**BASE, bias_lr_mult=2.0, bias_weight_decay=False)
    backbone, head = torch.nn.Linear(4, 5), torch.nn.Linear(5, 8)
    groups = trainer._with_bias_rule(method, method.param_groups(backbone, head), backbone, head)
    bias = [g for g in groups if any(p is head.bias or p is backbone.bias for p in g["params"])]
    assert len(bias) == 2 and all(g["lr"] == 2 * method.lr * (1 if g["params"][0] is
                                                                backbone.bias else
                                                                method.hash_lr_mult)
                                  for g in bias)
    assert all(g["weight_decay"] == 0.0 for g in bias)
    assert all(len(g["params"]) == 1 for g in bias)


def test_a_step_that_stops_learning_freezes_the_model(data):
    X, Y = data
    # lr x1e-9 after the first epoch: a 4-epoch run ends where the 1-epoch run ended
    one = get_method("dpah")(**BASE, epochs=1, momentum=0.0).fit(X, Y)
    frozen = get_method("dpah")(**BASE, epochs=4, lr_schedule="step", lr_step_epochs=1.0,
                                lr_gamma=1e-9, momentum=0.0).fit(X, Y)
    np.testing.assert_allclose(frozen.raw_outputs(X), one.raw_outputs(X), atol=1e-5)
    never = get_method("dpah")(**BASE, epochs=3, lr_schedule="step", lr_step_epochs=100.0).fit(X, Y)
    fixed = get_method("dpah")(**BASE, epochs=3).fit(X, Y)
    np.testing.assert_array_equal(never.raw_outputs(X), fixed.raw_outputs(X))


def test_early_stopping_stops_on_a_plateau_and_keeps_the_best_epoch(data):
    X, Y = data
    m = get_method("dpah")(**{**BASE, "lr": 1e-12}, epochs=50, early_stopping=3, eval_every=1,
                           val_fraction=0.2).fit(X, Y)
    assert m.stopping_["reason"].startswith("validation mAP did not improve for 3 epochs")
    assert m.stopping_["best_epoch"] == 1 and len(m.history_) == 4
    assert all("val_map" in h for h in m.history_)
    report = m.training_report()
    assert report["epochs_run"] == 4 and report["still_improving"] is False


def test_early_stopping_resumes_to_the_uninterrupted_result(data, tmp_path):
    X, Y = data
    kw = {**BASE, "early_stopping": 4, "eval_every": 2, "val_fraction": 0.2}
    full = get_method("dpah")(**kw, epochs=30).fit(X, Y)
    get_method("dpah")(**kw, epochs=6, checkpoint_dir=str(tmp_path), resume=True).fit(X, Y)
    resumed = get_method("dpah")(**kw, epochs=30, checkpoint_dir=str(tmp_path),
                                 resume=True).fit(X, Y)
    assert resumed.stopping_ == full.stopping_
    np.testing.assert_array_equal(resumed.raw_outputs(X), full.raw_outputs(X))


def test_early_stopping_needs_a_validation_part(data):
    X, Y = data
    with pytest.raises(ValueError, match="early_stopping needs val_fraction > 0"):
        get_method("dpah")(**BASE, epochs=2, early_stopping=3).fit(X, Y)
    with pytest.raises(ValueError, match="lr_schedule='step' needs lr_step_epochs"):
        get_method("dpah")(**BASE, epochs=2, lr_schedule="step").fit(X, Y)


def test_final_relative_change_over_the_last_tenth():
    hist = [{"loss": v} for v in [10.0] * 18 + [4.0, 2.0]]  # 20 epochs: epoch 18 against 20
    assert trainer.final_relative_change(hist) == pytest.approx(0.8)
    assert trainer.final_relative_change([{"loss": 1.0}]) is None
    flat = [{"loss": 1.0 + 1e-4 * math.sin(i)} for i in range(30)]
    assert trainer.final_relative_change(flat) < trainer.MAX_FINAL_RELATIVE_CHANGE


@pytest.mark.parametrize("method", sorted(PUBLISHED))
def test_every_published_recipe_builds_its_method(method):
    resolved = resolve_recipe(method, "published", "cifar10")
    assert set(resolved.unsupported) <= {"epochs", "schedule"}, resolved.unsupported
    kwargs = {k: v for k, v in resolved.kwargs.items() if k != "epochs"}
    obj = get_method(method)(n_bits=16, **kwargs)
    obj.check_train_options()
    for key, value in kwargs.items():
        assert getattr(obj, key) == value


def test_ssdh_classifier_gets_its_own_rate():
    m = get_method("ssdh")(**BASE, classifier_lr_mult=10.0)
    head = m.build_head(6, 3)
    backbone = torch.nn.Linear(4, 6)
    groups = m.param_groups(backbone, head)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert rate[id(head.classifier.weight)] == pytest.approx(10 * m.lr)
    assert rate[id(head.latent.weight)] == pytest.approx(m.lr * m.hash_lr_mult)


def test_tables_mark_a_run_whose_loss_was_still_moving(tmp_path):
    import run_all
    from benchmarks.runner.results import ResultStore

    args = ["--table", "3", "--preset", "smoke", "--methods", "dpah", "--bits", "16",
            "--results-dir", str(tmp_path), "--no-progress", "-q"]
    assert run_all.main(args) == 0
    (record,) = ResultStore(tmp_path, "smoke").iter_records()
    convergence = record["convergence"]
    assert convergence["epochs_run"] == 10 and convergence["early_stopping"] is None
    still = convergence["loss_rel_change_last_10pct"] > trainer.MAX_FINAL_RELATIVE_CHANGE
    assert convergence["still_improving"] is still
    table = (tmp_path / "smoke" / "tables" / "table3.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| DPAH |"))
    assert (row.split("|")[2].strip().endswith("*")) is still
    assert ("* not converged" in table) is still


def test_tables_mark_a_cell_whose_codes_collapsed(tmp_path):
    """A run whose database codes are mostly one code is marked, counted in the footnote and
    in the CSV, instead of standing in the table as an ordinary (near-chance) value."""
    import csv
    import json

    import run_all
    from benchmarks.render.tables import COLLAPSED_MARK
    from benchmarks.runner.results import ResultStore

    args = ["--table", "3", "--preset", "smoke", "--methods", "dpah", "--bits", "16",
            "--results-dir", str(tmp_path), "--no-progress", "-q"]
    assert run_all.main(args) == 0
    store = ResultStore(tmp_path, "smoke")
    (record,) = store.iter_records()
    tables = tmp_path / "smoke" / "tables"

    def dpah_row() -> tuple[str, dict[str, str]]:
        md = (tables / "table3.md").read_text()
        row = next(line for line in md.splitlines() if line.startswith("| DPAH |"))
        csv_row = next(r for r in csv.DictReader((tables / "table3.csv").open())
                       if r["row"] == "DPAH")
        return row.split("|")[2], csv_row

    share = record["code_stats"]["largest_code_share"]
    cell, csv_row = dpah_row()
    assert (COLLAPSED_MARK in cell) is (share > 0.5)
    assert csv_row["n_collapsed"] == str(int(share > 0.5))

    record["code_stats"] = {"distinct_db_codes": 2, "largest_code_share": 0.97}
    path = store.record_path(record["cell_id"])
    path.write_text(json.dumps(record))
    assert run_all.main([*args, "--render-only"]) == 0
    cell, csv_row = dpah_row()
    assert COLLAPSED_MARK in cell and csv_row["n_collapsed"] == "1"
    md = (tables / "table3.md").read_text()
    assert f"{COLLAPSED_MARK} collapsed codes: more than 50% of the database items" in md
    assert "(1 cell(s))" in md.split(f"{COLLAPSED_MARK} collapsed codes")[1].splitlines()[0]
    assert r"$^\ddagger$" in (tables / "table3.tex").read_text()


def test_a_cell_under_several_columns_is_counted_once_in_the_footnote(tmp_path):
    """Table 1 shows each cell under two value columns; the footnote counts cells, not values."""
    import json

    import run_all
    from benchmarks.render.tables import COLLAPSED_MARK
    from benchmarks.runner.results import ResultStore

    args = ["--table", "1", "--preset", "smoke", "--methods", "dpah_no_kt",
            "--results-dir", str(tmp_path), "--no-progress", "-q"]
    assert run_all.main(args) == 0
    store = ResultStore(tmp_path, "smoke")
    (record,) = store.iter_records()
    record["code_stats"] = {"distinct_db_codes": 2, "largest_code_share": 0.97}
    store.record_path(record["cell_id"]).write_text(json.dumps(record))
    assert run_all.main([*args, "--render-only"]) == 0
    md = (tmp_path / "smoke" / "tables" / "table1.md").read_text()
    marked = [line for line in md.splitlines()
              if line.startswith("| HPA(lambda=0.01) |") and COLLAPSED_MARK in line]
    assert marked and sum(line.count(COLLAPSED_MARK) for line in marked) >= 2
    assert f"{COLLAPSED_MARK} collapsed codes" in md and "(1 cell(s))" in md
