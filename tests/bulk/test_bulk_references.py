"""Relation columns in bulk writes and errors named by their input row (issue #22 items 3 and 4), on every
backend.

* A to-one relation takes a key, a composite key (tuple) or an object per row, written as Pony's
  ``Entity(**row)`` writes it (hypothesis oracle against plain Pony, compared as table dumps); an object
  of another entity or a key of the wrong type raises BulkWriteError naming the row and the attribute.
* ``check_references=True`` finds a reference to a missing row before its batch is written; without it
  the database's foreign key refuses the row (Pony enables SQLite's ``PRAGMA foreign_keys``), and that
  error is raised as a BulkWriteError naming the same row, the driver's error as its cause.
* Every row the database refuses names its index in the whole input (not the batch): a duplicate key,
  and on PostgreSQL a value refused inside COPY (its ``COPY t, line N`` context).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Optional, PrimaryKey, Required, Set, db_session, flush, select
from pony.orm.dbapiprovider import IntegrityError

import ponykit as pk

AUTHORS = 5


class Model:
    """Authors, composite-key Series, Books pointing to both, and Twin: Book's plain-Pony twin (oracle)."""

    def __init__(self, db: Database) -> None:
        class Author(db.Entity):
            name = Required(str)
            books = Set("Book")
            twins = Set("Twin")

        class Series(db.Entity):
            code = Required(int)
            part = Required(int)
            PrimaryKey(code, part)
            books = Set("Book")
            twins = Set("Twin")

        class Book(db.Entity):
            title = Required(str)
            author = Required(Author)
            series = Optional(Series)
            isbn = Optional(str, unique=True, nullable=True)

        class Twin(db.Entity):
            title = Required(str)
            author = Required(Author)
            series = Optional(Series)
            isbn = Optional(str, unique=True, nullable=True)

        self.Author, self.Series, self.Book, self.Twin = Author, Series, Book, Twin
        pk.attach(db)
        db.generate_mapping(create_tables=True)
        with db_session:
            for i in range(AUTHORS):
                Author(id=i + 1, name=f"author {i}")
                Series(code=i, part=1)

    def dump(self, entity: Any) -> list[tuple[Any, ...]]:
        """The rows of ``entity``'s table in id order, as (title, author id, series key, isbn)."""
        with db_session:
            return [
                (b.title, b.author.id, (b.series.code, b.series.part) if b.series else None, b.isbn)
                for b in entity.select().order_by(entity.id)
            ]


def _rows(n: int, bad: int | None = None, key: Any = 999_999) -> list[dict[str, Any]]:
    rows = [{"title": f"t{i}", "author": i % AUTHORS + 1} for i in range(n)]
    if bad is not None:
        rows[bad]["author"] = key
    return rows


# ---------------------------------------------------------------------------------------------------------
# Values


def test_key_object_and_composite_key(db: Database) -> None:
    """One row each way: a key, an object, a composite key, a Series object, None for the Optional."""
    m = Model(db)
    with db_session:
        ann, series = m.Author[1], m.Series[(2, 1)]
        rows = [
            {"title": "key", "author": 2, "series": (1, 1)},
            {"title": "object", "author": ann, "series": series},
            {"title": "none", "author": 3, "series": None},
            {"title": "missing", "author": 4},
        ]
        assert pk.bulk_insert(m.Book, rows) == 4
        assert [b.title for b in ann.books] == ["object"]  # the loaded side sees the new row
    assert m.dump(m.Book) == [
        ("key", 2, (1, 1), None),
        ("object", 1, (2, 1), None),
        ("none", 3, None, None),
        ("missing", 4, None, None),
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("author", "abc"),  # not convertible to the key's type
        ("author", 2**40),  # beyond the key column's range
        ("author", 1.5),
        ("author", None),  # Required
        ("series", (1,)),  # a composite key with a part missing
        ("series", ("x", 1)),
    ],
)
def test_bad_keys_name_row_and_attribute(db: Database, name: str, value: Any) -> None:
    m = Model(db)
    rows = _rows(25)
    rows[17][name] = value
    with db_session, pytest.raises(pk.BulkWriteError) as info:
        pk.bulk_insert(m.Book, rows, batch_size=10)
    assert (info.value.row_index, info.value.attribute) == (17, name)
    assert m.dump(m.Book) == []


def test_object_of_another_entity_names_row_and_attribute(db: Database) -> None:
    m = Model(db)
    with db_session:
        rows = _rows(25)
        rows[17]["author"] = m.Series[(1, 1)]
        with pytest.raises(pk.BulkWriteError) as info:
            pk.bulk_insert(m.Book, rows, batch_size=10)
        assert (info.value.row_index, info.value.attribute) == (17, "author")
        assert "Author" in str(info.value)
        with pytest.raises(pk.BulkWriteError) as info:
            pk.bulk_update(m.Book, [{"id": 1, "series": m.Author[2]}])
        assert info.value.attribute == "series"


def test_object_of_another_session_is_refused_as_pony_does(db: Database) -> None:
    m = Model(db)
    with db_session:
        old = m.Author[1]
    with db_session, pytest.raises(pk.BulkWriteError) as info:
        pk.bulk_insert(m.Book, [{"title": "a", "author": 1}, {"title": "b", "author": old}])
    assert (info.value.row_index, info.value.attribute) == (1, "author")
    assert "different transactions" in str(info.value)


_ROW = st.fixed_dictionaries(
    {
        "title": st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8),
        "author": st.one_of(
            st.integers(1, AUTHORS),
            st.integers(1, AUTHORS).map(lambda k: ("object", k)),
        ),
    },
    optional={
        "series": st.one_of(
            st.none(),
            st.integers(0, AUTHORS - 1).map(lambda c: (c, 1)),
            st.integers(0, AUTHORS - 1).map(lambda c: ("object", (c, 1))),
        ),
    },
)


@given(rows=st.lists(_ROW, max_size=12))
def test_oracle_against_pony(db_oracle: Model, rows: list[dict[str, Any]]) -> None:
    """Rows with relation values (keys, composite keys, objects, None, missing) bulk_insert writes exactly
    what Pony's ``Twin(**row)`` writes for the same rows."""
    m = db_oracle

    def resolved(row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        for name, entity in (("author", m.Author), ("series", m.Series)):
            value = out.get(name)
            if isinstance(value, tuple) and value[0] == "object":
                out[name] = entity[value[1]]
        return out

    with db_session:
        m.Book.select().delete(bulk=True)
        m.Twin.select().delete(bulk=True)
    with db_session:
        pk.bulk_insert(m.Book, [resolved(r) for r in rows], batch_size=5)
    with db_session:
        for row in rows:
            m.Twin(**resolved(row))
    assert [r[:3] for r in m.dump(m.Book)] == [r[:3] for r in m.dump(m.Twin)]


@pytest.fixture
def db_oracle(db: Database) -> Model:
    return Model(db)


# ---------------------------------------------------------------------------------------------------------
# References to missing rows


@pytest.mark.parametrize("op", ["insert", "update", "upsert"])
@pytest.mark.parametrize("check", [True, False])
def test_missing_reference_in_batch_two_names_the_row(db: Database, op: str, check: bool) -> None:
    """Row 13 (the fourth of batch 2) refers to a missing Author: BulkWriteError names row 13 and
    ``author``, with check_references before the batch is written, without it from the foreign key's
    refusal (its error as the cause); nothing of the call is written either way."""
    m = Model(db)
    if op != "insert":
        with db_session:
            pk.bulk_insert(m.Book, [{"title": f"old{i}", "author": 1} for i in range(25)])
    before = m.dump(m.Book)
    rows = _rows(25, bad=13)
    if op == "update":
        rows = [{"id": i + 1, "author": r["author"]} for i, r in enumerate(rows)]
    elif op == "upsert":
        rows = [{"id": i + 1, **r} for i, r in enumerate(rows)]
    call = {
        "insert": lambda: pk.bulk_insert(m.Book, rows, batch_size=10, check_references=check),
        "update": lambda: pk.bulk_update(m.Book, rows, batch_size=10, check_references=check),
        "upsert": lambda: pk.bulk_upsert(m.Book, rows, conflict="id", batch_size=10, check_references=check),
    }[op]
    with db_session:
        with pytest.raises(pk.BulkWriteError) as info:
            call()
        assert m.Book.select().count() == len(before)
    error = info.value
    assert (error.row_index, error.attribute, error.entity) == (13, "author", "Book")
    assert "Author" in str(error) and "999999" in str(error)
    if check:
        assert error.__cause__ is None and "check_references" in str(error)
    else:
        assert isinstance(error.__cause__, IntegrityError)
    assert m.dump(m.Book) == before


def test_check_references_sends_one_query_per_relation_and_batch(db: Database) -> None:
    m = Model(db)
    rows = [{**r, "series": (i % AUTHORS, 1)} for i, r in enumerate(_rows(25))]
    with db_session, pk.count_queries(db) as plain:  # first: PostgreSQL asks about the table once
        pk.bulk_insert(m.Book, rows, batch_size=10)
    with db_session, pk.count_queries(db) as counter:
        pk.bulk_insert(m.Book, rows, batch_size=10, check_references=True)
    lookups = [s.sql for s in counter.statements if s.sql not in {t.sql for t in plain.statements}]
    assert len([sql for sql in lookups if " IN (" in sql]) == 3 * 2, lookups  # 3 batches, 2 relations
    assert len(m.dump(m.Book)) == 50


def test_missing_sensitive_key_is_not_shown(db: Database) -> None:
    class Person(db.Entity):
        __sensitive__ = ("ssn",)
        ssn = PrimaryKey(str)
        cards = Set("Card")

    class Card(db.Entity):
        owner = Required(Person)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Person(ssn="111-11-1111")
    secret = "999-99-9999"
    for check in (True, False):
        with db_session, pytest.raises(pk.BulkWriteError) as info:
            pk.bulk_insert(Card, [{"owner": "111-11-1111"}, {"owner": secret}], check_references=check)
        assert (info.value.row_index, info.value.attribute) == (1, "owner")
        assert secret not in str(info.value) and info.value.__cause__ is None


# ---------------------------------------------------------------------------------------------------------
# Other rows the database refuses


def test_duplicate_key_names_the_row(db: Database) -> None:
    """A unique key the table already holds (row 17, in batch 2): the row and attribute are named, the
    driver's error chained."""
    m = Model(db)
    with db_session:
        pk.bulk_insert(m.Book, [{"title": "kept", "author": 1, "isbn": "isbn-7"}])
    rows = [{**r, "isbn": f"isbn-{100 + i}"} for i, r in enumerate(_rows(25))]
    rows[17]["isbn"] = "isbn-7"
    with db_session, pytest.raises(pk.BulkWriteError) as info:
        pk.bulk_insert(m.Book, rows, batch_size=10)
    assert (info.value.row_index, info.value.attribute) == (17, "isbn")
    assert isinstance(info.value.__cause__, IntegrityError)
    assert [r[0] for r in m.dump(m.Book)] == ["kept"]


def test_duplicate_key_within_a_batch_names_the_second_row(db: Database) -> None:
    m = Model(db)
    rows = [{**r, "isbn": f"isbn-{i}"} for i, r in enumerate(_rows(25))]
    rows[18]["isbn"] = "isbn-12"
    with db_session, pytest.raises(pk.BulkWriteError) as info:
        pk.bulk_insert(m.Book, rows, batch_size=10)
    assert (info.value.row_index, info.value.attribute) == (18, "isbn")


@pytest.mark.backends("postgres")
def test_copy_failure_names_the_input_row(db: Database) -> None:
    """A value PostgreSQL refuses inside COPY that ponykit does not check (a numeric field overflow) and
    a duplicate of a row of an earlier batch of the call: named by the COPY line, as the input row."""

    class Price(db.Entity):
        label = Required(str, unique=True)
        amount = Required(Decimal, precision=5, scale=2)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    rows = [{"label": f"p{i}", "amount": Decimal("1.50")} for i in range(25)]
    rows[17]["amount"] = Decimal("123456.00")
    with db_session, pk.count_queries(db) as counter:
        with pytest.raises(pk.BulkWriteError) as info:
            pk.bulk_insert(Price, rows, batch_size=10)
        assert any(s.sql.startswith("COPY") for s in counter.statements)  # COPY refused the row
    assert (info.value.row_index, info.value.attribute) == (17, "amount")
    assert "database refused" in str(info.value) and info.value.__cause__ is not None  # not ponykit's check
    rows[17]["amount"] = Decimal("1.00")
    rows[23]["label"] = "p3"  # a duplicate of a row of batch 1
    with db_session, pytest.raises(pk.BulkWriteError) as info:
        pk.bulk_insert(Price, rows, batch_size=10)
    assert (info.value.row_index, info.value.attribute) == (23, "label")
    with db_session:
        assert select(p for p in Price).count() == 0


def test_unfound_row_names_the_rows_of_the_statement(db: Database, backend_name: str) -> None:
    """A duplicate of a row of an earlier batch of the same call: PostgreSQL's COPY names the row, and on
    SQLite, which undoes the failed INSERT alone, the earlier row is still there to be found; MariaDB's
    executemany may have written part of the batch, so the rows are compared after the rollback, when
    the earlier row is gone: the error names the rows of the failed statement instead."""
    m = Model(db)
    rows = [{**r, "isbn": f"isbn-{i}"} for i, r in enumerate(_rows(25))]
    rows[23]["isbn"] = "isbn-3"
    with db_session, pytest.raises(pk.BulkWriteError) as info:
        pk.bulk_insert(m.Book, rows, batch_size=10)
    if backend_name != "mysql":
        assert (info.value.row_index, info.value.attribute) == (23, "isbn")
    else:
        assert info.value.row_index is None
        assert "rows 20 to 24" in str(info.value)
    with db_session:
        flush()
        assert m.Book.select().count() == 0


@pytest.mark.parametrize("op", ["update", "upsert"])
def test_duplicate_key_of_update_and_upsert_names_the_row(db: Database, op: str, backend_name: str) -> None:
    """bulk_update setting a unique key another row holds, bulk_upsert inserting a row whose primary key
    another row (with another conflict key) holds: the row is named. (MariaDB's ON DUPLICATE KEY UPDATE
    turns the latter into an update of that row instead.)"""
    m = Model(db)
    with db_session:
        pk.bulk_insert(m.Book, [{"title": f"b{i}", "author": 1, "isbn": f"isbn-{i}"} for i in range(30)])
    if op == "update":
        rows: list[dict[str, Any]] = [{"id": i + 1, "isbn": f"new-{i}"} for i in range(25)]
        rows[17]["isbn"] = "isbn-28"  # Book 29 holds it, and the call does not change that row
        call = lambda: pk.bulk_update(m.Book, rows, batch_size=10)  # noqa: E731
        expected = (17, "isbn")
    else:
        rows = [{"title": f"n{i}", "author": 1, "isbn": f"new-{i}"} for i in range(25)]
        rows[17]["id"] = 3  # Book 3 has another isbn (the conflict key)
        call = lambda: pk.bulk_upsert(m.Book, rows, conflict="isbn", batch_size=10)  # noqa: E731
        expected = (17, "id")
    before = m.dump(m.Book)
    if op == "upsert" and backend_name == "mysql":
        # MariaDB's rule, documented under bulk_upsert: a clash on any unique key updates that row.
        with db_session:
            result = call()
        assert result.inserted + result.updated == 25
        return
    with db_session, pytest.raises(pk.BulkWriteError) as info:
        call()
    assert (info.value.row_index, info.value.attribute) == expected
    assert m.dump(m.Book) == before


@pytest.mark.backends("postgres", "mysql")
def test_value_refused_outside_copy_names_rows_and_attribute(db: Database, backend_name: str) -> None:
    """A numeric overflow in an INSERT (MariaDB; PostgreSQL's COPY names the row itself): the rows of the
    failed statement and the attribute the database names."""

    class Price(db.Entity):
        label = Required(str)
        amount = Required(Decimal, precision=5, scale=2)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    rows = [{"label": f"p{i}", "amount": Decimal("1.50")} for i in range(25)]
    rows[17]["amount"] = Decimal("123456.00")
    with db_session, pytest.raises(pk.BulkWriteError) as info:
        pk.bulk_insert(Price, rows, batch_size=10)
    assert info.value.attribute == "amount"
    if backend_name == "postgres":
        assert info.value.row_index == 17
    else:
        assert info.value.row_index is None and "input rows 10 to 19" in str(info.value)


def test_key_checks_of_the_entity_referred_to_apply(db: Database) -> None:
    """The key attribute's own py_check runs on a key given for a relation, as in Pony's ``B(a=3)``; an
    object of a subclass of the entity referred to is accepted."""

    class Code(db.Entity):
        id = PrimaryKey(int, py_check=lambda v: v % 2 == 0)
        kind = Optional(str)
        uses = Set("Use")

    class Special(Code):
        note = Optional(str)

    class Use(db.Entity):
        code = Required(Code)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Code(id=2)
        special = Special(id=4)
        with pytest.raises(pk.BulkWriteError) as info:
            pk.bulk_insert(Use, [{"code": 2}, {"code": 3}])
        assert (info.value.row_index, info.value.attribute) == (1, "code") and "Check" in str(info.value)
        assert pk.bulk_insert(Use, [{"code": 2}, {"code": special}]) == 2
        assert sorted(u.code.id for u in Use.select()) == [2, 4]


@pytest.mark.parametrize("check", [True, False])
def test_missing_composite_reference_names_the_row(db: Database, check: bool) -> None:
    m = Model(db)
    rows = [{**r, "series": (i % AUTHORS, 1)} for i, r in enumerate(_rows(25))]
    rows[13]["series"] = (99, 1)
    rows[17]["author"] = 999_999  # a later row of the same batch: the first one is named
    with db_session, pytest.raises(pk.BulkWriteError) as info:
        pk.bulk_insert(m.Book, rows, batch_size=10, check_references=check)
    assert (info.value.row_index, info.value.attribute) == (13, "series")
    assert "Series" in str(info.value) and "(99, 1)" in str(info.value)
    assert m.dump(m.Book) == []
