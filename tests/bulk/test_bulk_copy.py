"""bulk_insert's COPY path (PostgreSQL): exact values, the statement issued, errors, triggers and rules.

The oracle here covers every type the bulk path binds (text, bytes, uuid, time, interval, datetime with
a rounding precision, Json, float, bigint, Decimal, bool, and ponykit's Enum, IPAddress, AwareDatetime
and EncryptedStr) on every backend: ``Ref`` is written with Pony objects, ``Blk`` with bulk_insert,
from the same hypothesis rows. On PostgreSQL the rows are compared as the server's text of each column
(so ``-0`` and ``0`` differ) and the statement must be COPY. The COPY text renderer itself is checked
against a reference parser, without a database.
"""

from __future__ import annotations

import base64
import enum
import ipaddress
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pony.orm import Database, Json, Optional, PrimaryKey, Required, db_session, flush, select

import ponykit as pk
from ponykit.bulk._copy import CopyUnsupported, NulInText, copy_text
from ponykit.security import KeyRing

KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


NAUGHTY = [
    "",
    " ",
    "\\",
    "\\N",
    "\\.",
    "a\tb\nc\rd",
    "'; DROP TABLE ref; --",
    "%s %(p1)s ? $1 :name",
    "NULL",
    "ǅ 𝕳 👩‍👩‍👧 ﷽",
    "\u202etxet",
    "x\\\\y\\t",
]
text = st.one_of(
    st.sampled_from(NAUGHTY),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20),
)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
offsets = st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)))
# Offsets PostgreSQL accepts in a timestamptz literal (whole minutes, at most 15:59): an aware value in a
# plain datetime attribute reaches the server as psycopg2 binds it, as with Pony alone.
server_offsets = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(min_value=-14 * 60, max_value=14 * 60)
)
row_strategy = st.fixed_dictionaries(
    {},
    optional={
        "text": st.one_of(text, st.none()),
        "blob": st.one_of(st.binary(max_size=24), st.none()),
        "uid": st.one_of(st.uuids(), st.none()),
        "clock": st.one_of(st.times(), st.none()),
        "span": st.one_of(
            st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=30)), st.none()
        ),
        "stamp": st.one_of(
            st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 1, 1)), st.none()
        ),
        "moment": st.one_of(
            st.datetimes(min_value=datetime(1001, 1, 1), max_value=datetime(9998, 1, 1)),
            st.datetimes(
                min_value=datetime(1001, 1, 1), max_value=datetime(9998, 1, 1), timezones=server_offsets
            ),
        ),
        "doc": st.one_of(json_values, st.none()),
        "ratio": st.one_of(
            st.sampled_from([-0.0, 0.0, 1e308, -1e308, 2.2250738585072014e-308]), finite, st.none()
        ),
        "big": st.one_of(st.integers(-(2**63), 2**63 - 1), st.none()),
        "amount": st.one_of(st.decimals(-(10**14), 10**14, places=5, allow_nan=False), st.none()),
        "flag": st.one_of(st.booleans(), st.none()),
        "color": st.one_of(st.sampled_from(Color), st.none()),
        "addr": st.one_of(st.ip_addresses(), st.none()),
        "seen": st.one_of(
            st.datetimes(min_value=datetime(1001, 1, 1), max_value=datetime(9998, 1, 1), timezones=offsets),
            st.none(),
        ),
        "secret": text,
    },
)


def declare(db: Database) -> tuple[Any, Any, Any]:
    """Twin entities ``Ref`` (Pony) and ``Blk`` (bulk) with one attribute of each type; the Kit."""

    def attrs() -> dict[str, Any]:
        return {
            "id": PrimaryKey(int),
            "text": Optional(str, nullable=True),
            "blob": Optional(bytes),
            "uid": Optional(uuid.UUID),
            "clock": Optional(time),
            "span": Optional(timedelta),
            "stamp": Optional(datetime, 3),  # Pony rounds to milliseconds: the converter path, not inlined
            "moment": Optional(datetime),  # a plain attribute: an aware value is bound as Pony binds it
            "doc": Optional(Json),
            "ratio": Optional(float),
            "big": Optional(int, size=64),
            "amount": Optional(Decimal, 20, 5),
            "flag": Optional(bool),
            "color": Optional(Color),
            "addr": Optional(pk.types.IPAddress),
            "seen": Optional(pk.types.AwareDatetime),
            "secret": Optional(pk.types.EncryptedStr),
        }

    ref = type("Ref", (db.Entity,), attrs())
    blk = type("Blk", (db.Entity,), attrs())
    kit = pk.attach(db, keys=KeyRing({"k1": KEY}, primary="k1"))
    db.generate_mapping(create_tables=True)
    return ref, blk, kit


def stored(db: Database, entity: Any, backend_name: str, secrets: bool = True) -> list[Any]:
    """The table's rows as stored (the server's text of each column on PostgreSQL), plus the decrypted
    secret (its ciphertext differs on every write) unless ``secrets`` is false."""
    info = pk._pony.entity_info(entity)
    cast = "CAST({} AS TEXT)" if backend_name == "postgres" else "{}"
    cols = ", ".join(cast.format(pk._pony.quote_name(db, c)) for c in info.columns if c != "secret")
    table = pk._pony.quote_name(db, info.table)
    with db_session:
        rows = list(db.select(f"SELECT {cols} FROM {table} ORDER BY 1"))
        if not secrets:
            return rows
        plain = [o.secret for o in select(o for o in entity).order_by(lambda o: o.id)]
    return [(*r, s) for r, s in zip(rows, plain, strict=True)]


def outcome(fn: Callable[[], Any]) -> BaseException | None:
    """Run ``fn`` in its own db_session; the exception it raised, or None."""
    try:
        with db_session:
            fn()
    except (TypeError, ValueError) as exc:
        return exc
    return None


EDGE_ROW = {
    "text": "\\N",
    "blob": b"\x00\\\t",
    "ratio": -0.0,
    "amount": Decimal("-0.00000"),
    "doc": {"k": "tab\there \\ \u00e9"},
    "span": timedelta(days=-1, microseconds=1),
    "stamp": datetime(2024, 1, 1, 0, 0, 0, 999_999),  # Pony truncates it to milliseconds
    "seen": datetime(2024, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=5))),
    "moment": datetime(2024, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=-3))),
    "secret": "\\\t\n",
}


@settings(max_examples=25)
@given(rows=st.lists(row_strategy, max_size=7))
@example(rows=[EDGE_ROW, {"text": None, "flag": False, "color": Color.BLUE}, {"text": "x\ty"}])
def test_every_type_matches_pony(db: Database, backend_name: str, rows: list[dict[str, Any]]) -> None:
    """bulk_insert stores what Pony's Entity(**row) stores, for every type; on PostgreSQL through COPY."""
    ref, blk, kit = getattr(db, "_copy_oracle_", None) or declare(db)
    db._copy_oracle_ = (ref, blk, kit)  # type: ignore[attr-defined]
    with db_session:
        ref.select().delete(bulk=True)
        blk.select().delete(bulk=True)
    rows = [{**r, "id": i + 1} for i, r in enumerate(rows)]
    statements: list[str] = []
    remove = kit.add_execute_listener(lambda _db, sql, args, seconds, error: statements.append(sql))
    try:
        pony_error = outcome(lambda: [ref(**r) for r in rows])
        bulk_error = outcome(lambda: pk.bulk_insert(blk, rows, batch_size=3))
    finally:
        remove()
    assert (pony_error is None) == (bulk_error is None), (pony_error, bulk_error)
    assert stored(db, ref, backend_name) == stored(db, blk, backend_name)
    # An aware value in a plain datetime attribute has no exact COPY text (psycopg2 binds it as
    # timestamptz): its batch takes INSERT, as Pony's own write would store it.
    aware_plain = any(getattr(r.get("moment"), "tzinfo", None) is not None for r in rows)
    if backend_name == "postgres" and rows and bulk_error is None and not aware_plain:
        assert any(s.startswith("COPY") for s in statements), statements
        assert not any(s.startswith("INSERT") and '"blk"' in s.lower() for s in statements), statements


SPECIAL: list[dict[str, Any]] = [
    {"ratio": -0.0},  # psycopg2's literal makes it numeric zero: COPY must not store a negative zero
    {"ratio": float("inf")},
    {"ratio": float("-inf")},
    {"ratio": float("nan")},
    {"ratio": 5e-324},
    {"amount": Decimal("NaN")},
    {"amount": Decimal("Infinity")},
    {"amount": Decimal("1.000005")},  # rounded by the column to 5 places
    {"amount": Decimal("1E+5")},
    {"span": timedelta(days=-999_999_999)},
    {"span": timedelta(days=999_999_999, seconds=86_399, microseconds=999_999)},
    {"clock": time(1, 2, 3, 4, tzinfo=timezone(timedelta(hours=5)))},
    {"stamp": datetime(2024, 2, 29, 23, 59, 59, 999_999)},
    {"moment": datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-11)))},
    {"doc": {"a": "\u0001\t\n\\", "é": [1.5, None, True]}},
    {"blob": bytes(range(256))},
]


@pytest.mark.parametrize("row", SPECIAL, ids=lambda r: f"{next(iter(r))}={next(iter(r.values()))!r}")
def test_special_values_match_pony(db: Database, backend_name: str, row: dict[str, Any]) -> None:
    """Extreme and special values: bulk_insert succeeds where Pony succeeds, storing the same, and fails
    where Pony fails (any error: some backends refuse these values in the driver or the server)."""
    ref, blk, _kit = declare(db)
    errors: list[BaseException | None] = []
    for write in (lambda: ref(id=1, **row), lambda: pk.bulk_insert(blk, [{"id": 1, **row}])):
        try:
            with db_session:
                write()
            errors.append(None)
        except Exception as exc:  # any failure must happen on both sides
            errors.append(exc)
    assert (errors[0] is None) == (errors[1] is None), errors
    assert stored(db, ref, backend_name, False) == stored(db, blk, backend_name, False)


def test_text_with_nul(db: Database, backend_name: str) -> None:
    """PostgreSQL text cannot hold NUL: the row is refused (as Pony's INSERT refuses it), named by its
    index and attribute, before anything of its batch is written. Other backends store it as Pony does."""

    class Memo(db.Entity):
        text = Required(str)
        note = Optional(str, nullable=True)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    rows: list[dict[str, Any]] = [{"text": f"t{i}"} for i in range(6)]
    rows[4] = {"text": "ok", "note": "a\x00b"}
    if backend_name != "postgres":
        with db_session:
            pk.bulk_insert(Memo, rows, batch_size=2)
        with db_session:
            assert Memo.get(text="ok").note == "a\x00b"
        return
    with pytest.raises(ValueError, match="NUL"), db_session:
        Memo(**rows[4])  # Pony's own INSERT refuses it too
    with db_session:
        with pytest.raises(pk.BulkWriteError) as info:
            pk.bulk_insert(Memo, rows, batch_size=2)
        assert (info.value.row_index, info.value.attribute) == (4, "note")
        assert "row 4" in str(info.value)
        assert "NUL" in str(info.value)
        assert select(m for m in Memo).count() == 0  # batches 1 and 2 undone with the call (issue #12)


def _exec(db: Database, *statements: str) -> None:
    """Run DDL on the session's own connection (not through Pony's ``$`` parameter syntax)."""
    with db_session:
        cursor = db.get_connection().cursor()
        for sql in statements:
            cursor.execute(sql)
        db.commit()


def test_insert_fires_triggers_and_honours_rules(db: Database, backend_name: str) -> None:
    """bulk_insert runs the table's insert triggers on every backend (COPY fires row triggers); a
    PostgreSQL table with a rewrite rule, which COPY would bypass, is written with INSERT."""

    class Item(db.Entity):
        name = Required(str)

    class Ruled(db.Entity):
        name = Required(str)

    class Audit(db.Entity):
        name = Required(str)

    kit = pk.attach(db)
    db.generate_mapping(create_tables=True)
    q = pk._pony.quote_name
    item, ruled, audit = (q(db, pk._pony.entity_info(e).table) for e in (Item, Ruled, Audit))
    name = q(db, "name")
    copy_row = f"INSERT INTO {audit} ({name}) VALUES (NEW.{name})"
    if backend_name == "sqlite":
        _exec(db, f"CREATE TRIGGER trg AFTER INSERT ON {item} BEGIN {copy_row}; END")
    elif backend_name == "mysql":
        _exec(db, f"CREATE TRIGGER trg AFTER INSERT ON {item} FOR EACH ROW {copy_row}")
    else:
        _exec(
            db,
            f"CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {copy_row}; RETURN NEW; END $$",
            f"CREATE TRIGGER trg AFTER INSERT ON {item} FOR EACH ROW EXECUTE FUNCTION audit_row()",
            f"CREATE RULE also_audit AS ON INSERT TO {ruled} DO ALSO {copy_row}",
        )
    statements: list[str] = []
    kit.add_execute_listener(lambda _db, sql, args, seconds, error: statements.append(sql))
    with db_session:
        pk.bulk_insert(Item, [{"name": "a"}, {"name": "b"}])
    assert any(s.startswith("COPY" if backend_name == "postgres" else "INSERT") for s in statements)
    with db_session:
        assert sorted(select(a.name for a in Audit)) == ["a", "b"]
    if backend_name == "postgres":
        statements.clear()
        with db_session:
            pk.bulk_insert(Ruled, [{"name": "r"}])
        assert not any(s.startswith("COPY") for s in statements), statements
        with db_session:
            assert sorted(select(a.name for a in Audit)) == ["a", "b", "r"]


def test_return_ids_are_the_keys_the_column_default_gives(db: Database, backend_name: str) -> None:
    """return_ids gives the stored keys in row order; on PostgreSQL they are taken from the key's
    sequence before a COPY, so the default carries on after them. A table whose user trigger could
    change the key is written with INSERT ... RETURNING instead, which reports the key stored."""

    class Pet(db.Entity):
        name = Required(str)

    class Shifted(db.Entity):
        name = Required(str)

    kit = pk.attach(db)
    db.generate_mapping(create_tables=True)
    if backend_name == "postgres":
        shifted = pk._pony.quote_name(db, pk._pony.entity_info(Shifted).table)
        _exec(
            db,
            "CREATE FUNCTION shift_key() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.id := NEW.id + 1000; RETURN NEW; END $$",
            f"CREATE TRIGGER shift BEFORE INSERT ON {shifted} FOR EACH ROW EXECUTE FUNCTION shift_key()",
        )
    statements: list[str] = []
    kit.add_execute_listener(lambda _db, sql, args, seconds, error: statements.append(sql))
    names = [f"pet {i}" for i in range(7)]
    with db_session:
        first = pk.bulk_insert(Pet, [{"name": "first"}], return_ids=True)
        ids = pk.bulk_insert(Pet, [{"name": n} for n in names], return_ids=True, batch_size=3)
        assert isinstance(ids, list)
        assert isinstance(first, list)
        assert ids == sorted(ids)
        assert ids[0] > first[0]
        assert len(set(ids)) == len(ids)
        assert [Pet[i].name for i in ids] == names
        later = Pet(name="later")
        flush()
        assert later.id > ids[-1]  # the column default carries on after the keys taken
        if backend_name == "postgres":
            assert sum(s.startswith("COPY") for s in statements) == 4, statements
            assert not any(s.startswith("INSERT") and "pet" in s.lower() for s in statements[:-1])
        statements.clear()
        keys = pk.bulk_insert(Shifted, [{"name": "a"}, {"name": "b"}], return_ids=True)
        assert isinstance(keys, list)
        assert [Shifted[k].name for k in keys] == ["a", "b"]
        if backend_name == "postgres":
            assert min(keys) > 1000
            assert not any(s.startswith("COPY") for s in statements), statements


def test_database_errors_are_ponys_as_for_insert(db: Database) -> None:
    """A row the database refuses (a duplicate key) raises BulkWriteError naming the input row, with
    Pony's IntegrityError (as a raw INSERT through Pony, ``db.execute``, raises) as its cause, on every
    backend, and the session rolls the whole call back."""
    from pony.orm.dbapiprovider import IntegrityError

    class Code(db.Entity):
        id = PrimaryKey(int)
        label = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Code(id=1, label="pony")
    table = pk._pony.quote_name(db, pk._pony.entity_info(Code).table)
    with pytest.raises(IntegrityError), db_session:
        db.execute(f"INSERT INTO {table} VALUES (1, 'raw')")
    with pytest.raises(pk.BulkWriteError) as info, db_session:
        pk.bulk_insert(Code, [{"id": 2, "label": "a"}], batch_size=1)
        pk.bulk_insert(Code, [{"id": 3, "label": "b"}, {"id": 1, "label": "dup"}])
    assert (info.value.row_index, info.value.attribute) == (1, "id")
    assert isinstance(info.value.__cause__, IntegrityError)
    with db_session:
        assert select(c.id for c in Code)[:] == [1]


def test_statements_are_counted(db: Database, backend_name: str) -> None:
    """count_queries sees every bulk statement: one COPY per batch on PostgreSQL."""

    class Tag(db.Entity):
        label = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        pk.bulk_insert(Tag, [{"label": "first"}])  # the first call also asks whether COPY suits the table
        with pk.count_queries(db) as counter:
            pk.bulk_insert(Tag, [{"label": str(i)} for i in range(5)], batch_size=2)
        kind = "COPY" if backend_name == "postgres" else "INSERT"
        assert [s.sql.split()[0] for s in counter.statements] == [kind] * 3, counter.report()
        assert select(t for t in Tag).count() == 6


def test_aware_datetimes_without_ponykit_types_take_insert(db: Database, backend_name: str) -> None:
    """Without ponykit's types a plain datetime attribute keeps an aware value, which psycopg2 binds as
    timestamptz and PostgreSQL shifts to the session's time zone: no COPY text stores the same, so that
    batch is written with INSERT; naive values still go through COPY."""

    class Stamp(db.Entity):
        id = PrimaryKey(int)
        at = Required(datetime)

    db.generate_mapping(create_tables=True)  # not attached: no ponykit converters
    aware = datetime(2024, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=5)))
    with db_session:
        if backend_name == "postgres":
            db.execute("SET TIME ZONE 'America/New_York'")
        Stamp(id=1, at=aware)
        flush()
        db.local_stats.clear()
        pk.bulk_insert(Stamp, [{"id": 2, "at": aware}])
        pk.bulk_insert(Stamp, [{"id": 3, "at": datetime(2024, 6, 1, 12, 0)}])
        sqls = list(db.local_stats)
        rows = db.select("SELECT at FROM stamp ORDER BY id")
    assert rows[0] == rows[1]
    if backend_name == "postgres":
        assert rows[0] == datetime(2024, 6, 1, 3, 0)  # 07:00 UTC in New York
        assert sum(1 for s in sqls if s and s.startswith("COPY")) == 1, sqls


@pytest.mark.backends("sqlite", "postgres")  # Pony has no array types on MySQL
@settings(max_examples=15)
@given(
    ints=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4),
    strs=st.lists(text, max_size=4),
    floats=st.lists(finite, max_size=4),
)
def test_arrays_match_pony(
    db: Database, backend_name: str, ints: list[int], strs: list[str], floats: list[float]
) -> None:
    """IntArray, StrArray and FloatArray values are stored as Pony stores them (array syntax in COPY)."""
    from pony.orm import FloatArray, IntArray, StrArray

    if not hasattr(db, "_arrays_"):
        made = [
            type(
                n, (db.Entity,), {"i": Optional(IntArray), "s": Optional(StrArray), "f": Optional(FloatArray)}
            )
            for n in ("RefA", "BlkA")
        ]
        pk.attach(db)
        db.generate_mapping(create_tables=True)
        db._arrays_ = made  # type: ignore[attr-defined]
    ref, blk = db._arrays_  # type: ignore[attr-defined]
    row = {"id": 1, "i": ints, "s": strs, "f": floats}
    with db_session:
        ref.select().delete(bulk=True)
        blk.select().delete(bulk=True)
    with db_session:
        ref(**row)
        pk.bulk_insert(blk, [row])
    cast = "CAST({} AS TEXT)" if backend_name == "postgres" else "{}"
    cols = ", ".join(cast.format(c) for c in ('"i"', '"s"', '"f"'))
    with db_session:
        a = db.select(f"SELECT {cols} FROM {pk._pony.quote_name(db, pk._pony.entity_info(ref).table)}")
        b = db.select(f"SELECT {cols} FROM {pk._pony.quote_name(db, pk._pony.entity_info(blk).table)}")
    assert a == b


# ---------------------------------------------------------------------------------------------------------
# The COPY text renderer, without a database


def parse_copy(data: str) -> list[list[str | None]]:
    """A reference reader of COPY's text format (tab-separated, ``\\N`` is NULL, backslash escapes)."""
    escapes = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "b": "\b", "f": "\f", "v": "\v"}
    rows = []
    assert data.endswith("\n")
    for line in data[:-1].split("\n"):
        fields: list[str | None] = []
        for raw in line.split("\t"):
            if raw == "\\N":
                fields.append(None)
                continue
            out, i = [], 0
            while i < len(raw):
                if raw[i] == "\\":
                    out.append(escapes.get(raw[i + 1], raw[i + 1]))
                    i += 2
                else:
                    out.append(raw[i])
                    i += 1
            fields.append("".join(out))
        rows.append(fields)
    return rows


def render(rows: list[tuple[Any, ...]]) -> str:
    """copy_text of rows given row by row (it takes one sequence per column)."""
    return copy_text([list(column) for column in zip(*rows, strict=True)])


@given(st.lists(st.tuples(st.one_of(text, st.none()), st.one_of(text, st.none())), min_size=1, max_size=6))
def test_copy_text_round_trips_strings(rows: list[tuple[str | None, str | None]]) -> None:
    """Any text (backslashes, tabs, newlines, ``\\N``, ``\\.``) and None read back exactly."""
    assert parse_copy(render(rows)) == [list(r) for r in rows]


def test_copy_text_renders_each_type() -> None:
    """Each bound type gets the text PostgreSQL's input function receives from psycopg2's literal."""
    values = (
        None,
        True,
        -(2**63),
        -0.0,
        float("inf"),
        float("nan"),
        1e308,
        Decimal("-1.50"),
        Decimal("sNaN"),
        datetime(1, 1, 1, 0, 0, 0, 5),
        date(9999, 12, 31),
        time(1, 2, 3, tzinfo=UTC),
        timedelta(days=-1, seconds=5, microseconds=7),
        uuid.UUID(int=1),
        b"\x00\\",
        [1, None, 2],
        ['a"b\\c', None],
        [1.5, float("-inf")],
        [],
    )
    expected = [
        "\\N",
        "t",
        "-9223372036854775808",
        "0",
        "Infinity",
        "NaN",
        "1e+308",
        "-1.50",
        "NaN",
        "0001-01-01T00:00:00.000005",
        "9999-12-31",
        "01:02:03+00:00",
        "-1 days 5.000007 seconds",
        "00000000-0000-0000-0000-000000000001",
        "\\\\x005c",
        "{1,NULL,2}",
        '{"a\\\\"b\\\\\\\\c",NULL}',
        "{1.5,-Infinity}",
        "{}",
    ]
    assert render([values]) == "\t".join(expected) + "\n"


def test_copy_text_refuses_what_it_cannot_store_exactly() -> None:
    """NUL is located by row and column; an aware datetime or an unknown type sends the batch to INSERT."""
    with pytest.raises(NulInText) as info:
        render([("a", 1), ("b", 2), ("c\x00", 3)])
    assert (info.value.row, info.value.column) == (2, 0)
    with pytest.raises(NulInText) as info:
        render([(1, ["ok"]), (2, ["x\x00"])])
    assert (info.value.row, info.value.column) == (1, 1)
    with pytest.raises(CopyUnsupported):
        render([(datetime(2024, 1, 1, tzinfo=UTC),)])
    with pytest.raises(CopyUnsupported):
        render([(ipaddress.ip_address("::1"),)])
    with pytest.raises(CopyUnsupported):
        render([("mixed",), (object(),)])
    with pytest.raises(CopyUnsupported):
        render([([[1, 2]],)])  # nested arrays are not Pony's
