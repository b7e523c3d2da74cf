"""A researcher's first hour with the command line: typos caught, own methods and settings run,
logs readable when redirected, and no result lost by ``--force``."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import run_all
from benchmarks.runner.results import ResultStore

REPO = Path(__file__).resolve().parent.parent


def _main(tmp_path: Path, *args: str) -> int:
    return run_all.main(["--preset", "test", "--results-dir", str(tmp_path), "--no-progress",
                         "-q", *args])


def _usage_error(capsys, tmp_path: Path, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        _main(tmp_path, *args)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--methods", "hashnett"], "unknown method 'hashnett' (did you mean 'hashnet'?); valid: "),
    (["--methods", "lsh,dpha"], "unknown method 'dpha' (did you mean 'dpah'?)"),
    (["--datasets", "cifar"], "unknown dataset 'cifar' (did you mean 'cifar10'?)"),
    (["--bits", "7"], "no selected cell has 7 bits; the selected tables and figures use 16, 32"),
    (["--bits", "0"], "code lengths must be positive integers, got 0"),
    (["--set", "epoch=3"], "--set epoch: no selected method has a parameter 'epoch'"),
    (["--set", "lsh.n_iterr=3"], "lsh has no parameter 'n_iterr'"),
    (["--set", "nokey"], "expected KEY=VALUE"),
])
def test_a_typo_is_an_error_that_lists_the_valid_names(tmp_path, capsys, args, message):
    err = _usage_error(capsys, tmp_path, "--table", "3", *args)
    assert message in err
    assert not (tmp_path / "test").exists()  # nothing run, no table rewritten


def test_a_filter_that_leaves_no_cell_is_an_error(tmp_path, capsys):
    # dpah is registered but the figure of u distributions has no 16-bit ... cell of ITQ
    err = _usage_error(capsys, tmp_path, "--figure", "distribution", "--methods", "itq")
    assert "--methods itq leave no cell of distribution" in err


def test_datasets_takes_the_names_list_datasets_prints(tmp_path):
    assert _main(tmp_path, "--table", "3", "--datasets", "digits", "--dry-run") == 0
    listing = run_all.list_datasets(None)
    assert listing.splitlines()[0].split()[0] == "cifar10"
    assert "dataset keys in the presets: cifar10, cifar10_mobilenet" in listing


def test_readme_example_runs_as_a_plugin(tmp_path):
    text = (REPO / "README.md").read_text()
    block = text.split("## Adding a method", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    plugin = tmp_path / "median_threshold.py"
    plugin.write_text(block)  # the README's example, verbatim
    results = tmp_path / "res"
    assert _main(results, "--table", "3", "--plugin", str(plugin), "--methods",
                 "median_threshold") == 0
    table = (results / "test" / "tables" / "table3.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| median_threshold |"))
    assert "missing" not in row
    records = list(ResultStore(results, "test").iter_records())
    assert {r["cell"]["method"] for r in records} == {"median_threshold"}


def test_a_missing_plugin_names_the_file(tmp_path, capsys):
    err = _usage_error(capsys, tmp_path, "--table", "3", "--plugin", str(tmp_path / "nope.py"))
    assert f"--plugin {tmp_path / 'nope.py'}: no such file" in err


def test_set_overrides_are_part_of_the_key_and_printed_under_the_table(tmp_path):
    assert _main(tmp_path, "--table", "3", "--methods", "itq", "--bits", "16") == 0
    assert _main(tmp_path, "--table", "3", "--methods", "itq", "--bits", "16",
                 "--set", "n_iter=3", "--set", "itq.n_iter=4") == 0
    store = ResultStore(tmp_path, "test")
    hypers = sorted(json.dumps(r["cell"]["hyper"]) for r in store.iter_records())
    assert hypers == ['{"n_iter": 4}', "{}"]  # a new cell: never the result without the override
    table = (tmp_path / "test" / "set-n_iter=3,itq.n_iter=4" / "tables" / "table3.md").read_text()
    assert "Overrides (--set): n_iter=3, itq.n_iter=4." in table
    # the preset's own table is not overwritten by the run with overrides
    assert "Overrides" not in (tmp_path / "test" / "tables" / "table3.md").read_text()


def test_overrides_folder_names_are_safe_and_short():
    from run_all import overrides_folder

    assert overrides_folder([("epochs", 400)]) == "set-epochs=400"
    assert overrides_folder([("backbone", "linear"), ("lr", 0.005)]) == \
        "set-backbone=_linear_,lr=0.005"
    long = overrides_folder([("weights_path", "/data/" + "w" * 100 + ".pth")])
    assert long.startswith("set-") and len(long) == 16 and "/" not in long


def test_set_reaches_deep_training_options(tmp_path):
    from dataclasses import replace

    from benchmarks.runner.experiments import TABLE3, cells_for, get_preset

    preset = replace(get_preset("smoke"), overrides=(("epochs", 3), ("dpah.alpha", 0.4),
                                                     ("lr", 0.005)))
    cells = {c.method: c for c in cells_for(TABLE3, preset) if c.bits == 16}
    assert dict(cells["dpah"].train)["epochs"] == 3 and dict(cells["dpah"].train)["lr"] == 0.005
    assert dict(cells["dpah"].hyper)["alpha"] == 0.4
    assert "alpha" not in dict(cells["ssdh"].hyper) and dict(cells["ssdh"].train)["epochs"] == 3
    assert cells["lsh"].train == () and cells["lsh"].hyper == ()


def test_hashbench_console_command_is_the_same_cli():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("hashbench") == "run_all:main"


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run_all.py"), *args], cwd=REPO, check=False,
                          capture_output=True, text=True, **kwargs)


def test_redirected_output_is_one_line_per_cell_without_bar_escapes(tmp_path):
    out = _cli("--table", "3", "--preset", "test", "--results-dir", str(tmp_path))
    assert out.returncode == 0
    assert "\x1b[" not in out.stderr and "\r" not in out.stderr  # no tqdm redraws
    assert sum(" INFO done " in line for line in out.stderr.splitlines()) == 4


def test_dry_run_into_a_closed_pipe_is_not_a_traceback(tmp_path):
    cmd = (f"{sys.executable} {REPO / 'run_all.py'} --all --preset smoke --dry-run "
           f"--results-dir {tmp_path} | head -1")
    out = subprocess.run(cmd, shell=True, cwd=REPO, capture_output=True, text=True, check=False)
    assert out.stdout.startswith("dry run, preset smoke")
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr


def test_force_on_one_experiment_keeps_the_embeddings_another_figure_needs(tmp_path):
    def run(*args: str) -> int:
        return run_all.main(["--preset", "smoke", "--results-dir", str(tmp_path), "--no-progress",
                             "-q", "--methods", "dpah", *args])

    assert run("--figure", "tsne") == 0
    store = ResultStore(tmp_path, "smoke")
    (tsne,) = list(store.cells_dir.glob("*.tsne.csv"))
    # the same cell, recomputed for another figure that does not need an embedding
    assert run("--figure", "pr", "--force") == 0
    assert tsne.is_file()  # recomputed from the new codes, not dropped
    assert run("--figure", "tsne", "--render-only") == 0
