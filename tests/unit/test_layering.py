"""The packages' dependency rules: common imports neither side, the daemon never the
manager and the manager never the daemon; no module takes part in an import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "cli", "daemon", "manager", "protos")

# Imports every module under a package with some other packages made unimportable.
BLOCKED_IMPORT = """
import importlib, pkgutil, sys

blocked = set(sys.argv[2].split(","))

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is blocked for this package")
        return None

sys.meta_path.insert(0, Block())
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
print("ok")
"""


def module_names() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    names = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names[".".join(parts)] = path
    return names


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of tree but those under `if TYPE_CHECKING:` (imports for type hints
    only, which never run)."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if (
                isinstance(child, ast.If)
                and isinstance(child.test, ast.Name)
                and child.test.id == "TYPE_CHECKING"
            ):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return out


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules path imports when it runs (functions included; imports for
    type checking only left out)."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            submodules = [f"{node.module}.{a.name}" for a in node.names]
            # `from pkg import submodule` needs pkg/__init__ only for names that are
            # not submodules themselves.
            needs_package = any(s not in modules for s in submodules)
            candidates = submodules + ([node.module] if needs_package else [])
        else:
            continue
        found.update(c for c in candidates if c in modules)
    return found


class TestLayering:
    @pytest.mark.parametrize(
        ("package", "blocked"),
        [
            ("common", "daemon,manager,cli"),
            ("daemon", "manager,cli"),
            ("manager", "daemon,cli"),
        ],
        ids=["common-imports-neither-side", "daemon-without-manager", "manager-without-daemon"],
    )
    def test_every_module_imports_with_the_other_side_blocked(
        self, package: str, blocked: str
    ) -> None:
        result = subprocess.run(
            [sys.executable, "-c", BLOCKED_IMPORT, package, blocked],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "ok"

    def test_no_module_takes_part_in_an_import_cycle(self) -> None:
        modules = module_names()
        graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
        cycles = [scc for scc in _strongly_connected(graph) if len(scc) > 1]
        assert cycles == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    scc.append(member)
                    if member == node:
                        break
                result.append(sorted(scc))
    return result
