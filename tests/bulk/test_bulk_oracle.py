"""Oracle tests: each bulk operation leaves the database exactly as plain Pony entities would.

Two entities with the same attributes live in one database: ``Ref`` is written through Pony objects,
``Blk`` through ponykit.bulk, from the same hypothesis-generated rows (naughty and SQL-looking strings,
unicode, None, extreme ints and floats, Decimal, dates). The raw rows of both tables must be equal, and
a row Pony refuses must make the bulk call refuse too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from pony.orm import Database, Optional, PrimaryKey, Required, db_session

import ponykit as pk

NAUGHTY = [
    "",
    " ",
    "'; DROP TABLE ref; --",
    "Robert'); DELETE FROM blk WHERE ('1'='1",
    '" OR 1=1 --',
    "%s %(p1)s ? $1 :name",
    "\\",
    "\\x00",
    "NULL",
    "null",
    "ǅ 𝕳 👩‍👩‍👧 ﷽",
    "\u202etxet",
    "tab\tnew\nline",
]

# PostgreSQL text cannot hold NUL; surrogates cannot be encoded by any driver.
text = st.one_of(
    st.sampled_from(NAUGHTY),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30),
)
big = st.integers(-(2**63), 2**63 - 1)
ints = st.one_of(st.sampled_from([-(2**63), 2**63 - 1, 0, -1]), big, big, big, st.integers(2**63, 2**64))
floats = st.one_of(
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 2.2250738585072014e-308, 1.5]),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
decimals = st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False, allow_infinity=False)
dates = st.dates(min_value=date(1000, 1, 1), max_value=date(9999, 12, 31))
datetimes = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31))

names = st.text("abcxyz ÄΩ'%?", min_size=1, max_size=20).filter(lambda t: t.strip() != "")
row_strategy = st.fixed_dictionaries(
    {"name": st.one_of(names, names, names, names, text, st.none())},
    optional={
        "label": st.one_of(text, st.none()),
        "note": st.one_of(text, st.none()),
        "amount": st.one_of(ints, st.none()),
        "ratio": st.one_of(floats, st.none()),
        "price": st.one_of(decimals, st.none()),
        "day": st.one_of(dates, st.none()),
        "stamp": st.one_of(datetimes, st.none()),
        "flag": st.booleans(),
    },
)

# Rows Pony accepts: the starting state of the update, upsert and delete properties.
valid_row = st.fixed_dictionaries(
    {"name": names},
    optional={
        "label": text,
        "note": st.one_of(text, st.none()),
        "amount": big,
        "ratio": floats,
        "price": decimals,
        "day": dates,
        "stamp": datetimes,
        "flag": st.booleans(),
    },
)


def declare(db: Database) -> tuple[Any, Any]:
    """Declare the twin entities ``Ref`` (written by Pony) and ``Blk`` (written by bulk), map them."""

    def attrs() -> dict[str, Any]:
        return {
            "id": PrimaryKey(int),
            "name": Required(str, 60),
            "label": Optional(str, 40),
            "note": Optional(str, nullable=True),
            "amount": Optional(int, size=64),
            "ratio": Optional(float),
            "price": Optional(Decimal, 12, 2),
            "day": Optional(date),
            "stamp": Optional(datetime),
            "flag": Required(bool, default=True),
        }

    ref = type("Ref", (db.Entity,), attrs())
    blk = type("Blk", (db.Entity,), attrs())
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return ref, blk


def table_rows(db: Database, entity: Any) -> list[tuple[Any, ...]]:
    """The raw rows of an entity's table, ordered by id (on PostgreSQL the server's text of each value,
    so that what COPY stores is compared exactly, e.g. ``-0`` and ``0`` differ)."""
    info = pk._pony.entity_info(entity)
    cast = "CAST({} AS TEXT)" if db.provider_name == "postgres" else "{}"
    cols = ", ".join(cast.format(pk._pony.quote_name(db, c)) for c in info.columns)
    with db_session:
        return list(db.select(f"SELECT {cols} FROM {pk._pony.quote_name(db, info.table)} ORDER BY 1"))


def clear(db: Database, *entities: Any) -> None:
    """Delete every row of the entities."""
    with db_session:
        for entity in entities:
            entity.select().delete(bulk=True)


def outcome(fn: Callable[[], Any]) -> BaseException | None:
    """Run ``fn`` in its own db_session; the exception it raised, or None."""
    try:
        with db_session:
            fn()
    except (TypeError, ValueError) as exc:
        return exc
    return None


def same(db: Database, ref: Any, blk: Any, pony_error: BaseException | None, bulk_error: Any) -> None:
    """Both sides failed or both succeeded, a bulk failure is a BulkWriteError, and the tables are equal."""
    assert (pony_error is None) == (bulk_error is None), (pony_error, bulk_error)
    if bulk_error is not None:
        assert isinstance(bulk_error, pk.BulkWriteError)
    rows = table_rows(db, ref)
    event(f"rows written: {min(len(rows), 3)}+" if rows else "nothing written")
    assert rows == table_rows(db, blk)


def with_ids(rows: list[dict[str, Any]], start: int = 1) -> list[dict[str, Any]]:
    """The rows with explicit ids, so both tables key them alike."""
    return [{**r, "id": start + i} for i, r in enumerate(rows)]


@settings(max_examples=30)
@given(rows=st.lists(row_strategy, max_size=8))
def test_insert_matches_pony(db: Database, rows: list[dict[str, Any]]) -> None:
    """bulk_insert writes the same rows Pony's Entity(**row) does, and refuses the rows Pony refuses."""
    ref, blk = getattr(db, "_oracle_", None) or declare(db)
    db._oracle_ = (ref, blk)  # type: ignore[attr-defined]
    clear(db, ref, blk)
    rows = with_ids(rows)

    def pony() -> None:
        for r in rows:
            ref(**r)

    def bulk() -> None:
        pk.bulk_insert(blk, rows, batch_size=3)

    statements: list[str] = []
    remove = pk.get_kit(db).add_execute_listener(lambda _db, sql, *_: statements.append(sql))
    try:
        pony_error = outcome(pony)
        bulk_error = outcome(bulk)
    finally:
        remove()
    same(db, ref, blk, pony_error, bulk_error)
    if db.provider_name == "postgres" and rows and bulk_error is None:
        # What this property checks on PostgreSQL is the COPY path: no INSERT wrote Blk's rows.
        assert sum(sql.startswith("COPY") for sql in statements) == (len(rows) + 2) // 3, statements
        assert not any(sql.startswith("INSERT") and "blk" in sql.lower() for sql in statements), statements


@settings(max_examples=15)
@given(
    base=st.lists(valid_row, min_size=1, max_size=5),
    changes=st.lists(row_strategy, max_size=5),
    data=st.data(),
)
def test_update_matches_pony(
    db: Database, base: list[dict[str, Any]], changes: list[dict[str, Any]], data: Any
) -> None:
    """bulk_update sets the same values Pony's obj.set(**row) does, and refuses what Pony refuses."""
    ref, blk = getattr(db, "_oracle_", None) or declare(db)
    db._oracle_ = (ref, blk)  # type: ignore[attr-defined]
    clear(db, ref, blk)
    base = with_ids(base)
    with db_session:
        for r in base:
            ref(**r)
            blk(**r)
    updates = [
        {**{k: v for k, v in c.items() if k != "id"}, "id": data.draw(st.integers(1, len(base)))}
        for c in changes
    ]
    # one change per row: a later change of the same row would be a second statement either way
    unique = list({u["id"]: u for u in updates}.values())

    def pony() -> None:
        for u in unique:
            ref[u["id"]].set(**{k: v for k, v in u.items() if k != "id"})

    def bulk() -> None:
        pk.bulk_update(blk, unique)

    pony_error = outcome(pony)
    bulk_error = outcome(bulk)
    same(db, ref, blk, pony_error, bulk_error)


@settings(max_examples=15)
@given(
    base=st.lists(valid_row, min_size=1, max_size=5),
    incoming=st.lists(row_strategy, max_size=6),
    data=st.data(),
)
def test_upsert_matches_pony(
    db: Database, base: list[dict[str, Any]], incoming: list[dict[str, Any]], data: Any
) -> None:
    """bulk_upsert gives what "get by key, then set or create" with Pony objects gives."""
    ref, blk = getattr(db, "_oracle_", None) or declare(db)
    db._oracle_ = (ref, blk)  # type: ignore[attr-defined]
    clear(db, ref, blk)
    base = with_ids(base)
    with db_session:
        for r in base:
            ref(**r)
            blk(**r)
    rows = [{**r, "id": data.draw(st.integers(1, len(base) + 3))} for r in incoming]
    rows = list({r["id"]: r for r in rows}.values())
    counts = {"inserted": 0, "updated": 0}

    def pony() -> None:
        for r in rows:
            obj = ref.get(id=r["id"])
            if obj is None:
                ref(**r)
                counts["inserted"] += 1
            else:
                obj.set(**{k: v for k, v in r.items() if k != "id"})
                counts["updated"] += 1

    result: list[pk.UpsertResult] = []

    def bulk() -> None:
        result.append(pk.bulk_upsert(blk, rows, conflict="id"))

    pony_error = outcome(pony)
    bulk_error = outcome(bulk)
    same(db, ref, blk, pony_error, bulk_error)
    if result and not pony_error:
        updated = result[0].updated + result[0].skipped
        assert (result[0].inserted, updated) == (counts["inserted"], counts["updated"])


@settings(max_examples=10)
@given(base=st.lists(valid_row, min_size=1, max_size=6), data=st.data())
def test_delete_matches_pony(db: Database, base: list[dict[str, Any]], data: Any) -> None:
    """bulk_delete removes the same rows as deleting the Pony objects."""
    ref, blk = getattr(db, "_oracle_", None) or declare(db)
    db._oracle_ = (ref, blk)  # type: ignore[attr-defined]
    clear(db, ref, blk)
    base = with_ids(base)
    with db_session:
        for r in base:
            ref(**r)
            blk(**r)
    ids = data.draw(st.lists(st.integers(1, len(base) + 2), unique=True))

    def pony() -> None:
        for i in ids:
            obj = ref.get(id=i)
            if obj is not None:
                obj.delete()

    pony_error = outcome(pony)
    bulk_error = outcome(lambda: pk.bulk_delete(blk, ids))
    same(db, ref, blk, pony_error, bulk_error)
