"""A hypothesis state machine over nested savepoints, on every backend.

Steps create, change and delete rows, add and remove collection members (many-to-many and one-to-many),
load objects and collections, open savepoints, release them, and leave them with an exception (a user
error, a real integrity error from the database, with or without unflushed changes pending). After every
step the session's identity map (each live object's loaded values, its loaded collections) must equal
what the database holds, read with raw SQL in the same transaction; objects created in a rolled-back
block must be unusable; ``on_rollback`` callbacks must have run exactly for the blocks rolled back. At the
end, after commit, ``on_commit`` must have fired exactly for the blocks that survived.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pony.orm import Database, Optional, PrimaryKey, Required, Set, db_session

import ponykit as pk
from ponykit import _pony


class Boom(Exception):
    """A user error leaving a savepoint block."""


def make_schema(db: Database) -> tuple[Any, ...]:
    class Person(db.Entity):
        name = Required(str, unique=True)
        age = Optional(int)
        tags = Set("Tag")
        pets = Set("Pet")
        badges = Set("Badge")

    class Tag(db.Entity):
        label = Required(str)
        people = Set(Person)
        badges = Set("Badge")

    class Pet(db.Entity):
        name = Required(str)
        owner = Optional(Person)

    class Badge(db.Entity):  # a composite key made of two relations
        person = Required(Person)
        tag = Required(Tag)
        level = Optional(int)
        PrimaryKey(person, tag)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Person, Tag, Pet, Badge


CHANGES = [
    "create_person",
    "create_tag",
    "create_pet",
    "change_age",
    "increment_age",
    "move_pet",
    "delete",
    "tag_person",
    "create_badge",
    "change_badge",
]


@dataclass
class Block:
    """One open savepoint of the machine, with the labels of the blocks it kept (released inside it)."""

    manager: Any
    label: str
    kept: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # of the people created inside it


def _table(db: Database, table: Any) -> str:
    return _pony.quote_name(db, table)


def database_image(db: Database, entities: tuple[Any, ...]) -> dict[tuple[str, Any], dict[str, Any]]:
    """What the database holds, read with raw SQL in the current transaction: the loaded_state() shape,
    with every collection fully loaded."""
    Person, Tag, Pet, Badge = entities
    image: dict[tuple[str, Any], dict[str, Any]] = {}
    for entity in (Person, Tag, Pet, Badge):
        info = _pony.entity_info(entity)
        columns = ", ".join(_pony.quote_name(db, c) for c in info.columns)
        for row in db.select(f"SELECT {columns} FROM {_table(db, info.table)}"):
            values = dict(zip(info.column_attrs, row, strict=True))
            key = (values["person"], values["tag"]) if entity is Badge else values["id"]
            image[(info.name, key)] = values
    for key, values in image.items():
        if key[0] == "Person":
            values["tags"] = (True, set())
            values["pets"] = (True, set())
            values["badges"] = (True, set())
        elif key[0] == "Tag":
            values["people"] = (True, set())
            values["badges"] = (True, set())
    link = next(lt for lt in _pony.entity_info(Person).link_tables if lt.attr == "tags")
    person_col, tag_col = (_pony.quote_name(db, c) for c in (link.columns[0], link.reverse_columns[0]))
    sql = f"SELECT {person_col}, {tag_col} FROM {_table(db, link.table)}"
    for person, tag in db.select(sql):
        image[("Person", person)]["tags"][1].add(tag)
        image[("Tag", tag)]["people"][1].add(person)
    for key, values in image.items():
        if key[0] == "Pet" and values["owner"] is not None:
            image[("Person", values["owner"])]["pets"][1].add(key[1])
        elif key[0] == "Badge":
            image[("Person", values["person"])]["badges"][1].add(key[1])
            image[("Tag", values["tag"])]["badges"][1].add(key[1])
    return image


def assert_session_matches(db: Database, entities: tuple[Any, ...]) -> None:
    """Every live object's loaded values and collections equal the database's (after a flush)."""
    _pony.flush_session(db)
    shown = _pony.loaded_state(db)
    held = database_image(db, entities)
    for key, values in shown.items():
        assert key in held, f"{key} is in the identity map but its row is gone"
        row = held[key]
        for name, value in values.items():
            if isinstance(value, tuple):
                fully_loaded, members = value
                in_db = row[name][1]
                if fully_loaded:
                    assert members == in_db, f"{key}.{name}: session {members} != database {in_db}"
                else:
                    assert members <= in_db, f"{key}.{name}: session {members} not within {in_db}"
            else:
                assert value == row[name], f"{key}.{name}: session {value!r} != database {row[name]!r}"


def run_machine(make_db: Callable[[], Database]) -> None:
    db = make_db()
    entities = make_schema(db)
    Person, Tag, Pet, Badge = entities

    class Savepoints(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            with db_session:
                link = next(lt for lt in _pony.entity_info(Person).link_tables if lt.attr == "tags")
                for table in (link.table, *(_pony.entity_info(e).table for e in (Badge, Pet, Person, Tag))):
                    db.execute(f"DELETE FROM {_table(db, table)}")
            with db_session:  # committed rows the machine's session has not loaded yet
                people = [Person(name=f"seed{i}", age=20 + i) for i in range(3)]
                tags = [Tag(label=f"seed{i}") for i in range(3)]
                people[0].tags = tags[:1]
                people[1].tags = tags[:2]
                Pet(name="seed0", owner=people[1])
                Pet(name="seed1")
                Badge(person=people[1], tag=tags[0], level=1)
            self.badge_pairs = {("seed1", "seed0")}  # (person name, tag label): one badge each, ever
            self.numbers = iter(range(1, 10_000))
            self.blocks: list[Block] = []
            self.kept_top: list[str] = ["top"]
            self.committed: list[str] = []
            self.rolled: list[str] = []
            self.expected_rolled: list[str] = []
            # every object the machine created or used, as application code would hold on to them
            self.held: list[Any] = []
            self.names = [f"seed{i}" for i in range(3)]  # every Person name, some of rows long gone
            db_session.__enter__()
            pk.on_commit(lambda: self.committed.append("top"))
            # Some rows loaded before any savepoint, with a loaded collection; the rest loads later.
            for name in ("seed0", "seed1"):
                person = Person.get(name=name)
                self.held.append(person)
                self.held.extend(person.tags)
            # and rows created by this session (their collections are known in full: empty)
            self.held.append(Person(name="fresh0"))
            self.held.append(Tag(label="fresh0"))
            self.names.append("fresh0")
            _pony.flush_session(db)

        # -- choosing objects -----------------------------------------------------------------------

        def live(self, entity: Any) -> list[Any]:
            # Objects with a key (flushed), in key order: the choice must not depend on set order.
            objs = [o for o in _pony.session_objects(db) if isinstance(o, entity)]
            return sorted((o for o in objs if _pony.primary_key(o) is not None), key=_pony.raw_primary_key)

        def pick(self, data: Any, entity: Any) -> Any | None:
            objs = self.live(entity)
            if not objs:
                return None
            obj = data.draw(st.sampled_from(objs))
            self.held.append(obj)
            return obj

        # -- changes (one rule, so that the savepoint rules are drawn often) ---------------------------

        @rule(data=st.data(), op=st.sampled_from(CHANGES))
        def change(self, data: Any, op: str) -> None:
            getattr(self, op)(data)

        def create_person(self, data: Any) -> None:
            age = data.draw(st.none() | st.integers(0, 99))
            name = f"p{next(self.numbers)}"
            self.names.append(name)
            if self.blocks:
                self.blocks[-1].names.append(name)
            self.held.append(Person(name=name, age=age))

        def create_tag(self, data: Any) -> None:
            self.held.append(Tag(label=f"t{next(self.numbers)}"))

        def create_pet(self, data: Any) -> None:
            owner = self.pick(data, Person) if data.draw(st.booleans()) else None
            self.held.append(Pet(name=f"pet{next(self.numbers)}", owner=owner))

        def change_age(self, data: Any) -> None:
            person = self.pick(data, Person)
            if person is not None:
                person.age = data.draw(st.none() | st.integers(0, 99))

        def increment_age(self, data: Any) -> None:
            # A read, then a write: Pony's optimistic check of the update compares the column with the
            # value read (the database value it keeps per object).
            person = self.pick(data, Person)
            if person is not None:
                person.age = (person.age or 0) + 1

        def move_pet(self, data: Any) -> None:
            pet = self.pick(data, Pet)
            if pet is not None:
                pet.owner = self.pick(data, Person) if data.draw(st.booleans()) else None

        def create_badge(self, data: Any) -> None:
            person, tag = self.pick(data, Person), self.pick(data, Tag)
            if person is None or tag is None or (person.name, tag.label) in self.badge_pairs:
                return
            self.badge_pairs.add((person.name, tag.label))
            self.held.append(Badge(person=person, tag=tag, level=data.draw(st.integers(0, 9))))

        def change_badge(self, data: Any) -> None:
            badge = self.pick(data, Badge)
            if badge is not None:
                badge.level = data.draw(st.none() | st.integers(0, 9))

        def delete(self, data: Any) -> None:
            entity = data.draw(st.sampled_from([Person, Tag, Pet, Badge]))
            obj = self.pick(data, entity)
            if obj is not None:
                obj.delete()

        def tag_person(self, data: Any) -> None:
            person, tag = self.pick(data, Person), self.pick(data, Tag)
            if person is None or tag is None:
                return
            if data.draw(st.booleans()):
                person.tags.add(tag)
            else:
                person.tags.remove(tag)

        @rule(
            data=st.data(),
            which=st.sampled_from(["tags", "pets", "badges", "people", "select", "seeds", "name"]),
        )
        def load(self, data: Any, which: str) -> None:
            if which == "select":  # Pony keeps the results of a query for the session
                found = Person.select()[:]
                table = _table(db, _pony.entity_info(Person).table)
                in_db = sorted(row for row in db.select(f"SELECT id FROM {table}"))
                assert sorted(_pony.primary_key(p) for p in found) == in_db
                self.held.extend(found)
            elif which == "seeds":  # rows committed before the session, loaded now (maybe in a block)
                self.held.extend(Tag.select()[:])
                self.held.extend(Pet.select()[:])
                self.held.extend(Badge.select()[:])
            elif which == "name":  # Pony answers from its unique-key index when it holds the name
                name = data.draw(st.sampled_from(self.names[::-1]))  # recent names first
                found = Person.get(name=name)
                table = _table(db, _pony.entity_info(Person).table)
                rows = db.select(f"SELECT COUNT(*) FROM {table} WHERE name = $name")[0]
                assert rows == (0 if found is None else 1), f"Person.get(name={name!r}) -> {found!r}"
                if found is not None:
                    assert found.name == name
                    self.held.append(found)
            else:
                obj = self.pick(data, Tag if which == "people" else Person)
                if obj is not None:
                    len(getattr(obj, which))  # loads the whole collection

        # -- savepoints -------------------------------------------------------------------------------

        @precondition(lambda self: len(self.blocks) < 5)
        @rule()
        def open_savepoint(self) -> None:
            label = f"sp{next(self.numbers)}"
            manager = pk.savepoint()
            manager.__enter__()
            pk.on_commit(lambda: self.committed.append(label))
            pk.on_rollback(lambda: self.rolled.append(label))
            self.blocks.append(Block(manager, label))

        @precondition(lambda self: bool(self.blocks))
        @rule()
        def release(self) -> None:
            block = self.blocks.pop()
            assert block.manager.__exit__(None, None, None) is False
            kept = [block.label, *block.kept]
            (self.blocks[-1].kept if self.blocks else self.kept_top).extend(kept)
            if self.blocks:
                self.blocks[-1].names.extend(block.names)

        @precondition(lambda self: bool(self.blocks))
        @rule(data=st.data(), how=st.sampled_from(["boom", "unflushed", "integrity"]))
        def roll_back(self, data: Any, how: str) -> None:
            block = self.blocks.pop()
            error: BaseException = Boom()
            for op in data.draw(st.lists(st.sampled_from(CHANGES), min_size=1, max_size=3)):
                getattr(self, op)(data)
            if how != "unflushed":  # else: the changes are still pending when the block fails
                _pony.flush_session(db)
                if data.draw(st.booleans()):
                    Person.select()[:]  # a query result Pony keeps, now showing the block's changes
            if how == "integrity":
                # A statement the database refuses (on PostgreSQL, the transaction is aborted from
                # then on, until the rollback to the savepoint)
                taken = self.live(Tag)
                if taken:
                    info = _pony.entity_info(Tag)
                    columns = ", ".join(_pony.quote_name(db, c) for c in (*info.pk_columns, "label"))
                    sql = f"INSERT INTO {_table(db, info.table)} ({columns}) VALUES ($key, 'dup')"
                    key = _pony.primary_key(taken[0])
                    try:
                        db.execute(sql, {"key": key})
                    except Exception as exc:
                        error = exc
                    else:
                        raise AssertionError("a duplicate primary key was accepted by the database")
            try:
                block.manager.__exit__(type(error), error, error.__traceback__)
            except Exception as exc:  # the manager must let the block's own error propagate, not raise
                raise AssertionError(f"savepoint exit raised {exc!r}") from exc
            # on_rollback callbacks of the block and of the blocks it had kept run at once, in order
            self.expected_rolled.extend([block.label, *block.kept])
            for name in block.names:  # Pony's unique-key index no longer knows them
                assert Person.get(name=name) is None, name

        # -- checks -----------------------------------------------------------------------------------

        @invariant()
        def session_matches_database(self) -> None:
            assert_session_matches(db, entities)
            # An object is either usable and in the identity map, or unusable (deleted, or created in a
            # rolled-back block) and out of it.
            live = set(_pony.session_objects(db))
            for obj in self.held:
                assert _pony.is_deleted_or_new(obj) == (obj not in live), repr(obj)
            assert sorted(self.rolled) == sorted(self.expected_rolled)
            assert self.committed == []

        def teardown(self) -> None:
            try:
                while self.blocks:
                    self.release()
            finally:
                db_session.__exit__(None, None, None)
            assert sorted(self.committed) == sorted(self.kept_top)
            assert sorted(self.rolled) == sorted(self.expected_rolled)

    run_state_machine_as_test(Savepoints, settings=settings(stateful_step_count=20))


def test_savepoint_state_machine(make_db: Callable[[], Database]) -> None:
    run_machine(make_db)
