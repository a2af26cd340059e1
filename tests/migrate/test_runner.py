"""upgrade / downgrade / status on every backend: order, targets, progress, failures, historical models."""

from __future__ import annotations

import secrets
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
from pony.orm import Database, Optional, Required, Set, db_session

import ponykit
from conftest import Backend
from ponykit import migrate
from ponykit.errors import MigrationError, MigrationLockTimeout, MigrationStateError, UnsafeMigration
from ponykit.migrate._connect import open_connection


def write_migration(
    directory: Path, number: int, down: str | tuple[str, ...] | None, operations: str, doc: str = "m"
) -> str:
    """A hand-written migration file in ponykit's format; returns its revision id."""
    from ponykit.migrate._ops_base import empty_snapshot
    from ponykit.migrate._snapshot import snapshot_hash

    directory.mkdir(parents=True, exist_ok=True)
    revision = f"{number:04d}_{secrets.token_hex(3)}"
    (directory / f"{revision}_{doc.replace(' ', '_')}.py").write_text(
        f'"""{doc}"""\n\nfrom ponykit.migrate import op\n\nrevision = {revision!r}\n'
        f"down_revision = {down!r}\nschema_hash = {snapshot_hash(empty_snapshot())!r}\n\n"
        f"operations = [\n    {operations},\n]\n"
    )
    return revision


def create(table: str) -> str:
    """A RunSQL creating ``table`` with one row, reversible."""
    return (
        f'op.RunSQL("CREATE TABLE {table} (id INTEGER PRIMARY KEY); INSERT INTO {table} VALUES (1)", '
        f'reverse="DROP TABLE {table}")'
    )


def tables(db: Database) -> set[str]:
    """The tables of the test's database/schema (lower case)."""
    from ponykit.migrate._introspect import introspect

    con = open_connection(db)
    try:
        return {name.lower() for name in introspect(con.connection, con.dialect).tables}
    finally:
        con.close()


@pytest.fixture
def bound(backend: Backend) -> Any:
    db = Database()
    ponykit.bind_url(db, backend.url)
    yield db
    db.disconnect()


def test_upgrade_status_downgrade_round_trip(bound: Database, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    a = write_migration(d, 1, None, create("t_one"), "create one")
    b = write_migration(d, 2, a, create("t_two"), "create two")
    c = write_migration(d, 3, b, create("t_three"), "create three")
    state = migrate.status(bound, directory=d)
    assert (state.applied, state.pending, state.current) == ([], [a, b, c], None)
    lines: list[str] = []
    assert migrate.upgrade(bound, b[:4], directory=d, progress=lines.append) == [a, b]
    text = "".join(lines)
    assert f"Applying {a} create one ... done in" in text and c not in text
    assert tables(bound) >= {"t_one", "t_two"} and "t_three" not in tables(bound)
    assert migrate.upgrade(bound, directory=d) == [c]
    lines.clear()
    assert migrate.upgrade(bound, directory=d, progress=lines.append) == []
    assert "up to date" in "".join(lines)
    state = migrate.status(bound, directory=d)
    assert (state.applied, state.pending, state.current, state.up_to_date) == ([a, b, c], [], c, True)
    assert migrate.downgrade(bound, directory=d) == [c]
    assert "t_three" not in tables(bound)
    assert migrate.downgrade(bound, a, directory=d) == [b]
    assert migrate.status(bound, directory=d).applied == [a]
    assert migrate.downgrade(bound, "base", directory=d) == [a]
    assert not {"t_one", "t_two", "t_three"} & tables(bound)
    assert migrate.upgrade(bound, directory=d) == [a, b, c]


def test_failed_revision_leaves_nothing_on_pg_and_sqlite(
    bound: Database, tmp_path: Path, backend: Backend
) -> None:
    d = tmp_path / "migrations"
    a = write_migration(d, 1, None, create("t_ok"))
    b = write_migration(
        d, 2, a, create("t_half") + ',\n    op.RunSQL("INSERT INTO t_missing VALUES (1)")', "bad"
    )
    with pytest.raises(MigrationError) as info:
        migrate.upgrade(bound, directory=d)
    message = str(info.value)
    assert b in message and "step 2/2" in message and "t_missing" in message and "\n" not in message
    state = migrate.status(bound, directory=d)
    assert state.applied == [a]
    if backend.name == "mysql":
        assert state.partial == {b: 1} and "t_half" in tables(bound)
    else:
        assert state.partial == {} and "t_half" not in tables(bound)


def test_irreversible_operation_refuses_downgrade(bound: Database, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    a = write_migration(d, 1, None, 'op.RunSQL("CREATE TABLE t_keep (id INTEGER PRIMARY KEY)")', "no reverse")
    migrate.upgrade(bound, directory=d)
    with pytest.raises(MigrationError) as info:
        migrate.downgrade(bound, directory=d)
    assert a in str(info.value) and "reverse" in str(info.value)
    assert migrate.status(bound, directory=d).applied == [a]


def test_targets_and_heads(bound: Database, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    a = write_migration(d, 1, None, create("t_root"))
    b = write_migration(d, 2, a, create("t_left"))
    c = write_migration(d, 2, a, create("t_right"))
    with pytest.raises(MigrationStateError, match="several heads"):
        migrate.upgrade(bound, directory=d)
    with pytest.raises(MigrationStateError, match="no revision"):
        migrate.upgrade(bound, "9999", directory=d)
    assert migrate.upgrade(bound, c, directory=d) == [a, c]
    assert migrate.upgrade(bound, "heads", directory=d) == [b]
    m = write_migration(d, 3, (b, c), 'op.RunSQL("SELECT 1", reverse="SELECT 1")', "merge")
    assert migrate.upgrade(bound, directory=d) == [m]
    assert migrate.status(bound, directory=d).heads == [m]


@pytest.mark.backends("postgres", "mysql")
def test_statement_lock_timeout_fails_fast(bound: Database, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    a = write_migration(d, 1, None, create("t_busy"))
    migrate.upgrade(bound, directory=d)
    write_migration(d, 2, a, 'op.RunSQL("ALTER TABLE t_busy ADD COLUMN extra INTEGER")', "alter busy")
    other = open_connection(bound)
    try:
        other.execute("BEGIN")
        other.execute("SELECT * FROM t_busy")  # a reader holds the table's metadata/share lock
        started = time.monotonic()
        with pytest.raises(MigrationLockTimeout, match="t_busy"):
            migrate.upgrade(bound, directory=d, statement_lock_timeout=1)
        assert time.monotonic() - started < 10
    finally:
        other.execute("ROLLBACK")
        other.close()


def _person_models(url: str, extra: bool) -> Database:
    db = Database()

    class Person(db.Entity):  # type: ignore[name-defined]  # Pony's entity base is dynamic
        name = Required(str, 40)
        if extra:
            level = Required(int, default=0)

    ponykit.bind_url(db, url)
    return db


def test_run_python_sees_historical_entities_and_rolls_back(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "migrations"
    v1 = _person_models(backend.url, extra=False)
    try:
        assert migrate.make(v1, "person", directory=d) is not None
        migrate.upgrade(v1, directory=d)
        v1.generate_mapping(create_tables=False, check_tables=False)  # as the app does at start-up
        with db_session:
            v1.Person(name="ann")
            v1.Person(name="bob")
        seen: list[Any] = []

        def upper(hdb: Database) -> None:
            seen.append(sorted(hdb.entities))
            for person in hdb.Person.select():
                person.name = person.name.upper()

        def lower(hdb: Database) -> None:
            for person in hdb.Person.select():
                person.name = person.name.lower() + "!"

        def fail(hdb: Database) -> None:
            raise RuntimeError("injected failure")

        hooks = types.ModuleType("t_hooks")
        hooks.upper, hooks.lower, hooks.fail = upper, lower, fail  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "t_hooks", hooks)
        head = migrate.status(v1, directory=d).current
        second = write_migration(d, 2, head, "op.RunPython(__import__('t_hooks').upper)", "upper names")
        migrate.upgrade(v1, directory=d)
        assert seen == [["Person"]]
        with db_session:
            assert sorted(p.name for p in v1.Person.select()) == ["ANN", "BOB"]
        ops = "op.RunPython(__import__('t_hooks').lower),\n    op.RunPython(__import__('t_hooks').fail)"
        write_migration(d, 3, second, ops, "fails after a write")
        with pytest.raises(MigrationError, match="injected failure"):
            migrate.upgrade(v1, directory=d)
        with db_session:
            names = sorted(p.name for p in v1.Person.select())
        state = migrate.status(v1, directory=d)
        assert state.current == second
        if backend.name == "mysql":  # RunPython commits in its own transaction; the revision stays partial
            assert names == ["ann!", "bob!"] and list(state.partial.values()) == [1]
        else:  # lower()'s writes rolled back with the migration
            assert names == ["ANN", "BOB"] and state.partial == {}
    finally:
        v1.disconnect()


def _evolving(url: str, version: int) -> Database:
    db = Database()

    class Person(db.Entity):  # type: ignore[name-defined]  # Pony's entity base is dynamic
        name = Required(str, 40, index=version < 3)
        if version >= 2:
            nick = Optional(str, 20)
        if version >= 3:
            pets = Set("Pet")

    if version >= 3:

        class Pet(db.Entity):  # type: ignore[name-defined]
            tag = Required(str, unique=True)
            owner = Required(Person)

    ponykit.bind_url(db, url)
    return db


def _drift(db: Database, snapshot: dict[str, Any]) -> list[str]:
    from ponykit.migrate._compare import compare
    from ponykit.migrate._execute import server_version
    from ponykit.migrate._introspect import introspect
    from ponykit.migrate._models import build

    con = open_connection(db)
    try:
        wanted = build(snapshot, con.dialect, server_version(con)).schema
        return [str(x) for x in compare(wanted, introspect(con.connection, con.dialect))]
    finally:
        con.close()


def test_schema_round_trip_downgrade_equals_each_earlier_schema(backend: Backend, tmp_path: Path) -> None:
    from ponykit.migrate._history import load_history

    d = tmp_path / "migrations"
    dbs = [_evolving(backend.url, version) for version in (1, 2, 3)]
    try:
        for number, db in enumerate(dbs, 1):
            assert migrate.make(db, f"version {number}", directory=d) is not None
            migrate.upgrade(db, directory=d)
        con = open_connection(dbs[0])
        con.execute("INSERT INTO person (name, nick) VALUES ('ann', 'a')")
        con.close()
        history = load_history(d)
        revisions = history.order
        assert _drift(dbs[2], history.after(revisions[-1])) == []
        for index in (1, 0):
            assert migrate.downgrade(dbs[0], directory=d) == [revisions[index + 1]]
            assert _drift(dbs[0], history.after(revisions[index])) == []
        con = open_connection(dbs[0])
        assert con.rows("SELECT name FROM person") == [("ann",)]
        con.close()
        assert migrate.upgrade(dbs[0], directory=d) == revisions[1:]
        assert _drift(dbs[0], history.after(revisions[-1])) == []
    finally:
        for db in dbs:
            db.disconnect()


def test_init_from_db_baselines_an_existing_database(backend: Backend, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    app = _evolving(backend.url, 3)
    app.generate_mapping(create_tables=True)  # the tables Pony made before migrations existed
    other = _evolving(backend.url, 2)
    try:
        with pytest.raises(MigrationStateError, match="does not match the models"):
            migrate.init(other, directory=tmp_path / "wrong", from_db=True)
        first = migrate.init(app, directory=d, from_db=True)
        revision = first.name[:11]
        state = migrate.status(app, directory=d)
        assert (state.applied, state.pending) == ([revision], [])
        assert migrate.check(app, directory=d).ok
        assert migrate.upgrade(app, directory=d) == []
    finally:
        app.disconnect()
        other.disconnect()


def test_historical_and_sql(backend: Backend, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    dbs = [_evolving(backend.url, version) for version in (1, 2)]
    try:
        for number, db in enumerate(dbs, 1):
            migrate.make(db, f"version {number}", directory=d)
        migrate.upgrade(dbs[0], "0001", directory=d)
        first = migrate.status(dbs[0], directory=d).applied[0]
        old = migrate.historical(dbs[0], first, directory=d)
        assert not hasattr(old.Person, "nick")  # as of the first revision
        assert hasattr(migrate.historical(dbs[0], "head", directory=d).Person, "nick")
        with db_session:
            old.Person(name="cy")
        with db_session:
            assert [p.name for p in migrate.historical(dbs[0], first, directory=d).Person.select()] == ["cy"]
        script = migrate.sql(dbs[0], from_rev=first, directory=d)
        assert "nick" in script and first not in script  # only the second revision
        full = migrate.sql(None, dialect="postgres", directory=d)
        assert full.count("CREATE TABLE") == 1 and "BEGIN;" in full and "nick" in full
    finally:
        for db in dbs:
            db.disconnect()


def _sized(url: str, size: int) -> Database:
    db = Database()

    class Person(db.Entity):  # type: ignore[name-defined]  # Pony's entity base is dynamic
        name = Required(str, size)

    ponykit.bind_url(db, url)
    return db


def test_a_failing_check_refuses_the_revision_before_any_ddl(backend: Backend, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    wide, narrow = _sized(backend.url, 40), _sized(backend.url, 10)
    try:
        migrate.make(wide, "wide", directory=d)
        migrate.upgrade(wide, directory=d)
        con = open_connection(wide)
        con.execute("INSERT INTO person (name) VALUES ('a name much longer than ten')")
        con.close()
        second = migrate.make(narrow, "narrow", directory=d, allow_lossy=True)
        assert second is not None
        with pytest.raises(UnsafeMigration):
            migrate.upgrade(narrow, directory=d)
        state = migrate.status(narrow, directory=d)
        assert len(state.pending) == 1 and state.partial == {}  # refused before any statement, everywhere
    finally:
        wide.disconnect()
        narrow.disconnect()


def _sessions(db: Database) -> int:
    """Connections the server holds to the test's database (PostgreSQL, MariaDB)."""
    con = open_connection(db)
    try:
        if con.dialect == "postgres":
            return int(con.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"))
        return int(con.scalar("SELECT count(*) FROM information_schema.processlist WHERE db = DATABASE()"))
    finally:
        con.close()


def test_historical_disconnect_closes_its_connection(backend: Backend, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    app = _evolving(backend.url, 1)
    try:
        migrate.make(app, "version 1", directory=d)
        migrate.upgrade(app, directory=d)
        before = None if backend.name == "sqlite" else _sessions(app)
        old = migrate.historical(app, "head", directory=d)
        with db_session:
            old.Person(name="cy")
        if before is not None:
            assert _sessions(app) == before + 1
        old.disconnect()
        if before is not None:
            assert _sessions(app) == before  # the historical models' own connection is closed
        else:
            from pony.orm.dbapiprovider import ProgrammingError

            with pytest.raises(ProgrammingError, match="closed"), db_session:
                old.Person.select()[:]
    finally:
        app.disconnect()
