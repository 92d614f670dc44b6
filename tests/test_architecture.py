"""The package structure: algorithm packages stay free of run-directory code, and the
package-level import graph has no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import modeconn

ROOT = Path(modeconn.__file__).parent

#: In-memory algorithms only: no run directories, reports, commands or CLI.
ALGORITHM_PACKAGES = ("connectivity", "attacks", "defenses", "landscape", "models", "data")
#: What an algorithm package may not import (modules or packages below ``modeconn``).
FORBIDDEN = ("rundir", "report", "commands", "cli", "api", "demo")


def _imports(path: Path) -> set[str]:
    """Every ``modeconn.…`` module a file imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("modeconn"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("modeconn"):
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names)
    return found


def _unit(module: str) -> str | None:
    """The package-level unit of a module: ``modeconn.connectivity.curves`` → ``connectivity``."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "modeconn":
        return None
    name = parts[1]
    return name if (ROOT / name).is_dir() or (ROOT / f"{name}.py").exists() else None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        unit = rel.parts[0].removesuffix(".py")
        if unit in ("__init__", "__main__"):
            continue
        edges = graph.setdefault(unit, set())
        for module in _imports(path):
            other = _unit(module)
            if other and other != unit:
                edges.add(other)
    return graph


def test_algorithm_packages_import_no_run_directory_code():
    offending = []
    for package in ALGORITHM_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in sorted(_imports(path)):
                if _unit(module) in FORBIDDEN:
                    offending.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offending, "\n".join(offending)


def test_package_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            raise AssertionError("import cycle: " + " → ".join(cycle))


@pytest.mark.slow
def test_importing_connectivity_loads_no_run_directory_code_or_rich():
    code = (
        "import sys, modeconn.connectivity, modeconn.defenses, modeconn.attacks, "
        "modeconn.landscape\n"
        "bad = [m for m in sys.modules if m == 'rich' or m.startswith('rich.') "
        "or m in ('modeconn.rundir', 'modeconn.commands', 'modeconn.report') "
        "or m.startswith('modeconn.cli')]\n"
        "print(','.join(sorted(bad)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
