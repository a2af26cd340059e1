"""compare(): what it ignores, how it normalizes, and every kind of out-of-band change it reports."""

from __future__ import annotations

from typing import Any

import pytest
from _oracle_models import connect, create_and_introspect, expected_schema, live_schema
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Optional, Required, Set, composite_key

from conftest import Backend
from ponykit._pony import PhysicalColumn, PhysicalIndex, PhysicalSchema, PhysicalTable
from ponykit.migrate._compare import Difference, compare, normalize_default, normalize_type


def _table(name: str, *columns: PhysicalColumn, indexes: tuple[PhysicalIndex, ...] = ()) -> PhysicalTable:
    return PhysicalTable(name, columns, indexes, ())


def test_message_names_the_object_and_both_sides() -> None:
    expected = PhysicalSchema(
        "postgres", {"person": _table("person", PhysicalColumn("email", "VARCHAR(80)", False, None))}
    )
    actual = PhysicalSchema(
        "postgres", {"person": _table("person", PhysicalColumn("email", "TEXT", False, None))}
    )
    assert [str(d) for d in compare(expected, actual)] == [
        "column person.email: type VARCHAR(80) expected, TEXT found"
    ]
    assert compare(expected, actual) == [Difference("column_type", "person", "email", "VARCHAR(80)", "TEXT")]


def test_column_order_and_backend_names_are_ignored() -> None:
    a, b = PhysicalColumn("a", "INTEGER", True, None), PhysicalColumn("b", "TEXT", False, None)
    pk = PhysicalIndex(None, ("a",), True, primary=True)
    expected = PhysicalSchema(
        "mysql", {"t": _table("t", a, b, indexes=(pk, PhysicalIndex(None, ("b",), True)))}
    )
    actual = PhysicalSchema("mysql", {"t": _table("t", b, a, indexes=(PhysicalIndex("b", ("b",), True), pk))})
    assert compare(expected, actual) == []


def test_a_renamed_named_index_is_reported_by_name() -> None:
    col = PhysicalColumn("a", "INTEGER", True, None)
    expected = PhysicalSchema(
        "sqlite", {"t": _table("t", col, indexes=(PhysicalIndex("idx_t__a", ("a",), False),))}
    )
    actual = PhysicalSchema(
        "sqlite", {"t": _table("t", col, indexes=(PhysicalIndex("idx_b", ("a",), False),))}
    )
    assert [str(d) for d in compare(expected, actual)] == [
        "index t.idx_t__a: name idx_t__a expected, idx_b found"
    ]


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("'x'::text", "'x'"),
        ("'anon'::character varying", "'anon'"),
        ("TRUE", "1"),
        ("true", "'1'"),
        ("false", "0"),
        ("1.50", "1.5"),
        ("(0)", "0"),
        ("'it''s'", "'it''s'::text"),
        ("CURRENT_TIMESTAMP", "current_timestamp()"),
        ("NULL", None),
        ("'-3'::integer", "-3"),
    ],
)
def test_equal_defaults(left: str, right: str | None) -> None:
    assert normalize_default(left) == normalize_default(right)


@pytest.mark.parametrize(("left", "right"), [("'a'", "'b'"), ("0", "1"), ("'x'", None), ("now()", "'now'x")])
def test_different_defaults(left: str, right: str | None) -> None:
    assert normalize_default(left) != normalize_default(right)


@pytest.mark.parametrize(
    ("left", "right"),
    [("numeric(10,2)", "DECIMAL(10, 2)"), ("INT[]", "integer[]"), ("int", "INTEGER"), ("bool", "BOOLEAN")],
)
def test_type_synonyms(left: str, right: str) -> None:
    assert normalize_type(left) == normalize_type(right)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20))
def test_any_string_literal_survives_quoting(value: str) -> None:
    quoted = "'" + value.replace("'", "''") + "'"
    assert normalize_default(quoted) == normalize_default(quoted + "::text")
    assert normalize_default(quoted) is not None


# ---------------------------------------------------------------------------------------------------------
# Out-of-band changes to a database Pony created, each reported naming the object


def declare_small(db: Database, dialect: str) -> None:
    class Person(db.Entity):  # type: ignore[name-defined]
        name = Required(str, 80, index=True)
        age = Optional(int)
        level = Required(int, sql_default="0")
        pets = Set("Pet")
        composite_key(name, age)

    class Pet(db.Entity):  # type: ignore[name-defined]
        name = Required(str)
        owner = Required(Person)


def _q(dialect: str, name: str) -> str:
    return f"`{name}`" if dialect == "mysql" else f'"{name}"'


def _sqlite_rebuild(cursor: Any, table: PhysicalTable, replace: tuple[str, str]) -> None:
    create = table.create_sql.replace(*replace)
    assert create != table.create_sql, replace
    cursor.execute(f'DROP TABLE "{table.name}"')
    cursor.execute(create)
    for index in table.indexes:
        if index.create_sql:
            cursor.execute(index.create_sql)


def _drift(kind: str, dialect: str, expected: PhysicalSchema, cursor: Any) -> None:
    person, pet = ("Person", "Pet") if dialect == "sqlite" else ("person", "pet")
    q = lambda name: _q(dialect, name)  # noqa: E731
    sqlite = dialect == "sqlite"
    statements = {
        "alter_type": {
            "postgres": "ALTER TABLE pet ALTER COLUMN name TYPE VARCHAR(10)",
            "mysql": "ALTER TABLE pet MODIFY name VARCHAR(10) NOT NULL",
        },
        "dropped_default": {
            "postgres": "ALTER TABLE person ALTER COLUMN level DROP DEFAULT",
            "mysql": "ALTER TABLE person ALTER COLUMN level DROP DEFAULT",
        },
        "nullability": {
            "postgres": "ALTER TABLE person ALTER COLUMN age SET NOT NULL",
            "mysql": "ALTER TABLE person MODIFY age INTEGER NOT NULL",
        },
        "renamed_constraint": {
            "postgres": "ALTER TABLE person RENAME CONSTRAINT unq_person__name_age TO unq_renamed",
            "mysql": "ALTER TABLE person RENAME INDEX unq_person__name_age TO unq_renamed",
        },
    }
    rebuilds = {
        "alter_type": (pet, ('"name" TEXT', '"name" VARCHAR(10)')),
        "dropped_default": (person, (" DEFAULT 0", "")),
        "nullability": (person, ('"age" INTEGER', '"age" INTEGER NOT NULL')),
        "renamed_constraint": (person, ("unq_person__name_age", "unq_renamed")),
    }
    if kind in statements:
        if sqlite:
            table, replace = rebuilds[kind]
            _sqlite_rebuild(cursor, expected.tables[table], replace)
        else:
            cursor.execute(statements[kind][dialect])
    elif kind == "extra_index":
        cursor.execute(f"CREATE INDEX idx_extra ON {q(pet)} ({q('name')})")
    elif kind == "dropped_index":
        cursor.execute("DROP INDEX idx_person__name" + (" ON person" if dialect == "mysql" else ""))
    elif kind == "extra_column":
        cursor.execute(f"ALTER TABLE {q(pet)} ADD COLUMN extra INTEGER")
    elif kind == "missing_table":
        cursor.execute(f"DROP TABLE {q(pet)}")


DRIFTS = {
    "alter_type": (
        "column_type",
        "Pet",
        "name",
        "column {pet}.name: type {text} expected, VARCHAR(10) found",
    ),
    "extra_index": (
        "index_extra",
        "Pet",
        "idx_extra",
        "index {pet}.idx_extra: not expected, found INDEX (name)",
    ),
    "dropped_index": (
        "index_missing",
        "Person",
        "idx_person__name",
        "index {person}.idx_person__name: expected INDEX (name), not found",
    ),
    "dropped_default": (
        "column_default",
        "Person",
        "level",
        "column {person}.level: default 0 expected, None found",
    ),
    "nullability": ("column_not_null", "Person", "age", "column {person}.age: NULL expected, NOT NULL found"),
    "renamed_constraint": (
        "index_name",
        "Person",
        "unq_person__name_age",
        "index {person}.unq_person__name_age: name unq_person__name_age expected, unq_renamed found",
    ),
    "extra_column": (
        "column_extra",
        "Pet",
        "extra",
        "column {pet}.extra: not expected, found (INTEGER NULL)",
    ),
    "missing_table": ("table_missing", "Pet", None, None),
}


@pytest.mark.parametrize("kind", sorted(DRIFTS))
def test_out_of_band_change_is_reported(backend: Backend, kind: str) -> None:
    dialect = backend.name
    expected = expected_schema(declare_small, dialect)
    assert compare(expected, create_and_introspect(declare_small, backend.url, dialect)) == []
    connection = connect(backend.url)
    try:
        cursor = connection.cursor()
        _drift(kind, dialect, expected, cursor)
        connection.commit()
    finally:
        connection.close()
    differences = compare(expected, live_schema(backend.url, dialect))
    diff_kind, table, name, message = DRIFTS[kind]
    table = table if dialect == "sqlite" else table.lower()
    assert [(d.kind, d.table, d.name) for d in differences] == [(diff_kind, table, name)], [
        str(d) for d in differences
    ]
    if message is not None:
        text = "VARCHAR(255)" if dialect == "mysql" else "TEXT"
        assert str(differences[0]) == message.format(pet=table, person=table, text=text)
    else:
        assert str(differences[0]).startswith(f"table {table}: expected by the models, not found")


@pytest.mark.backends("postgres", "mysql")
def test_renamed_and_changed_foreign_key_is_reported(backend: Backend) -> None:
    expected = expected_schema(declare_small, backend.name)
    assert compare(expected, create_and_introspect(declare_small, backend.url, backend.name)) == []
    connection = connect(backend.url)
    try:
        cursor = connection.cursor()
        cursor.execute(
            "ALTER TABLE pet DROP "
            + ("FOREIGN KEY" if backend.name == "mysql" else "CONSTRAINT")
            + " fk_pet__owner"
        )
        cursor.execute("ALTER TABLE pet ADD CONSTRAINT fk_other FOREIGN KEY (owner) REFERENCES person (id)")
        connection.commit()
    finally:
        connection.close()
    assert [str(d) for d in compare(expected, live_schema(backend.url, backend.name))] == [
        "foreign key pet.fk_pet__owner: name fk_pet__owner expected, fk_other found",
        "foreign key pet.fk_pet__owner: ON DELETE CASCADE expected, NO ACTION found",
    ]


def test_link_tables_are_recognized(backend: Backend) -> None:
    expected = expected_schema(declare_small_m2m, backend.name)
    actual = create_and_introspect(declare_small_m2m, backend.url, backend.name)
    assert compare(expected, actual) == []
    assert (
        {n for n, t in actual.tables.items() if t.link}
        == {n for n, t in expected.tables.items() if t.link}
        != set()
    )


def declare_small_m2m(db: Database, dialect: str) -> None:
    class Student(db.Entity):  # type: ignore[name-defined]
        courses = Set("Course")
        friends = Set("Student", reverse="friends")

    class Course(db.Entity):  # type: ignore[name-defined]
        students = Set(Student)
