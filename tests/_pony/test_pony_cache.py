"""The cache section of ponykit._pony: query SQL, uncached runs, plain rows and the lean entity rebuild."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pony.orm import (
    Database,
    Json,
    Optional,
    PrimaryKey,
    Required,
    Set,
    composite_key,
    db_session,
    rollback,
    select,
)

import ponykit as pk
from ponykit import _pony


@pytest.fixture
def schema(db: Database) -> tuple[Database, Any, Any, Any]:
    class Author(db.Entity):
        name = Required(str, unique=True)
        books = Set("Book")

    class Book(db.Entity):
        title = Required(str)
        price = Optional(Decimal, precision=8, scale=2)
        author = Optional(Author)
        data = Optional(Json)
        code = Optional(str)
        edition = Optional(int)
        composite_key(code, edition)

    class Pair(db.Entity):
        a = Required(int)
        b = Required(int)
        PrimaryKey(a, b)
        note = Optional(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        ann = Author(name="ann")
        for i in range(3):
            Book(
                title=f"t{i}",
                price=Decimal("2.50"),
                author=ann if i else None,
                data={"i": [i]},
                code="c",
                edition=i,
            )
        Pair(a=1, b=2, note="x")
    return db, Author, Book, Pair


def snapshot(obj: Any) -> dict[str, Any]:
    """The identity-map state of one object, by attribute name."""
    cache = obj._session_cache_
    return {
        "vals": {a.name: _plain(v) for a, v in obj._vals_.items()},
        "dbvals": {a.name: _plain(v) for a, v in obj._dbvals_.items()},
        "rbits": obj._rbits_,
        "wbits": obj._wbits_,
        "status": obj._status_,
        "in_pk_index": cache.indexes[obj._pk_attrs_].get(obj._pkval_) is obj,
        "seed": obj in cache.seeds[obj._pk_attrs_],
    }


def _plain(value: Any) -> Any:
    return ("E", value._pkval_) if hasattr(value, "_pkval_") else value


def test_query_source_and_sql(schema: Any) -> None:
    """query_source accepts queries and lazy slices; query_sql gives Pony's SQL and arguments."""
    _db, _author, book, _pair = schema
    with db_session:
        year = 1
        q = select(b for b in book if b.edition >= year)
        assert _pony.query_source(q) == (q, None, None)
        source = _pony.query_source(q.page(2, 5))
        assert source is not None
        assert source[1:] == (5, 5)
        assert _pony.query_source(q[:2]) is None
        info = _pony.query_sql(q)
        assert info.entity is book
        assert info.cacheable
        assert "SELECT" in info.sql.upper()
        assert list(info.arguments.values() if isinstance(info.arguments, dict) else info.arguments) == [1]
        assert not _pony.query_sql(q.for_update()).cacheable


def test_rebuilt_entities_match_pony_state(schema: Any) -> None:
    """Objects rebuilt from plain rows have the identity-map state Pony's own fetch gives them."""
    _db, _author, book, pair = schema
    for entity in (book, pair):
        with db_session:
            q = _pony.query_sql(entity.select())
            objects = _pony.run_query_uncached(q)
            rows = _pony.entity_rows(q, objects)
            expected = {o._pkval_: snapshot(o) for o in objects}
        with db_session:
            q = _pony.query_sql(entity.select())
            rebuilt = _pony.rebuild_entities(q, rows)
            got = {o._pkval_: snapshot(o) for o in rebuilt}
            if entity is book:  # the related Author objects are seeds, as Pony leaves them
                assert all(b.author is None or b.author._status_ == "loaded" for b in rebuilt)
        assert got == expected


def test_rebuilt_entities_fill_unique_indexes(schema: Any) -> None:
    """Unique and composite keys of rebuilt objects resolve from the identity map, without SQL."""
    _db, author, book, _pair = schema
    with db_session:
        q = _pony.query_sql(book.select())
        rows = _pony.entity_rows(q, _pony.run_query_uncached(q))
        qa = _pony.query_sql(author.select())
        arows = _pony.entity_rows(qa, _pony.run_query_uncached(qa))
    with db_session:
        books = _pony.rebuild_entities(_pony.query_sql(book.select()), rows)
        authors = _pony.rebuild_entities(_pony.query_sql(author.select()), arows)
        cache = _pony.session_cache(book._database_)
        assert cache is not None
        books.sort(key=lambda b: b.id)
        assert author.get(name="ann") is authors[0]
        composite = next(k for k in cache.indexes if isinstance(k, tuple) and len(k) == 2)
        assert cache.indexes[composite][("c", 1)] is books[1]
        assert books[1].author is authors[0]
        assert books[1].data == {"i": [1]}
        books[1].data["i"].append(5)  # tracked Json, as Pony gives it
        assert books[1]._status_ == "modified"
        rollback()  # MariaDB cannot run Pony's optimistic check on a Json column (CAST AS JSON)


def test_rebuild_updates_existing_objects(schema: Any) -> None:
    """An object already in the session is updated through Pony's own path (loaded attributes kept)."""
    _db, _author, book, _pair = schema
    with db_session:
        q = _pony.query_sql(book.select())
        rows = _pony.entity_rows(q, _pony.run_query_uncached(q))
    with db_session:
        first = book[1]
        rebuilt = _pony.rebuild_entities(_pony.query_sql(book.select()), rows)
        assert rebuilt[0] is first
        assert first.title == "t0"


def test_unflushed_and_snapshot_and_flush_state(schema: Any) -> None:
    """unflushed_entities names pending changes; in_flush is False outside Pony's flush."""
    db, author, book, _pair = schema
    with db_session:
        assert _pony.unflushed_entities(db) == set()
        book[1].title = "x"
        assert _pony.unflushed_entities(db) == {"Book"}
        author[1].books.add(book[1])
        assert "Author" in _pony.unflushed_entities(db)
        assert not _pony.in_flush(db)
        db.flush()
        assert _pony.unflushed_entities(db) == set()


def test_server_identity_and_tables_map(schema: Any, backend: Any) -> None:
    """The server identity names the database (and schema) without client options or secrets; the table
    map and the mapping signature describe the mapping in plain strings."""
    db, author, book, _pair = schema
    identity = _pony.server_identity(db)
    assert identity[0] == _pony.dialect(db)
    assert all(isinstance(part, str) for part in identity)
    if backend.name == "postgres":  # the test's schema comes from search_path in the URL's options
        assert identity[2] == backend.url.rsplit("%3D", 1)[1]
    elif backend.name == "mysql":
        assert identity == ("mysql", backend.url.rsplit("/", 1)[1])
    else:
        assert identity[1].endswith("test.db")
    assert "password" not in repr(identity).lower()
    tables = _pony.table_entities(db)
    assert tables[str(book._table_).lower()] == frozenset({book})
    assert author in tables[str(author._table_).lower()]
    sig = _pony.mapping_signature(db)
    assert any(entry[0] == "Book" for entry in sig)
    assert "0x" not in repr(sig)  # no reprs with addresses: the same in every process
