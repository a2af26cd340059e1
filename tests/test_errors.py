"""The error contract (issue #13 item 6): every mistake a caller can make raises a PonykitError.

Each case calls the public API with a wrong argument (an unknown attribute name, a wrong type, an
out-of-range size) and checks three things: the error is a :class:`ponykit.PonykitError`, it is also the
builtin the same mistake raised before ponykit had its own class (so ``except ValueError`` code keeps
working), and its message names what is wrong (the entity, the bad name) and how to fix it.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Optional, PrimaryKey, Required, Set, db_session, select

import ponykit as pk
import ponykit._sql
import ponykit.diagnostics
import ponykit.errors
from ponykit.types.base import AttributeType

SECRET = b"0123456789abcdef0123456789abcdef"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Size(enum.Enum):
    SMALL = 1


@dataclass
class Model:
    """The entities of one test's Database."""

    db: Database
    Author: Any
    Book: Any
    Member: Any


@pytest.fixture
def m(db: Database) -> Model:
    class Author(db.Entity, pk.Serializable):  # type: ignore[name-defined,misc]
        name = Required(str)
        books = Set("Book")

    class Book(db.Entity, pk.Serializable):  # type: ignore[name-defined,misc]
        title = Required(str)
        year = Optional(int)
        author = Optional(Author)
        color = Optional(Color)
        shade = Optional(Color)
        ip = Optional(ipaddress.IPv4Address)

    class Member(db.Entity):  # type: ignore[name-defined,misc]
        org = Required(str)
        num = Required(int)
        PrimaryKey(org, num)

    pk.security.sensitive(Book.shade)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        ann = Author(name="Ann")
        Book(title="t1", year=2000, author=ann, color=Color.RED, shade=Color.BLUE)
        Book(title="t2", year=2001, author=ann)
    return Model(db, Author, Book, Member)


# ---------------------------------------------------------------------------------------------------------
# The tree


EXPECTED_BASES: list[tuple[type[Exception], tuple[type[BaseException], ...]]] = [
    (pk.ConfigurationError, (ValueError,)),
    (pk.OptionError, (pk.ConfigurationError, ValueError, TypeError)),
    (pk.SerializationOptionError, (pk.OptionError, pk.ConfigurationError, TypeError, AttributeError)),
    (pk.UnsupportedDatabase, (pk.ConfigurationError, NotImplementedError)),
    (pk.ValidationError, (ValueError,)),
    (pk.BulkWriteError, (pk.ValidationError, ValueError)),
    (pk.ValueTypeError, (pk.ValidationError, ValueError, TypeError)),
    (pk.DataError, (ValueError,)),
    (pk.InvalidPage, (ValueError,)),
    (pk.InvalidCursor, (ValueError,)),
    (pk.UnsupportedComparison, (TypeError,)),
    (pk.DecryptionError, ()),
    (pk.errors.RotationInProgress, (RuntimeError,)),
    (pk.CallbackError, ()),
    (pk.ConnectionLostError, ()),
    (pk.TransactionError, ()),
    (pk.AmbiguousCommitError, (pk.TransactionError,)),
    (pk.RetriesExhausted, (pk.TransactionError,)),
    (pk.TransactionStateError, (pk.TransactionError, RuntimeError)),
    (pk.QueryCountExceeded, (AssertionError,)),
    (pk.NPlusOneDetected, (AssertionError,)),
    (pk.errors.FactoryError, (pk.ConfigurationError, ValueError)),
    (pk.errors.StatementMismatch, (AssertionError,)),
    (pk.errors.VersionConflict, ()),
    (pk.PermissionDenied, (PermissionError,)),
    (pk.RLSContextError, (PermissionError,)),
    (pk.errors.ReadOnlySessionError, (RuntimeError,)),
    (pk.errors.PoolTimeout, (TimeoutError,)),
    (pk.errors.OutboxError, ()),
    (pk.errors.PublishError, (pk.errors.OutboxError, ConnectionError)),
    (pk.errors.MigrationError, ()),
    (pk.errors.UnsafeMigration, (pk.errors.MigrationError,)),
    (pk.errors.MigrationStateError, (pk.errors.MigrationError,)),
    (pk.errors.MigrationLockTimeout, (pk.errors.MigrationError, TimeoutError)),
]


@pytest.mark.parametrize(("cls", "bases"), EXPECTED_BASES, ids=lambda v: getattr(v, "__name__", ""))
def test_every_error_is_a_ponykit_error_and_its_builtin(
    cls: type[Exception], bases: tuple[type[BaseException], ...]
) -> None:
    """Each class of the tree derives from PonykitError and from the builtin(s) it stands for."""
    assert issubclass(cls, pk.PonykitError)
    for base in bases:
        assert issubclass(cls, base), (cls, base)


def test_tree_is_complete_and_drawn() -> None:
    """Every exception class of ponykit.errors (warnings aside) is in the tree above and drawn in the module
    docstring."""
    exported = [getattr(pk.errors, name) for name in pk.errors.__all__]
    classes = {
        c for c in exported if isinstance(c, type) and issubclass(c, Exception) and not issubclass(c, Warning)
    }
    assert classes - {pk.PonykitError} == {cls for cls, _ in EXPECTED_BASES}
    doc = pk.errors.__doc__ or ""
    for cls in classes:
        assert cls.__name__ in doc, cls


def test_moved_names_stay_importable() -> None:
    """NPlusOneDetected and RotationInProgress live in errors.py; their old homes still export them."""
    assert ponykit.diagnostics.NPlusOneDetected is pk.errors.NPlusOneDetected is pk.NPlusOneDetected
    assert pk.security.RotationInProgress is pk.errors.RotationInProgress
    assert issubclass(pk.security.envelope.EnvelopeError, pk.PonykitError)


# ---------------------------------------------------------------------------------------------------------
# The sweep: wrong arguments on every backend


@dataclass(frozen=True)
class Case:
    """A wrong call: ``call(model)``; the class and builtin it must raise; words its message must hold."""

    id: str
    call: Callable[[Model], Any]
    error: type[Exception]
    builtin: type[BaseException]
    words: tuple[str, ...]


def _books(m: Model) -> Any:
    return select(b for b in m.Book)


def _cached_with(**kwargs: Any) -> Callable[[Model], Any]:
    def call(m: Model) -> Any:
        return pk.cached(**kwargs)

    return call


def _cached_called_with_an_object(m: Model) -> Any:
    count = pk.cached(depends_on=[m.Book], cache=pk.query.MemoryCache())(lambda book_filter: 1)
    return count(object())


CASES = [
    # Unknown attribute names
    Case(
        "bulk_update-fields",
        lambda m: pk.bulk_update(m.Book, [{"id": 1, "titel": "x"}], fields=["titel"]),
        pk.BulkWriteError,
        ValueError,
        ("Book", "'titel'", "fields=", "title", "fix"),
    ),
    Case(
        "bulk_upsert-update",
        lambda m: pk.bulk_upsert(m.Book, [{"id": 1, "title": "x"}], conflict="id", update=["titel"]),
        pk.BulkWriteError,
        ValueError,
        ("Book", "'titel'", "update=", "title", "fix"),
    ),
    Case(
        "bulk_upsert-conflict",
        lambda m: pk.bulk_upsert(m.Book, [{"id": 1, "title": "x"}], conflict=["titel"]),
        pk.ConfigurationError,
        ValueError,
        ("Book", "titel", "conflict=", "declare"),
    ),
    Case(
        "bulk_insert-row-key",
        lambda m: pk.bulk_insert(m.Book, [{"title": "x", "titel": "y"}]),
        pk.BulkWriteError,
        ValueError,
        ("Book", "'titel'", "row 0", "title", "fix"),
    ),
    Case(
        "to_dict-only",
        lambda m: m.Book[1].to_dict(only=["titel"]),
        pk.SerializationOptionError,
        AttributeError,
        ("Book", "titel", "only=", "title", "fix"),
    ),
    Case(
        "to_json-only",
        lambda m: pk.to_json(_books(m), only=["titel"]),
        pk.SerializationOptionError,
        AttributeError,
        ("Book", "titel", "only=", "title", "fix"),
    ),
    Case(
        "to_json-exclude",
        lambda m: pk.to_json(_books(m), exclude="titel"),
        pk.SerializationOptionError,
        AttributeError,
        ("Book", "titel", "exclude=", "fix"),
    ),
    Case(
        "to_json-related",
        lambda m: pk.to_json(_books(m), related=["auther"]),
        pk.SerializationOptionError,
        AttributeError,
        ("Book", "auther", "related=", "author", "fix"),
    ),
    Case(
        "to_json-related-column",
        lambda m: pk.to_json(_books(m), related=["title"]),
        pk.SerializationOptionError,
        TypeError,
        ("Book", "title", "not a relation", "only="),
    ),
    Case(
        "to_json-nested-only",
        lambda m: pk.to_json(_books(m), related={"author": {"only": ["nmae"]}}),
        pk.SerializationOptionError,
        AttributeError,
        ("Book.author", "nmae", "only=", "name", "fix"),
    ),
    Case(
        "to_json-unknown-option",
        lambda m: m.Book[1].to_dict(related={"author": {"onyl": ["name"]}}),
        pk.SerializationOptionError,
        TypeError,
        ("Book", "onyl", "known"),
    ),
    Case(
        "json_schema-only",
        lambda m: pk.json_schema(m.Book, only=["titel"]),
        pk.SerializationOptionError,
        AttributeError,
        ("Book", "titel", "only=", "fix"),
    ),
    Case(
        "paginate_keyset-order",
        lambda m: pk.paginate_keyset(_books(m), order=["-titel"], secret=SECRET),
        pk.OptionError,
        ValueError,
        ("Book", "'titel'", "order=", "title", "fix"),
    ),
    Case(
        "prefetch-path",
        lambda m: pk.prefetch(list(m.Book.select()), "auther"),
        pk.OptionError,
        ValueError,
        ("Book", "'auther'", "author", "fix"),
    ),
    Case(
        "prefetch-nested-path",
        lambda m: pk.prefetch(list(m.Book.select()), "author.nmae"),
        pk.OptionError,
        ValueError,
        ("Author", "'nmae'", "author.nmae", "books", "fix"),
    ),
    Case(
        "sensitive-name",
        lambda m: pk.security.sensitive("ssn")(m.Author),
        pk.SerializationOptionError,
        AttributeError,
        ("Author", "'ssn'", "name", "declare only"),
    ),
    # Wrong types and wrong objects
    Case(
        "bulk-entity-is-rows",
        lambda m: pk.bulk_insert([{"title": "x"}], []),  # type: ignore[arg-type]
        pk.OptionError,
        TypeError,
        ("entity class", "list", "bulk_insert(User, rows)"),
    ),
    Case(
        "bulk_delete-query-of-other-entity",
        lambda m: pk.bulk_delete(m.Book, select(a for a in m.Author)),
        pk.OptionError,
        TypeError,
        ("Book", "Author", "bulk_delete(Author, query)"),
    ),
    Case(
        "bulk_delete-composite-key-shape",
        lambda m: pk.bulk_delete(m.Member, ["top-secret-org"]),
        pk.BulkWriteError,
        ValueError,
        ("Member", "item 0", "org, num", "a str", "tuple"),
    ),
    Case(
        "cached_select-list",
        lambda m: pk.cached_select(list(_books(m))),
        pk.OptionError,
        TypeError,
        ("cached_select()", "list", "select("),
    ),
    Case(
        "to_json-fast-list",
        lambda m: pk.to_json([m.Book[1]], fast=True),
        pk.OptionError,
        ValueError,
        ("fast=True", "list", "drop fast=True"),
    ),
    Case(
        "prefetch-not-objects",
        lambda m: pk.prefetch([1, 2], "author"),
        pk.OptionError,
        ValueError,
        ("entity objects", "int"),
    ),
    Case(
        "cached-depends_on",
        _cached_with(depends_on=["Book"]),
        pk.OptionError,
        TypeError,
        ("depends_on=", "entity classes", "@cached(depends_on=(User, Order))"),
    ),
    Case(
        "cached-key",
        lambda m: pk.cached(depends_on=[m.Book], key=5),  # type: ignore[arg-type]
        pk.OptionError,
        TypeError,
        ("key=", "int", "lambda"),
    ),
    Case(
        "cached-cache",
        lambda m: pk.cached(depends_on=[m.Book], cache={}),  # type: ignore[arg-type]
        pk.OptionError,
        TypeError,
        ("cache=", "dict", "attach(db, cache=...)"),
    ),
    Case(
        "cached-argument-type",
        _cached_called_with_an_object,
        pk.OptionError,
        TypeError,
        ("@cached", "type object", "key=lambda"),
    ),
    Case(
        "on_commit-not-callable",
        lambda m: pk.on_commit(None),  # type: ignore[arg-type]
        pk.OptionError,
        TypeError,
        ("on_commit()", "NoneType", "pass the function"),
    ),
    Case(
        "sensitive-nothing",
        lambda m: pk.security.sensitive(),
        pk.OptionError,
        TypeError,
        ("sensitive()", "User.ssn"),
    ),
    Case(
        "sensitive-not-attribute",
        lambda m: pk.security.sensitive(5),
        pk.OptionError,
        TypeError,
        ("sensitive()", "User.ssn", "int"),
    ),
    Case(
        "attribute-type-option",
        lambda m: AttributeType(colour=1),
        pk.OptionError,
        TypeError,
        ("AttributeType", "'colour'", "options"),
    ),
    Case(
        "enum-member-of-other-enum",
        lambda m: m.Book(title="x", color=Size.SMALL),
        pk.ValueTypeError,
        TypeError,
        ("Book.color", "Color", "Size.SMALL"),
    ),
    Case(
        "enum-non-member",
        lambda m: m.Book(title="x", color="purple"),
        pk.ValidationError,
        ValueError,
        ("Book.color", "'purple'", "'red', 'blue'"),
    ),
    # Out-of-range sizes and unknown choices
    Case(
        "bulk_insert-batch_size-0",
        lambda m: pk.bulk_insert(m.Book, [{"title": "x"}], batch_size=0),
        pk.OptionError,
        ValueError,
        ("Book", "batch_size", "positive", "0"),
    ),
    Case(
        "bulk_update-batch_size-str",
        lambda m: pk.bulk_update(m.Book, [], batch_size="10"),  # type: ignore[arg-type]
        pk.OptionError,
        TypeError,
        ("Book", "batch_size", "positive", "'10'"),
    ),
    Case(
        "paginate-per_page-0",
        lambda m: pk.paginate(_books(m), per_page=0),
        pk.InvalidPage,
        ValueError,
        ("per_page", "got 0", "max_per_page="),
    ),
    Case(
        "paginate_keyset-per_page-0",
        lambda m: pk.paginate_keyset(_books(m), per_page=0, order=["year"], secret=SECRET),
        pk.InvalidPage,
        ValueError,
        ("per_page", "got 0"),
    ),
    Case(
        "cached_query-maxsize-0",
        lambda m: pk.cached_query(maxsize=0),
        pk.ConfigurationError,
        ValueError,
        ("maxsize", "positive", "0"),
    ),
    Case(
        "MemoryCache-maxsize-0",
        lambda m: pk.query.MemoryCache(maxsize=0),
        pk.ConfigurationError,
        ValueError,
        ("maxsize", "positive", "0"),
    ),
    Case(
        "assert_max_queries-negative",
        lambda m: pk.assert_max_queries(-1),
        pk.OptionError,
        ValueError,
        ("assert_max_queries()", "-1", "assert_max_queries(0)"),
    ),
    Case(
        "detect_n_plus_one-threshold-1",
        lambda m: pk.detect_n_plus_one(1).__enter__(),
        pk.OptionError,
        ValueError,
        ("detect_n_plus_one()", "threshold", "default is 5"),
    ),
    Case(
        "count_queries-threads",
        lambda m: pk.count_queries(threads="mine").__enter__(),  # type: ignore[arg-type]
        pk.OptionError,
        ValueError,
        ("count_queries(threads=...)", "'mine'", "current"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_wrong_arguments_raise_ponykit_errors(m: Model, case: Case) -> None:
    """The wrong call raises the expected PonykitError, which is also the builtin raised before, and its
    message names the entity and the bad name and says how to fix the call."""
    with db_session, pytest.raises(case.error) as caught:
        case.call(m)
    exc = caught.value
    assert isinstance(exc, pk.PonykitError)
    assert isinstance(exc, case.builtin)
    message = str(exc)
    for word in case.words:
        assert word in message, (word, message)


def test_bulk_name_errors_carry_no_row_index(m: Model) -> None:
    """A typo in fields=/update= is no row's fault: row_index is None (it was -1), entity and attribute
    are set."""
    with db_session, pytest.raises(pk.BulkWriteError) as caught:
        pk.bulk_update(m.Book, [{"id": 1, "titel": "x"}], fields=["titel"])
    assert (caught.value.row_index, caught.value.entity, caught.value.attribute) == (None, "Book", "titel")
    assert "row -1" not in str(caught.value)
    with db_session, pytest.raises(pk.BulkWriteError) as caught:
        pk.bulk_upsert(m.Book, [{"id": 1, "title": "x"}], conflict="id", update=["books"])
    assert caught.value.row_index is None
    assert "row" not in str(caught.value)


def test_composite_key_error_hides_the_value(m: Model) -> None:
    """bulk_delete's composite-key error shows the given key's shape, never its value."""
    with db_session, pytest.raises(pk.BulkWriteError) as caught:
        pk.bulk_delete(m.Member, [("top-secret-org", 1, "extra")])
    assert "a tuple of 3 values" in str(caught.value)
    assert "top-secret" not in str(caught.value)


# ---------------------------------------------------------------------------------------------------------
# Values the database holds that ponykit cannot read back


def _store_raw(m: Model, column: str, value: str) -> None:
    table = pk._pony.quote_name(m.db, m.Book._table_)
    with db_session:
        m.db.execute(f"UPDATE {table} SET {pk._pony.quote_name(m.db, column)} = $value WHERE id = 1")


def test_unknown_enum_value_in_the_database_is_a_data_error(m: Model) -> None:
    """An Enum value that is no member raises DataError (a ValueError) naming the entity.attribute, the
    primary key, the stored value and its type, the members and what to do."""
    _store_raw(m, "color", "green")
    with db_session, pytest.raises(pk.DataError) as caught:
        m.Book[1].color  # noqa: B018
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    for word in ("Book.color", "primary key 1", "'green'", "(a str)", "'red', 'blue'", "fix the row"):
        assert word in message, (word, message)


def test_unreadable_stored_value_of_a_custom_type_is_a_data_error(m: Model) -> None:
    """A stored text an AttributeType cannot parse back raises DataError naming the attribute, the
    primary key, the stored type and what to fix."""
    _store_raw(m, "ip", "10.0.0.300")
    with db_session, pytest.raises(pk.DataError) as caught:
        m.Book[1].ip  # noqa: B018
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    for word in ("Book.ip", "primary key 1", "(a str)", "IPv4Address", "fix the row"):
        assert word in message, (word, message)


def test_unknown_enum_value_of_a_sensitive_attribute_is_not_shown(m: Model) -> None:
    """On a sensitive attribute the DataError names the stored value's type, never the value."""
    _store_raw(m, "shade", "top-secret-shade")
    with db_session, pytest.raises(pk.DataError) as caught:
        m.Book[1].shade  # noqa: B018
    message = str(caught.value)
    assert "top-secret" not in message
    for word in ("Book.shade", "a str", "hidden", "'red', 'blue'"):
        assert word in message, (word, message)


def test_non_member_assigned_to_a_sensitive_enum_is_not_shown(m: Model) -> None:
    """Assigning a non-member to a sensitive Enum attribute names the members, not the value."""
    with db_session, pytest.raises(pk.ValidationError) as caught:
        m.Book[1].shade = "top-secret-shade"
    message = str(caught.value)
    assert "top-secret" not in message
    for word in ("Book.shade", "a str", "hidden", "'red', 'blue'"):
        assert word in message, (word, message)


@pytest.mark.backends("sqlite")
def test_unsupported_database_for_bulk_writes(m: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bulk writes on a database they do not support raise UnsupportedDatabase (a NotImplementedError)
    naming the supported ones and the alternative."""
    monkeypatch.setattr(ponykit._sql._pony, "dialect", lambda db: "oracle")
    with pytest.raises(pk.UnsupportedDatabase) as caught:
        ponykit._sql.dialect_of(m.db)
    assert isinstance(caught.value, NotImplementedError)
    for word in ("oracle", "SQLite, PostgreSQL and MySQL/MariaDB", "Pony's own writes"):
        assert word in str(caught.value)


# ---------------------------------------------------------------------------------------------------------
# Random names in only=: a PonykitError or a valid result, never anything else

names = st.sampled_from(["id", "title", "year", "author", "color", "books", "name"]) | st.text(max_size=8)


@given(only=st.lists(names, max_size=4) | names)
def test_random_only_names_give_a_ponykit_error_or_a_result(m: Model, only: Any) -> None:
    """Whatever only= holds, to_dict, to_json and json_schema either serve it or raise a PonykitError."""
    calls: list[Callable[[], Any]] = [
        lambda: m.Book[1].to_dict(only=only),
        lambda: pk.to_json(select(b for b in m.Book), only=only),
        lambda: pk.json_schema(m.Book, only=only),
    ]
    for call in calls:
        error: pk.PonykitError | None = None
        try:
            with db_session:
                call()
        except pk.PonykitError as exc:  # anything else fails the test
            error = exc
        assert error is None or isinstance(error, (TypeError, ValueError, AttributeError))
