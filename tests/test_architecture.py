"""The direction of dependencies between glorot's packages (docs/architecture.md), read from the source
with ``ast``: every ``import`` statement counts, including those inside functions.

    glorot_service ──► api ──► jobs ──► glorot_core
            └────────► worker ──┘

``glorot_core`` imports none of the service packages; ``jobs`` imports neither ``api`` nor ``worker``;
``api`` and ``worker`` never import each other; only ``glorot_service`` (the composition behind
``glorot serve``) imports both. Within the service packages no module imports itself back through a
circle of imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("glorot_core", "jobs", "api", "worker", "glorot_service")
#: package → the project packages it must never import.
FORBIDDEN = {
    "glorot_core": {"jobs", "api", "worker", "glorot_service"},
    "jobs": {"api", "worker", "glorot_service"},
    "api": {"worker", "glorot_service"},
    "worker": {"api", "glorot_service"},
    "glorot_service": set(),
}
#: Packages whose modules must not form import circles.
ACYCLIC = ("jobs", "api", "worker", "glorot_service")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        yield module_name(path), path


def imports_of(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)  # ``from pkg import module``
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def test_every_package_is_read() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").exists(), package
    assert {m for m, _ in modules("api")} >= {"api.app", "api.routes"}


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package: str) -> None:
    bad = [f"{name} imports {imported}"
           for name, path in modules(package)
           for imported in sorted(imports_of(name, path))
           if top(imported) in FORBIDDEN[package]]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_function_local_and_relative_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from worker.tasks import enqueue_job\n    from . import sibling\n")
    found = imports_of("api.m", src)
    assert "worker.tasks" in found and "api.sibling" in found


def _project_modules() -> dict[str, set[str]]:
    known = {name: path for package in ACYCLIC for name, path in modules(package)}
    return {name: {m for m in imports_of(name, path) if m in known and m != name} for name, path in known.items()}


def test_no_import_circles_in_the_service_packages() -> None:
    graph = _project_modules()
    for name in graph:  # a package's __init__ importing its own modules is not a circle worth flagging
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".") and not m.startswith(name + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circle = [*stack[stack.index(nxt):], nxt]
                raise AssertionError("import circle: " + " → ".join(circle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
