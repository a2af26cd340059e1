"""Per-object to_dict/to_json: exact bytes, what the attribute shows, and Pony's read tracking.

The default ``obj.to_json()``/``obj.to_dict()`` run a method generated per entity class; these tests pin
its output to the bytes of the general path and of the query fast path, and check the cases that leave
the generated code: attributes not loaded yet, objects changed or deleted in the session, subclasses,
user overrides.
"""

from __future__ import annotations

import inspect
import threading
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import Database, OptimisticCheckError, Optional, Required, commit, db_session, select
from pony.orm.core import Entity as PonyEntity
from pony.orm.core import OperationWithDeletedObjectError
from serialization_models import FULL_BOOK, define
from test_serialization_fast import _insert, book_values

import ponykit as pk
from ponykit.serialization._codec import decimal_expression, value_dumper

# The bytes to_json gave before the per-class methods existed (same on SQLite and PostgreSQL; MariaDB
# stores datetimes without microseconds).
BOOK_1 = (
    b'{"id":1,"title":"Pony \xe2\x9c\x93","price":"12.50","rating":4.25,"pages":320,"in_print":false,'
    b'"published":"2021-03-04","created":"2021-03-04T05:06:07.890123","alarm":"07:30:15","duration":3605,'
    b'"code":"12345678-1234-5678-1234-567812345678","cover":"AP9wb255","meta":{"a":[1,2],"b":null},'
    b'"color":"blue","author":1,"editor":null}'
)
BOOK_2 = (
    b'{"id":2,"title":"Bare","price":"0.00","rating":null,"pages":null,"in_print":true,"published":null,'
    b'"created":null,"alarm":null,"duration":null,"code":null,"cover":null,"meta":{},"color":null,'
    b'"author":1,"editor":null}'
)
AUTHOR_1 = b'{"id":1,"name":"Ann","secret_note":"n"}'
AUTHOR_1_ALL = (
    b'{"id":1,"name":"Ann","email":"ann@example.com","secret_note":"n","bio":"long text","books":[1,2],'
    b'"edited":[],"tags":["t"]}'
)


@pytest.fixture
def m(db: Database) -> Any:
    """The shared models with one author (and a tag), a full book and an empty book."""
    ns = define(db)
    with db_session:
        author = ns.Author(name="Ann", email="ann@example.com", secret_note="n", bio="long text")
        ns.Book(author=author, **FULL_BOOK)
        ns.Book(author=author, title="Bare", price=Decimal(0))
        ns.Tag(name="t", authors=[author])
    return ns


def _on(backend: Any, data: bytes) -> bytes:
    if backend.name == "mysql":
        return data.replace(b"05:06:07.890123", b"05:06:07")
    return data


def test_golden_bytes(m: Any, backend: Any) -> None:
    """to_json gives exactly the bytes it gave before, on the default and the general path alike."""
    with db_session:
        book, bare, author = m.Book[1], m.Book[2], m.Author[1]
        for _ in range(2):  # the first call builds and installs the class's method, the second runs it
            assert book.to_json() == _on(backend, BOOK_1)
            assert bare.to_json() == BOOK_2
            assert author.to_json() == AUTHOR_1
        assert pk.to_json(book) == _on(backend, BOOK_1)
        assert orjson.dumps(book.to_dict()) == _on(backend, BOOK_1)
        assert author.to_json(with_collections=True, with_lazy=True, include_sensitive=True) == AUTHOR_1_ALL
        assert book.to_json(only=["price", "author"]) == b'{"price":"12.50","author":1}'
        assert m.Tag["t"].to_json(with_collections=True) == b'{"name":"t","authors":[1]}'
        assert type(book).to_json.__qualname__ == "Book.to_json"  # the generated method is in use


@settings(max_examples=15)
@given(data=st.data())
def test_per_object_bytes_equal_query_fast_path(m: Any, backend: Any, data: st.DataObject) -> None:
    """Over generated rows, each obj.to_json() is the element the query fast path writes for its row."""
    _insert(m, data.draw(st.lists(book_values(backend.name), min_size=1, max_size=6)))
    with db_session:
        expected = pk.to_json(select(b for b in m.Book).order_by(m.Book.id), fast=True)
    with db_session:
        books = select(b for b in m.Book).order_by(m.Book.id)[:]
        assert b"[" + b",".join(b.to_json() for b in books) + b"]" == expected
        assert orjson.dumps([b.to_dict() for b in books]) == expected


def test_what_the_attribute_shows(m: Any) -> None:
    """Changed values (unsaved, unquantized decimals included) and new objects come out as read."""
    with db_session:
        book = m.Book[2]
        book.to_json()
        book.title = "Changed"
        book.price = Decimal("1.234")  # Pony keeps the value as given; the JSON form is at scale 2
        out = orjson.loads(book.to_json())
        assert (out["title"], out["price"]) == ("Changed", "1.23")
        new = m.Book(author=m.Author[1], title="New", price=Decimal("2.5"))
        assert orjson.loads(new.to_json())["id"] == 3  # the session was flushed: the key is known
        assert new.to_dict()["price"] == "2.50"
        # One new object per value, and only loaded attributes: once the database has rounded an
        # unquantized Decimal, Pony itself fails a second update's optimistic check, or a reload
        # (UnrepeatableReadError), whether the object was serialized or not.
        for value, text in [("5", "5.00"), ("-0", "-0.00"), ("1E+3", "1000.00"), ("0.005", "0.00")]:
            other = m.Book(author=m.Author[1], title="D", price=Decimal(value))
            assert other.to_json(only=["price"]) == f'{{"price":"{text}"}}'.encode()
            assert other.to_dict(only=["title", "price"]) == {"title": "D", "price": text}


def test_unloaded_and_lazy_attributes(m: Any) -> None:
    """An object known only by its key, and lazy attributes, are loaded as attribute access loads them."""
    with db_session:
        author = m.Book[1].author  # a seed: only the key is loaded so far
        assert author.to_json() == AUTHOR_1
    with db_session:
        author = m.Author[1]
        assert author.to_json(with_lazy=True) == b'{"id":1,"name":"Ann","secret_note":"n","bio":"long text"}'
    with db_session:
        assert m.Author[1].to_dict(only=["bio"]) == {"bio": "long text"}


def test_deleted_object_raises_as_pony_does(m: Any) -> None:
    """A deleted object raises Pony's own error, as reading one of its attributes does."""
    with db_session:
        book = m.Book[2]
        book.to_json()
        book.delete()
        with pytest.raises(OperationWithDeletedObjectError):
            book.to_json()
        with pytest.raises(OperationWithDeletedObjectError):
            book.to_dict()


def _item_models(db: Database, serializable: bool) -> Any:
    bases = (db.Entity, pk.Serializable) if serializable else (db.Entity,)
    item = type("Item", bases, {"name": Required(str), "qty": Required(int), "note": Optional(str)})
    if serializable:  # the oracle is plain Pony, without ponykit attached
        pk.attach(db)
    db.generate_mapping(create_tables=True)
    return item


@pytest.mark.parametrize("read", ["pony to_dict", "to_dict", "to_json", "to_json(only)", "pk.to_json"])
def test_reads_are_tracked_as_pony_tracks_them(backend: Any, make_db: Any, read: str) -> None:
    """Oracle vs plain Pony: after a serialization reads a column, an update of the object checks it
    (optimistic concurrency), so a change made meanwhile by another transaction is reported, not lost.
    """
    db = make_db()
    item = _item_models(db, serializable=read != "pony to_dict")
    with db_session:
        item(id=1, name="a", qty=1)
    other = Database()
    pk.bind_url(other, backend.url)  # a second connection to the same database

    def update_elsewhere() -> None:
        with db_session:
            other.execute("UPDATE item SET name = 'changed' WHERE id = 1")

    readers = {
        "pony to_dict": lambda o: PonyEntity.to_dict(o),
        "to_dict": lambda o: o.to_dict(),
        "to_json": lambda o: o.to_json(),
        "to_json(only)": lambda o: o.to_json(only=["name"]),
        "pk.to_json": lambda o: pk.to_json(o),
    }
    try:
        with pytest.raises(OptimisticCheckError), db_session:
            obj = item[1]
            readers[read](obj)
            thread = threading.Thread(target=update_elsewhere)
            thread.start()
            thread.join()
            obj.qty = 2
            commit()
    finally:
        other.disconnect()
    with db_session:
        assert item[1].name == "changed"  # the other transaction's change stands


def test_serialize_then_update(m: Any) -> None:
    """Serializing an object with a Json attribute and then updating it works on every backend (Pony's
    optimistic check of a Json column is a syntax error on MariaDB, so it is not armed there).
    """
    with db_session:
        book = m.Book[1]
        book.to_json()
        book.to_dict(only=["meta", "title"])
        book.title = "Updated"
        commit()
    with db_session:
        assert m.Book[1].to_dict(only=["title", "meta"]) == {
            "title": "Updated",
            "meta": {"a": [1, 2], "b": None},
        }


def test_reads_of_unloaded_attributes_after_insert(m: Any) -> None:
    """An inserted object whose unset attributes Pony dropped serializes, then updates, without error."""
    with db_session:
        values = {k: v for k, v in FULL_BOOK.items() if k not in ("alarm", "rating")}
        book = m.Book(author=m.Author[1], **values)
        assert orjson.loads(book.to_json())["rating"] is None
        book.pages = 7
        commit()
        assert book.to_dict()["pages"] == 7


def test_subclasses_and_overrides(db: Database) -> None:
    """Each class gets its own method; a user's own to_json is kept and can still call the mixin's."""

    class Base(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        name = Required(str)

    class Sub(Base):  # type: ignore[name-defined]
        extra = Optional(int)

    class Own(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        name = Required(str)

        def to_json(self, *args: Any, **kwargs: Any) -> bytes:
            return b"[" + pk.Serializable.to_json(self, *args, **kwargs) + b"]"

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        base, sub, own = Base(name="b"), Sub(name="s", extra=5), Own(name="o")
        assert base.to_json() == b'{"id":1,"name":"b","classtype":"Base"}'
        assert sub.to_json() == b'{"id":2,"name":"s","classtype":"Sub","extra":5}'
        assert Base.to_json(sub) == sub.to_json()  # Base's method hands other classes to theirs
        assert base.to_json() == b'{"id":1,"name":"b","classtype":"Base"}'
        assert own.to_json() == b'[{"id":1,"name":"o"}]'
        assert own.to_json() == b'[{"id":1,"name":"o"}]'
        assert "to_json" in Own.__dict__ and Own.__dict__["to_json"].__qualname__.endswith("Own.to_json")


def test_declaring_sensitive_later_applies_to_cached_plans(m: Any) -> None:
    """A sensitivity declaration made after objects were serialized takes effect at once, in the
    generated methods, in plans cached by options and in nested plans of other entities.
    """
    from ponykit.security import sensitive

    with db_session:
        author, book = m.Author[1], m.Book[1]
        for _ in range(2):
            assert author.to_json() == AUTHOR_1
            assert author.to_dict(exclude=["id"]) == {"name": "Ann", "secret_note": "n"}
            assert book.to_dict(only=["id"], related=["author"])["author"]["name"] == "Ann"
        sensitive(m.Author.name)
        assert author.to_json() == b'{"id":1,"secret_note":"n"}'
        assert author.to_dict() == {"id": 1, "secret_note": "n"}
        assert author.to_dict(exclude=["id"]) == {"secret_note": "n"}
        assert "name" not in book.to_dict(only=["id"], related=["author"])["author"]
        assert "name" not in orjson.loads(pk.to_json(select(a for a in m.Author)))[0]
        assert author.to_dict(only=["name"]) == {"name": "Ann"}  # still there when asked for by name


def test_generated_methods_keep_the_mixin_signature(m: Any) -> None:
    """The generated methods take the mixin's parameters and reject others the same way."""
    with db_session:
        book = m.Book[1]
        book.to_json()
        book.to_dict()
        for name in ("to_json", "to_dict"):
            generated = getattr(m.Book, name)
            assert generated is not getattr(pk.Serializable, name)
            mixin = inspect.signature(getattr(pk.Serializable, name))
            assert list(inspect.signature(generated).parameters) == list(mixin.parameters)
        with pytest.raises(TypeError):
            book.to_json(bogus=1)
        with pytest.raises(TypeError):
            book.to_json(None, None, False, False, None)  # related= is keyword-only
        assert book.to_json(None, None, False, False, related=None) == book.to_json()


@given(
    coefficient=st.integers(-(10**30), 10**30),
    exponent=st.integers(-12, 12),
    scale=st.integers(1, 6),
)
def test_decimal_shortcut_matches_quantize(coefficient: int, exponent: int, scale: int) -> None:
    """The Decimal shortcut (str() when already at the scale) is exactly str(value.quantize(q))."""
    from decimal import InvalidOperation

    value = Decimal(coefficient).scaleb(exponent)
    quantum = Decimal(10) ** -scale
    try:
        expected = str(value.quantize(quantum))
    except InvalidOperation:  # beyond the context's precision: both raise
        return

    class Attr:
        py_type = Decimal

        def __init__(self) -> None:
            self.converters = [type("C", (), {"exp": quantum})()]

    assert value_dumper(Attr())(value) == expected
    for may_raise in (False, True):
        expression = decimal_expression("v", "q", quantum, may_raise=may_raise)
        try:
            assert eval(expression, {"v": value, "q": quantum}) == expected
        except IndexError:
            assert may_raise  # the generated code hands such values to the dumper
