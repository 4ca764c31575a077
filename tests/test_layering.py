"""Dependencies point down: proposers never import the search, metrics never import training."""

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
     ("gate", "diffnas.search")],
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
