"""The Queries section of ponykit._pony: query shape, raw filters, culprit detection, materialization."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pony.orm import Database, LongStr, Optional, Required, Set, db_session, desc, select

import ponykit as pk
from ponykit import _pony


@pytest.fixture
def m(db: Database) -> Any:
    class BookItem(db.Entity):
        title = Required(str)
        year = Optional(int)
        notes = Optional(LongStr)
        shelf = Optional("Shelf")
        labels = Set("Label")

    class Shelf(db.Entity):
        books = Set(BookItem)

    class Label(db.Entity):
        books = Set(BookItem)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        s = Shelf()
        for i in range(4):
            BookItem(title=f"t{i}", year=i % 2 or None, shelf=s, notes="n")
    return db, BookItem, Shelf, Label


def test_query_shape(m: Any) -> None:
    """query_entity, query_alias and query_order read the entity, alias and ORDER BY of a query."""
    _, book, _, _ = m
    with db_session:
        q = select(b for b in book).order_by(desc(book.year), book.title)
        assert _pony.query_entity(q) is book
        assert _pony.query_alias(q) == "b"
        assert _pony.query_alias(book.select()) == "bi"
        assert _pony.query_order(q) == [(book.year, True), (book.title, False)]
        assert _pony.query_order(book.select()) == []
        assert _pony.query_order(q.order_by(lambda b: b.year + 1)) is None
        assert _pony.query_entity(select(b.title for b in book)) is None
        assert _pony.order_item(desc(book.year)) == (book.year, True)
        assert _pony.desc_of(book.year) is _pony.desc_of(book.year)
        again = q.order_by(None).order_by(_pony.desc_of(book.year))
        assert _pony.query_key(again) == _pony.query_key(q.order_by(None).order_by(_pony.desc_of(book.year)))
        assert _pony.order_item("year") is None
        assert _pony.is_query(q)


def test_filter_raw_binds_parameters(m: Any) -> None:
    """filter_raw binds $v[i] values as parameters and filters correctly."""
    db, book, _, _ = m
    year, title = _pony.quote_name(db, "year"), _pony.quote_name(db, "title")
    with db_session:
        q = _pony.filter_raw(
            book.select(),
            f'"bi".{year} = $v[0] AND "bi".{title} <> $v[1]'.replace('"bi"', _pony.quote_name(db, "bi")),
            [1, "t1"],
        )
        assert [b.title for b in q.order_by(book.id)] == ["t3"]
        assert "t3" not in q.get_sql()


def test_count_capped(m: Any) -> None:
    """count_capped counts at most cap rows."""
    _, book, _, _ = m
    with db_session:
        assert _pony.count_capped(book.select(), 2) == 2
        assert _pony.count_capped(book.select(), 10) == 4


def test_n_plus_one_culprit(m: Any) -> None:
    """Lazy column loads, foreign-key loads and link-table loads are traced to their attribute."""
    db, *_ = m
    q = '"' if db.provider_name != "mysql" else "`"
    assert _pony.n_plus_one_culprit(db, f"SELECT {q}notes{q} FROM {q}BookItem{q} WHERE {q}id{q} = ?") == (
        "BookItem",
        "notes",
    )
    tbl = "BookItem" if db.provider_name == "sqlite" else "bookitem"
    assert _pony.n_plus_one_culprit(db, f'SELECT * FROM "{tbl}" "b" WHERE "b"."shelf" = ?') == (
        "Shelf",
        "books",
    )
    link = "BookItem_Label" if db.provider_name == "sqlite" else "bookitem_label"
    assert _pony.n_plus_one_culprit(db, f'SELECT "label" FROM "{link}" WHERE "bookitem" = ?') == (
        "BookItem",
        "labels",
    )
    assert _pony.n_plus_one_culprit(db, "SELECT 1") == (None, None)


def test_relation_kind(m: Any) -> None:
    """relation_kind classifies to-one, one-to-many, many-to-many, lazy and plain attributes."""
    _, book, shelf, _ = m
    assert _pony.relation_kind(book.shelf) == "to_one"
    assert _pony.relation_kind(shelf.books) == "one_to_many"
    assert _pony.relation_kind(book.labels) == "many_to_many"
    assert _pony.relation_kind(book.notes) == "lazy"
    assert _pony.relation_kind(book.title) is None


def test_materialized_objects_behave_like_pony_loaded_ones(m: Any) -> None:
    """Objects built by load_by_pk equal Pony's, update reverse collections, and save changes."""
    _, book, shelf, _ = m
    with db_session:
        expected = {b.id: (b.title, b.year, b.shelf.id) for b in book.select()}
    with db_session:
        seeds = [book._get_by_raw_pkval_((i,)) for i in expected]
        assert all(_pony.is_seed(s) for s in seeds)
        loaded = _pony.load_by_pk(book, seeds)
        assert not any(_pony.is_seed(s) for s in seeds)
        assert {b.id: (b.title, b.year, b.shelf.id) for b in loaded} == expected
        assert _pony.loaded_value(loaded[0], book.notes) is _pony.not_loaded()
        _pony.load_lazy(book.notes, loaded)
        assert _pony.loaded_value(loaded[0], book.notes) == "n"
        loaded[0].year = 42
        assert select(b for b in book if b.year == 42).count() == 1
        the_shelf = loaded[0].shelf
        assert len(the_shelf.books) == 4
    with db_session:
        assert book[loaded[0].id].year == 42
        assert shelf[the_shelf.id].books.count() == 4


def test_fetch_entities_matches_pony_fetch(m: Any) -> None:
    """fetch_entities returns the same objects as query[:limit], and falls back for prefetch queries."""
    _, book, _, _ = m
    with db_session:
        q = select(b for b in book).order_by(desc(book.id))
        assert _pony.fetch_entities(q, 3) == list(q[:3])
        assert _pony.fetch_entities(q.prefetch(book.notes), 2) == list(q[:2])
    with db_session:
        fresh = _pony.fetch_entities(select(b for b in book).order_by(book.id), 2)
        assert [b.title for b in fresh] == ["t0", "t1"]
        fresh[0].title = "changed"
    with db_session:
        assert book.select().order_by(book.id).first().title == "changed"


def _statements(run: Any) -> tuple[Any, list[tuple[str, Any]]]:
    from ponykit.diagnostics import count_queries

    with count_queries() as counter:
        result = run()
    return result, [_positional(s.sql, s.params) for s in counter.statements]


def _positional(sql: str, params: Any) -> tuple[str, Any]:
    """A statement with named ``%(pN)s`` placeholders (Pony on PostgreSQL) as ``%s`` and a tuple, the
    form prepared statements send; positional statements as they are."""
    if not isinstance(params, dict):
        return sql, tuple(params or ())
    names: list[str] = []

    def positional(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return match.group(0)
        names.append(match.group(1))
        return "%s"

    return re.sub(r"%%|%\((\w+)\)s", positional, sql), tuple(params[name] for name in names)


def test_prepared_query_binds_what_pony_binds(m: Any) -> None:
    """A prepared query run with new values sends the SQL and arguments Pony builds for them.

    The raw filter names its values out of text order (``$v[1]`` first) and the base query has an
    external variable of its own, used twice, so both kinds of binding are checked; a '%' in a
    literal checks that placeholders are told from escaped percent signs.
    """
    db, book, _, _ = m
    q = _pony.quote_name
    alias = q(db, "b")
    raw = f"{alias}.{q(db, 'id')} >= $v[1] AND {alias}.{q(db, 'title')} <> $v[0]"

    def base(lowest: int) -> Any:
        return select(b for b in book if b.id >= lowest and b.id + lowest >= 0 and "%(p1)s" not in b.title)

    with db_session:
        first = base(0)
        full = _pony.filter_raw(first, raw, ["t0", 1]).order_by(book.id)
        prepared = _pony.prepare(full, first, 3, raw)
        assert prepared is not None
        for lowest, values in [(0, ["t0", 1]), (2, ["t3", 0]), (1, ["zz", 3]), (5, ["t1", 0])]:
            pony_query = _pony.filter_raw(base(lowest), raw, values).order_by(book.id)
            expected, pony_sql = _statements(lambda q=pony_query: _pony.fetch_entities(q, 3))
            got, ours = _statements(lambda lo=lowest, v=values: _pony.run_prepared(prepared, base(lo), v))
            assert got == expected
            assert ours == pony_sql


def test_prepare_refuses_what_it_cannot_rebind(m: Any) -> None:
    """for_update, prefetch and key-only (aggregated) queries are not prepared; fetch_entities falls back."""
    from pony.orm import count

    _, book, shelf, _ = m
    with db_session:
        q = select(b for b in book).order_by(book.id)
        assert _pony.prepare(q.for_update(), q, 2) is None
        assert _pony.prepare(q.prefetch(book.notes), q, 2) is None
        busy = select(s for s in shelf if count(s.books) > 1)
        assert _pony.prepare(busy, busy, 2) is None
        assert _pony.fetch_entities(busy, 2) == list(busy[:2])


def test_fetch_entities_marks_what_pony_marks_as_read(m: Any) -> None:
    """Objects fetched by ponykit carry the read bits Pony's own fetch gives them (optimistic checks)."""
    _, book, _, _ = m

    def state(objs: list[Any]) -> list[tuple[Any, int, int]]:
        return [(o._pkval_, o._rbits_, o._wbits_) for o in objs]

    with db_session:
        expected = state(list(select(b for b in book if b.year == 1).order_by(book.title)[:10]))
    with db_session:
        got = state(_pony.fetch_entities(select(b for b in book if b.year == 1).order_by(book.title), 10))
    assert got == expected
    assert any(rbits for _, rbits, _ in got)


def test_implicit_and_lost_distinct(m: Any) -> None:
    """implicit_distinct: Pony adds DISTINCT only while unordered; lost_distinct: ordered, it has none."""
    _db, book, _shelf, _label = m
    with db_session:
        over_collection = select(b for b in book for label in b.labels)
        plain = select(b for b in book)
        assert "DISTINCT" in over_collection.get_sql()
        assert _pony.implicit_distinct(over_collection) and not _pony.lost_distinct(over_collection)
        ordered = over_collection.order_by(book.title)
        assert "DISTINCT" not in ordered.get_sql()
        assert _pony.implicit_distinct(ordered) and _pony.lost_distinct(ordered)
        assert not _pony.implicit_distinct(ordered.distinct())
        assert "DISTINCT" in ordered.distinct().get_sql()
        assert not _pony.implicit_distinct(plain) and not _pony.lost_distinct(plain.order_by(book.title))


def test_order_in_select(m: Any) -> None:
    """order_in_select: entity queries ordered by own non-lazy attributes, other queries ordered by
    column numbers or selected expressions."""
    _db, book, _shelf, _label = m
    with db_session:
        books = select(b for b in book for label in b.labels)
        assert _pony.order_in_select(books.order_by(book.title, desc(book.year)))
        assert not _pony.order_in_select(books.order_by(book.notes))
        assert not _pony.order_in_select(books.order_by(lambda: label.id))  # noqa: F821
        titles = select(b.title for b in book)
        assert _pony.order_in_select(titles.order_by(1)) and _pony.order_in_select(titles.order_by(-1))
        assert _pony.order_in_select(titles.order_by(lambda: desc(b.title)))  # noqa: F821
        assert not _pony.order_in_select(titles.order_by(lambda: b.year))  # noqa: F821


def test_attr_is_lazy(m: Any) -> None:
    """LongStr attributes are lazy, plain ones are not."""
    _db, book, _shelf, _label = m
    assert _pony.attr_is_lazy(book.notes)
    assert not _pony.attr_is_lazy(book.title)


def test_attr_column_and_expectation(m: Any) -> None:
    """The one column of an attribute, and its label and type name for error messages."""
    _db, book, _shelf, _label = m
    assert _pony.attr_column(book.title) == "title"
    assert _pony.attr_expectation(book.title) == (f"{book.__name__}.title", "str")


def test_query_arguments_are_what_pony_binds(m: Any) -> None:
    """query_arguments gives Pony's own arguments, through a prepared binder or through Pony."""
    _db, book, _shelf, _label = m
    with db_session:
        for low, title in ((0, "t1"), (1, "t3")):
            query = select(b for b in book if b.year >= low and b.title != title)
            _sql, arguments, _offsets, _key = query._construct_sql_and_arguments()
            if isinstance(arguments, dict):  # PostgreSQL: named placeholders p1, p2...
                arguments = tuple(arguments[k] for k in sorted(arguments))
            pony = tuple(arguments)
            prepared = _pony.prepare(query, query, 1)
            assert prepared is not None
            assert _pony.query_arguments(query, prepared) == tuple(pony)
            assert _pony.query_arguments(query) == tuple(pony)
        assert _pony.query_arguments(select(b for b in book)) == ()


def test_column_value_check(m: Any, backend: Any) -> None:
    """column_value_check accepts the column values column_value gives and refuses other types."""
    db, book, _shelf, _label = m
    dialect = _pony.dialect(db)
    title, year, pk_id = (_pony.column_value_check(a, dialect) for a in (book.title, book.year, book.id))
    with db_session:
        for b in book.select():
            assert title(_pony.column_value(book.title, b.title))
            assert year(_pony.column_value(book.year, b.year))
            assert pk_id(b.id)
    assert year(None) and not title(None) and not pk_id(None)
    assert not pk_id(True) and not pk_id(1.0) and not pk_id("1") and not pk_id(2**63)
    # A plain int is a 32-bit column, except on SQLite whose INTEGER always holds 64 bits.
    assert pk_id(2**31 - 1) and pk_id(-(2**31))
    assert pk_id(2**31) == pk_id(2**63 - 1) == pk_id(-(2**63)) == (dialect == "sqlite")
    assert not title(1) and not title(b"x") and title("")
    assert title("a\x00b") == (dialect != "postgres")


def test_escaped_dollars_reach_sql_as_text(m: Any) -> None:
    """Text passed through escape_dollars goes through Pony's raw-SQL parser unevaluated: ``$(...)``
    runs no code and reaches the SQL as written, next to real ``$v[i]`` parameters."""
    import sys

    from ponykit._sql import escape_dollars

    db, book, _shelf, _label = m
    title = f"{_pony.quote_name(db, 'b')}.{_pony.quote_name(db, 'title')}"
    sys.modules.pop("pk_pwn_raw", None)
    literal = '\'$(__import__("sys").modules.setdefault("pk_pwn_raw", 1))\''
    with db_session:
        query = select(b for b in book)
        sql = f"{title} <> {escape_dollars(literal)} AND {title} <> $v[0]"
        assert sorted(b.title for b in _pony.filter_raw(query, sql, ["t1"])) == ["t0", "t2", "t3"]
    assert "pk_pwn_raw" not in sys.modules
    assert escape_dollars("a$b$$c") == "a$$b$$$$c"
