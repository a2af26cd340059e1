"""Masking of parameter values bound to sensitive() and encrypted columns, in log records and spans.

The property test runs random plaintext values through create, update, select by value, raw SQL and
bulk_insert on every backend and finds none of them (nor any ciphertext envelope) in any log record,
fully formatted, or any span attribute.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pony.orm import Database, Optional, Required, Set, commit, db_session, select

import ponykit as pk
from ponykit import _pony
from ponykit.diagnostics import instrument
from ponykit.diagnostics._masking import MASK, has_sensitive_columns, mask_parameters, sensitive_columns
from ponykit.security import KeyRing

KEYS = KeyRing({"k1": KeyRing.generate_key()})


class ListHandler(logging.Handler):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def declare(db: Database) -> tuple[Any, Any]:
    class Patient(db.Entity):
        __sensitive__ = ("pin",)
        name = Required(str)
        ssn = Optional(str, nullable=True)
        pin = Optional(str, nullable=True)
        email = Optional(pk.types.EncryptedStr, searchable=True, nullable=True)
        diagnosis = Optional(pk.types.EncryptedStr, nullable=True)
        visits = Set("Visit")

    class Visit(db.Entity):
        patient = Required(Patient)
        room = Required(str)

    pk.security.sensitive(Patient.ssn)
    pk.attach(db, keys=KEYS)
    db.generate_mapping(create_tables=True)
    return Patient, Visit


@pytest.fixture
def m(db: Database) -> tuple[Any, Any]:
    return declare(db)


@pytest.fixture
def sql_log() -> Iterator[ListHandler]:
    logger = logging.getLogger("ponykit.sql")
    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def q(db: Database, n: int) -> tuple[str, ...]:
    return (_pony.positional_placeholder(db),) * n


def test_the_sensitive_column_map(m: Any, db: Database) -> None:
    """Declared (sensitive(), __sensitive__) and encrypted columns, per table; other tables absent."""
    assert dict(sensitive_columns(db)) == {"patient": frozenset({"ssn", "pin", "email", "diagnosis"})}


def test_pony_shapes_mask_by_column(m: Any, db: Database) -> None:
    """INSERT by position (one row, many rows, executemany), SET lists, WHERE comparisons and IN lists."""
    a, b, c = q(db, 3)
    insert = f'INSERT INTO "patient" ("name", "ssn", "pin") VALUES ({a}, {b}, {c})'
    assert mask_parameters(db, insert, ("n", "s", "p")) == ("n", MASK, MASK)
    many = [("n", "s", "p"), ("m", "t", "q")]
    assert mask_parameters(db, insert, many) == [("n", MASK, MASK), ("m", MASK, MASK)]
    rows = f'INSERT INTO "patient" ("name", "ssn") VALUES ({a}, {b}), ({a}, {b})'
    assert mask_parameters(db, rows, ("n", "s", "m", "t")) == ("n", MASK, "m", MASK)
    update = f'UPDATE "patient"\nSET "name" = {a}, "ssn" = {b}\nWHERE "id" = {c} AND "pin" = {a}'
    assert mask_parameters(db, update, ("n", "s", 1, "p")) == ("n", MASK, 1, MASK)
    where = f'SELECT "p"."id" FROM "patient" "p" WHERE "p"."name" IN ({a}, {b}) AND "p"."ssn" NOT IN ({c})'
    assert mask_parameters(db, where, ("x", "y", "s")) == ("x", "y", MASK)
    like = f"SELECT id FROM patient WHERE name LIKE {a} OR ssn NOT LIKE {b}"
    assert mask_parameters(db, like, ("x", "s")) == ("x", MASK)


def test_pyformat_names_mask_by_column(m: Any, db: Database) -> None:
    """psycopg2's %(name)s placeholders: masked by name; a name the text does not show is masked too."""
    sql = 'UPDATE "patient" SET "name" = %(p1)s, "ssn" = %(p2)s WHERE "id" = %(p3)s'
    if _pony.paramstyle(db) == "qmark":
        return  # SQLite's driver takes no %(name)s: the shape is checked on the server backends
    assert mask_parameters(db, sql, {"p1": "n", "p2": "s", "p3": 1}) == {"p1": "n", "p2": MASK, "p3": 1}
    assert mask_parameters(db, sql, {"p1": "n", "p2": "s", "p3": 1, "zz": "?"})["zz"] == MASK
    assert mask_parameters(db, sql, [{"p1": "n", "p2": "s", "p3": 1}]) == [{"p1": "n", "p2": MASK, "p3": 1}]


def test_unmappable_values_on_a_sensitive_table_are_masked(m: Any, db: Database) -> None:
    """Raw SQL the shapes do not cover masks every value it cannot place; other tables stay visible."""
    a, b, _c = q(db, 3)
    cases = [
        (f"SELECT id FROM patient WHERE lower(ssn) = lower({a})", ("s",), (MASK,)),
        (f"SELECT id FROM patient WHERE {a} = ssn", ("s",), (MASK,)),
        (f"UPDATE patient SET name = name || {a} WHERE id = {b}", ("x", 1), (MASK, 1)),
        (f"INSERT INTO patient (name, ssn) SELECT {a}, {b}", ("n", "s"), (MASK, MASK)),
        (f"SELECT id FROM patient WHERE name = {a}", ("x", "extra"), (MASK, MASK)),  # count mismatch
        (f"SELECT id FROM patient WHERE ssn BETWEEN {a} AND {b}", ("s", "t"), (MASK, MASK)),
        # A column renamed in the statement is not the column it names: not a known column, or an alias.
        (f"SELECT x FROM (SELECT ssn AS x FROM patient) s WHERE s.x = {a}", ("s",), (MASK,)),
        (f"SELECT name FROM (SELECT ssn AS name FROM patient) s WHERE name = {a}", ("s",), (MASK,)),
        (f"SELECT id FROM patient WHERE name = {a} AND ssn = {b}", ("n", "s"), ("n", MASK)),
    ]
    for sql, given_values, expected in cases:
        assert mask_parameters(db, sql, given_values) == expected, sql
        assert has_sensitive_columns(db, sql)
    other = f'SELECT "id" FROM "visit" WHERE "room" = {a}'
    assert mask_parameters(db, other, ("r1",)) == ("r1",)
    assert not has_sensitive_columns(db, other)
    literal = f"SELECT id FROM visit WHERE room = 'patient ? %s' AND room = {a}"
    assert mask_parameters(db, literal, ("r1",)) == ("r1",)


@pytest.mark.backends("sqlite")
def test_a_later_declaration_is_picked_up(db: Database) -> None:
    """sensitive() after mapping: the next statement is masked by the new map."""

    class Card(db.Entity):
        number = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    sql = 'SELECT "id" FROM "card" WHERE "number" = ?'
    assert mask_parameters(db, sql, ("4111",)) == ("4111",)
    pk.security.sensitive(Card.number)
    assert mask_parameters(db, sql, ("4111",)) == (MASK,)


# ---------------------------------------------------------------------------------------------------------
# The property: 0 plaintext values in any record or span


_numbers = itertools.count()
plaintexts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)


def _marked(text: str) -> str:
    # A distinctive ASCII marker in front: found in any formatting (repr and JSON escape the rest).
    # Stripped: Pony strips str values (autostrip), and the queries below look them up as given.
    return f"ZQX{next(_numbers):05d}{text.strip()}"


def _record_text(record: logging.LogRecord) -> str:
    extras = {k: v for k, v in record.__dict__.items() if k not in STANDARD}
    formatted = logging.Formatter("%(levelname)s %(name)s %(message)s %(pathname)s:%(lineno)d").format(record)
    return "\n".join(
        (
            formatted,
            repr(record.__dict__),
            json.dumps(extras, default=str, ensure_ascii=False),
            json.dumps(extras, default=str),
        )
    )


def _span_text(span: Any) -> str:
    attributes = dict(span.attributes or {})
    return f"{span.name}\n{attributes!r}\n{json.dumps(attributes, default=str, ensure_ascii=False)}"


@given(values=st.lists(plaintexts, min_size=16, max_size=16))
def test_no_plaintext_in_any_record_or_span(
    m: Any, db: Database, sql_log: ListHandler, values: list[str]
) -> None:
    """Create, update, select by value, raw SQL, bulk insert/update/upsert: no sensitive or encrypted
    value leaks."""
    patient, visit = m
    secrets = [_marked(v) for v in values]
    visible = f"VISIBLE{next(_numbers)}"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stop = instrument(db, provider, capture_parameters=True)
    sql_log.records.clear()
    try:
        with db_session:
            p = patient(name=visible, ssn=secrets[0], pin=secrets[1], email=secrets[2], diagnosis=secrets[3])
            visit(patient=p, room=visible)
            commit()
            p.ssn, p.pin, p.email, p.diagnosis = secrets[4], secrets[5], secrets[6], secrets[7]
        with db_session:
            wanted = secrets[4]
            assert len(select(x for x in patient if x.ssn == wanted and x.name == visible)[:]) == 1
            assert patient.get(email=secrets[6]) is not None
            pins = (secrets[5], secrets[8])
            assert len(select(x for x in patient if x.pin in pins)[:]) == 1
        with db_session:
            given = {"raw": secrets[4], "new_ssn": secrets[9], "visible": visible}
            assert len(db.select("SELECT id FROM patient WHERE ssn = $raw", {}, given)) == 1
            assert len(db.select("SELECT id FROM patient WHERE lower(pin) = lower($raw)", {}, given)) == 0
            db.execute("UPDATE patient SET ssn = $new_ssn, name = $visible WHERE ssn = $raw", {}, given)
        with db_session:
            rows = [{"name": visible, "ssn": secrets[10], "pin": None, "email": secrets[11]}]
            assert pk.bulk_insert(patient, rows) == 1
        with db_session:
            pid = p.id
            assert pk.bulk_update(patient, [{"id": pid, "ssn": secrets[12], "email": secrets[13]}]) == 1
            upsert = [{"id": pid, "name": visible, "ssn": secrets[14], "pin": secrets[15]}]
            pk.bulk_upsert(patient, upsert, conflict="id")
        with db_session:
            assert patient[pid].pin == secrets[15]
    finally:
        stop()
    spans = exporter.get_finished_spans()
    texts = [_record_text(r) for r in sql_log.records] + [_span_text(s) for s in spans]
    assert len(sql_log.records) >= 10 and len(spans) >= 10
    for text in texts:
        assert "ZQX" not in text
        assert "v1:" not in text  # no ciphertext envelope either
    # Parameters are logged at all: the non-sensitive value is there (so the check above can fail).
    assert any(visible in text for text in texts)
