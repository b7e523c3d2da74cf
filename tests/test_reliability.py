"""Nothing lost, nothing silent: damaged files, concurrent runs, degenerate or changed user data.

Each class of bad input gets a test: a damaged cell record is moved aside and recomputed, a
damaged checkpoint is discarded, an unwritable results folder is refused before any work, two
processes on one results folder compute every cell once, and data on which no ranking means
anything is refused.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import run_all
from benchmarks.runner import cell as cell_job
from benchmarks.runner.experiments import DIGITS, TABLE3, cells_for, get_preset
from benchmarks.runner.results import (
    CellLock,
    DamagedRecordError,
    ResultStore,
    atomic_write_json,
    load_results,
    read_record,
)
from benchmarks.runner.user_data import UserDataError, resolve_user_data

REPO = Path(__file__).resolve().parent.parent
PRESET = get_preset("test")


def _run(results: Path, *extra: str) -> int:
    return run_all.main(["--table", "3", "--preset", "test", "--results-dir", str(results),
                         "--no-progress", "-q", *extra])


def _first_cell_id() -> str:
    return cells_for(TABLE3, PRESET)[0].cell_id


# ------------------------------------------------------------------------------ damaged records
@pytest.mark.parametrize("content", [b'{"cell_id": "x", "cell": {', b"\x00\xff\xfe garbage \x9c",
                                     b"{}", b"[1, 2]"],
                         ids=["truncated", "binary", "empty-object", "not-an-object"])
def test_damaged_record_is_moved_aside_reported_and_recomputed(tmp_path, content, capsys):
    assert _run(tmp_path) == 0
    store = ResultStore(tmp_path, "test")
    cid = _first_cell_id()
    good = json.loads(store.record_path(cid).read_text())
    store.record_path(cid).write_bytes(content)
    assert _run(tmp_path) == 0
    assert f"damaged cell record {store.record_path(cid)}" in capsys.readouterr().err
    aside = list(store.damaged_dir.glob(f"{cid}.*.json"))
    assert len(aside) == 1 and aside[0].read_bytes() == content  # moved, not deleted
    again = json.loads(store.record_path(cid).read_text())  # recomputed, same result
    assert again["metrics"]["map_at"] == good["metrics"]["map_at"]


def test_render_only_with_a_damaged_record_names_it_and_exits_nonzero(tmp_path, capsys):
    assert _run(tmp_path) == 0
    store = ResultStore(tmp_path, "test")
    cid = _first_cell_id()
    store.record_path(cid).write_text("{}")
    capsys.readouterr()
    assert _run(tmp_path, "--render-only") == 1
    out = capsys.readouterr().out
    assert f"DAMAGED record {store.record_path(cid)}" in out and "no 'cell_id' field" in out
    assert store.record_path(cid).exists()  # rendering never moves or loses a file


def test_read_record_names_the_file_and_the_missing_field(tmp_path):
    path = tmp_path / "lsh-x.json"
    path.write_text(json.dumps({"cell_id": "lsh-x", "cell": {}, "metrics": None}))
    with pytest.raises(DamagedRecordError, match=r"lsh-x\.json: no 'converged' field"):
        read_record(path)


def test_a_rendering_failure_exits_nonzero(tmp_path, monkeypatch, capsys):
    assert _run(tmp_path) == 0
    from benchmarks import render

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(render, "render_table", broken)
    assert _run(tmp_path, "--render-only") == 1
    assert "RENDERING FAILED table3: RuntimeError: disk full" in capsys.readouterr().out


# ------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a checkpoint"])
def test_damaged_checkpoint_is_discarded_with_a_warning_and_training_restarts(tmp_path, content):
    from methods import get_method

    rng = np.random.default_rng(0)
    Y = np.eye(3, dtype=np.uint8)[rng.integers(0, 3, 60)]
    X = (Y @ rng.normal(size=(3, 8)) * 2 + rng.normal(size=(60, 8))).astype(np.float32)
    kwargs = {"n_bits": 8, "backbone": "mlp", "mlp_hidden": 16, "epochs": 2, "batch_size": 16, "lr": 0.05,
                  "device": "cpu", "progress": False, "resume": True}
    clean = get_method("dpah")(**kwargs, checkpoint_dir=str(tmp_path / "a")).fit(X, Y)
    ckpt = tmp_path / "b" / "checkpoint.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(content)
    with pytest.warns(UserWarning, match=rf"damaged checkpoint {ckpt}"):
        again = get_method("dpah")(**kwargs, checkpoint_dir=str(ckpt.parent)).fit(X, Y)
    np.testing.assert_array_equal(again.encode(X), clean.encode(X))  # trained from epoch 0
    assert ckpt.is_file()  # and a fresh checkpoint written


# ------------------------------------------------------------------------------ results folder
def test_results_dir_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        _run(target)
    assert exc.value.code == 2
    assert f"--results-dir {target} is a file, not a folder" in capsys.readouterr().err


def test_unwritable_results_dir_is_refused_before_any_work(tmp_path, capsys):
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing: use a kernel folder
        target = Path("/proc/hashbench-results")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / "results"
    with pytest.raises(SystemExit) as exc:
        _run(target)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--results-dir {target}: cannot write in" in err and "choose a writable folder" in err
    assert not target.exists()


def test_outputs_are_written_with_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
        assert _run(tmp_path / "res") == 0
    finally:
        os.umask(old)
    written = [p for p in (tmp_path / "res").rglob("*") if p.is_file()]
    assert written and {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o644}


# ------------------------------------------------------------------------------ locks, splits
def test_a_lock_of_a_live_process_is_respected_and_a_dead_ones_taken_over(tmp_path):
    path = tmp_path / "c.lock"
    host = socket.gethostname()
    path.write_text(json.dumps({"pid": os.getppid(), "host": host, "utc_time": "t"}))
    lock = CellLock(path)
    assert not lock.acquire() and f"held by pid {os.getppid()} on {host}" in lock.describe()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"pid": dead.pid, "host": host, "utc_time": "t"}))
    assert lock.acquire() and json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not path.exists()
    path.write_text(json.dumps({"pid": 1, "host": "another-node", "utc_time": "t"}))
    assert not CellLock(path).acquire()  # another host's pid cannot be checked: respected


def test_a_cell_held_by_another_process_is_not_computed_twice(tmp_path, monkeypatch):
    cell = cells_for(TABLE3, PRESET)[0]
    store = ResultStore(tmp_path, "test")
    store.claim(cell.cell_id).path.parent.mkdir(parents=True)
    store.claim(cell.cell_id).path.write_text(
        json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "utc_time": "t"}))
    opts = cell_job.RunOptions(results_dir=str(tmp_path), preset="test")
    assert cell_job.run_cell(cell, opts).status == "busy"
    assert not store.record_path(cell.cell_id).exists()


def test_an_incomplete_split_folder_is_repaired(tmp_path):
    from data_protocols import get_protocol
    from data_protocols.core import Split

    bench = get_protocol("digits").load(None, 0, input_kind="features", progress=False)
    cell = cells_for(TABLE3, PRESET)[0]
    store = ResultStore(tmp_path, "test")
    split_hash = bench.split.hash()
    target = store.splits_dir / f"{cell.dataset.key}-{split_hash}"
    target.mkdir(parents=True)
    (target / "split.json").write_text(json.dumps({"hash": split_hash}))
    (target / "val.txt").write_text("")
    cell_job._save_split(bench, cell, store)
    assert Split.load(target).hash() == split_hash
    assert [p.name for p in store.splits_dir.iterdir()] == [target.name]  # no temp folders


SLOW_PLUGIN = textwrap.dedent('''
    import time

    from methods import register
    from methods.shallow.lsh import LSH


    @register("slow_lsh")
    class SlowLSH(LSH):
        """LSH that takes a while to fit, so that two runs overlap."""

        def _fit(self, X, Y):
            time.sleep(0.4)
            return super()._fit(X, Y)
''')


def test_two_processes_on_one_results_dir_compute_every_cell_once(tmp_path):
    plugin = tmp_path / "slow_plugin.py"
    plugin.write_text(SLOW_PLUGIN)
    results = tmp_path / "res"
    cmd = [sys.executable, str(REPO / "run_all.py"), "--table", "3", "--preset", "test",
           "--results-dir", str(results), "--plugin", str(plugin), "--methods", "slow_lsh,lsh",
           "--no-progress"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    run = [int(o.split("cells run: ")[1].split()[0]) for o in outs]
    store = ResultStore(results, "test")
    records = list(store.iter_records())
    assert sum(run) == len(records) == 4, outs  # 2 methods x 2 code lengths, each once
    pids = {r["environment"]["pid"] for r in records}
    assert pids <= {p.pid for p in procs}
    assert not list(store.locks_dir.glob("*.lock"))
    from data_protocols.core import Split

    splits = list(store.splits_dir.iterdir())
    assert len(splits) == 1 and Split.load(splits[0]).hash() in splits[0].name
    for out in outs:  # both end with the complete table
        assert "missing" not in out.split("| slow_lsh |")[1].split("\n")[0]


# ------------------------------------------------------------------------------ your own data
@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    """Feature caches and the dataset memo of these runs stay in the test's folder."""
    from data_protocols import core

    monkeypatch.setattr(core, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(cell_job, "_BENCH_CACHE", {})


def _npz(path: Path, features: np.ndarray, labels: np.ndarray) -> Path:
    np.savez(path, features=features, labels=labels)
    return path


def _user_run(path: Path, results: Path, *extra: str) -> int:
    return run_all.main(["--table", "3", "--preset", "smoke", "--user-data", str(path),
                         "--methods", "lsh", "--bits", "16", "--results-dir", str(results),
                         "--no-progress", "-q", *extra])


def test_single_class_data_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = _npz(tmp_path / "one.npz", rng.normal(size=(50, 8)), np.zeros(50, int))
    with pytest.raises(UserDataError, match="same label .* mAP 1.0"):
        resolve_user_data(path)


def test_data_where_no_query_has_a_relevant_item_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = _npz(tmp_path / "three.npz", rng.normal(size=(3, 8)), np.array([0, 1, 2]))
    assert _user_run(path, tmp_path / "res") == 1
    out = capsys.readouterr().out
    assert "DegenerateDataError" in out and "none of its 1 queries shares a label" in out
    assert not list((tmp_path / "res").rglob("cells/*.json"))  # nothing scored


def test_identical_codes_are_warned_about_with_the_count(tmp_path, capsys):
    labels = np.arange(60) % 3
    path = _npz(tmp_path / "const.npz", np.ones((60, 8), np.float32), labels)
    assert _user_run(path, tmp_path / "res") == 0
    assert "54 of 54 database items share one code (1 distinct codes)" in capsys.readouterr().err


def test_nan_features_are_reported_at_the_files_row(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 8)).astype(np.float32)
    X[5, 2] = np.nan
    labels = np.eye(3, dtype=np.uint8)[np.arange(40) % 3]
    labels[1] = 0  # an unlabelled row before it: dropped items must not shift the row number
    path = _npz(tmp_path / "nan.npz", X, labels)
    with pytest.raises(UserDataError, match=r"nan\.npz: 'features' row 5, column 2 \(0-based"):
        resolve_user_data(path)


def test_a_changed_file_gets_new_cells(tmp_path):
    rng = np.random.default_rng(0)
    path = _npz(tmp_path / "mine.npz", rng.normal(size=(50, 8)), np.arange(50) % 3)
    first = resolve_user_data(path).key
    _npz(path, rng.normal(size=(50, 8)), np.arange(50) % 3)  # fixed data, same path
    assert resolve_user_data(path).key != first


@pytest.mark.parametrize("case, match", [
    ("strings", r"strings\.npz: array 'features' has dtype <U1, not numbers"),
    ("objects", r"objects\.npz: array 'features' holds Python objects"),
    ("garbage", r"garbage\.npz is not an \.npz file"),
])
def test_unreadable_npz_names_the_file_and_array(tmp_path, case, match):
    path = tmp_path / f"{case}.npz"
    labels = np.arange(20) % 2
    if case == "strings":
        np.savez(path, features=np.array([["a"] * 4] * 20), labels=labels)
    elif case == "objects":
        np.savez(path, features=np.array([None] * 20, dtype=object), labels=labels)
    else:
        path.write_bytes(bytes(range(256)) * 3)
    with pytest.raises(UserDataError, match=match):
        resolve_user_data(path)


def _images(folder: Path, n: int) -> list[str]:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        names.append(f"{folder.name}/{i}.png")
    return names


def test_csv_with_a_byte_order_mark_is_read(tmp_path):
    names = _images(tmp_path / "img", 30)
    path = tmp_path / "excel.csv"
    path.write_text("".join(f"{n},{i % 3}\n" for i, n in enumerate(names)), encoding="utf-8-sig")
    assert resolve_user_data(path).n_items == 30


def test_csv_with_an_empty_path_names_the_line(tmp_path):
    names = _images(tmp_path / "img", 5)
    path = tmp_path / "gap.csv"
    path.write_text("".join(f"{n},1\n" for n in names[:2]) + ",1\n" + f"{names[2]},0\n")
    with pytest.raises(UserDataError, match=r"gap\.csv, line 3: the path cell is empty"):
        resolve_user_data(path)


def test_csv_protocol_on_an_npz_says_so(tmp_path):
    path = _npz(tmp_path / "mine.npz", np.zeros((10, 2)), np.arange(10) % 2)
    with pytest.raises(UserDataError, match=r"mine\.npz is a zip archive \(an \.npz\?\), not a CSV"):
        resolve_user_data(path, protocol="csv")


def test_truncated_image_names_the_file(tmp_path, capsys):
    names = _images(tmp_path / "img", 30)
    broken = tmp_path / "img" / "5.png"
    broken.write_bytes(broken.read_bytes()[:40])
    path = tmp_path / "list.csv"
    path.write_text("".join(f"{n},{i % 3}\n" for i, n in enumerate(names)))
    assert _user_run(path, tmp_path / "res") == 1
    assert f"ImageReadError: image {broken} cannot be decoded" in capsys.readouterr().out


def test_negative_seed_is_refused_at_the_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _run(tmp_path, "--seeds", "0,-1")
    assert exc.value.code == 2
    assert "seeds must be integers >= 0, got -1" in capsys.readouterr().err


# ------------------------------------------------------------------------------ paths
def test_weights_are_looked_for_under_the_given_data_root(tmp_path):
    from data_protocols import features as F
    from data_protocols.core import ImageSet
    from methods.deep.backbones import TORCHVISION_WEIGHT_FILES

    (tmp_path / "weights").mkdir()
    wfile = tmp_path / "weights" / TORCHVISION_WEIGHT_FILES["alexnet"][0]
    wfile.write_bytes(b"weights")
    assert cell_job._weights_in_data_root("alexnet", str(tmp_path)) == wfile
    seen = []

    def find(w):
        seen.append(w)
        return None if w is None else Path(w)

    F.register_backbone(F.Backbone(
        name="fake_weighted", description="test", transform="t", batch_size=4,
        make=lambda w: (lambda ims: np.zeros((len(ims), 2), np.float32)), find_weights=find,
        weight_files=lambda: [wfile.name]))
    try:
        images = ImageSet(array=np.zeros((3, 4, 4, 3), np.uint8))
        F.extract_features(images, "fake_weighted", tmp_path / "cache", "d", progress=False,
                           data_root=tmp_path)
    finally:
        F.BACKBONES.pop("fake_weighted")
    assert seen == [wfile]


# ------------------------------------------------------------------------------ results as data
def test_load_results_is_a_tidy_frame_of_every_cell_and_metric(tmp_path):
    assert _run(tmp_path) == 0
    df = load_results(tmp_path, "test")
    for column in ("method", "dataset", "bits", "seed", "recipe", "tune", "results_version",
                   "current", "status", "commit", "metric", "value"):
        assert column in df.columns
    assert df.current.all() and set(df.results_version) == {1}
    maps = df[df.metric == "mAP@all"]
    assert len(maps) == len(cells_for(TABLE3, PRESET)) == df.cell_id.nunique()
    store = ResultStore(tmp_path, "test")
    for row in maps.itertuples():
        assert row.value == store.load(row.cell_id)["metrics"]["map_at"]["all"]
    assert set(df.dataset) == {DIGITS.key}
