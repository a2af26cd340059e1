"""The physical planner's oracle on every backend: a database made by Pony from model A with rows, migrated
by the planned steps, equals one Pony creates fresh from model B, and the rows survive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from _plan_harness import Model, assert_same_as_fresh, connect, migrate, offline, rows, run
from pony.orm import (
    Database,
    Discriminator,
    LongStr,
    Optional,
    PrimaryKey,
    Required,
    Set,
    composite_index,
    composite_key,
    db_session,
)

from conftest import Backend
from ponykit.errors import MigrationError
from ponykit.migrate._hints import Hints
from ponykit.migrate._plan import plan


def T(name: str, dialect: str) -> str:
    """Pony's table name for an entity on ``dialect`` (the class name on SQLite, lower case elsewhere)."""
    return name if dialect == "sqlite" else name.lower()


@dataclass
class Case:
    a: Model
    b: Model
    hints: Callable[[str], Hints] = lambda d: Hints()
    fill: Callable[[Database], None] = lambda db: None
    # (SQL on the migrated database with {Table} placeholders, expected rows)
    expect: list[tuple[str, list[tuple[Any, ...]]]] = field(default_factory=list)
    refused: bool = False  # a check must refuse it


def _sql(template: str, dialect: str) -> str:
    return template.format_map(_Names(dialect))


class _Names(dict[str, str]):
    def __init__(self, dialect: str) -> None:
        super().__init__()
        self.dialect = dialect

    def __missing__(self, key: str) -> str:
        q = "`" if self.dialect == "mysql" else '"'
        return f"{q}{T(key, self.dialect)}{q}"


# --- models -------------------------------------------------------------------------------------------


def person_a(db: Database) -> None:
    class Person(db.Entity):
        name = Required(str, 40, index=True)
        age = Optional(int)
        email = Optional(str, 60, unique=True, nullable=True)
        boss = Optional("Person", reverse="reports")
        reports = Set("Person", reverse="boss")
        composite_key(name, age)


def fill_people(db: Database) -> None:
    with db_session:
        ann = db.Person(name="ann", age=30, email="a@x")
        db.Person(name="bob", boss=ann)


def person_plus(**extra: Callable[[], Any]) -> Model:
    """Person with extra attributes (factories: an attribute object belongs to one entity)."""

    def model(db: Database) -> None:
        namespace: dict[str, Any] = {
            "name": Required(str, 40, index=True),
            "age": Optional(int),
            "email": Optional(str, 60, unique=True, nullable=True),
            "boss": Optional("Person", reverse="reports"),
            "reports": Set("Person", reverse="boss"),
            **{name: factory() for name, factory in extra.items()},
        }
        person = type("Person", (db.Entity,), namespace)
        composite_key(person.name, person.age)  # type: ignore[attr-defined]

    return model


def person_renamed(db: Database) -> None:
    class Person(db.Entity):
        full_name = Required(str, 40, index=True)
        age = Optional(int)
        email = Optional(str, 60, unique=True, nullable=True)
        manager = Optional("Person", reverse="reports")
        reports = Set("Person", reverse="manager")
        composite_key(full_name, age)


def person_bare(db: Database) -> None:
    class Person(db.Entity):
        name = Required(str, 40, index=True)


def club_a(db: Database) -> None:
    class Person(db.Entity):
        name = Required(str, 40, index=True)
        email = Optional(str, 60, unique=True, nullable=True)
        age = Optional(int)
        pets = Set("Pet")
        tags = Set("Tag")
        composite_key(name, age)

    class Pet(db.Entity):
        owner = Required(Person)

    class Tag(db.Entity):
        label = PrimaryKey(str, 20)
        people = Set(Person)


def club_b(db: Database) -> None:
    class Human(db.Entity):
        name = Required(str, 40, index=True)
        email = Optional(str, 60, unique=True, nullable=True)
        age = Optional(int)
        pets = Set("Pet")
        tags = Set("Tag")
        composite_key(name, age)

    class Pet(db.Entity):
        owner = Required(Human)

    class Tag(db.Entity):
        label = PrimaryKey(str, 20)
        people = Set(Human)


def fill_club(db: Database) -> None:
    with db_session:
        tag = db.Tag(label="t1")
        ann = db.Person(name="ann", age=3, email="a@x", tags=[tag])
        db.Pet(owner=ann)


def club_hints(d: str) -> Hints:
    hints = Hints(table_renames={T("Person", d): T("Human", d), T("Person_Tag", d): T("Human_Tag", d)})
    hints.column_renames[(T("Human_Tag", d), "person")] = "human"
    return hints


def types_a(db: Database) -> None:
    class Item(db.Entity):
        s = Required(str, 10)
        n = Required(int)
        t = Optional(str, 20)
        x = Optional(int)
        y = Required(int)


def types_b(db: Database) -> None:
    class Item(db.Entity):
        s = Required(str, 80)
        n = Required(int, size=64)
        t = Optional(LongStr)
        x = Required(int)
        y = Optional(int)


def fill_items(db: Database) -> None:
    with db_session:
        db.Item(s="abcdefghij", n=2**31 - 1, t="twenty chars exactly", x=None, y=5)


def narrow_a(db: Database) -> None:
    class Item(db.Entity):
        s = Required(str, 80)


def narrow_b(db: Database) -> None:
    class Item(db.Entity):
        s = Required(str, 5)


def keys_a(db: Database) -> None:
    class Item(db.Entity):
        a = Required(int)
        b = Required(int)
        c = Optional(str, 30, unique=True, nullable=True)
        composite_index(a, b)


def keys_b(db: Database) -> None:
    class Item(db.Entity):
        a = Required(int, index=True)
        b = Required(int)
        c = Optional(str, 30, nullable=True)
        composite_key(a, b)


def m2m_a(db: Database) -> None:
    class Person(db.Entity):
        name = Required(str, 40)

    class Tag(db.Entity):
        label = Required(str, 20)


def m2m_b(db: Database) -> None:
    class Person(db.Entity):
        name = Required(str, 40)
        tags = Set("Tag")

    class Tag(db.Entity):
        label = Required(str, 20)
        people = Set(Person)


def fill_m2m(db: Database) -> None:
    with db_session:
        db.Person(name="ann")
        db.Tag(label="t")


def zoo_a(db: Database) -> None:
    class Animal(db.Entity):
        name = Required(str, 40)
        kind = Discriminator(str, 20)

    class Dog(Animal):
        bark = Optional(int)

    class Fish(Animal):
        fins = Optional(int)


def zoo_b(db: Database) -> None:
    class Animal(db.Entity):
        name = Required(str, 40)
        kind = Discriminator(str, 20)

    class Hound(Animal):
        bark = Optional(int)

    class Cat(Animal):
        purr = Optional(int)
        born = Optional(date)


def fill_zoo(db: Database) -> None:
    with db_session:
        db.Animal(name="generic")
        db.Dog(name="rex", bark=3)
        db.Fish(name="nemo", fins=2)


def zoo_hints(d: str) -> Hints:
    t = T("Animal", d)
    return Hints(
        discriminator_updates=[(t, "kind", "Dog", "Hound")],
        discriminator_deletes=[(t, "kind", "Fish")],
        dropped_columns={(t, "fins")},
    )


def composite_a(db: Database) -> None:
    class Box(db.Entity):
        x = Required(int)
        y = Required(str, 10)
        PrimaryKey(x, y)
        items = Set("Thing")

    class Thing(db.Entity):
        box = Required(Box)


def composite_b(db: Database) -> None:
    class Box(db.Entity):
        x = Required(int)
        y = Required(str, 10)
        PrimaryKey(x, y)
        items = Set("Thing")
        parts = Set("Part")

    class Thing(db.Entity):
        holder = Required(Box)

    class Part(db.Entity):
        box = Optional(Box)


def fill_composite(db: Database) -> None:
    with db_session:
        box = db.Box(x=1, y="a")
        db.Thing(box=box)


def mail_b(db: Database) -> None:
    class Person(db.Entity):
        name = Required(str, 40, index=True)
        age = Optional(int, size=64)
        mail = Optional(str, 100, unique=True, nullable=True)
        boss = Optional("Person", reverse="reports")
        reports = Set("Person", reverse="boss")
        composite_key(name, age)


def owned_a(db: Database) -> None:
    class Person(db.Entity):
        name = Required(str, 40)

    class Pet(db.Entity):
        nick = Required(str, 20)


def owned_b(db: Database) -> None:
    class Person(db.Entity):
        name = Required(str, 40)
        pets = Set("Pet")

    class Pet(db.Entity):
        nick = Required(str, 20)
        owner = Required(Person)


def fill_owned(db: Database) -> None:
    with db_session:
        db.Person(name="ann")
        db.Pet(nick="rex")


def beast_b(db: Database) -> None:
    class Beast(db.Entity):
        name = Required(str, 40)
        kind = Discriminator(str, 20)

    class Dog(Beast):
        bark = Optional(int)

    class Fish(Beast):
        fins = Optional(int)


def beast_hints(d: str) -> Hints:
    return Hints(
        table_renames={T("Animal", d): T("Beast", d)},
        discriminator_updates=[(T("Beast", d), "kind", "Animal", "Beast")],
    )


def fill_owned_pet(db: Database) -> None:
    with db_session:
        db.Pet(nick="rex", owner=db.Person(name="ann"))


def bigid_b(db: Database) -> None:
    class Person(db.Entity):
        id = PrimaryKey(int, size=64, auto=True)
        name = Required(str, 40)
        pets = Set("Pet")

    class Pet(db.Entity):
        nick = Required(str, 20)
        owner = Required(Person)


def defaults_a(db: Database) -> None:
    class Item(db.Entity):
        n = Required(int, sql_default="5")
        v = Required(str, 10, sql_default="'a'")
        m = Optional(int, sql_default="1")


def defaults_b(db: Database) -> None:
    class Item(db.Entity):
        n = Required(int, size=64, sql_default="5")
        v = Required(str, 20, sql_default="'a'")
        m = Optional(int, sql_default="2")
        k = Required(int, sql_default="3")


def lone_a(db: Database) -> None:
    class Animal(db.Entity):
        name = Required(str, 40)


def lone_b(db: Database) -> None:
    class Animal(db.Entity):
        name = Required(str, 40)

    class Dog(Animal):
        bark = Optional(int)


CASES: dict[str, Case] = {
    "add_nullable": Case(
        person_a,
        person_plus(score=lambda: Optional(int), note=lambda: Optional(str, nullable=True)),
        fill=fill_people,
        expect=[("SELECT name, score FROM {Person} ORDER BY name", [("ann", None), ("bob", None)])],
    ),
    "add_not_null_backfill": Case(
        person_a,
        person_plus(
            level=lambda: Required(int), nick=lambda: Optional(str, 20), since=lambda: Required(date)
        ),
        hints=lambda d: Hints(
            backfills={
                (T("Person", d), "level"): 7,
                (T("Person", d), "nick"): "it's",
                (T("Person", d), "since"): date(2020, 2, 29),
            }
        ),
        fill=fill_people,
        expect=[
            ("SELECT name, level, nick FROM {Person} ORDER BY name", [("ann", 7, "it's"), ("bob", 7, "it's")])
        ],
    ),
    "add_not_null_refused": Case(
        person_a, person_plus(level=lambda: Required(int)), fill=fill_people, refused=True
    ),
    "drop_columns": Case(
        person_a,
        person_bare,
        hints=lambda d: Hints(dropped_columns={(T("Person", d), c) for c in ("age", "email", "boss")}),
        fill=fill_people,
        expect=[("SELECT name FROM {Person} ORDER BY name", [("ann",), ("bob",)])],
    ),
    "rename_columns": Case(
        person_a,
        person_renamed,
        hints=lambda d: Hints(
            column_renames={(T("Person", d), "name"): "full_name", (T("Person", d), "boss"): "manager"}
        ),
        fill=fill_people,
        expect=[
            (
                "SELECT p.full_name, b.full_name FROM {Person} p LEFT JOIN {Person} b ON b.id = p.manager"
                " ORDER BY p.full_name",
                [("ann", None), ("bob", "ann")],
            )
        ],
    ),
    "rename_table": Case(
        club_a,
        club_b,
        hints=club_hints,
        fill=fill_club,
        expect=[
            ("SELECT name, email FROM {Human}", [("ann", "a@x")]),
            ("SELECT tag FROM {Human_Tag}", [("t1",)]),
            ("SELECT COUNT(*) FROM {Pet} JOIN {Human} ON {Human}.id = {Pet}.owner", [(1,)]),
        ],
    ),
    "types_and_nullability": Case(
        types_a,
        types_b,
        hints=lambda d: Hints(backfills={(T("Item", d), "x"): 0}),
        fill=fill_items,
        expect=[
            ("SELECT s, n, t, x, y FROM {Item}", [("abcdefghij", 2**31 - 1, "twenty chars exactly", 0, 5)]),
        ],
    ),
    "nullable_refused": Case(types_a, types_b, fill=fill_items, refused=True),
    "narrow_fits": Case(
        narrow_a,
        narrow_b,
        hints=lambda d: Hints(lossy={(T("Item", d), "s")}),
        fill=lambda db: _add(db, "Item", s="abc"),
        expect=[("SELECT s FROM {Item}", [("abc",)])],
    ),
    "narrow_refused": Case(
        narrow_a,
        narrow_b,
        hints=lambda d: Hints(lossy={(T("Item", d), "s")}),
        fill=lambda db: _add(db, "Item", s="far too long"),
        refused=True,
    ),
    "keys_and_indexes": Case(
        keys_a,
        keys_b,
        fill=lambda db: _add(db, "Item", a=1, b=2, c="x"),
        expect=[("SELECT a, b, c FROM {Item}", [(1, 2, "x")])],
    ),
    "keys_and_indexes_back": Case(
        keys_b,
        keys_a,
        fill=lambda db: _add(db, "Item", a=1, b=2, c="x"),
        expect=[("SELECT a, b, c FROM {Item}", [(1, 2, "x")])],
    ),
    "add_m2m": Case(m2m_a, m2m_b, fill=fill_m2m, expect=[("SELECT COUNT(*) FROM {Person_Tag}", [(0,)])]),
    "drop_m2m": Case(
        m2m_b,
        m2m_a,
        hints=lambda d: Hints(dropped_tables={T("Person_Tag", d)}),
        fill=fill_m2m,
        expect=[("SELECT label FROM {Tag}", [("t",)])],
    ),
    "add_entity": Case(person_bare, club_a, fill=lambda db: _add(db, "Person", name="ann")),
    "drop_entity": Case(
        club_a,
        person_plus(),
        hints=lambda d: Hints(
            dropped_tables={T("Pet", d), T("Tag", d), T("Person_Tag", d)},
        ),
        fill=fill_club,
        expect=[("SELECT name FROM {Person}", [("ann",)])],
    ),
    "inheritance": Case(
        zoo_a,
        zoo_b,
        hints=zoo_hints,
        fill=fill_zoo,
        expect=[("SELECT name, kind FROM {Animal} ORDER BY name", [("generic", "Animal"), ("rex", "Hound")])],
    ),
    "composite_fk": Case(
        composite_a,
        composite_b,
        hints=lambda d: Hints(
            column_renames={(T("Thing", d), "box_x"): "holder_x", (T("Thing", d), "box_y"): "holder_y"}
        ),
        fill=fill_composite,
        expect=[("SELECT holder_x, holder_y FROM {Thing}", [(1, "a")])],
    ),
    "rename_and_retype": Case(
        person_a,
        mail_b,
        hints=lambda d: Hints(column_renames={(T("Person", d), "email"): "mail"}),
        fill=fill_people,
        expect=[
            ("SELECT name, mail, age FROM {Person} ORDER BY name", [("ann", "a@x", 30), ("bob", None, None)])
        ],
    ),
    "add_required_relation": Case(
        owned_a,
        owned_b,
        hints=lambda d: Hints(backfills={(T("Pet", d), "owner"): 1}),
        fill=fill_owned,
        expect=[("SELECT nick, owner FROM {Pet}", [("rex", 1)])],
    ),
    "rename_root_entity": Case(
        zoo_a,
        beast_b,
        hints=beast_hints,
        fill=fill_zoo,
        expect=[
            (
                "SELECT name, kind FROM {Beast} ORDER BY name",
                [("generic", "Beast"), ("nemo", "Fish"), ("rex", "Dog")],
            )
        ],
    ),
    "widen_referenced_key": Case(
        owned_b,
        bigid_b,
        fill=fill_owned_pet,
        expect=[("SELECT nick, owner FROM {Pet}", [("rex", 1)])],
    ),
    "defaults_restated": Case(
        defaults_a,
        defaults_b,
        fill=lambda db: _add(db, "Item", n=1, v="x", m=4),
        expect=[("SELECT n, v, m, k FROM {Item}", [(1, "x", 4, 3)])],
    ),
    "first_subclass": Case(
        lone_a,
        lone_b,
        hints=lambda d: Hints(backfills={(T("Animal", d), "classtype"): "Animal"}),
        fill=lambda db: _add(db, "Animal", name="generic"),
        expect=[("SELECT name, classtype, bark FROM {Animal}", [("generic", "Animal", None)])],
    ),
}


def _add(db: Database, entity: str, **values: Any) -> None:
    with db_session:
        db.entities[entity](**values)


@pytest.mark.parametrize("name", sorted(CASES))
def test_oracle(backend: Backend, name: str) -> None:
    case = CASES[name]
    d = backend.name
    migration, counts = migrate(d, backend.url, case.a, case.b, case.hints(d), case.fill)
    if case.refused:
        assert any(counts), f"no check refused:\n{migration}"
        return
    assert not any(counts), f"a check refused: {counts}\n{migration}"
    assert_same_as_fresh(d, backend.url, case.b)
    for template, expected in case.expect:
        got = rows(d, backend.url, _sql(template, d))
        assert got == expected, f"{template}: {got} != {expected}\n{migration}"
    # Nothing left to do: planning from the model B against itself is empty.
    assert not plan(offline(case.b, d), offline(case.b, d), Hints()).steps


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mysql"])
def test_plans_are_deterministic_and_readable(dialect: str) -> None:
    case = CASES["add_not_null_backfill"]
    first = plan(offline(case.a, dialect), offline(case.b, dialect), case.hints(dialect))
    second = plan(offline(case.a, dialect), offline(case.b, dialect), case.hints(dialect))
    assert first.statements == second.statements
    assert str(first) == str(second)
    person = T("Person", dialect)
    assert f"{person}: " in str(first)
    assert 'add column nick (backfill "it\'s")' in str(first)
    assert all(step.description and step.sql for step in first.steps)


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mysql"])
def test_an_unexplained_drop_is_a_bug(dialect: str) -> None:
    with pytest.raises(AssertionError, match="column .*age disappears"):
        plan(offline(person_a, dialect), offline(person_bare, dialect), Hints())
    with pytest.raises(AssertionError, match="(?i)table person_tag disappears"):
        plan(offline(club_a, dialect), offline(person_plus(), dialect), Hints())


def test_checks_name_the_column_and_the_fix() -> None:
    migration = plan(
        offline(person_a, "postgres"), offline(person_plus(level=lambda: Required(int)), "postgres")
    )
    assert [c.sql for c in migration.checks] == ['SELECT COUNT(*) FROM "person"']
    assert "person.level is added NOT NULL" in migration.checks[0].message
    assert "backfill" in migration.checks[0].message


def test_mariadb_runs_one_statement_per_step() -> None:
    for case in CASES.values():
        migration = plan(offline(case.a, "mysql"), offline(case.b, "mysql"), case.hints("mysql"))
        assert all(len(step.sql) == 1 for step in migration.steps), str(migration)


def mail_c(db: Database) -> None:
    class Person(db.Entity):
        name = Required(str, 40)
        mail = Optional(str, 100, nullable=True)
        boss = Optional("Person", reverse="reports")
        reports = Set("Person", reverse="boss")


def club_c(db: Database) -> None:
    class Human(db.Entity):
        name = Required(str, 40, index=True)
        email = Optional(str, 60, nullable=True)
        age = Optional(int)
        tags = Set("Tag")

    class Tag(db.Entity):
        label = PrimaryKey(str, 20)
        people = Set(Human)


CHAINS: dict[str, tuple[list[Model], list[Callable[[str], Hints]], Callable[[Database], None]]] = {
    "rename_then_drop_unique": (
        [person_a, mail_b, mail_c],
        [
            lambda d: Hints(column_renames={(T("Person", d), "email"): "mail"}),
            lambda d: Hints(dropped_columns={(T("Person", d), "age")}),
        ],
        fill_people,
    ),
    "rename_table_then_drop_entity": (
        [club_a, club_b, club_c],
        [club_hints, lambda d: Hints(dropped_tables={T("Pet", d)})],
        fill_club,
    ),
}


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_chained_migrations(backend: Backend, name: str) -> None:
    """Names the previous migration left (backend-chosen ones included) are the ones the next expects."""
    models, hints, fill = CHAINS[name]
    d = backend.name
    migration, counts = migrate(d, backend.url, models[0], models[1], hints[0](d), fill)
    assert not any(counts)
    for before, after, hint in zip(models[1:-1], models[2:], hints[1:], strict=True):
        migration = plan(offline(before, d), offline(after, d), hint(d))
        assert not any(run(d, backend.url, migration)), str(migration)
    assert_same_as_fresh(d, backend.url, models[-1])


@pytest.mark.backends("sqlite")
def test_sqlite_rebuild_keeps_the_autoincrement_counter(backend: Backend) -> None:
    def fill(db: Database) -> None:
        with db_session:
            db.Person(name="ann")
            db.Person(name="bob")
        with db_session:
            db.Person[2].delete()

    migration, _counts = migrate("sqlite", backend.url, person_bare, person_plus(), Hints(), fill)
    assert "rebuild" in str(migration)
    con = connect("sqlite", backend.url)
    try:
        con.execute("INSERT INTO \"Person\" (name) VALUES ('cy')")
        ids = [r[0] for r in con.execute('SELECT id FROM "Person" ORDER BY id')]
    finally:
        con.close()
    assert ids == [1, 3]  # bob's id 2 is not reused


def swap_a(db: Database) -> None:
    class Item(db.Entity):
        a = Required(int)
        b = Required(int)
        c = Optional(int)


def chain_b(db: Database) -> None:
    class Item(db.Entity):
        b = Required(int)
        c = Required(int)
        d = Optional(int)


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mysql"])
def test_rename_chains_are_ordered_and_cycles_refused(dialect: str) -> None:
    item = T("Item", dialect)
    chain = Hints(column_renames={(item, "a"): "b", (item, "b"): "c", (item, "c"): "d"})
    migration = plan(offline(swap_a, dialect), offline(chain_b, dialect), chain)
    text = "\n".join(migration.statements)
    assert text.index("TO " + ("`d`" if dialect == "mysql" else '"d"')) < text.index(
        "TO " + ("`c`" if dialect == "mysql" else '"c"')
    )
    cycle = Hints(column_renames={(item, "a"): "b", (item, "b"): "a"})
    with pytest.raises(MigrationError, match="cycle"):
        plan(offline(swap_a, dialect), offline(swap_a, dialect), cycle)


def test_rename_chain_on_a_live_database(backend: Backend) -> None:
    item = T("Item", backend.name)
    chain = Hints(column_renames={(item, "a"): "b", (item, "b"): "c", (item, "c"): "d"})
    _migration, counts = migrate(
        backend.name, backend.url, swap_a, chain_b, chain, lambda db: _add(db, "Item", a=1, b=2, c=3)
    )
    assert not any(counts)
    assert rows(backend.name, backend.url, _sql("SELECT b, c, d FROM {Item}", backend.name)) == [(1, 2, 3)]
    assert_same_as_fresh(backend.name, backend.url, chain_b)
