"""MariaDB cannot roll DDL back: a migration failing half way stays ``partial`` with the steps done, and
``upgrade`` after the cause is fixed resumes at the next step (the steps done are not run again)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pony.orm import Database, Required, db_session

import ponykit
from conftest import Backend
from ponykit import migrate
from ponykit.errors import MigrationError
from ponykit.migrate._connect import open_connection

pytestmark = pytest.mark.backends("mysql")


def test_failed_run_sql_resumes_after_the_fix(backend: Backend, tmp_path: Path) -> None:
    from ponykit.migrate._ops_base import empty_snapshot
    from ponykit.migrate._snapshot import snapshot_hash

    d = tmp_path / "migrations"
    d.mkdir()
    revision = f"0001_{secrets.token_hex(3)}"
    (d / f"{revision}_steps.py").write_text(
        f'"""three steps"""\n\nfrom ponykit.migrate import op\n\n'
        f"revision = {revision!r}\ndown_revision = None\n"
        f"schema_hash = {snapshot_hash(empty_snapshot())!r}\n\noperations = [\n"
        '    op.RunSQL("CREATE TABLE t_step1 (id INTEGER PRIMARY KEY)"),\n'
        '    op.RunSQL("CREATE TABLE t_step2 (id INTEGER PRIMARY KEY)"),\n'
        '    op.RunSQL("INSERT INTO t_cause SELECT id FROM t_step2"),\n'
        '    op.RunSQL("CREATE TABLE t_step4 (id INTEGER PRIMARY KEY)"),\n]\n'
    )
    db = Database()
    ponykit.bind_url(db, backend.url)
    try:
        with pytest.raises(MigrationError, match=r"step 3/4 .*t_cause.* partial"):
            migrate.upgrade(db, directory=d)
        state = migrate.status(db, directory=d)
        assert state.partial == {revision: 2} and state.applied == []
        assert "partial" in "\n".join(state.lines())
        con = open_connection(db)
        try:
            con.execute("CREATE TABLE t_cause (id INTEGER PRIMARY KEY)")  # fix the cause
        finally:
            con.close()
        lines: list[str] = []
        # CREATE TABLE t_step1 again would fail: resuming must start at step 3
        assert migrate.upgrade(db, directory=d, progress=lines.append) == [revision]
        assert f"Resuming {revision} three steps at step 3/4" in "".join(lines)
        state = migrate.status(db, directory=d)
        assert state.applied == [revision] and state.partial == {}
    finally:
        db.disconnect()


def _models(url: str, unique: bool) -> Database:
    db = Database()

    class Pet(db.Entity):  # type: ignore[name-defined]  # Pony's entity base is dynamic
        tag = Required(str, 20, unique=unique)

    class Person(db.Entity):  # type: ignore[name-defined]
        name = Required(str, 40)

    ponykit.bind_url(db, url)
    return db


def test_duplicate_for_a_new_unique_key_resumes_after_the_data_is_fixed(
    backend: Backend, tmp_path: Path
) -> None:
    from ponykit.migrate._compare import compare
    from ponykit.migrate._introspect import introspect
    from ponykit.migrate._models import build
    from ponykit.migrate._snapshot import snapshot

    d = tmp_path / "migrations"
    v1 = _models(backend.url, unique=False)
    v2 = _models(backend.url, unique=True)
    try:
        migrate.make(v1, "pets", directory=d)
        migrate.upgrade(v1, directory=d)
        con = open_connection(v1)
        con.execute("INSERT INTO pet (tag) VALUES ('rex'), ('rex'), ('fido')")
        con.close()
        second = migrate.make(v2, "unique tag", directory=d)
        assert second is not None
        with pytest.raises(MigrationError):
            migrate.upgrade(v2, directory=d)
        state = migrate.status(v2, directory=d)
        assert len(state.partial) == 1 and state.pending == list(state.partial)
        con = open_connection(v2)
        top = con.scalar("SELECT max(id) FROM pet WHERE tag = 'rex'")
        con.execute("UPDATE pet SET tag = 'rex2' WHERE id = %s", (top,))
        con.close()
        assert migrate.upgrade(v2, directory=d) == state.pending
        assert migrate.status(v2, directory=d).up_to_date
        con = open_connection(v2)
        try:
            wanted = build(snapshot(v2), "mysql").schema
            assert [str(x) for x in compare(wanted, introspect(con.connection, "mysql"))] == []
        finally:
            con.close()
        v2.generate_mapping(create_tables=False, check_tables=False)
        with db_session:
            assert sorted(p.tag for p in v2.Pet.select()) == ["fido", "rex", "rex2"]
    finally:
        v1.disconnect()
        v2.disconnect()
