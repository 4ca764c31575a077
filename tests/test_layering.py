"""Dependencies point down: proposers never import the search, metrics never import training,
the search and the experiments never import the report; no two modules of a package import
each other in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "diffnas"


def imported_modules(source: str, package: str) -> set[str]:
    """Every module a file of `package` imports, also inside functions (absolute names;
    relative imports resolved against `package`)."""
    tree = ast.parse(source)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def package_of(path: Path) -> str:
    return ".".join(("diffnas", *path.relative_to(PACKAGE).parent.parts))


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [("propose", "diffnas.search"), ("evaluate", "diffnas.train"), ("gate", "diffnas.propose"),
     ("gate", "diffnas.search"), ("search", "diffnas.report"), ("execute", "diffnas.report"),
     ("experiments", "diffnas.report"), ("experiments", "diffnas.cli")],
)  # fmt: skip
def test_no_module_imports_upward(folder: str, forbidden: str) -> None:
    files = sorted((PACKAGE / folder).rglob("*.py"))
    assert files
    offenders = {
        str(f.relative_to(PACKAGE)): sorted(
            m
            for m in imported_modules(f.read_text(), package_of(f))
            if m == forbidden or m.startswith(forbidden + ".")
        )
        for f in files
    }
    assert {f: m for f, m in offenders.items() if m} == {}


def test_the_import_parser_sees_every_form_of_import() -> None:
    source = (
        "import diffnas.train.trainer as t\n"
        "from ..search import loop\n"
        "def f():\n"
        "    from .llm import base\n"
    )
    found = imported_modules(source, "diffnas.propose")
    assert {"diffnas.train.trainer", "diffnas.search.loop", "diffnas.propose.llm.base"} <= found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("diffnas", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def import_graph(folder: str) -> dict[str, set[str]]:
    """Module -> the modules of the same folder it imports (a `from pkg import name` counts
    when `name` is a module)."""
    files = {module_name(f): f for f in (PACKAGE / folder).rglob("*.py")}
    return {
        name: {
            m
            for m in imported_modules(f.read_text(), package_of(f))
            if m in files and m != name and files[m].name != "__init__.py"
        }
        for name, f in files.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


ACYCLIC = [
    "space", "model", "data", "train", "evaluate", "gate", "propose", "execute", "search",
    "experiments", "report", "cli",
]  # fmt: skip


def test_every_package_is_checked_for_cycles() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert sorted(packages) == sorted(ACYCLIC)


@pytest.mark.parametrize("folder", ACYCLIC)
def test_no_import_cycle_inside_a_package(folder: str) -> None:
    assert cycles(import_graph(folder)) == []


def test_only_the_factory_imports_the_executors_it_builds() -> None:
    """The executors import the interface and the worker processes; `--executor NAME` alone
    imports them (the cycle executors.py once closed with them)."""
    graph = import_graph("execute")
    built = {f"diffnas.execute.{m}" for m in ("pool", "queue", "ray_executor", "table_executor")}
    assert built <= set(graph)
    assert {m for m, imported in graph.items() if imported & built} == {"diffnas.execute.factory"}


def package_graph() -> dict[str, set[str]]:
    """Package or top-level module (`diffnas.search`, `diffnas.runs`) -> the others it imports."""
    files = [f for f in PACKAGE.rglob("*.py") if f != PACKAGE / "__init__.py"]
    units = {".".join(module_name(f).split(".")[:2]) for f in files}
    graph: dict[str, set[str]] = {unit: set() for unit in units}
    for f in files:
        unit = ".".join(module_name(f).split(".")[:2])
        for m in imported_modules(f.read_text(), package_of(f)):
            target = ".".join(m.split(".")[:2])
            if target in units and target != unit:
                graph[unit].add(target)
    return graph


def test_no_import_cycle_between_packages() -> None:
    graph = package_graph()
    assert "diffnas.report" in graph["diffnas.cli"]  # the graph sees real imports
    assert cycles(graph) == []


def test_the_cycle_finder_finds_each_cycle_once() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    found = import_graph("search")  # the real imports: the loop runs schedules of requests
    assert {"diffnas.search.schedules", "diffnas.search.requests"} <= found["diffnas.search.loop"]
    assert "diffnas.search.requests" in found["diffnas.search.schedules"]
    found["diffnas.search.requests"].add("diffnas.search.loop")  # as if requests reached back
    assert cycles(found) == [
        ["diffnas.search.loop", "diffnas.search.requests", "diffnas.search.schedules"]
    ]


def test_the_layout_module_imports_nothing_of_diffnas() -> None:
    """Readers of a run folder (the report) import the file names without the writers' code."""
    source = (PACKAGE / "layout.py").read_text()
    assert {m for m in imported_modules(source, "diffnas") if m.startswith("diffnas")} == set()
