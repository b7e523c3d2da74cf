"""The result store and the table renderer: ours / paper / difference, mean +- std, N/C, missing."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from benchmarks.render import build_table, load_paper_numbers, render_figure, render_table
from benchmarks.runner import results
from benchmarks.runner.experiments import DIGITS, TABLE3, cells_for, get_preset, make_cell
from benchmarks.runner.results import ResultStore, pack_codes, unpack_codes

PRESET = get_preset("test")


def _record(cell, value: float | None, converged: bool = True) -> dict:
    return {
        "cell_id": cell.cell_id,
        "cell": cell.key(),
        "converged": converged,
        "nc_reason": "" if converged else "loss became NaN at epoch 3",
        "metrics": None if value is None else {"map_at": {"all": value, "1000": value / 2},
                                               "pr_radius": {"precision": [1.0, 0.6, 0.3],
                                                             "recall": [0.05, 0.4, 1.0]}},
        "environment": {"git_commit": "abc123"},
        "utc_time": "2026-01-01T00:00:00Z",
    }


def test_pack_codes_is_lsb_first_and_round_trips():
    codes = np.zeros((2, 12), dtype=np.uint8)
    codes[0, 0] = 1  # bit 0 -> value 1 in the first byte (little bit order, FAISS layout)
    codes[1, 9] = 1  # bit 9 -> value 2 in the second byte
    packed = pack_codes(codes)
    assert packed.shape == (2, 2) and packed.dtype == np.uint8
    assert packed.tolist() == [[1, 0], [0, 2]]
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2, size=(50, 12), dtype=np.uint8)
    np.testing.assert_array_equal(unpack_codes(pack_codes(codes), 12), codes)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "cell.json"

    def write_half_then_crash(fh):
        fh.write(b'{"half": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        results._atomic(target, write_half_then_crash)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file
    results.atomic_write_json(target, {"a": np.float32(0.5), "b": np.int64(3), "c": float("nan")})
    assert json.loads(target.read_text()) == {"a": 0.5, "b": 3, "c": None}
    assert [p.name for p in tmp_path.iterdir()] == ["cell.json"]


def test_store_save_load_codes_and_remove(tmp_path):
    store = ResultStore(tmp_path, "test")
    cell = make_cell(PRESET, "lsh", DIGITS, 16, 0)
    rng = np.random.default_rng(1)
    qc = rng.integers(0, 2, (5, 16), dtype=np.uint8)
    dc = rng.integers(0, 2, (9, 16), dtype=np.uint8)
    ql, dl = np.eye(3, dtype=np.uint8)[[0, 1, 2, 0, 1]], np.eye(3, dtype=np.uint8)[[0] * 9]
    packed = {"query_codes": pack_codes(qc), "db_codes": pack_codes(dc),
              "query_labels": pack_codes(ql), "db_labels": pack_codes(dl),
              "n_labels": np.array(3)}
    assert not store.is_done(cell.cell_id)
    store.save(_record(cell, 0.5), packed)
    assert store.is_done(cell.cell_id)
    assert store.load(cell.cell_id)["artifacts"]["codes"].endswith(".codes.npz")
    back = store.load_codes(cell.cell_id)
    for name, arr in (("query_codes", qc), ("db_codes", dc), ("query_labels", ql),
                      ("db_labels", dl)):
        np.testing.assert_array_equal(back[name], arr)
    store.remove(cell.cell_id)
    assert not store.is_done(cell.cell_id) and not store.codes_path(cell.cell_id).exists()


def test_paper_numbers_transcription():
    paper = load_paper_numbers()
    assert len(paper) == 238
    assert paper[("table3", "DPAH", "nus_wide", "alexnet", 48, "mAP@50000")] == ".8346"
    assert paper[("table3", "LSH", "imagenet100", "alexnet", 16, "mAP@1000")] == ".0699"
    assert paper[("table1", "contrastive", "imagenet100", "alexnet", 48, "mAP@1000")] == "N/C"
    assert paper[("table2", "DPAH", "imagenet100", "resnet101", 48, "mAP@all")] == ".8361"
    # the paper's own consistency (METHODS.md 4.7): Table 3's DPAH ImageNet row is the appendix's
    for b in (16, 32, 48, 64):
        key = ("DPAH", "imagenet100", "alexnet", b, "mAP@1000")
        assert paper[("table3", *key)] == paper[("appendix", *key)]
    # softmax+CE ImageNet (Table 1) == SSDH 48-bit ImageNet (Table 3)
    assert paper[("table1", "softmax+CE", "imagenet100", "alexnet", 48, "mAP@1000")] == \
        paper[("table3", "SSDH", "imagenet100", "alexnet", 48, "mAP@1000")]


def _fill_store(tmp_path) -> ResultStore:
    store = ResultStore(tmp_path, "test")
    lsh16 = [make_cell(PRESET, "lsh", DIGITS, 16, s) for s in (0, 1)]
    store.save(_record(lsh16[0], 0.5))
    store.save(_record(lsh16[1], 0.7))
    store.save(_record(make_cell(PRESET, "lsh", DIGITS, 32, 0), 0.8))  # seed 1 missing
    store.save(_record(make_cell(PRESET, "itq", DIGITS, 16, 0), None, converged=False))
    store.save(_record(make_cell(PRESET, "itq", DIGITS, 16, 1), None, converged=False))
    return store


def test_table_entries_mean_std_paper_diff_nc_missing(tmp_path):
    store = _fill_store(tmp_path)
    data = build_table(TABLE3, PRESET, store, seeds=(0, 1))
    (block, _labels), = data.blocks
    e = data.entries[(block, "16 bits", "LSH")]
    assert e.mean == pytest.approx(0.6) and e.std == pytest.approx(np.sqrt(0.02))  # sample std
    assert e.paper == ".0699" and e.diff == pytest.approx(0.6 - 0.0699)
    assert (e.ours_text(), e.paper_text(), e.diff_text()) == ("0.6000 ± 0.1414", "0.0699",
                                                              "+0.5301")
    one_seed = data.entries[(block, "32 bits", "LSH")]
    assert one_seed.ours_text() == "0.8000 (1/2 seeds)" and one_seed.diff_text() == "+0.6438"
    nc = data.entries[(block, "16 bits", "ITQ")]
    assert nc.status == "nc" and nc.ours_text() == "N/C" and nc.diff is None
    missing = data.entries[(block, "32 bits", "ITQ")]
    assert missing.status == "missing" and missing.ours_text() == "missing"


def test_rendered_files_state_their_setting_and_match(tmp_path):
    store = _fill_store(tmp_path)
    paths = render_table(TABLE3, PRESET, store, seeds=(0, 1))
    md = paths["md"].read_text()
    assert ("| LSH | 0.6000 ± 0.1414 | 0.0699 | +0.5301 | 0.8000 (1/2 seeds) | 0.1562 | +0.6438 |"
            in md)
    assert "| ITQ | N/C | 0.3245 | – | missing | 0.4655 | – |" in md
    assert "preset `test`" in md and "NOT the paper's setting" in md
    assert "ties broken by ascending database index" in md and "dropped from the mean" in md
    assert "digits" in md and "in place of" not in md  # column note names the offline data
    with open(paths["csv"], newline="") as fh:
        rows = {(r["row"], r["bits"]): r for r in csv.DictReader(fh)}
    assert float(rows[("LSH", "16")]["ours_mean"]) == pytest.approx(0.6)
    assert rows[("ITQ", "16")]["status"] == "N/C" and rows[("ITQ", "32")]["status"] == "missing"
    tex = paths["tex"].read_text()
    assert r"0.6000 $\pm$ 0.1414" in tex and r"\toprule" in tex


def test_figures_render_from_stored_results_only(tmp_path):
    """Figures are drawn from records (missing panels say so) and never write result files."""
    from benchmarks.runner.experiments import FIGURES

    store = _fill_store(tmp_path)
    before = sorted(p.name for p in store.cells_dir.iterdir())
    for name in ("pr", "kt-loss", "t-sensitivity", "distribution", "tsne"):
        paths = render_figure(FIGURES[name], PRESET, store, seeds=(0, 1))
        assert paths["png"].stat().st_size > 1000 and paths["pdf"].exists()
    assert sorted(p.name for p in store.cells_dir.iterdir()) == before


def test_cells_are_shared_between_experiments():
    """Table 3's 48-bit DPAH cell is the t = 10 point of Fig. 6's sweep at 16 bits, etc."""
    from benchmarks.runner.experiments import FIGURES

    preset = get_preset("smoke")
    t3 = {c.cell_id for c in cells_for(TABLE3, preset)}
    fig6 = {c.cell_id for c in cells_for(FIGURES["t-sensitivity"], preset)}
    fig9 = {c.cell_id for c in cells_for(FIGURES["tsne"], preset)}
    assert len(t3) == 11 * 4 + 3  # and the 3 reference rows
    assert len(fig6 - t3) == 5  # t = 5, 15, 20, 25 and the no-KT baseline; t = 10 is Table 3's
    assert fig9 <= t3


def test_git_commit_marks_code_edits_dirty_but_not_result_files(tmp_path):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "cell.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = results.git_commit(tmp_path)
    assert len(clean) == 40 and not clean.endswith("+dirty")
    (tmp_path / "results" / "cell.json").write_text('{"map": 0.5}')  # a sweep rewrote a result
    assert results.git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert results.git_commit(tmp_path) == clean + "+dirty"


def test_dataset_hyper_parameters_reach_only_that_datasets_cells():
    """The appendix methods' ImageNet settings (their papers') apply to the ImageNet-100 column
    of the paper preset, not to CIFAR-10, and change no other cell."""
    from dataclasses import replace

    from benchmarks.runner.experiments import APPENDIX, CIFAR10_PAPER, IMAGENET100, TABLE3

    paper = replace(get_preset("paper"), recipe="shared")  # the published recipes add their own
    cells = cells_for(APPENDIX, paper)
    hyper = {(c.method, c.dataset.key): dict(c.hyper) for c in cells}
    assert hyper[("greedyhash", IMAGENET100.key)] == {"alpha": 1.0}
    assert hyper[("talr", IMAGENET100.key)] == {"gamma": 10.0, "nbins": 16}
    assert hyper[("greedyhash", CIFAR10_PAPER.key)] == {}
    assert hyper[("talr", CIFAR10_PAPER.key)] == {}
    assert hyper[("dpah", IMAGENET100.key)] == {}
    assert all(not c.hyper for c in cells_for(TABLE3, paper) if c.kind == "deep")


def test_tsne_embedding_round_trips_through_csv(tmp_path):
    store = ResultStore(tmp_path, "test")
    store.cells_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    emb, classes, index = rng.normal(size=(7, 2)) * 30, rng.integers(0, 20, 7), np.arange(7) * 3
    store.save_tsne("cell", emb, classes, index)
    assert store.tsne_path("cell").suffix == ".csv"
    assert store.tsne_path("cell").read_text().splitlines()[0] == "index,class,x,y"
    back = store.load_tsne("cell")
    np.testing.assert_array_equal(back["embedding"], emb)
    np.testing.assert_array_equal(back["classes"], classes)
    np.testing.assert_array_equal(back["index"], index)
