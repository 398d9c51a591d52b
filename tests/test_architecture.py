"""How the package hangs together: a front without TensorFlow, and no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "sanity_cli"

PROBE = """
import sys
from sanity_cli import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print("HEAVY:", ",".join(sorted(m for m in ("tensorflow", "keras") if m in sys.modules)))
sys.exit(code)
"""


@pytest.mark.parametrize("args, code, says", [
    (["--help"], 0, "config groups"),
    (["run", "n_images=abc"], 2, "n_images: Value 'abc'"),
    (["run", "data.path=123"], 2, "data.path must be a path"),
    (["run", "cache_dir=123"], 2, "cache_dir must be a path"),
    (["run", "data.data_dir=123"], 2, "data.data_dir must be a path"),
    (["run", "hydra.run.dir=my", "results/run"], 2, "must be quoted"),
    (["run", "--cfg", "job"], 0, "seed:"),
    (["train", "labels=maybe"], 2, "labels must be"),
])
def test_the_front_answers_without_importing_tensorflow(tmp_path, args, code, says):
    """Composing, validating and describing a run never waits for TensorFlow: only a valid run imports it."""
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == code, result.stderr[-2000:]
    assert "HEAVY: \n" in result.stdout, result.stdout[-500:]
    assert says in result.stdout + result.stderr
    if code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("sanity: error:"), result.stderr
    assert not (tmp_path / "results").exists() or code == 0


def _imports(path: Path) -> set[str]:
    """sanity_cli modules imported anywhere in the file (module level or inside functions)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names = [f"{module}.{alias.name}" for alias in node.names]
            found |= {name for name in [module, *names] if name.startswith("sanity_cli")}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("sanity_cli")}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in modules.items():
        graph[name] = {target for target in _imports(path) if target in modules and target != name}
    return graph


def test_no_import_cycles():
    graph = import_graph()
    assert {"sanity_cli.cli", "sanity_cli.core", "sanity_cli.spec", "sanity_cli.config"} <= set(graph)
    cycles = []

    def visit(node, path, on_path, done):
        on_path.add(node)
        path.append(node)
        for target in sorted(graph[node]):
            if target in on_path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, path, on_path, done)
        path.pop()
        on_path.discard(node)
        done.add(node)

    done: set[str] = set()
    for node in sorted(graph):
        if node not in done:
            visit(node, [], set(), done)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _third_party(path: Path) -> set[str]:
    """The top-level packages other than sanity_cli a module imports (anywhere in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_core_imports_neither_hydra_nor_the_command_line():
    """spec -> core -> sinks: the in-memory core (and all it imports) knows no Hydra and no CLI: the Python API and
    any other front call it directly (issue 29)."""
    graph = import_graph()
    for start in ("sanity_cli.core", "sanity_cli.spec", "sanity_cli.plans", "sanity_cli.stages"):
        below = _reachable(graph, start) | {start}
        assert not below & {"sanity_cli.cli", "sanity_cli.config", "sanity_cli.api", "sanity_cli.reproduce",
                            "sanity_cli.sweep"}, (start, sorted(below))
        for module in below:
            path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
            path = path if path.exists() else path.with_suffix("") / "__init__.py"
            assert "hydra" not in _third_party(path), f"{module} (below {start}) imports Hydra"


def test_no_function_is_longer_than_80_lines():
    """Readable in one screen each (issue 29)."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, long
