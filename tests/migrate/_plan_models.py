"""Models A and B of the planner's oracle cases (Pony entities declared on a given Database), their rows and
the hints the entity-level operations would give."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from _plan_harness import Model
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

from ponykit.migrate._hints import Hints


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


def _add(db: Database, entity: str, **values: Any) -> None:
    with db_session:
        db.entities[entity](**values)


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


def labels(size: int) -> Model:
    """Person and Tag (keyed by a label of ``size`` characters) in a many-to-many, and a Note per Tag."""

    def model(db: Database) -> None:
        class Person(db.Entity):
            name = Required(str, 40)
            tags = Set("Tag")

        class Tag(db.Entity):
            label = PrimaryKey(str, size)
            people = Set(Person)
            notes = Set("Note")

        class Note(db.Entity):
            tag = Required(Tag)

    return model


def fill_labels(db: Database) -> None:
    with db_session:
        tag = db.Tag(label="t1")
        db.Person(name="ann", tags=[tag])
        db.Note(tag=tag)
