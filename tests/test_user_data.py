"""``run_all.py --user-data``: a user's own .npz / CSV of images through the real runner.

Tiny data written in ``tmp_path`` (300 x 32-d features, 4 classes, some items multi-label; a CSV
of 60 8x8 PNGs), the ``test`` preset, LSH/ITQ and DPAH: the tables have one column, the user's
dataset, with the numbers of the stored records, the split sizes and hash are recorded, and bad
input stops the command with a message naming the problem.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

import run_all
from benchmarks.runner import cell as cell_job
from benchmarks.runner.experiments import get_preset, image_feature_backbone
from benchmarks.runner.results import ResultStore
from benchmarks.runner.user_data import UserDataError, resolve_user_data

dp = pytest.importorskip("data_protocols")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Feature caches under tmp_path (not results/cache/), and no dataset memo between tests."""
    from data_protocols import core

    monkeypatch.setattr(core, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(cell_job, "_BENCH_CACHE", {})


def write_npz(path: Path, n: int = 300, d: int = 32, c: int = 4) -> Path:
    rng = np.random.default_rng(0)
    y = rng.integers(0, c, size=n)
    labels = np.eye(c, dtype=np.uint8)[y]
    multi = rng.random(n) < 0.2  # about a fifth of the items carry a second label
    labels[multi, (y[multi] + 1) % c] = 1
    features = (rng.normal(size=(c, d))[y] * 2 + rng.normal(size=(n, d))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, features=features, labels=labels)
    return path


def write_csv_images(root: Path, n: int = 60) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    (root / "im").mkdir(parents=True, exist_ok=True)
    with open(root / "data.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "labels"])
        for i in range(n):
            c = i % 3
            pixels = np.full((8, 8, 3), 30 + 90 * c, np.uint8)
            pixels += rng.integers(0, 40, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "im" / f"{i}.png")
            w.writerow([f"im/{i}.png", ["red", "green", "blue"][c] + ("|bright" if i % 4 == 0
                                                                       else "")])
    return root / "data.csv"


def _main(tmp_path: Path, *extra: str) -> int:
    return run_all.main(["--preset", "test", "--results-dir", str(tmp_path / "res"),
                         "--no-progress", "-q", *extra])


def _table(tmp_path: Path, key: str, name: str) -> list[dict]:
    path = tmp_path / "res" / "test" / "user" / key / "tables" / f"{name}.csv"
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _check_against_records(rows: list[dict], store: ResultStore, key: str) -> None:
    """Every ok entry is its record's stored mAP; no paper number anywhere."""
    for r in rows:
        assert r["our_dataset"] == key and r["paper"] == "" and r["diff"] == ""
        (cell_id,) = r["cell_ids"].split(";")
        assert key in cell_id
        record = store.load(cell_id)
        assert r["status"] == "ok", (cell_id, store.load_failure(cell_id))
        assert float(r["ours_mean"]) == record["metrics"]["map_at"]["all"]


# ------------------------------------------------------------------------------ end to end
def test_npz_table3_one_user_column(tmp_path, capsys):
    data = write_npz(tmp_path / "mine.npz")
    assert _main(tmp_path, "--table", "3", "--user-data", str(data),
                 "--n-query", "50", "--n-train", "150") == 0
    out = capsys.readouterr().out
    ud = resolve_user_data(data, n_query=50, n_train=150)
    assert ud.key.startswith("mine-") and len(ud.key) == len("mine-") + 8
    rows = _table(tmp_path, ud.key, "table3")
    assert {(r["row"], int(r["bits"])) for r in rows} == {
        (m, b) for m in ("LSH", "ITQ") for b in (16, 32)}
    assert {r["block"] for r in rows} == {f"mine — npz {data.resolve()}, mAP@all"}
    store = ResultStore(tmp_path / "res", "test")
    _check_against_records(rows, store, ud.key)
    md = (tmp_path / "res" / "test" / "user" / ud.key / "tables" / "table3.md").read_text()
    assert md in out  # the printed table
    assert "### mine — npz" in md and "| LSH | 0." in md and "on your own data" in md
    for r in rows:
        assert f"{float(r['ours_mean']):.4f} |" in md
    # the paper has no numbers for your data: one column per code length, no empty paper/Δ
    assert "| method | 16 bits | 32 bits |" in md and "paper | Δ" not in md
    # the preset's own tables are untouched: no collision with the built-in datasets
    assert not (tmp_path / "res" / "test" / "tables").exists()
    # split sizes and hash in every record, and the split files beside the results
    records = list(store.iter_records())
    assert len(records) == 4
    for rec in records:
        assert rec["dataset"]["sizes"] == {"query": 50, "database": 250, "train": 150, "val": 0}
        assert rec["dataset"]["key"] == ud.key and rec["dataset"]["protocol"] == "npz"
        assert rec["cell"]["variant"] == {"path": str(data.resolve()), "n_query": 50,
                                          "n_train": 150}
        assert rec["dataset"]["info"]["feature_backbone"] == "provided in the npz"
        split_dir = store.splits_dir / f"{ud.key}-{rec['dataset']['split_hash']}"
        assert len(np.loadtxt(split_dir / "query.txt", ndmin=1)) == 50
        assert len(np.loadtxt(split_dir / "train.txt", ndmin=1)) == 150


def test_csv_images_shallow_and_deep(tmp_path):
    """A CSV of images (multi-label): LSH on the preset's feature backbone (raw pixels in
    `test`) for Table 3, DPAH (a deep method, the preset's 2 epochs) for Table 2."""
    data = write_csv_images(tmp_path / "photos")
    args = ["--user-data", str(data), "--user-name", "photos", "--n-query", "10",
            "--n-train", "40", "--methods", "lsh,dpah"]
    assert _main(tmp_path, "--table", "3", "--table", "2", *args) == 0
    ud = resolve_user_data(data, name="photos", n_query=10, n_train=40,
                           image_backbone=image_feature_backbone(get_preset("test")))
    assert ud.multi_label and ud.spec.feature_backbone == "raw"
    store = ResultStore(tmp_path / "res", "test")
    t3 = [r for r in _table(tmp_path, ud.key, "table3") if r["method"] == "lsh"]
    t2 = [r for r in _table(tmp_path, ud.key, "table2") if r["method"] == "dpah"]
    assert len(t3) == 2 and len(t2) == 1 and t2[0]["backbone"] == "linear"
    _check_against_records(t3 + t2, store, ud.key)
    rec = store.load(t3[0]["cell_ids"])
    assert rec["dataset"]["sizes"] == {"query": 10, "database": 50, "train": 40, "val": 0}
    assert rec["dataset"]["info"]["feature_backbone"] == "raw pixels"
    assert "-f-raw-" in rec["cell_id"]
    assert store.load(t2[0]["cell_ids"])["method"]["kind"] == "deep"


# ------------------------------------------------------------------------------ identity
def test_cell_ids_never_shared_between_files_or_splits(tmp_path):
    a = write_npz(tmp_path / "a" / "data.npz")
    b = tmp_path / "b" / "data.npz"
    b.parent.mkdir()
    shutil.copy(a, b)
    keys = {
        resolve_user_data(a).key,
        resolve_user_data(b).key,  # same name, other file
        resolve_user_data(a, n_query=30).key,  # same file, other split
        resolve_user_data(a, n_query=30, n_train=100).key,
    }
    assert len(keys) == 4 and all(k.startswith("data-") for k in keys)
    assert resolve_user_data(a, n_query=30).key == resolve_user_data(str(a), n_query=30).key
    assert resolve_user_data(a, name="my data!").name == "my_data"


def test_dry_run_names_the_user_cells_and_runs_nothing(tmp_path, capsys):
    data = write_npz(tmp_path / "mine.npz")
    assert _main(tmp_path, "--table", "3", "--dry-run", "--user-data", str(data),
                 "--n-query", "30") == 0
    out = capsys.readouterr().out
    key = resolve_user_data(data, n_query=30).key
    assert out.count("TO RUN") == 4 and out.count(f"-{key}-") == 4
    assert "query 30 / database 270 / train 270" in out
    assert not (tmp_path / "res").exists()


# ------------------------------------------------------------------------------ errors
def _error(tmp_path, capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        _main(tmp_path, "--table", "3", *argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_errors_name_the_problem(tmp_path, capsys):
    data = write_npz(tmp_path / "mine.npz")
    missing = tmp_path / "nowhere" / "x.npz"
    err = _error(tmp_path, capsys, "--user-data", str(missing))
    assert str(missing) in err and "no such file or folder" in err
    (tmp_path / "notes.txt").write_text("hello")
    err = _error(tmp_path, capsys, "--user-data", str(tmp_path / "notes.txt"))
    assert "unknown extension '.txt'" in err and ".csv" in err and ".npz" in err
    assert "folder" in err and "--user-protocol" in err
    err = _error(tmp_path, capsys, "--user-data", str(data), "--n-query", "200",
                 "--n-train", "150")
    assert "--n-query 200 + --n-train 150 = 350" in err and "300 labelled items" in err
    err = _error(tmp_path, capsys, "--user-data", str(data), "--n-query", "300")
    assert "--n-query 300 leaves no database" in err and "300 labelled items" in err
    err = _error(tmp_path, capsys, "--n-query", "10")
    assert "--n-query only applies to your own data" in err and "--user-data" in err
    err = _error(tmp_path, capsys, "--n-train", "10", "--user-name", "x")
    assert "--n-train, --user-name only apply" in err
    err = _error(tmp_path, capsys, "--user-data", str(data), "--user-protocol", "folder")
    assert "needs a folder" in err and str(data) in err
    err = _error(tmp_path, capsys, "--user-data", str(data), "--n-train", "0")
    assert "positive integer" in err
    assert not (tmp_path / "res").exists()
    with pytest.raises(UserDataError, match="no 'labels' array"):
        np.savez(tmp_path / "bad.npz", features=np.zeros((5, 2)))
        resolve_user_data(tmp_path / "bad.npz")


def test_csv_listing_missing_images_is_an_error_before_running(tmp_path, capsys):
    data = write_csv_images(tmp_path / "photos", n=12)
    (tmp_path / "photos" / "im" / "3.png").unlink()
    err = _error(tmp_path, capsys, "--user-data", str(data))
    assert "1 of 12 listed images do not exist" in err and "3.png" in err


def test_help_documents_the_user_flags():
    text = run_all.build_parser().format_help()
    for flag in ("--user-data", "--user-protocol", "--user-name", "--n-query", "--n-train"):
        assert flag in text
    assert ".npz" in text and ".csv" in text and "min(1000, N/10)" in text
