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


def test_nothing_is_unpickled_by_the_product():
    """Nothing executable is read from Redis, Kafka or a file: no module unpickles anything
    (Bytewax's own recovery store is the operator's directory; the state probe only measures the
    size of a pickled snapshot)."""
    unsafe = {"pickle", "cPickle", "dill", "cloudpickle", "shelve", "marshal"}
    for path in modules(outside=()):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                call = (node.value.id, node.attr)
                assert not (call[0] in unsafe and call[1] in {"load", "loads", "Unpickler"}), (
                    path,
                    call,
                )
            if isinstance(node, ast.ImportFrom) and node.module in unsafe:
                assert not {a.name for a in node.names} & {"load", "loads", "Unpickler"}, path


def test_every_exception_is_under_the_packages_base_error():
    import importlib
    import inspect

    from cxstream.errors import CxStreamError

    found = []
    for path in modules(outside=("__main__.py",)):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = importlib.import_module(name.removesuffix(".__init__"))
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, BaseException):
                found.append(cls)
                assert issubclass(cls, CxStreamError), cls
    assert len(found) >= 6
