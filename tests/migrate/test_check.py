"""check's exit codes, each triggered: 1 forgotten make, 2 pending / two heads, 3 out-of-band ALTER,
4 an applied file edited; several problems give the lowest code."""

from __future__ import annotations

import secrets
from pathlib import Path

from pony.orm import Database, Optional, Required

import ponykit
from conftest import Backend
from ponykit import migrate
from ponykit.migrate._connect import open_connection


def _models(url: str, with_nick: bool) -> Database:
    db = Database()

    class Person(db.Entity):  # type: ignore[name-defined]  # Pony's entity base is dynamic
        name = Required(str, 40)
        if with_nick:
            nick = Optional(int)

    ponykit.bind_url(db, url)
    return db


def _execute(db: Database, sql: str) -> None:
    con = open_connection(db)
    try:
        con.execute(sql)
    finally:
        con.close()


def test_each_exit_code(backend: Backend, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    v1, v2 = _models(backend.url, with_nick=False), _models(backend.url, with_nick=True)
    try:
        first = migrate.make(v1, "person", directory=d)
        assert first is not None
        report = migrate.check(v1, directory=d)
        assert report.exit_code == 2 and "not applied" in report.problems[0]
        migrate.upgrade(v1, directory=d)
        report = migrate.check(v1, directory=d)
        assert (report.ok, report.exit_code, report.problems) == (True, 0, [])

        report = migrate.check(v2, directory=d)  # the model changed, make was forgotten
        assert report.exit_code == 1 and "Person" in report.problems[0] and "run make" in report.problems[0]
        assert migrate.check(v2, directory=d, against_db=False).exit_code == 1
        assert migrate.make(v2, "nick", directory=d) is not None
        assert migrate.check(v2, directory=d).exit_code == 2
        assert migrate.check(v2, directory=d, against_db=False).exit_code == 0
        migrate.upgrade(v2, directory=d)
        assert migrate.check(v2, directory=d).ok

        _execute(v2, "ALTER TABLE person ADD COLUMN extra INTEGER")  # out of band
        report = migrate.check(v2, directory=d)
        assert report.exit_code == 3 and all(code == 3 for code in report.codes)
        assert any("extra" in problem for problem in report.problems), report.problems
        _execute(v2, "ALTER TABLE person DROP COLUMN extra")
        assert migrate.check(v2, directory=d).ok

        original = first.read_bytes()
        first.write_bytes(original + b"# edited after it was applied\n")
        report = migrate.check(v2, directory=d)
        assert report.exit_code == 4 and first.name in report.problems[0] and "edited" in report.problems[0]
        report = migrate.check(v1, directory=d)  # also models != lock: the lowest code wins
        assert sorted(set(report.codes)) == [1, 4] and report.exit_code == 1
        first.write_bytes(original)
        assert migrate.check(v2, directory=d).ok

        head = migrate.status(v2, directory=d).current
        branch = f"0003_{secrets.token_hex(3)}"
        (d / f"{branch}_branch.py").write_text(
            f'"""a branch"""\n\nfrom ponykit.migrate import op\n\nrevision = {branch!r}\n'
            f"down_revision = {migrate.status(v2, directory=d).applied[0]!r}\nschema_hash = ''\n\n"
            'operations = [op.RunSQL("SELECT 1", reverse="SELECT 1")]\n'
        )
        report = migrate.check(v2, directory=d, against_db=False)
        assert report.exit_code == 2 and "several heads" in report.problems[0] and head in report.problems[0]
    finally:
        v1.disconnect()
        v2.disconnect()
