"""The bulk package's shape: its private modules share plain names only, each declares what it exports,
and the session upkeep after a batch takes its arguments by keyword."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import ponykit.bulk
from ponykit.bulk import _batch

PACKAGE = Path(ponykit.bulk.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))


def test_no_underscore_name_crosses_a_module_of_the_package() -> None:
    """What one module of ponykit.bulk takes from another has a plain name (the leading underscore
    means: used inside its own module only)."""
    crossing = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                crossing += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert crossing == []


def test_every_private_module_declares_what_the_package_uses() -> None:
    """Each private module has an ``__all__`` naming things it defines, and every name a sibling imports
    from it, besides the row plan's module, is in that ``__all__``."""
    exported = {}
    for path in MODULES:
        module = importlib.import_module(
            f"ponykit.bulk.{path.stem}" if path.stem != "__init__" else "ponykit.bulk"
        )
        assert isinstance(module.__all__, list | tuple), path.name
        assert all(hasattr(module, name) for name in module.__all__), path.name
        exported[path.stem] = set(module.__all__)
    missing = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module not in (None, "_rows"):
                missing += [
                    f"{path.name}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name not in exported[node.module]
                ]
    assert missing == []


def test_after_write_takes_keywords_only() -> None:
    """``after_write(plan, db, *, keys, relations, refresh, refresh_attrs)``: the call says what each
    value means (the written attributes are both the relations to reset and the attributes to re-read)."""
    parameters = inspect.signature(_batch.after_write).parameters
    keyword_only = [n for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keyword_only == ["keys", "relations", "refresh", "refresh_attrs"]
