"""Regressions of issue #12 in keyset and offset pagination, on every backend.

- a ``$`` in a table or column name is never evaluated as Python (item 13);
- a validly signed cursor whose values do not fit the sort columns is refused before any SQL (item 14);
- cursors verify under every key of the ring and are tied to the query's parameter values (item 15);
- a query Pony makes DISTINCT only while unordered pages over the unordered query's rows (item 18).
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import os
import sys
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import Database, Optional, Required, Set, db_session, desc, select

import ponykit as pk
from ponykit import _pony
from ponykit.diagnostics import count_queries
from ponykit.errors import ConfigurationError, InvalidCursor
from ponykit.query import paginate, paginate_keyset
from ponykit.query.cursor import Signer, encode_cursor
from ponykit.query.keyset import _plan
from ponykit.security import KeyRing

SECRET = os.urandom(32)


def walk_keyset(query: Any, per_page: int, **kwargs: Any) -> tuple[list[Any], list[Any]]:
    """Every page forwards with next_cursor, then backwards with prev_cursor: (forward ids, backward ids)."""
    forward: list[Any] = []
    pages = []
    after = None
    while True:
        page = paginate_keyset(query, per_page, after=after, **kwargs)
        pages.append(page)
        forward += [obj.id for obj in page.items]
        if not page.has_next:
            break
        after = page.next_cursor
        assert len(pages) < 100
    backward: list[Any] = [obj.id for obj in pages[-1].items]
    before = pages[-1].prev_cursor
    while before is not None:
        page = paginate_keyset(query, per_page, before=before, **kwargs)
        backward = [obj.id for obj in page.items] + backward
        before = page.prev_cursor
    return forward, backward


# -- item 13: '$' in identifiers ---------------------------------------------------------------------

PWN_COLUMN = "c$(__import__('sys').modules.setdefault('pk_pwn',1))"
PWN_TABLE = "t$(__import__('sys').modules.setdefault('pk_pwt',1))"


@pytest.mark.parametrize("order", [["name"], ["-name"], ["name", "-rank"]])
def test_dollar_in_column_and_table_names_is_never_evaluated(db: Database, order: list[str]) -> None:
    """Pages with cursors over a table and a column whose names hold ``$(...)`` run no code and equal
    the unpaged query, forwards and backwards (the raw keyset predicate escapes ``$``)."""

    class Thing(db.Entity):
        _table_ = PWN_TABLE
        name = Required(str, column=PWN_COLUMN)
        rank = Optional(int, column="r$x")

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(11):
            Thing(name=f"n{i % 4}", rank=None if i % 3 == 0 else i)
    sys.modules.pop("pk_pwn", None)
    sys.modules.pop("pk_pwt", None)
    with db_session:
        query = select(t for t in Thing)
        attrs = [desc(getattr(Thing, n[1:])) if n.startswith("-") else getattr(Thing, n) for n in order]
        expected = [t.id for t in query.order_by(*attrs, Thing.id)[:]]
        for per_page in (1, 2, 4):
            forward, backward = walk_keyset(query, per_page, order=order, secret=SECRET)
            assert forward == expected
            assert backward == expected
            # The query's own order_by, not order=, takes the same path.
            assert walk_keyset(query.order_by(*attrs), per_page, secret=SECRET) == (expected, expected)
    assert "pk_pwn" not in sys.modules
    assert "pk_pwt" not in sys.modules


# -- item 14: values of a validly signed cursor --------------------------------------------------------


@pytest.fixture
def typed(db: Database) -> Any:
    class Typed(db.Entity):
        small = Required(int, size=16)
        big = Required(int, size=64)
        label = Required(str, 20)
        ratio = Required(float)
        price = Required(Decimal, precision=8, scale=2)
        when = Required(dt.datetime)
        day = Required(dt.date)
        flag = Required(bool)
        maybe = Optional(int)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(5):
            Typed(
                small=i,
                big=2**40 + i,
                label=f"l{i}",
                ratio=i / 2,
                price=Decimal(f"{i}.25"),
                when=dt.datetime(2024, 1, 1 + i, 12, 30),
                day=dt.date(2024, 2, 1 + i),
                flag=i % 2 == 0,
                maybe=None if i % 2 else i,
            )
    return Typed


def _kinds() -> dict[str, Any]:
    return {
        "bool": st.booleans(),
        "int": st.integers(-(2**10), 2**10),
        "huge": st.one_of(st.integers(2**63, 2**80), st.integers(-(2**80), -(2**63) - 1)),
        "float": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.just(float("nan"))),
        "text": st.text(alphabet="xyz!", max_size=5),
        "decimal": st.one_of(
            st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-999, max_value=999),
            st.sampled_from([Decimal("NaN"), Decimal("Infinity")]),
        ),
        "datetime": st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1)),
        "date": st.dates(min_value=dt.date(1970, 1, 2), max_value=dt.date(2100, 1, 1)),
        "none": st.none(),
        "bytes": st.binary(max_size=4),
        "list": st.lists(st.integers(0, 3), max_size=2),
    }


KINDS = _kinds()
# For each sort attribute, the kinds of value it can never hold as a column value (on any backend).
WRONG = {
    "small": ["bool", "huge", "float", "text", "decimal", "datetime", "date", "none", "bytes", "list"],
    "big": ["bool", "huge", "float", "text", "decimal", "datetime", "date", "none", "bytes", "list"],
    "label": ["bool", "int", "huge", "float", "decimal", "datetime", "date", "none", "bytes", "list"],
    "ratio": ["bool", "int", "huge", "text", "decimal", "datetime", "date", "none", "bytes", "list"],
    "price": ["bool", "int", "huge", "float", "text", "datetime", "date", "none", "bytes", "list"],
    "when": ["bool", "int", "huge", "float", "text", "decimal", "date", "none", "bytes", "list"],
    "day": ["bool", "int", "huge", "float", "text", "decimal", "datetime", "none", "bytes", "list"],
    "flag": ["int", "huge", "float", "text", "decimal", "datetime", "date", "none", "bytes", "list"],
    "maybe": ["bool", "huge", "float", "text", "decimal", "datetime", "date", "bytes", "list"],
    "id": ["bool", "huge", "float", "text", "decimal", "datetime", "date", "none", "bytes", "list"],
}


@st.composite
def wrong_cursor_values(draw: Any) -> tuple[str, int, Any]:
    """(sort attribute, position of the wrong value: 0 = the attribute, 1 = the key, wrong value)."""
    name = draw(st.sampled_from([n for n in WRONG if n != "id"]))
    position = draw(st.sampled_from([0, 1]))
    kind = draw(st.sampled_from(WRONG[name if position == 0 else "id"]))
    return name, position, draw(KINDS[kind])


@settings(max_examples=40)
@given(case=wrong_cursor_values(), descending=st.booleans())
def test_signed_cursor_with_values_of_the_wrong_type_is_refused_without_sql(
    db: Database, typed: Any, case: tuple[str, int, Any], descending: bool
) -> None:
    """A cursor signed with the right key and fingerprint but holding a value the sort column cannot
    hold (wrong type, out of the column's int range, NaN, None for a required attribute) raises
    InvalidCursor naming the attribute, and no SQL runs."""
    name, position, wrong = case
    order = [f"-{name}" if descending else name]
    with db_session:
        query = select(t for t in typed)
        obj = typed[1]
        attr = getattr(typed, name)
        good = [_pony.column_value(attr, getattr(obj, name)), obj.id]
        values = list(good)
        values[position] = wrong
        plan = _plan(db, query, typed, order)
        cursor = encode_cursor(values, Signer(SECRET), plan.bound_to)
        # The same cursor with the right values is accepted: only the value is wrong.
        paginate_keyset(
            query, 2, after=encode_cursor(good, Signer(SECRET), plan.bound_to), order=order, secret=SECRET
        )
        for direction in ("after", "before"):
            with count_queries() as counter, pytest.raises(InvalidCursor) as caught:
                paginate_keyset(query, 2, order=order, secret=SECRET, **{direction: cursor})
            assert counter.count == 0, counter.report()
            assert f"Typed.{name if position == 0 else 'id'}" in str(caught.value)


def test_cursor_values_of_every_sort_type_round_trip(db: Database, typed: Any) -> None:
    """The value check accepts every cursor ponykit itself issues: walks by each attribute equal the
    unpaged order (NULLs of the optional attribute included)."""
    with db_session:
        query = select(t for t in typed)
        for name in ("small", "big", "label", "ratio", "price", "when", "day", "flag", "maybe"):
            for spec in (name, f"-{name}"):
                forward, backward = walk_keyset(query, 2, order=[spec], secret=SECRET)
                assert sorted(forward) == sorted(t.id for t in query)
                assert backward == forward


class Colour(enum.Enum):
    """An enum sort attribute (ponykit stores its value)."""

    RED = "red"
    GREEN = "green"
    BLUE = "blue"


def test_cursor_values_of_custom_types_round_trip_and_are_checked(db: Database) -> None:
    """Attributes whose converter changes the value (an Enum, AwareDatetime, an IP address) take the
    generic read-back check: ponykit's own cursors walk the whole order, and a signed cursor with a
    value the column cannot hold is refused without SQL."""

    class Event(db.Entity):
        colour = Required(Colour)
        at = Required(pk.types.AwareDatetime)
        ip = Required(ipaddress.IPv4Address)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    utc = dt.timezone.utc
    with db_session:
        for i in range(7):
            Event(
                colour=list(Colour)[i % 3],
                at=dt.datetime(2024, 5, 1 + i, 12, tzinfo=utc),
                ip=ipaddress.IPv4Address(f"10.0.0.{9 - i}"),
            )
    with db_session:
        query = select(e for e in Event)
        for spec in ("colour", "-at", "ip"):
            forward, backward = walk_keyset(query, 2, order=[spec], secret=SECRET)
            assert sorted(forward) == list(range(1, 8)) and backward == forward
        for name, wrong in (("colour", "purple"), ("colour", 3), ("at", "yesterday"), ("ip", "10.0.0.300")):
            plan = _plan(db, query, Event, [name])
            cursor = encode_cursor([wrong, 1], Signer(SECRET), plan.bound_to)
            with count_queries() as counter, pytest.raises(InvalidCursor, match=f"Event.{name}"):
                paginate_keyset(query, 2, order=[name], after=cursor, secret=SECRET)
            assert counter.count == 0


# -- item 15: key rotation and parameter values --------------------------------------------------------


@pytest.fixture
def post(db: Database) -> Any:
    class Post(db.Entity):
        score = Required(int)
        body = Optional(str)
        tags = Set("Label")

    class Label(db.Entity):
        name = Required(str)
        posts = Set(Post)

    db.k1 = KeyRing.generate_key()
    db.kit = pk.attach(db, keys=KeyRing({"k1": db.k1}))
    db.generate_mapping(create_tables=True)
    with db_session:
        red, blue = Label(name="red"), Label(name="blue")
        for i in range(30):
            Post(score=i, body=f"b{i % 3}", tags=[red, blue] if i % 2 else [red])
    return Post


def test_cursor_issued_under_old_key_is_accepted_during_rotation(db: Database, post: Any) -> None:
    """A cursor issued under k1 is accepted by the ring [k2, k1] (step 1 of the documented rotation) and
    the pages it gives are the same; the ring [k2] alone refuses it without SQL; new cursors are
    signed with the primary k2 (accepted by [k2] alone)."""
    k2 = KeyRing.generate_key()
    query = lambda: select(p for p in post).order_by(desc(post.score))  # noqa: E731
    with db_session:
        first = paginate_keyset(query(), 7)
        old = first.next_cursor
        expected = [p.id for p in paginate_keyset(query(), 7, after=old).items]
    db.kit.keys = KeyRing({"k2": k2, "k1": db.k1}, primary="k2")
    with db_session:
        page = paginate_keyset(query(), 7, after=old)
        assert [p.id for p in page.items] == expected
        assert [p.id for p in paginate_keyset(query(), 7, before=page.prev_cursor).items] == [
            p.id for p in first.items
        ]
        new = page.next_cursor
    db.kit.keys = KeyRing({"k2": k2})
    with db_session:
        paginate_keyset(query(), 7, after=new)
        with count_queries() as counter, pytest.raises(InvalidCursor):
            paginate_keyset(query(), 7, after=old)
        assert counter.count == 0


def test_cursor_is_tied_to_the_query_parameter_values(db: Database, post: Any) -> None:
    """A cursor of ``score > lo`` taken with lo = 5 is refused (before SQL) for lo = 20 and accepted
    for lo = 5 again, also in a new query object; the parameter value is not readable in the cursor;
    bind_parameters=False accepts it across values."""
    import base64

    def query(lo: int, body: str) -> Any:
        return select(p for p in post if p.score > lo and p.body != body).order_by(post.score)

    with db_session:
        cursor = paginate_keyset(query(5, "zz-secret-zz"), 3).next_cursor
        assert cursor is not None
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        assert b"zz-secret-zz" not in raw
        again = paginate_keyset(query(5, "zz-secret-zz"), 3, after=cursor)
        assert [p.score for p in again.items] == [9, 10, 11]
        for lo, body in ((20, "zz-secret-zz"), (5, "other")):
            with count_queries() as counter, pytest.raises(InvalidCursor):
                paginate_keyset(query(lo, body), 3, after=cursor)
            assert counter.count == 0
        loose = paginate_keyset(query(5, "zz-secret-zz"), 3, bind_parameters=False).next_cursor
        page = paginate_keyset(query(20, "zz-secret-zz"), 3, after=loose, bind_parameters=False)
        assert [p.score for p in page.items] == [21, 22, 23]


CROSS_PROCESS = """
import datetime as dt, sys
from pony.orm import Database, Required, Optional, db_session, select
import ponykit as pk
db = Database()
class Stamp(db.Entity):
    score = Required(int)
    body = Optional(str)
    day = Required(dt.date)
pk.bind_url(db, sys.argv[1])
pk.attach(db)
db.generate_mapping(create_tables=False)
lo, body, since = 5, "b1", dt.date(2024, 1, 3)
with db_session:
    q = select(s for s in Stamp if s.score > lo and s.body != body and s.day >= since).order_by(Stamp.score)
    print(pk.paginate_keyset(q, 3, secret=bytes.fromhex(sys.argv[2])).next_cursor)
"""


def test_cursor_with_bound_parameters_is_accepted_by_another_process(make_db: Any, backend: Any) -> None:
    """Design rule 9: the parameter digest is plain data, so a cursor issued by another process for the
    same query and parameter values is accepted here, and refused for other values."""
    import subprocess

    db = make_db()

    class Stamp(db.Entity):
        score = Required(int)
        body = Optional(str)
        day = Required(dt.date)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(20):
            Stamp(score=i, body=f"b{i % 3}", day=dt.date(2024, 1, 1 + i))
    db.disconnect()  # SQLite: let the other process read the file
    out = subprocess.run(
        [sys.executable, "-c", CROSS_PROCESS, backend.url, SECRET.hex()],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    cursor = out.stdout.strip()

    def query(lo: int, body: str, since: dt.date) -> Any:
        return select(s for s in Stamp if s.score > lo and s.body != body and s.day >= since).order_by(
            Stamp.score
        )

    with db_session:
        page = paginate_keyset(query(5, "b1", dt.date(2024, 1, 3)), 3, after=cursor, secret=SECRET)
        assert [s.score for s in page.items] == [11, 12, 14]
        with pytest.raises(InvalidCursor):
            paginate_keyset(query(5, "b1", dt.date(2024, 1, 4)), 3, after=cursor, secret=SECRET)


# -- item 18: DISTINCT that Pony drops once a query is ordered ---------------------------------------


@pytest.mark.parametrize("ordered", [True, False])
def test_pagination_of_a_query_that_pony_makes_distinct(db: Database, post: Any, ordered: bool) -> None:
    """Oracle: the rows of ``select(p for p in Post for t in p.tags ...)`` unordered (DISTINCT) in the
    ordered query's order; paginate() (every count mode) and paginate_keyset() walks give exactly
    those, with the right total."""
    label = db.entities["Label"]
    with db_session:
        base = select(p for p in post for t in p.tags if t.name in ("red", "blue"))
        unordered = {p.id for p in base}
        assert len(unordered) == 30 and len(base[:]) == 30
        query = base.order_by(desc(post.body), post.score) if ordered else base
        assert len(select(t for t in label)[:]) == 2
        expected = sorted(unordered, key=lambda i: (post[i].body, -post[i].score), reverse=True)
        if not ordered:
            expected = sorted(unordered)
        for per_page in (4, 7):
            pages = -(-30 // per_page)
            for count in ("exact", "none", 12):
                got: list[int] = []
                for number in range(1, pages + 1):
                    page = paginate(query, number, per_page, count=count)
                    got += [p.id for p in page.items]
                    if count == "exact":
                        assert (page.total, page.pages) == (30, pages)
                assert got == expected
            forward, backward = walk_keyset(query, per_page)
            assert forward == backward == expected


def test_pagination_refuses_a_distinct_query_it_cannot_keep_distinct(db: Database, post: Any) -> None:
    """Ordered by another entity's column, DISTINCT cannot come back: paginate() refuses with a
    ConfigurationError that says to order by the entity's attributes or call .distinct()."""
    with db_session:
        query = select(p for p in post for t in p.tags).order_by(lambda: t.name)  # noqa: F821 - Pony reads the name
        with count_queries() as counter, pytest.raises(ConfigurationError, match=r"\.distinct\(\)"):
            paginate(query, 1, 5)
        assert counter.count == 0
        # Attribute values: DISTINCT comes back for an order by the selected columns, not for another.
        bodies = select(p.body for p in post)
        assert paginate(bodies.order_by(-1), 1, 5).items == ["b2", "b1", "b0"]
        assert paginate(bodies.order_by(-1), 1, 5).total == 3
        with pytest.raises(ConfigurationError, match=r"\.distinct\(\)"):
            paginate(bodies.order_by(lambda: p.score), 1, 5)  # noqa: F821 - Pony reads the name
        # Said explicitly, the user's DISTINCT is kept as it is.
        explicit = select(p for p in post for t in p.tags).order_by(post.score).distinct()
        assert [p.score for p in paginate(explicit, 2, 5).items] == [5, 6, 7, 8, 9]


def test_distinct_query_sorted_by_a_lazy_attribute_is_refused(db: Database) -> None:
    """DISTINCT needs the sort columns in the SELECT list (PostgreSQL), which a lazy attribute is not:
    both paginators refuse such a query with ConfigurationError before any SQL."""
    from pony.orm import LongStr

    class Doc(db.Entity):
        body = Optional(LongStr)
        marks = Set("Mark")

    class Mark(db.Entity):
        docs = Set(Doc)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        mark = Mark()
        Doc(body="a", marks=[mark])
    with db_session:
        query = select(d for d in Doc for m in d.marks)
        with count_queries() as counter:
            with pytest.raises(ConfigurationError, match="lazy"):
                paginate_keyset(query, 5, order=["body"], secret=SECRET)
            with pytest.raises(ConfigurationError, match="non-lazy"):
                paginate(query.order_by(Doc.body), 1, 5)
        assert counter.count == 0
        assert [d.body for d in paginate(query, 1, 5).items] == ["a"]
