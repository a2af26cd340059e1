"""An application's test suite under ponykit's plugin: rollback isolation against truncation and against
dropping and creating the tables for every test (issue 23: rollback ≥ 5x faster than drop/create on
PostgreSQL).

The suite is generated: 200 small tests, each creating 10 rows through the application's models (an
author, a book per row, tags through a many-to-many link table: five tables, as in a small real app).
Each contender is one ``pytest`` process on that suite with ``-o ponykit_isolation=<mode>``; the time
compared is the sum of the tests' own setup, call and teardown durations as pytest reports them (the
interpreter's start and the imports, the same for every mode, are left out; the wall time is reported
beside it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV_VARS = {"postgres": "PONYKIT_TEST_POSTGRES", "mysql": "PONYKIT_TEST_MYSQL"}
REQUIRE = os.environ.get("PONYKIT_REQUIRE_BACKENDS", "") not in ("", "0")
MODES = ("rollback", "truncate", "recreate")
TESTS = 200

MODELS = """
    from pony.orm import Database, Optional, Required, Set
    import ponykit as pk

    db = Database()

    class Author(db.Entity):
        name = Required(str, 80)
        books = Set("Book")

    class Book(db.Entity):
        title = Required(str, 120)
        pages = Optional(int)
        author = Required(Author)
        tags = Set("Tag")
        reviews = Set("Review")

    class Tag(db.Entity):
        name = Required(str, 40, unique=True)
        books = Set(Book)

    class Review(db.Entity):
        book = Required(Book)
        stars = Required(int)

    pk.bind_url(db, "postgresql://app@production.invalid/app")
    pk.attach(db)
    db.generate_mapping(create_tables=True)
"""

TEST_MODULE = """
    import pytest
    from pony.orm import db_session
    from app.models import Author, Book, Tag

    @pytest.mark.parametrize("n", range({tests}))
    def test_creates_ten_rows(pk_db, n):
        with db_session:
            author = Author(name=f"author {{n}}")
            tag = Tag(name=f"tag {{n}}")
            for i in range(8):
                Book(title=f"book {{n}}.{{i}}", author=author, tags=[tag])
        with db_session:
            assert Book.select().count() == 8
"""

CONFTEST = """
    import json, os
    total = 0.0

    def pytest_runtest_logreport(report):
        global total
        total += report.duration

    def pytest_sessionfinish(session):
        with open(os.environ["BENCH_OUT"], "w") as out:
            json.dump({"seconds": total}, out)
"""


def _project(path: Path) -> Path:
    (path / "app").mkdir(parents=True)
    (path / "app" / "__init__.py").write_text("")
    (path / "app" / "models.py").write_text(textwrap.dedent(MODELS))
    (path / "tests").mkdir()
    (path / "tests" / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (path / "tests" / "test_app.py").write_text(textwrap.dedent(TEST_MODULE.format(tests=TESTS)))
    (path / "pytest.ini").write_text(
        "[pytest]\nponykit_database = app.models:db\npythonpath = .\ntestpaths = tests\n"
    )
    return path


def _url(backend: str) -> tuple[str, Any]:
    if backend == "sqlite":
        return "sqlite://:sharedmemory:", None
    base = os.environ.get(ENV_VARS[backend])
    if not base:
        if REQUIRE:
            pytest.fail(f"{ENV_VARS[backend]} is not set", pytrace=False)
        pytest.skip(f"{ENV_VARS[backend]} is not set")
    import ponykit

    _, kwargs = ponykit.parse_url(base)
    name = "pk_bench_test_" + uuid.uuid4().hex[:8]
    if backend == "postgres":
        import psycopg2

        con = psycopg2.connect(**kwargs)
        con.autocommit = True
        con.cursor().execute(f'CREATE DATABASE "{name}"')
        drop = f'DROP DATABASE IF EXISTS "{name}"'
    else:
        import pymysql

        con = pymysql.connect(autocommit=True, **{k: v for k, v in kwargs.items() if k != "db"})
        con.cursor().execute(f"CREATE DATABASE `{name}`")
        drop = f"DROP DATABASE IF EXISTS `{name}`"

    def cleanup() -> None:
        con.cursor().execute(drop)
        con.close()

    return f"{base.rpartition('/')[0]}/{name}", cleanup


def _run(project: Path, url: str, mode: str) -> tuple[float, float]:
    out = project / f"{mode}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PONYKIT_", "PYTEST_"))}
    env.update(PONYKIT_TEST_URL=url, BENCH_OUT=str(out), PYTHONPATH=str(ROOT / "src"))
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        f"ponykit_isolation={mode}",
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return float(json.loads(out.read_text())["seconds"]), wall


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
def test_isolation_modes(benchmark: Any, backend: str, tmp_path: Path) -> None:
    """One round per mode, interleaved three times; the medians and the ratios to rollback isolation."""
    url, cleanup = _url(backend)
    project = _project(tmp_path / "suite")
    try:
        times: dict[str, list[float]] = {m: [] for m in MODES}
        walls: dict[str, list[float]] = {m: [] for m in MODES}

        def run_all() -> None:
            for mode in MODES:
                seconds, wall = _run(project, url, mode)
                times[mode].append(seconds)
                walls[mode].append(wall)

        benchmark.pedantic(run_all, rounds=3, iterations=1)
    finally:
        if cleanup is not None:
            cleanup()
    median = {m: sorted(v)[len(v) // 2] for m, v in times.items()}
    wall = {m: sorted(v)[len(v) // 2] for m, v in walls.items()}
    benchmark.extra_info.update(
        {f"{m}_tests_s": round(median[m], 3) for m in MODES}
        | {f"{m}_wall_s": round(wall[m], 3) for m in MODES}
        | {f"{m}_vs_rollback": round(median[m] / median["rollback"], 2) for m in MODES}
    )
    print(f"\n{backend}: " + ", ".join(f"{m} {median[m]:.2f}s (wall {wall[m]:.2f}s)" for m in MODES))
