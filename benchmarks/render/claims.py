"""``--table claims``: does each of the paper's claims hold here? Rendered from stored results only.

Six claims, each decided by comparisons "A vs B" where the paper says A is higher, on mAP as the
tables show it (one comparison per column or block, code length and mAP key):

1. DPAH is first in every column (Table 3): A = DPAH, B = the best other hashing method of the
   cell (reference rows are no hashing methods and are left out).
2. Supervised beats unsupervised (Table 3): A = the best supervised method, B = the best
   unsupervised one; which is which is the methods' declared ``supervised`` attribute
   (``methods.base.HashMethod.supervised``: False for LSH and ITQ).
3. Deep beats shallow on deep features (Table 3): A = the best deep method, B = the best shallow
   one (the registry's ``kind``).
4. PA beats softmax (Table 1): A = softmax+PA, B = softmax+CE, both mAP keys of every column.
5. The KT loss helps (Table 2): softmax+KT vs softmax, and DPAH vs DPAH-without-KT, every backbone.
6. The margin helps (Fig. 7): DPAH at its default alpha vs the "no margin" baseline (alpha = 0).

A comparison whose cells repeat an earlier one of the same claim (same cells, same mAP key: e.g.
Table 1's two mAP columns when a column's own cutoff is mAP@all) is made once.

Each comparison: the two mAP values (the tables' entries: mean over seeds when several), and the
paired bootstrap of mAP(A) - mAP(B) (:func:`benchmarks.stats.paired_bootstrap` over queries, and
over seeds when several; 10,000 resamples, seed 0, 95 % interval) on the per-query APs the cells
stored, read as the tables read them (:func:`benchmarks.render.tables.entry_runs`). A comparison
*favours* A when A's mAP is higher than B's; it is *significant* when it favours A and the
interval lies above 0, *significantly reversed* when it favours B and the interval lies below 0
(the rule of the tables' ``†`` marks; under ``no_hit="drop"`` the bootstrap's difference, on the
queries every run kept, can differ from the difference of the two mAP values). For the best of a
group (claims 1-3) the best is chosen by its observed mean mAP (ties: the first in the table's
order) and the test does not correct for that selection; a group member that did not converge
(N/C) is left out of the selection and named in the comparison's note. A comparison is *not
computed*, with its reason, when a cell it needs has no result (``missing``: for a group, any
member's), did not converge (single-method sides), lacks stored per-query APs, or the test
refuses it (e.g. different query sets); a method the table does not list is ``not in the table``.

Verdicts (``k`` computed of ``n`` comparisons, ``f`` favouring A, ``s`` significant, ``r``
significantly reversed):

* ``holds (f/k comparisons, s significant)``: every computed comparison favours A;
* ``does not hold (0/k comparisons; r significantly reversed)``: none favours A;
* ``mixed (f/k comparisons favour the claim; s significant; r significantly reversed)``;
* ``not computed (<reasons>)``: no comparison computed, e.g. ``not computed (missing: DPAH)``;
* ``partly computed (k of n comparisons; <reasons>): `` followed by one of the first three,
  on the computed comparisons.

Outputs: ``<tables>/claims.md`` (a header, a summary table claim | verdict | where in the paper,
then one detail table per claim) and ``<tables>/claims.csv`` (one row per comparison), in the
tables folder of the run (``ResultStore.tables_dir``: a tuned run's or another recipe's own).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import stats
from benchmarks.render.tables import (
    Entry,
    TableData,
    aggregate,
    build_table,
    column_block,
    entry_runs,
    load_paper_numbers,
    map_key_name,
    recipe_lines,
    row_cells,
    run_lines,
    write_outputs,
)
from benchmarks.runner.experiments import (
    FIG_ALPHA,
    TABLE1,
    TABLE2,
    TABLE3,
    Experiment,
    Preset,
    Row,
    map_name,
    sweep_hyper,
)
from benchmarks.runner.results import ResultStore

__all__ = ["ClaimResult", "ClaimsData", "Comparison", "build_claims", "format_csv", "format_markdown",
           "render_claims"]

TEST_TEXT = (
    "Test: for each comparison A vs B (the paper says A is higher), the paired bootstrap of "
    f"mAP(A) - mAP(B) over queries (and seeds), {stats.DEFAULT_RESAMPLES:,} resamples, seed "
    f"{stats.DEFAULT_SEED}, {stats.DEFAULT_CONFIDENCE:.0%} interval (benchmarks/stats.py), on the "
    "per-query AP the cells stored. A mAP and B mAP are the tables' values; A - B is the "
    "bootstrap's observed difference on the queries every run kept. Significant: the comparison "
    "favours A (A mAP > B mAP) and the interval lies above 0; reversed: it favours B and the "
    "interval lies below 0."
)
SELECTION_TEXT = (
    "Best of a group (claims 1-3): chosen by the observed mean mAP (ties: the first in the "
    "table's order); the test does not correct for this selection, which favours the chosen "
    "side. Group members that did not converge (N/C) are left out of the selection."
)
VERDICT_TEXT = (
    "Verdict: holds = every computed comparison favours the claim; does not hold = none does; "
    "mixed = some do; partly computed = some comparisons could not be computed (the reasons "
    "follow); not computed = none could."
)


# ------------------------------------------------------------------------------ comparisons
@dataclass
class Comparison:
    """A vs B in one column (or block), code length and mAP key."""

    block: str
    column: str  # the table's column label (``"16 bits"``, ``"mAP@all"``, ...)
    bits: int
    metric: str  # ``"mAP@all"`` or ``"mAP@K"``
    a_name: str  # what A is (``"DPAH"``, ``"best supervised"``): the label until A is chosen
    b_name: str
    selection: bool = False  # A and B are the best of a group
    a: Entry | None = None
    b: Entry | None = None
    test: stats.BootstrapResult | None = None
    #: why it is not computed: (kind, subject), e.g. ("missing", "SSDH")
    problems: list[tuple[str, str]] = field(default_factory=list)
    missing_cells: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def where(self) -> str:
        """The column as the detail table names it: the block, and the column label unless it is
        only the code length."""
        return self.block if self.column == f"{self.bits} bits" else f"{self.block}, {self.column}"

    @property
    def reason(self) -> str:
        """Why it is not computed (empty when it is)."""
        return _problems_text([self])

    @property
    def favours(self) -> str:
        """Which side the tables' values favour: ``A``, ``B`` or ``tie`` (empty when not
        computed)."""
        if self.test is None:
            return ""
        if self.a.mean == self.b.mean:
            return "tie"
        return "A" if self.a.mean > self.b.mean else "B"

    @property
    def significance(self) -> str:
        """``yes`` (favours A, interval above 0), ``yes, reversed`` (favours B, interval below
        0), ``no``, or empty when not computed."""
        if self.test is None:
            return ""
        if self.favours == "A" and self.test.low > 0:
            return "yes"
        if self.favours == "B" and self.test.high < 0:
            return "yes, reversed"
        return "no"


@dataclass
class ClaimResult:
    """One claim: what it says, where the paper says it, how A and B are chosen, and its
    comparisons."""

    number: int
    key: str
    statement: str
    where: str
    rule: str
    comparisons: list[Comparison]

    @property
    def verdict(self) -> str:
        """The verdict (module docstring: the wording)."""
        n = len(self.comparisons)
        done = [c for c in self.comparisons if c.test is not None]
        if not done:
            why = _problems_text(self.comparisons) or "no column with data in this preset"
            return f"not computed ({why})"
        k = len(done)
        f = sum(c.favours == "A" for c in done)
        s = sum(c.significance == "yes" for c in done)
        r = sum(c.significance == "yes, reversed" for c in done)
        if f == k:
            text = f"holds ({f}/{k} comparisons, {s} significant)"
        elif f == 0:
            text = f"does not hold (0/{k} comparisons; {r} significantly reversed)"
        else:
            text = (f"mixed ({f}/{k} comparisons favour the claim; {s} significant; {r} "
                    "significantly reversed)")
        if k < n:
            return (f"partly computed ({k} of {n} comparisons; {_problems_text(self.comparisons)}"
                    f"): {text}")
        return text


def _problems_text(comparisons: Sequence[Comparison]) -> str:
    """``missing: DPAH, SSDH; no stored per-query AP: LSH``: each kind once, subjects in order."""
    by_kind: dict[str, list[str]] = {}
    for c in comparisons:
        for kind, subject in c.problems:
            subjects = by_kind.setdefault(kind, [])
            if subject not in subjects:
                subjects.append(subject)
    return "; ".join(f"{kind}: {', '.join(subjects)}" for kind, subjects in by_kind.items())


def _best(group: list[Entry]) -> Entry:
    """The entry with the highest mean mAP (ties: the first listed)."""
    return max(group, key=lambda e: e.mean)


def _compare(comp: Comparison, a_group: list[Entry], b_group: list[Entry],
             store: ResultStore) -> Comparison:
    """Choose A and B (the best of each group), load their per-query APs and test A - B. A side
    of one method is shown even when the comparison is not computed."""
    comp.a = a_group[0] if len(a_group) == 1 else None
    comp.b = b_group[0] if len(b_group) == 1 else None
    for name, group in ((comp.a_name, a_group), (comp.b_name, b_group)):
        if not group:
            comp.problems.append(("not in the table", name))
    for e in a_group + b_group:
        if e.status in ("missing", "n/a"):
            problem = ("missing", e.row)
        elif e.short_of_seeds:  # a mean over fewer seeds than the others'
            problem = ("short of seeds", f"{e.row} ({e.n + e.n_nc}/{e.n_expected})")
        else:
            continue
        comp.problems.append(problem)
        comp.missing_cells += [c.cell_id for c in e.cells if store.load(c.cell_id) is None]
    if comp.problems:
        return comp
    a_ok = [e for e in a_group if e.status == "ok"]
    b_ok = [e for e in b_group if e.status == "ok"]
    for ok, group in ((a_ok, a_group), (b_ok, b_group)):
        if not ok:
            comp.problems.append(("did not converge", ", ".join(e.row for e in group)))
    if comp.problems:
        return comp
    left_out = [e.row for e in a_group + b_group if e.status != "ok"]
    if left_out:
        comp.note = f"N/C, left out of the selection: {', '.join(left_out)}"
    comp.a, comp.b = _best(a_ok), _best(b_ok)
    runs_a, runs_b = entry_runs(store, comp.a), entry_runs(store, comp.b)
    for e, runs in ((comp.a, runs_a), (comp.b, runs_b)):
        if runs is None:
            comp.problems.append(("no stored per-query AP", e.row))
    if comp.problems:
        return comp
    try:
        comp.test = stats.paired_bootstrap(runs_a, runs_b)
    except ValueError as exc:
        comp.problems.append(("refused by the test", str(exc)))
    return comp


Side = Callable[[Row], bool]


def _comparisons(data: TableData, store: ResultStore, a_name: str, a_side: Side, b_name: str,
                 b_side: Side, selection: bool = False) -> list[Comparison]:
    """One comparison per column (block, column label) of a table: A = the rows ``a_side``
    accepts (the best of them), B = those ``b_side`` accepts; a comparison whose cells and mAP
    key repeat an earlier one is left out."""
    seen: set[tuple] = set()
    out = []
    for block, labels in data.blocks:
        for column in labels:
            entries = {r: data.entries[(block, column, r.label)] for r in data.rows}
            a_group = [e for r, e in entries.items() if a_side(r)]
            b_group = [e for r, e in entries.items() if b_side(r)]
            any_entry = next(iter(entries.values()))
            key = (frozenset(c.cell_id for e in a_group + b_group for c in e.cells),
                   any_entry.metric_key)
            if key in seen:
                continue
            seen.add(key)
            comp = Comparison(block, column, any_entry.cells[0].bits,
                              map_name(None if any_entry.metric_key == "all"
                                       else int(any_entry.metric_key)),
                              a_name, b_name, selection)
            out.append(_compare(comp, a_group, b_group, store))
    return out


def _method(name: str) -> Side:
    """The row(s) of one registered method."""
    return lambda row: row.method == name


def _row(target: Row) -> Side:
    return lambda row: row == target


def _other_than_dpah(row: Row) -> bool:
    return row.method != "dpah"


def _supervised(row: Row) -> bool:
    """The method's declared ``supervised`` attribute (``methods.base.HashMethod``)."""
    from methods import get_method

    return bool(get_method(row.method).supervised)


def _unsupervised(row: Row) -> bool:
    return not _supervised(row)


def _deep(row: Row) -> bool:
    from methods import get_method

    return get_method(row.method).kind == "deep"


def _shallow(row: Row) -> bool:
    return not _deep(row)


def _groups_text(data: TableData, side: Side) -> str:
    return ", ".join(r.label for r in data.rows if side(r)) or "none"


# ------------------------------------------------------------------------------ Fig. 7
def _margin_table(preset: Preset, store: ResultStore, seeds: Sequence[int]) -> TableData:
    """Fig. 7's two lines as a table: DPAH at its default alpha (the sweep point that is the
    method's default) and the no-margin baseline, per column at the figure's code length.
    Under ``--tune`` both fix alpha and take the other values from DPAH's study (the figure's
    cells: see :func:`sweep_hyper`)."""
    exp = FIG_ALPHA
    row = exp.rows[0]
    default = next((v for v in exp.sweep if not sweep_hyper(exp, v)), None)
    tuned = bool(preset.tune)
    label = (f"{row.label} ({exp.sweep_param} = {default}, default)" if default is not None
             else f"{row.label} (default {exp.sweep_param})")
    if tuned and default is not None:
        label = f"{row.label} ({exp.sweep_param} = {default}, the paper's; the rest tuned)"
    hyper = {**dict(row.hyper), **(sweep_hyper(exp, default, tuned) if default is not None
                                   else {})}
    rows = [Row(label, row.method, tuple(sorted(hyper.items()))), exp.baseline]
    bits = exp.bits[0]
    blocks: list[tuple[str, list[str]]] = []
    entries: dict[tuple[str, str, str], Entry] = {}
    for col in preset.columns:
        if col.dataset is None:
            continue
        block, column = f"{column_block(col)}, {map_name(col.k)}", f"{bits} bits"
        blocks.append((block, [column]))
        for r in rows:
            e = Entry(block, column, r.label, r.method, row_cells(preset, r, col.dataset, bits, seeds),
                      map_key_name(col.k), None)
            entries[(block, column, r.label)] = aggregate(e, store)
    return TableData(exp, preset, blocks, rows, entries, [])


# ------------------------------------------------------------------------------ the claims
def _sources(preset: Preset, store: ResultStore,
             seeds: Sequence[int]) -> dict[str, TableData]:
    paper = load_paper_numbers()
    out = {e.name: build_table(e, preset, store, seeds, paper) for e in (TABLE1, TABLE2, TABLE3)}
    out[FIG_ALPHA.name] = _margin_table(preset, store, seeds)
    return out


def _claims(src: dict[str, TableData], store: ResultStore) -> list[ClaimResult]:
    t1, t2, t3, fig7 = (src[e.name] for e in (TABLE1, TABLE2, TABLE3, FIG_ALPHA))
    a_margin, b_margin = fig7.rows
    return [
        ClaimResult(
            1, "dpah-first", "DPAH is first in every column", "Table 3",
            "A = DPAH; B = the best other hashing method of the cell (reference rows excluded).",
            _comparisons(t3, store, "DPAH", _method("dpah"), "best other method", _other_than_dpah,
                         True)),
        ClaimResult(
            2, "supervised", "Supervised methods beat unsupervised ones", "Table 3",
            "A = the best supervised method, B = the best unsupervised one (the methods' "
            "declared `supervised` attribute, methods/base.py). Supervised: "
            f"{_groups_text(t3, _supervised)}; unsupervised: {_groups_text(t3, _unsupervised)}.",
            _comparisons(t3, store, "best supervised", _supervised, "best unsupervised",
                         _unsupervised, True)),
        ClaimResult(
            3, "deep", "Deep methods beat shallow ones on deep features", "Table 3",
            "A = the best deep method, B = the best shallow one (the registry's kind, "
            f"methods.get_method(name).kind). Deep: {_groups_text(t3, _deep)}; shallow: "
            f"{_groups_text(t3, _shallow)}.",
            _comparisons(t3, store, "best deep", _deep, "best shallow", _shallow, True)),
        ClaimResult(
            4, "pa", "The PA module beats softmax", "Table 1",
            "A = softmax+PA, B = softmax+CE; every column and mAP key of Table 1 (a repeated "
            "one once).",
            _comparisons(t1, store, "softmax+PA", _method("softmax_pa"), "softmax+CE",
                         _method("softmax_ce"))),
        ClaimResult(
            5, "kt", "The KT loss helps", "Table 2",
            "A = softmax+KT vs B = softmax, and A = DPAH vs B = DPAH-without-KT; every backbone "
            "and mAP key of Table 2 (a repeated one once).",
            _comparisons(t2, store, "softmax+KT", _method("softmax_kt"), "softmax",
                         _method("softmax_ce"))
            + _comparisons(t2, store, "DPAH", _method("dpah"), "DPAH-without-KT",
                           _method("dpah_no_kt"))),
        ClaimResult(
            6, "margin", "The margin helps", "Fig. 7",
            f"A = {a_margin.label}, B = the {b_margin.label} baseline (alpha = 0); every column "
            f"at the figure's {FIG_ALPHA.bits[0]} bits.",
            _comparisons(fig7, store, a_margin.label, _row(a_margin), b_margin.label,
                         _row(b_margin))),
    ]


@dataclass
class ClaimsData:
    """The claims of one run and the tables they were read from."""

    exp: Experiment
    preset: Preset
    claims: list[ClaimResult]
    sources: dict[str, TableData]


def build_claims(exp: Experiment, preset: Preset, store: ResultStore,
                 seeds: Sequence[int] | None = None) -> ClaimsData:
    """Every claim's comparisons and verdict, from the stored cells of the tables it reads."""
    seeds = tuple(seeds) if seeds else preset.seeds
    src = _sources(preset, store, seeds)
    return ClaimsData(exp, preset, _claims(src, store), src)


# ------------------------------------------------------------------------------ formats
def _header(data: ClaimsData, store: ResultStore) -> list[str]:
    """Preset, conventions, seeds and results (as every table states them), the test, the
    selection rule, the verdicts' wording, the recipes and which data fills which column."""
    used = {}  # the entries of the rows the claims read (not the reference rows)
    for name, d in data.sources.items():
        labels = {r.label for r in d.rows}
        used.update({(name, *k): e for k, e in d.entries.items() if e.row in labels})
    merged = TableData(data.exp, data.preset, [], [], used, [])
    notes = dict.fromkeys(n for name in (TABLE1.name, TABLE2.name)
                          for n in data.sources[name].notes)
    return (run_lines(merged, store) + [TEST_TEXT, SELECTION_TEXT, VERDICT_TEXT]
            + recipe_lines(merged, store) + list(notes))


def _num(x: float) -> str:
    return f"{x + 0.0:+.4f}"  # + 0.0: no "-0.0000"


def _diff_text(c: Comparison) -> str:
    if c.test is None:
        return f"not computed: {c.reason}"
    t = c.test
    return f"{_num(t.difference)} [{_num(t.low)}, {_num(t.high)}]"


def format_markdown(data: ClaimsData, store: ResultStore) -> str:
    out = io.StringIO()
    out.write(f"## {data.exp.title}\n\n")
    for line in _header(data, store):
        out.write(f"- {line}\n")
    out.write("\n| claim | verdict | where in the paper |\n|---|---|---|\n")
    for cl in data.claims:
        out.write(f"| {cl.number}. {cl.statement} | {cl.verdict} | {cl.where} |\n")
    for cl in data.claims:
        out.write(f"\n### {cl.number}. {cl.statement} ({cl.where}): {cl.verdict}\n\n")
        out.write(f"{cl.rule}\n\n")
        out.write("| column | bits | A | A mAP | B | B mAP | A - B [95% CI] | significant |\n")
        out.write("|---|---:|---|---:|---|---:|---:|---|\n")
        notes = []
        for c in cl.comparisons:
            a_label = c.a.row if c.a is not None else c.a_name
            b_label = c.b.row if c.b is not None else c.b_name
            a_map = c.a.ours_text() if c.a is not None else "–"
            b_map = c.b.ours_text() if c.b is not None else "–"
            cells = [c.where, str(c.bits), a_label, a_map, b_label, b_map, _diff_text(c),
                     c.significance or "–"]
            out.write("| " + " | ".join(cells) + " |\n")
            if c.note:
                notes.append(f"{c.where}, {c.bits} bits: {c.note}")
        if not cl.comparisons:
            out.write("| – | – | – | – | – | – | not computed: no column with data in this "
                      "preset | – |\n")
        if notes:
            out.write("\n" + "".join(f"- {note}\n" for note in notes))
    return out.getvalue()


CSV_FIELDS = [
    "claim", "claim_key", "statement", "where", "preset", "block", "column", "bits", "metric",
    "a", "a_method", "a_map", "a_n_seeds", "b", "b_method", "b_map", "b_n_seeds",
    "best_of_group", "status", "difference", "ci_low", "ci_high", "favours", "significant",
    "n_queries", "n_dropped", "resampled", "n_resamples", "bootstrap_seed", "confidence",
    "reason", "missing_cells", "note", "a_cells", "b_cells",
]


def _side(e: Entry | None, name: str) -> tuple[str, str, str, Any, str]:
    """label, method, mAP, seeds, cell ids of one side (its name only when not chosen)."""
    if e is None:
        return name, "", "", "", ""
    return (e.row, e.method, "" if e.mean is None else repr(e.mean), e.n,
            ";".join(c.cell_id for c in e.ok_cells))


def format_csv(data: ClaimsData) -> str:
    """One row per comparison (tidy; ``status`` computed / not computed)."""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for cl in data.claims:
        for c in cl.comparisons:
            a, a_method, a_map, a_n, a_cells = _side(c.a, c.a_name)
            b, b_method, b_map, b_n, b_cells = _side(c.b, c.b_name)
            t = c.test
            w.writerow({
                "claim": cl.number, "claim_key": cl.key, "statement": cl.statement,
                "where": cl.where, "preset": data.preset.name, "block": c.block,
                "column": c.column, "bits": c.bits, "metric": c.metric,
                "a": a, "a_method": a_method, "a_map": a_map, "a_n_seeds": a_n,
                "b": b, "b_method": b_method, "b_map": b_map, "b_n_seeds": b_n,
                "best_of_group": "yes" if c.selection else "no",
                "status": "computed" if t is not None else "not computed",
                "difference": "" if t is None else repr(t.difference + 0.0),
                "ci_low": "" if t is None else repr(t.low + 0.0),
                "ci_high": "" if t is None else repr(t.high + 0.0),
                "favours": c.favours, "significant": c.significance,
                "n_queries": "" if t is None else t.n_queries,
                "n_dropped": "" if t is None else t.n_dropped,
                "resampled": "" if t is None else t.resampled,
                "n_resamples": "" if t is None else t.n_resamples,
                "bootstrap_seed": "" if t is None else t.seed,
                "confidence": "" if t is None else t.confidence,
                "reason": c.reason, "missing_cells": ";".join(c.missing_cells), "note": c.note,
                "a_cells": a_cells, "b_cells": b_cells,
            })
    return out.getvalue()


def render_claims(exp: Experiment, preset: Preset, store: ResultStore,
                  seeds: Sequence[int] | None = None) -> dict[str, Path]:
    """Write ``claims.md`` and ``claims.csv`` under the run's tables folder."""
    data = build_claims(exp, preset, store, seeds)
    return write_outputs(store, exp.name, {"md": format_markdown(data, store),
                                           "csv": format_csv(data)})
