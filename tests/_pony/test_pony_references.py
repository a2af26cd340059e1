"""The references section of the Pony door (ponykit._pony.references): relation values inlined in the
compiled row encoders, and what a refused write statement says (``driver_failure``), on every backend."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Optional, PrimaryKey, Required, Set, db_session

import ponykit as pk
from ponykit import _pony
from ponykit.bulk._rows import plan_for


@pytest.fixture
def model(db: Database) -> tuple[Any, Any, Any]:
    class Author(db.Entity):
        name = Optional(str)
        books = Set("Book")

    class Series(db.Entity):
        code = Required(int)
        part = Required(int)
        PrimaryKey(code, part)
        books = Set("Book")

    class Book(db.Entity):
        author = Required(Author)
        series = Optional(Series)
        isbn = Optional(str, unique=True, nullable=True)
        price = Optional(Decimal, precision=5, scale=2)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Author(id=1)
        Series(code=1, part=1)
    return Author, Series, Book


def _outcome(fn: Any, value: Any) -> Any:
    try:
        return ("ok", fn(value))
    except Exception as exc:
        return ("raises", type(exc))


_VALUES = st.one_of(
    st.none(),
    st.integers(-(2**40), 2**40),
    st.text(max_size=3),
    st.floats(allow_nan=False),
    st.booleans(),
    st.tuples(st.integers(-3, 3), st.integers(-3, 3)),
    st.tuples(st.integers(-3, 3)),
    st.tuples(st.text(max_size=2), st.integers(-3, 3)),
    st.sampled_from(["object-author", "object-series", "missing"]),
)


@given(value=_VALUES)
def test_inline_relation_encoder_matches_the_full_one(model: tuple[Any, Any, Any], value: Any) -> None:
    """For any value (or none given), the compiled encoder (the inline relation path) gives what the full
    encoder gives, or raises the same type of error."""
    author, series, book = model
    plan = plan_for(book)
    encode = plan.shape(("author", "series")).encode
    with db_session:
        if value == "object-author":
            value = author[1]
        elif value == "object-series":
            value = series[(1, 1)]
        if value == "missing":
            value = _pony.DEFAULT
        for name, other in (("author", ("series", (1, 1))), ("series", ("author", 1))):
            row = {name: value, other[0]: other[1]}
            if value is _pony.DEFAULT:
                del row[name]
            full = plan.encoders[name]
            position = 0 if name == "author" else slice(1, 3)

            def inline(v: Any, row: dict[str, Any] = row, position: Any = position) -> Any:
                out = encode(row)[position]
                return out if not isinstance(out, tuple) else tuple(out)

            expected = _outcome(full, value)
            got = _outcome(inline, value)
            if expected[0] == "ok" and isinstance(expected[1], tuple):
                expected = ("ok", tuple(expected[1]))
            assert got == expected, (name, value)


def test_relation_source_needs_the_setup_line(model: tuple[Any, Any, Any]) -> None:
    _author, _series, book = model
    code, _env = _pony.bulk_encoder_source(book, _pony.find_attribute(book, "author"), "v", "a_")
    setup, env = _pony.bulk_encoder_setup(book, _pony.find_attribute(book, "author"), "a_")
    assert any("a_cache" in line for line in code) and setup == ["a_cache = a_get_cache()"]
    assert callable(env["a_get_cache"])
    assert _pony.bulk_encoder_setup(book, _pony.find_attribute(book, "isbn"), "a_") == ([], {})


def test_reference_of(model: tuple[Any, Any, Any]) -> None:
    author, series, book = model
    ref = _pony.reference_of(_pony.find_attribute(book, "series"))
    assert (ref.entity, ref.name, ref.pk_attrs) == (series, "Series", ("code", "part"))
    assert _pony.reference_of(_pony.find_attribute(book, "author")).entity is author


def _failure(db: Database, sql: str) -> Any:
    with db_session:
        try:
            _pony.execute_in_session(db, sql, ())
        except Exception as exc:
            return _pony.driver_failure(exc)
    raise AssertionError(f"{sql} did not fail")


def test_driver_failure(model: tuple[Any, Any, Any], db: Database, backend_name: str) -> None:
    """Foreign-key and unique violations are told apart on every backend, with the column where the
    server names it; anything but a database's refusal gives None."""
    _author, _series, book = model
    q = _pony.quote_name
    table = q(db, _pony.entity_info(book).table)
    fk = _failure(db, f"INSERT INTO {table} ({q(db, 'author')}) VALUES (999)")
    assert fk is not None and fk.kind == "foreign_key" and fk.line is None
    with db_session:
        _pony.execute_in_session(
            db, f"INSERT INTO {table} ({q(db, 'author')}, {q(db, 'isbn')}) VALUES (1, 'x')", ()
        )
    dup = _failure(db, f"INSERT INTO {table} ({q(db, 'author')}, {q(db, 'isbn')}) VALUES (1, 'x')")
    assert dup is not None and dup.kind == "unique"
    if backend_name != "mysql":
        assert dup.column == "isbn"
    if backend_name == "postgres":
        assert fk.column == "author"
    assert _pony.driver_failure(ValueError("not a database error")) is None
