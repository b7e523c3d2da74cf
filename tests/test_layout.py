"""The layout shows the architecture: no import circles, and the old module paths still work."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("methods", "benchmarks", "data_protocols")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _import_graph() -> dict[str, set[str]]:
    """module -> project modules it imports (at any depth of the file, lazy imports included)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            deps.update(t for t in targets if t in files and t != name)
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_between_modules():
    # a package's __init__ re-exporting its modules is not a circle of roles; leave them out
    graph = {m: {d for d in deps if not (REPO / d.replace(".", "/") / "__init__.py").exists()}
             for m, deps in _import_graph().items()}
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph))}"


def test_training_engine_depends_on_the_contract_not_on_the_base_class():
    graph = _import_graph()
    assert "methods.deep.contract" in graph["methods.deep.trainer"]
    assert "methods.deep.base" not in graph["methods.deep.trainer"]
    assert "methods.deep.trainer" in graph["methods.deep.base"]
    assert graph["methods.deep.contract"] == set()


def test_cycle_finder_finds_a_planted_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("old", ["benchmarks.results", "benchmarks.experiments",
                                 "benchmarks.user_data", "benchmarks.bench_eval"])
def test_old_module_paths_are_the_new_modules(old):
    from benchmarks._moved import MOVED

    code = (f"import importlib, warnings; warnings.simplefilter('always')\n"
            f"with warnings.catch_warnings(record=True) as w:\n"
            f"    old = importlib.import_module({old!r})\n"
            f"assert old is importlib.import_module({MOVED[old]!r})\n"
            f"assert any(issubclass(x.category, DeprecationWarning) for x in w)\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_old_launchers_path_exports_cell_job_and_launchers():
    sys.modules.pop("benchmarks.launchers", None)
    with pytest.warns(DeprecationWarning, match="benchmarks.runner.cell"):
        import benchmarks.launchers as old
    from benchmarks.runner import cell, launchers

    assert old.run_cell is cell.run_cell and old.RunOptions is cell.RunOptions
    assert old.run_local is launchers.run_local and old.run_submitit is launchers.run_submitit


def test_old_python_dash_m_path_runs_the_new_script_with_a_note():
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_eval", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert "usage:" in out.stdout
    assert "benchmarks.speed.bench_eval" in out.stderr
