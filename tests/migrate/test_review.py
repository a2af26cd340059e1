"""End-to-end evolutions a Pony user runs (make -> upgrade -> check -> downgrade) that once failed."""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pony.orm import Database, Optional, PrimaryKey, Required, Set, composite_key, db_session

import ponykit
from conftest import Backend
from ponykit import migrate
from ponykit.errors import MigrationError

Declare = Callable[[Database, int], None]


def evolve(
    backend: Backend,
    tmp_path: Path,
    declare: Declare,
    steps: list[dict[str, Any]],
    seed: Callable[[Database], Any] | None = None,
    after: Callable[[Database], Any] | None = None,
) -> None:
    """Models 1..n (``declare(db, version)``), each made with ``steps[i]`` and upgraded, checked in sync;
    ``seed`` runs on version 1, ``after`` on the last; then every revision but the first is downgraded."""
    d = tmp_path / "migrations"
    dbs: list[Database] = []
    try:
        for version, options in enumerate(steps, 1):
            db = Database()
            declare(db, version)
            ponykit.bind_url(db, backend.url)
            db.generate_mapping(create_tables=False, check_tables=False)
            dbs.append(db)
            migrate.make(db, f"version {version}", directory=d, **options)
            migrate.upgrade(db, directory=d)
            if seed is not None and version == 1:
                with db_session:
                    seed(db)
            report = migrate.check(db, directory=d)
            assert report.exit_code == 0, (version, report.problems)
        if after is not None:
            with db_session:
                after(dbs[-1])
        for _ in steps[1:]:
            migrate.downgrade(dbs[-1], directory=d)
        assert len(migrate.status(dbs[0], directory=d).applied) == 1
    finally:
        for db in dbs:
            db.disconnect()


def test_rename_onto_the_name_of_a_dropped_attribute(backend: Backend, tmp_path: Path) -> None:
    def declare(db: Database, version: int) -> None:
        class Person(db.Entity):  # type: ignore[name-defined]  # Pony's entity base is dynamic
            if version == 1:
                name = Required(str, 40, index=True)
                nick = Optional(str, 20, index=True)
            else:
                name = Optional(str, 20, index=True)

    def names(db: Database) -> None:
        assert [p.name for p in db.Person.select()] == ["b"]  # the old nick, under its new name

    renamed = {"renames": {"Person.nick": "name"}, "allow_drop": True}
    evolve(backend, tmp_path, declare, [{}, renamed], lambda db: db.Person(name="a", nick="b"), names)


def test_downgrade_of_a_dropped_required_attribute_with_rows(backend: Backend, tmp_path: Path) -> None:
    def declare(db: Database, version: int) -> None:
        class Person(db.Entity):  # type: ignore[name-defined]
            if version == 1:
                name = Required(str, 40)
            nick = Optional(str, 20)

    evolve(backend, tmp_path, declare, [{}, {"allow_drop": True}], lambda db: db.Person(name="a", nick="b"))


def test_rename_an_entity_with_a_symmetric_many_to_many(backend: Backend, tmp_path: Path) -> None:
    def declare(db: Database, version: int) -> None:
        name = "Person" if version == 1 else "Human"
        type(name, (db.Entity,), {"name": Required(str), "friends": Set(name, reverse="friends")})

        class Toy(db.Entity):  # type: ignore[name-defined]
            code = Required(int) if version == 1 else None
            code2 = Required(int) if version == 2 else None
            color = Required(str)
            composite_key(code if version == 1 else code2, color)

    def seed(db: Database) -> None:
        db.Person(name="a", friends=[db.Person(name="b")])
        db.Toy(code=1, color="red")

    def friends(db: Database) -> None:
        assert {h.name: [f.name for f in h.friends] for h in db.Human.select()} == {"a": ["b"], "b": ["a"]}

    renames = {"renames": {"Person": "Human", "Toy.code": "code2"}}
    evolve(backend, tmp_path, declare, [{}, renames], seed, friends)


def _big_ids(db: Database) -> None:
    class Event(db.Entity):  # type: ignore[name-defined]
        seq = PrimaryKey(int, auto=True, size=64)  # like ponykit's own outbox and audit tables
        name = Required(str, 40, unique=True)
        tags = Set("Tag")

    class Tag(db.Entity):  # type: ignore[name-defined]
        events = Set(Event)
        label = Optional(str, 20)
        rank = Required(int)
        composite_key(label, rank)


def test_a_64_bit_auto_key_is_in_sync_after_upgrade(backend: Backend, tmp_path: Path) -> None:
    evolve(backend, tmp_path, lambda db, version: _big_ids(db), [{}])


def test_init_from_a_database_pony_created(backend: Backend, tmp_path: Path) -> None:
    db = Database()
    _big_ids(db)
    ponykit.bind_url(db, backend.url)
    db.generate_mapping(create_tables=True)
    try:
        migrate.init(db, directory=tmp_path / "migrations", from_db=True)
        assert migrate.check(db, directory=tmp_path / "migrations").exit_code == 0
    finally:
        db.disconnect()


def test_a_lambda_default_is_recorded_the_same_in_every_process(backend: Backend, tmp_path: Path) -> None:
    def declare(db: Database, version: int) -> None:
        class Person(db.Entity):  # type: ignore[name-defined]
            score = Required(int, default=lambda: 3)  # a new function (another address) each time
            if version == 2:
                nick = Optional(str, 20)

    evolve(backend, tmp_path, declare, [{}, {}], lambda db: db.Person())
    files = sorted((tmp_path / "migrations").glob("0002_*.py"))
    assert "score" not in files[0].read_text()  # version 2 only adds nick
    assert "0x" not in (tmp_path / "migrations" / "schema.lock.json").read_text()


def test_an_attribute_type_that_cannot_be_imported_is_named(tmp_path: Path) -> None:
    class Local(enum.Enum):
        A = "a"

    db = Database()

    class Person(db.Entity):  # type: ignore[name-defined]
        kind = Required(Local)

    with pytest.raises(MigrationError, match=r"attribute Person\.kind: .*module's top level"):
        migrate.make(db, "first", directory=tmp_path / "migrations")


def test_historical_models_read_encrypted_attributes_with_the_apps_keys(
    backend: Backend, tmp_path: Path
) -> None:
    from ponykit.security import KeyRing
    from ponykit.types import EncryptedStr

    d = tmp_path / "migrations"
    db = Database()

    class Person(db.Entity):  # type: ignore[name-defined]
        secret = Optional(EncryptedStr)

    ponykit.bind_url(db, backend.url)
    ponykit.attach(db, keys=KeyRing({"k1": KeyRing.generate_key()}))
    db.generate_mapping(create_tables=False, check_tables=False)
    try:
        migrate.make(db, "first", directory=d)
        migrate.upgrade(db, directory=d)
        with db_session:
            Person(secret="s3cret")
        old = migrate.historical(db, "head", directory=d)
        try:
            with db_session:
                assert [p.secret for p in old.Person.select()] == ["s3cret"]
        finally:
            old.disconnect()
    finally:
        db.disconnect()


def test_run_python_reads_and_writes_encrypted_attributes_with_the_apps_keys(
    backend: Backend, tmp_path: Path
) -> None:
    """A data migration on a model with an encrypted attribute: its historical models use the key ring the
    application's Database was attached with (a random ring would fail to decrypt)."""
    from ponykit.security import KeyRing
    from ponykit.types import EncryptedStr

    d = tmp_path / "migrations"
    db = Database()

    class Person(db.Entity):  # type: ignore[name-defined]
        secret = Optional(EncryptedStr)

    ponykit.bind_url(db, backend.url)
    ponykit.attach(db, keys=KeyRing({"k1": KeyRing.generate_key()}))
    db.generate_mapping(create_tables=False, check_tables=False)
    try:
        migrate.make(db, "first", directory=d)
        migrate.upgrade(db, directory=d)
        with db_session:
            Person(secret="s3cret")
        path = migrate.make(db, "shout", directory=d, empty=True)
        assert path is not None
        text = path.read_text().replace("operations: list[op.Operation] = []", "operations = []")
        text = text.replace(
            "operations = [",
            "def shout(db):\n    for p in db.Person.select():\n        p.secret = p.secret.upper()\n\n\n"
            "operations = [\n    op.RunPython(shout, reverse=op.noop),",
        )
        path.write_text(text)
        migrate.upgrade(db, directory=d)
        with db_session:
            assert [p.secret for p in Person.select()] == ["S3CRET"]
    finally:
        db.disconnect()


def test_rename_an_entity_onto_the_name_of_a_dropped_one(backend: Backend, tmp_path: Path) -> None:
    def declare(db: Database, version: int) -> None:
        if version == 1:
            type("Person", (db.Entity,), {"name": Required(str)})
            type("Human", (db.Entity,), {"title": Required(str)})
        else:
            type("Person", (db.Entity,), {"title": Required(str)})

    def titles(db: Database) -> None:
        assert [p.title for p in db.Person.select()] == ["h"]

    def seed(db: Database) -> None:
        db.Person(name="p")
        db.Human(title="h")

    renamed = {"renames": {"Human": "Person"}, "allow_drop": True}
    evolve(backend, tmp_path, declare, [{}, renamed], seed, titles)


def test_a_chain_of_attribute_renames_in_any_order(backend: Backend, tmp_path: Path) -> None:
    def declare(db: Database, version: int) -> None:
        class Person(db.Entity):  # type: ignore[name-defined]
            if version == 1:
                name = Required(str)
                nick = Optional(str)
            else:
                full_name = Required(str)
                name = Optional(str)

    def names(db: Database) -> None:
        assert [(p.full_name, p.name) for p in db.Person.select()] == [("a", "b")]

    renamed = {"renames": {"Person.nick": "name", "Person.name": "full_name"}}  # the second must run first
    evolve(backend, tmp_path, declare, [{}, renamed], lambda db: db.Person(name="a", nick="b"), names)


def test_an_optional_str_made_unique_and_back_with_empty_rows(backend: Backend, tmp_path: Path) -> None:
    def declare(db: Database, version: int) -> None:
        class Person(db.Entity):  # type: ignore[name-defined]
            nick = Optional(str, 20, unique=True) if version == 2 else Optional(str, 20)

    def seed(db: Database) -> None:
        db.Person()  # Pony stores '' for "no value" in a plain Optional(str)
        db.Person()
        db.Person(nick="x")

    def nicks(db: Database) -> None:
        assert sorted(p.nick for p in db.Person.select()) == ["", "", "x"]
        db.Person()

    evolve(backend, tmp_path, declare, [{}, {}, {}], seed, nicks)
