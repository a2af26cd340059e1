"""The batch operations' shared vocabulary: typed overloads where a flag picks the return type, and one
progress-callback shape (``progress(done, total)``) with ``batch_size=None`` meaning 10,000 rows."""

from __future__ import annotations

import ast
import inspect
from typing import Any

from pony.orm import Database, Required, db_session

import ponykit as pk
from ponykit import bulk
from ponykit.query import builders
from ponykit.security import rotation


def _overloads(module: Any, name: str) -> list[tuple[dict[str, str], str]]:
    """``(parameter annotations, return annotation)`` of each ``@overload`` of ``name`` in ``module``, read
    from the source (``typing.get_overloads`` needs Python 3.11)."""
    found = []
    for node in ast.parse(inspect.getsource(module)).body:
        if not (isinstance(node, ast.FunctionDef) and node.name == name):
            continue
        if any(isinstance(d, ast.Name) and d.id == "overload" for d in node.decorator_list):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            annotations = {a.arg: ast.unparse(a.annotation) for a in args if a.annotation is not None}
            assert node.returns is not None
            found.append((annotations, ast.unparse(node.returns)))
    return found


def test_bulk_insert_return_type_follows_return_ids() -> None:
    """return_ids=False (the default) is typed int, return_ids=True list[Any], a plain bool the union."""
    overloads = _overloads(bulk, "bulk_insert")
    by_flag = {params["return_ids"]: returns for params, returns in overloads}
    assert by_flag == {"Literal[False]": "int", "Literal[True]": "list[Any]", "bool": "list[Any] | int"}
    implementation = inspect.signature(pk.bulk_insert)
    for params, _returns in overloads:
        assert set(params) == {n for n, p in implementation.parameters.items() if p.annotation is not p.empty}


def test_cached_query_return_type_follows_how_it_is_used() -> None:
    """@cached_query bare returns the function's type; @cached_query(...) returns a decorator."""
    overloads = _overloads(builders, "cached_query")
    assert [(params["fn"], returns) for params, returns in overloads] == [
        ("F", "F"),
        ("None", "Callable[[F], F]"),
    ]


def test_progress_shape_and_batch_default_are_shared() -> None:
    """Every batch operation takes progress= and batch_size=None; rotate_keys documents the same shape."""
    for fn in (pk.bulk_insert, pk.bulk_update, pk.bulk_upsert, rotation.rotate_keys):
        parameters = inspect.signature(fn).parameters
        assert parameters["batch_size"].default is None
        assert parameters["batch_size"].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters["progress"].default is None
        assert "progress(done, total)" in " ".join((fn.__doc__ or "").split())
    assert inspect.signature(pk.bulk_delete).parameters["batch_size"].default is None


def test_progress_gets_done_and_total(db: Database) -> None:
    """bulk_* call progress(done, total) after each batch: the shape rotate_keys uses too."""

    class Note(db.Entity):
        text = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    seen: list[tuple[str, int, int | None]] = []
    with db_session:
        rows = [{"text": f"n{i}"} for i in range(25)]
        pk.bulk_insert(
            Note, rows, batch_size=10, progress=lambda done, total: seen.append(("i", done, total))
        )
        ids = sorted(n.id for n in Note.select())
        updates = ({"id": i, "text": "x"} for i in ids)
        pk.bulk_update(
            Note, updates, batch_size=20, progress=lambda done, total: seen.append(("u", done, total))
        )
    assert seen == [("i", 10, 25), ("i", 20, 25), ("i", 25, 25), ("u", 20, None), ("u", 25, None)]
