"""The package's layering: Bytewax only in ``flows/``; the tools (``devtools/``) only from the
command line and the evaluation, never from the product."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "cxstream"


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules(*, outside: tuple[str, ...]) -> list[Path]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if not relative.startswith(outside):
            found.append(path)
    assert len(found) > 20
    return found


def test_only_the_flows_import_bytewax():
    for path in modules(outside=("flows/",)):
        assert not any(n.split(".")[0] == "bytewax" for n in imported(path)), path


def test_the_product_never_imports_the_tools():
    tools = ("devtools/", "cli/", "evaluate/", "__main__.py")
    for path in modules(outside=tools):
        assert not any(n.startswith("cxstream.devtools") for n in imported(path)), path
