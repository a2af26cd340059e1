"""Fault tolerance of the runner, with real processes and real connections.

- ``python -m ponykit migrate upgrade`` SIGKILLed in the middle of a revision: PostgreSQL and SQLite keep
  nothing of it, MariaDB keeps the steps done (``partial``); the lock died with the process, so a new
  upgrade takes it at once, applies (or resumes) the revision, and ``check`` finds the models.
- The migration's connection killed by the server (``pg_terminate_backend``, ``KILL``) mid-revision: the
  process fails with one clear MigrationError line; a re-run finishes.
- MariaDB: a downgrade failing half way is journaled (``reverting``), resumed by the next downgrade, and
  refused by upgrade; PostgreSQL and SQLite undo nothing of it.

The migration waits in a ``RunPython`` that writes its connection's id to a file and then waits on a file
(or in ``pg_sleep``/``SLEEP()``), so every kill lands at a known point without blind sleeps.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pony.orm import Database

import ponykit
from conftest import Backend
from ponykit import migrate
from ponykit.errors import MigrationError, MigrationLockTimeout, MigrationStateError
from ponykit.migrate._connect import open_connection

MODELS_V1 = """
from pony.orm import Database, Required

db = Database()


class Person(db.Entity):
    name = Required(str, 40)
"""

MODELS = """
from pony.orm import Database, Optional, Required

db = Database()


class Person(db.Entity):
    name = Required(str, 40)
    nick = Optional(str, 40)
    age = Optional(int)
"""

# Appended to the second revision's file: a RunPython between its two AddAttr. Outside the tests' child
# processes (no FAULT_HOLD) it does nothing, so a re-run in the test's process goes straight through.
HOLD = """

import os as _os
import time as _time
from pathlib import Path as _Path

_WHO = {"postgres": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
_SLEEP = {"postgres": "SELECT pg_sleep(60)", "mysql": "SELECT SLEEP(60)"}


def hold(db):
    path = _os.environ.get("FAULT_HOLD")
    if not path:
        return
    dialect = _os.environ["FAULT_DIALECT"]
    who = db.select(_WHO[dialect])[0] if dialect in _WHO else _os.getpid()
    _Path(path + ".tmp").write_text(str(who))
    _os.replace(path + ".tmp", path + ".ready")  # the test reads the id once it is whole
    if _os.environ.get("FAULT_SLEEP"):
        db.execute(_SLEEP[dialect])
    while _Path(path).exists():
        _time.sleep(0.02)


operations.insert(1, op.RunPython(hold, reverse=hold))
"""


@dataclass
class Project:
    """A models module (``fault_models``) bound to the test's database, and its migrations."""

    root: Path
    directory: Path
    db: Database
    first: str
    second: str


def _import(root: Path, name: str) -> Any:
    sys.path.insert(0, str(root))
    try:
        module = __import__(name)
    finally:
        sys.path.remove(str(root))
        sys.modules.pop(name, None)
    return module


def _revision(path: Path | None) -> str:
    assert path is not None
    return "_".join(path.name.split("_")[:2])


@pytest.fixture
def project(backend: Backend, tmp_path: Path) -> Iterator[Project]:
    (tmp_path / "fault_models_v1.py").write_text(MODELS_V1)
    (tmp_path / "fault_models.py").write_text(MODELS)
    directory = tmp_path / "migrations"
    first = migrate.make(_import(tmp_path, "fault_models_v1").db, "person", directory=directory)
    db = _import(tmp_path, "fault_models").db
    second = migrate.make(db, "nick and age", directory=directory)
    assert second is not None and second.read_text().count("op.AddAttr(") == 2
    second.write_text(second.read_text() + HOLD)
    ponykit.bind_url(db, backend.url)
    project = Project(tmp_path, directory, db, _revision(first), _revision(second))
    migrate.upgrade(db, project.first, directory=directory)
    try:
        yield project
    finally:
        db.disconnect()


def _spawn(
    backend: Backend, project: Project, hold: Path, sleep: bool = False, command: str = "upgrade"
) -> subprocess.Popen[str]:
    hold.touch()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p and "site-packages" not in p),
        FAULT_HOLD=str(hold),
        FAULT_DIALECT=backend.name,
    )
    if sleep:
        env["FAULT_SLEEP"] = "1"
    argv = [sys.executable, "-m", "ponykit", "migrate", command, "fault_models:db", "--url", backend.url]
    return subprocess.Popen(
        argv, cwd=project.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_ready(proc: subprocess.Popen[str], hold: Path) -> int:
    """The migration connection's id once the child is inside the RunPython (fails if the child exits)."""
    ready = Path(str(hold) + ".ready")
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the upgrade ended before the RunPython ({proc.returncode}): {out}{err}")
        assert time.monotonic() < deadline, "the upgrade did not reach the RunPython in 30 s"
        time.sleep(0.02)
    return int(ready.read_text())


def _wait_in_sleep(admin: Any, who: int) -> None:
    """Until the child's connection ``who`` runs its sleep statement on the server."""
    if admin.dialect == "postgres":
        sql = "SELECT query FROM pg_stat_activity WHERE pid = %s AND state = 'active'"
    else:
        sql = "SELECT info FROM information_schema.processlist WHERE id = %s"
    deadline = time.monotonic() + 10
    while "SLEEP(" not in str(admin.scalar(sql, (who,))).upper():
        assert time.monotonic() < deadline, "the child did not start its sleep statement in 10 s"
        time.sleep(0.02)


def _columns(db: Database) -> set[str]:
    from ponykit.migrate._introspect import introspect

    con = open_connection(db)
    try:
        tables = introspect(con.connection, con.dialect).tables
        (table,) = [t for name, t in tables.items() if name.lower() == "person"]
        return {c.name.lower() for c in table.columns}
    finally:
        con.close()


def _assert_rerun_finishes(project: Project) -> None:
    started = time.monotonic()
    assert migrate.upgrade(project.db, directory=project.directory, lock_timeout=10) == [project.second]
    assert time.monotonic() - started < 5  # the lock was free: no waiting for a dead holder
    state = migrate.status(project.db, directory=project.directory)
    assert state.applied == [project.first, project.second] and state.up_to_date
    report = migrate.check(project.db, directory=project.directory)
    assert report.exit_code == 0, report.problems


def _assert_stopped_in_second(backend: Backend, project: Project) -> None:
    """PostgreSQL/SQLite: nothing of the second revision; MariaDB: its first step, recorded partial."""
    state = migrate.status(project.db, directory=project.directory)
    assert state.pending == [project.second]
    if backend.name == "mysql":
        # nick's two steps (ADD COLUMN with the backfill default, DROP DEFAULT) are done, age's is not
        assert state.partial == {project.second: 2} and state.applied == [project.first]
        assert _columns(project.db) == {"id", "name", "nick"}
    else:
        assert state.partial == {} and state.applied == [project.first]
        assert _columns(project.db) == {"id", "name"}


def test_sigkill_mid_revision_frees_the_lock_and_a_rerun_finishes(
    backend: Backend, project: Project, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    proc = _spawn(backend, project, hold)
    try:
        who = _wait_ready(proc, hold)
        # The child holds the migration lock: another upgrade waits, then gives up naming the holder.
        with pytest.raises(MigrationLockTimeout) as info:
            migrate.upgrade(project.db, directory=project.directory, lock_timeout=0.3)
        if backend.name == "postgres":
            assert f"backend pid {who}" in str(info.value)
        elif backend.name == "mysql":
            assert f"connection id {who}" in str(info.value)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    _assert_stopped_in_second(backend, project)
    _assert_rerun_finishes(project)


@pytest.mark.backends("postgres", "mysql")
def test_connection_killed_by_the_server_is_a_clear_error_and_a_rerun_finishes(
    backend: Backend, project: Project, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    proc = _spawn(backend, project, hold, sleep=True)
    try:
        who = _wait_ready(proc, hold)
        admin = open_connection(project.db)
        try:
            _wait_in_sleep(admin, who)
            if backend.name == "postgres":
                assert admin.scalar("SELECT pg_terminate_backend(%s)", (who,)) is True
            else:
                admin.execute(f"KILL {int(who)}")
        finally:
            admin.close()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ponykit: MigrationError: "), err
    step = "3/4" if backend.name == "mysql" else "2/3"  # MariaDB: nick's DROP DEFAULT is a step of its own
    assert f"revision {project.second}, step {step} (run Python hold) failed" in err
    assert "Cause: the migration connection was lost (OperationalError: " in err
    if backend.name == "mysql":
        assert "steps 1-2 of 4 are applied and recorded (status partial)" in err
    _assert_stopped_in_second(backend, project)
    _assert_rerun_finishes(project)


@pytest.mark.backends("postgres", "mysql")
def test_sigkill_during_a_long_statement_frees_the_lock(
    backend: Backend, project: Project, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    proc = _spawn(backend, project, hold, sleep=True)
    try:
        who = _wait_ready(proc, hold)
        admin = open_connection(project.db)
        try:
            _wait_in_sleep(admin, who)  # the kill must land inside the statement
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            # The session ends (and its lock with it) within seconds, not when the 60 s sleep would end.
            # Nothing else may touch the table meanwhile: a waiter makes PostgreSQL notice by itself.
            sql = {
                "postgres": "SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                "mysql": "SELECT count(*) FROM information_schema.processlist WHERE id = %s",
            }[backend.name]
            # PostgreSQL polls the client every second (the runner sets client_connection_check_interval);
            # MariaDB's SLEEP() looks every 5 s by itself.
            deadline = time.monotonic() + (5 if backend.name == "postgres" else 12)
            while admin.scalar(sql, (who,)):
                assert time.monotonic() < deadline, "the killed upgrade's session still holds the lock"
                time.sleep(0.05)
        finally:
            admin.close()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    _assert_stopped_in_second(backend, project)
    _assert_rerun_finishes(project)


def test_sigkill_mid_downgrade_leaves_it_resumable(
    backend: Backend, project: Project, tmp_path: Path
) -> None:
    migrate.upgrade(project.db, directory=project.directory)
    hold = tmp_path / "hold"
    proc = _spawn(backend, project, hold, command="downgrade")
    try:
        _wait_ready(proc, hold)  # in the reverse of the RunPython: age is dropped first, then this, then nick
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    state = migrate.status(project.db, directory=project.directory)
    if backend.name == "mysql":
        assert state.reverting == {project.second: 1} and state.applied == [project.first]
        assert _columns(project.db) == {"id", "name", "nick"}
        with pytest.raises(MigrationStateError, match="run downgrade again"):
            migrate.upgrade(project.db, directory=project.directory)
    else:  # one transaction: the revision is still whole
        assert state.applied == [project.first, project.second] and state.reverting == {}
        assert _columns(project.db) == {"id", "name", "nick", "age"}
    started = time.monotonic()
    assert migrate.downgrade(project.db, directory=project.directory, lock_timeout=10) == [project.second]
    assert time.monotonic() - started < 5
    state = migrate.status(project.db, directory=project.directory)
    assert state.applied == [project.first] and state.reverting == {} and state.pending == [project.second]
    assert _columns(project.db) == {"id", "name"}
    _assert_rerun_finishes(project)


def _three_tables(directory: Path) -> str:
    """One revision of three RunSQL; the middle one's reverse fails until a table ``t_cause`` exists."""
    from ponykit.migrate._ops_base import empty_snapshot
    from ponykit.migrate._snapshot import snapshot_hash

    directory.mkdir()
    revision = f"0001_{secrets.token_hex(3)}"
    (directory / f"{revision}_tables.py").write_text(
        f'"""three tables"""\n\nfrom ponykit.migrate import op\n\n'
        f"revision = {revision!r}\ndown_revision = None\n"
        f"schema_hash = {snapshot_hash(empty_snapshot())!r}\n\noperations = [\n"
        '    op.RunSQL("CREATE TABLE t_a (id INTEGER PRIMARY KEY)", reverse="DROP TABLE t_a"),\n'
        '    op.RunSQL("CREATE TABLE t_b (id INTEGER PRIMARY KEY)",\n'
        '              reverse="INSERT INTO t_cause SELECT id FROM t_b; DROP TABLE t_b"),\n'
        '    op.RunSQL("CREATE TABLE t_c (id INTEGER PRIMARY KEY)", reverse="DROP TABLE t_c"),\n]\n'
    )
    return revision


def _tables(db: Database) -> set[str]:
    from ponykit.migrate._introspect import introspect

    con = open_connection(db)
    try:
        return {name.lower() for name in introspect(con.connection, con.dialect).tables}
    finally:
        con.close()


def test_failed_downgrade_is_journaled_and_resumed(backend: Backend, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    revision = _three_tables(d)
    db = Database()
    ponykit.bind_url(db, backend.url)
    try:
        assert migrate.upgrade(db, directory=d) == [revision]
        with pytest.raises(MigrationError, match=r"step 2/3 .*t_cause") as info:
            migrate.downgrade(db, directory=d)
        state = migrate.status(db, directory=d)
        if backend.name != "mysql":  # one transaction: nothing undone, still applied
            assert state.applied == [revision] and state.reverting == {}
            assert _tables(db) == {"t_a", "t_b", "t_c"}
            return
        assert "steps 1-1 of 3 are undone and recorded (status reverting)" in str(info.value)
        assert "run downgrade again to resume at step 2" in str(info.value)
        assert state.reverting == {revision: 1} and state.applied == [] and state.pending == [revision]
        assert state.partial == {} and not state.up_to_date
        assert f"reverting {revision} three tables (1 steps undone" in "\n".join(state.lines())
        assert _tables(db) == {"t_a", "t_b"}
        # upgrade cannot redo half a downgrade: it refuses and says what to run
        with pytest.raises(MigrationStateError, match=r"half reverted.*run downgrade again"):
            migrate.upgrade(db, directory=d)
        # a downgrade that would keep the revision refuses too
        with pytest.raises(MigrationStateError, match=r"would keep it"):
            migrate.downgrade(db, revision, directory=d)
        con = open_connection(db)
        try:
            con.execute("CREATE TABLE t_cause (id INTEGER PRIMARY KEY)")  # fix the cause
        finally:
            con.close()
        lines: list[str] = []
        # DROP TABLE t_c again would fail: resuming must start at step 2
        assert migrate.downgrade(db, directory=d, progress=lines.append) == [revision]
        assert f"Resuming the revert of {revision} three tables at step 2/3" in "".join(lines)
        state = migrate.status(db, directory=d)
        assert state.applied == [] and state.reverting == {} and state.pending == [revision]
        assert _tables(db) == {"t_cause"}
        assert migrate.upgrade(db, directory=d) == [revision]
        assert migrate.status(db, directory=d).applied == [revision]
    finally:
        db.disconnect()
