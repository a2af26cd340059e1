"""The plugin's application mode (ini ``ponykit_database``): the example bookshop's own test suite, run as
its developers would, on each backend and under pytest-xdist, and small projects that probe one promise
each (the production URL never connected to, refusals, isolation modes, on_commit switched off)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOKSHOP = ROOT / "examples" / "bookshop"
ENV_VARS = {"postgres": "PONYKIT_TEST_POSTGRES", "mysql": "PONYKIT_TEST_MYSQL"}


def run_pytest(
    project: Path, url: str | None, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """pytest in ``project`` as its developers run it, in a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PONYKIT_", "PYTEST_", "HYPOTHESIS"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if url is not None:
        env["PONYKIT_TEST_URL"] = url
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::DeprecationWarning",
    ]
    return subprocess.run(
        [*command, *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _server_url(name: str, database: str) -> str:
    base = os.environ[ENV_VARS[name]]
    head, _, _ = base.rpartition("/")
    return f"{head}/{database}"


@pytest.fixture
def app_test_url(backend_name: str, _admin: Any, tmp_path: Path) -> Iterator[str]:
    """A throwaway database of its own on this backend (its name contains 'test', as the plugin demands)."""
    if backend_name == "sqlite":
        yield "sqlite://:sharedmemory:"
        return
    if not os.environ.get(ENV_VARS[backend_name]):
        if os.environ.get("PONYKIT_REQUIRE_BACKENDS", "") not in ("", "0"):
            pytest.fail(f"{ENV_VARS[backend_name]} is not set (PONYKIT_REQUIRE_BACKENDS)", pytrace=False)
        pytest.skip(f"{ENV_VARS[backend_name]} is not set")
    name = "pk_app_test_" + uuid.uuid4().hex[:8]
    quote = '"' if backend_name == "postgres" else "`"
    _admin.execute(backend_name, f"CREATE DATABASE {quote}{name}{quote}")
    try:
        yield _server_url(backend_name, name)
    finally:
        _admin.execute(backend_name, f"DROP DATABASE IF EXISTS {quote}{name}{quote}")
        for worker in ("gw0", "gw1"):  # dropped by the workers themselves; a leftover fails the check below
            _admin.execute(backend_name, f"DROP DATABASE IF EXISTS {quote}{name}_{worker}{quote}")


def _passed(result: subprocess.CompletedProcess[str], count: int) -> None:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"{count} passed" in result.stdout, result.stdout[-2000:]


BOOKSHOP_TESTS = 18


def test_the_example_app_suite_passes_unchanged(app_test_url: str) -> None:
    """The bookshop binds at import to a production server that does not exist (db.internal): the suite
    passes only if that URL is never connected to."""
    _passed(run_pytest(BOOKSHOP, app_test_url), BOOKSHOP_TESTS)


def test_the_example_app_suite_passes_on_two_workers(
    app_test_url: str,
    backend_name: str,
    _admin: Any,  # noqa: PT019
) -> None:
    _passed(run_pytest(BOOKSHOP, app_test_url, "-n", "2"), BOOKSHOP_TESTS)
    if backend_name != "sqlite":  # each worker dropped the database it made
        name = app_test_url.rpartition("/")[2]
        cursor = _admin.connection(backend_name).cursor()
        if backend_name == "postgres":
            cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "_gw%",))
        else:
            cursor.execute("SHOW DATABASES LIKE %s", (name + "_gw%",))
        assert not cursor.fetchall()


@pytest.mark.parametrize("mode", ["truncate", "recreate"])
def test_the_example_app_suite_passes_in_the_other_isolation_modes(app_test_url: str, mode: str) -> None:
    _passed(run_pytest(BOOKSHOP, app_test_url, "-o", f"ponykit_isolation={mode}"), BOOKSHOP_TESTS)


# ---------------------------------------------------------------------------------------------------------
# Small projects, one promise each


def _project(tmp_path: Path, models: str, tests: str, ini: str = "") -> Path:
    (tmp_path / "app").mkdir(parents=True)
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "models.py").write_text(textwrap.dedent(models))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_app.py").write_text(textwrap.dedent(tests))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nponykit_database = app.models:db\npythonpath = .\ntestpaths = tests\n"
        + textwrap.dedent(ini)
    )
    return tmp_path


MODELS = """
    import os
    from pony.orm import Database, Required
    import ponykit as pk

    db = Database()

    class Note(db.Entity):
        text = Required(str)

    pk.bind_url(db, os.environ["APP_PRODUCTION_URL"])
    pk.attach(db)
    db.generate_mapping(create_tables=True)
"""


@pytest.mark.backends("sqlite")
def test_a_production_sqlite_file_is_never_created(
    tmp_path: Path, backend_name: str, monkeypatch: Any
) -> None:
    production = tmp_path / "production.db"
    monkeypatch.setenv("APP_PRODUCTION_URL", f"sqlite:///{production}?create_db=1")
    tests = """
        from pony.orm import db_session
        from app.models import Note

        def test_writes(pk_db):
            with db_session:
                Note(text="x")
    """
    project = _project(tmp_path / "p", MODELS, tests)
    _passed(run_pytest(project, "sqlite://:sharedmemory:"), 1)
    assert not production.exists()


@pytest.mark.backends("sqlite")
def test_a_server_database_without_test_in_its_name_is_refused(tmp_path: Path, backend_name: str) -> None:
    project = _project(tmp_path, MODELS, "def test_nothing():\n    pass\n")
    result = run_pytest(project, "postgresql://postgres@127.0.0.1:5432/shop")
    assert result.returncode != 0
    assert "does not contain 'test'" in result.stderr + result.stdout


@pytest.mark.backends("sqlite")
def test_a_database_bound_with_pony_bind_at_import_is_reported(tmp_path: Path, backend_name: str) -> None:
    models = """
        from pony.orm import Database, Required
        db = Database()
        class Note(db.Entity):
            text = Required(str)
        db.bind(provider="sqlite", filename=":memory:")
    """
    project = _project(tmp_path, models, "def test_nothing():\n    pass\n")
    result = run_pytest(project, None)
    assert result.returncode != 0
    assert "bound with Database.bind()" in result.stderr + result.stdout


@pytest.mark.backends("sqlite")
def test_pk_db_without_configuration_says_what_to_set(tmp_path: Path, backend_name: str) -> None:
    (tmp_path / "test_x.py").write_text("def test_x(pk_db):\n    pass\n")
    result = run_pytest(tmp_path, None)
    assert result.returncode == 1
    assert "ponykit_database = app.models:db" in result.stdout


ON_COMMIT_TESTS = """
    import pytest
    from pony.orm import db_session
    import ponykit as pk
    from app.models import Note, db

    effects = []

    def test_1_commit(pk_db):
        with db_session:
            Note(text="x")
            pk.on_commit(lambda: effects.append(1), db=db)

    def test_2_count():
        assert effects == EXPECTED
"""


@pytest.mark.parametrize(("setting", "expected"), [("true", [1]), ("false", [])])
def test_on_commit_callbacks_run_or_not_as_configured(
    app_test_url: str, tmp_path: Path, setting: str, expected: list[int], monkeypatch: Any
) -> None:
    monkeypatch.setenv("APP_PRODUCTION_URL", "postgresql://app@production.invalid/app")
    tests = ON_COMMIT_TESTS.replace("EXPECTED", repr(expected))
    project = _project(tmp_path, MODELS, tests, ini=f"ponykit_run_on_commit = {setting}\n")
    _passed(run_pytest(project, app_test_url), 2)


ROLLBACK_TESTS = """
    import threading
    import pytest
    from pony.orm import commit, db_session, rollback, select
    from app.models import Note

    def test_1_inner_commit_and_rollback(pk_db):
        with db_session:
            Note(text="kept")
            commit()
            Note(text="dropped")
            rollback()
        with db_session:
            assert select(n.text for n in Note)[:] == ["kept"]

    def test_2_a_failed_session_rolls_back_to_the_last_commit(pk_db):
        with pytest.raises(ZeroDivisionError):
            with db_session:
                Note(text="lost")
                Note.select().count()
                1 / 0
        with db_session:
            assert Note.select().count() == 0

    def test_3_nothing_left(pk_db):
        with db_session:
            assert Note.select().count() == 0

    @pytest.mark.ponykit_transactional
    def test_4_real_commits_seen_by_another_thread(pk_db):
        with db_session:
            Note(text="committed")
        seen = []
        thread = threading.Thread(target=lambda: seen.append(db_session(lambda: Note.select().count())()))
        thread.start()
        thread.join()
        assert seen == [1]

    def test_5_emptied_after_the_transactional_test(pk_db):
        with db_session:
            assert Note.select().count() == 0
"""


def test_inner_commits_and_rollbacks_behave_as_outside_tests(
    app_test_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("APP_PRODUCTION_URL", "mysql://app@production.invalid/app")
    project = _project(tmp_path, MODELS, ROLLBACK_TESTS)
    _passed(run_pytest(project, app_test_url), 5)


MODE_TESTS = """
    import pytest
    from pony.orm import db_session
    import ponykit as pk
    from ponykit.errors import ConfigurationError
    from app.models import Note, db

    def test_1_an_isolation_level_is_refused_inside_the_outer_transaction(pk_db):
        if db.provider_name == "sqlite":  # every SQLite transaction is serializable: nothing to set
            with pk.transaction(isolation="serializable", db=db):
                Note(text="x")
            return
        with pytest.raises(ConfigurationError, match="ponykit_transactional"):
            with pk.transaction(isolation="serializable", db=db):
                Note(text="x")

    @pytest.mark.ponykit_transactional
    def test_2_and_runs_in_a_transactional_test(pk_db):
        with pk.transaction(isolation="serializable", db=db):
            Note(text="x")
        with db_session:
            assert Note.select().count() == 1
"""


def test_transaction_modes_need_a_transactional_test(
    app_test_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("APP_PRODUCTION_URL", "postgresql://app@production.invalid/app")
    project = _project(tmp_path, MODELS, MODE_TESTS)
    _passed(run_pytest(project, app_test_url), 2)
