"""The fixture family every database test uses: one test, three backends, a fresh schema each time.

A test that asks for ``backend`` (or ``db``, or ``make_db``) runs once per backend: on SQLite always, on
PostgreSQL and MariaDB when ``PONYKIT_TEST_POSTGRES`` / ``PONYKIT_TEST_MYSQL`` hold server URLs (for
example ``postgresql://postgres@127.0.0.1:5432/test`` and ``mysql://root@127.0.0.1:3306/test``).
Redis tests use ``redis_url`` and ``PONYKIT_TEST_REDIS`` (``redis://127.0.0.1:6379/0``); RabbitMQ tests use
``amqp_url`` and ``PONYKIT_TEST_AMQP`` (``amqp://guest:guest@127.0.0.1:5672/``). Read-replica tests use
``replica_url`` / ``replica_control`` and ``PONYKIT_TEST_REPLICA`` (``postgresql://postgres@127.0.0.1:5433/test``,
a streaming replica of the PostgreSQL test server that ``bash .ci/replica.sh start`` runs). MariaDB
replica tests use ``mariadb_replica_url`` / ``mariadb_replica_control`` and ``PONYKIT_TEST_MARIADB_REPLICA``
(``mysql://root@127.0.0.1:3308/test``), the replica of the self-contained MariaDB pair that
``bash .ci/mariadb-replica.sh start`` runs; its primary is ``PONYKIT_TEST_MARIADB_PRIMARY``
(default ``mysql://root@127.0.0.1:3307/test``).

Each test gets its own SQLite file, PostgreSQL schema (through ``search_path``) or MariaDB database, so
tests never see each other's rows. With ``PONYKIT_REQUIRE_BACKENDS=1`` (CI sets it) a backend whose URL
is missing or whose server does not answer is an error, not a skip.

``@pytest.mark.backends("sqlite", "postgres")`` restricts a test to some backends.
``@pytest.mark.server_collation`` gives the test's MariaDB database the server's default character set
and collation (``utf8mb4_general_ci``, case-insensitive) instead of ``utf8mb4_bin``.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import HealthCheck, settings
from pony.orm import Database

import ponykit
import ponykit.kit

BACKENDS = ("sqlite", "postgres", "mysql")
ENV_VARS = {
    "postgres": "PONYKIT_TEST_POSTGRES",
    "mysql": "PONYKIT_TEST_MYSQL",
    "redis": "PONYKIT_TEST_REDIS",
    "amqp": "PONYKIT_TEST_AMQP",
    "replica": "PONYKIT_TEST_REPLICA",
    "mariadb_replica": "PONYKIT_TEST_MARIADB_REPLICA",
}
MARIADB_PRIMARY_VAR = "PONYKIT_TEST_MARIADB_PRIMARY"
MARIADB_PRIMARY_DEFAULT = "mysql://root@127.0.0.1:3307/test"
# Services a test asks for by fixture name; each is a label in the per-backend counts CI checks.
SERVICE_FIXTURES = {
    "redis_url": "redis",
    "amqp_url": "amqp",
    "replica_url": "replica",
    "mariadb_replica_url": "mariadb_replica",
}
REQUIRE = os.environ.get("PONYKIT_REQUIRE_BACKENDS", "") not in ("", "0")

# Hypothesis profiles (HYPOTHESIS_PROFILE selects one). A new user's plain `pytest` and CI must give the same
# verdict on every run: "default" and "ci" are derandomized (examples derived from each test, so a run
# repeats exactly) and keep no example database (a failure found once is not replayed from a local
# .hypothesis directory another checkout does not have). "thorough" stays random, for exploring: what it
# finds becomes an @example or a fix.
_COMMON: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
settings.register_profile("default", max_examples=30, derandomize=True, database=None, **_COMMON)
settings.register_profile("ci", max_examples=25, derandomize=True, database=None, **_COMMON)
settings.register_profile("thorough", max_examples=300, derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@dataclass(frozen=True)
class Backend:
    """One database backend prepared for one test: ``name`` and an isolated ``url`` to bind to."""

    name: str
    url: str

    @property
    def provider(self) -> str:
        """Pony's provider name for this backend."""
        return self.name


def _missing(name: str) -> None:
    var = ENV_VARS[name]
    reason = f"{name} backend not configured: set {var} to a server URL to run these tests"
    if REQUIRE:
        pytest.fail(f"{reason} (PONYKIT_REQUIRE_BACKENDS is set, so this is an error)", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_counts_key] = Counter()
    # The suite is one process: a MemoryCache on the PostgreSQL/MariaDB backends serves no stale rows
    # here. tests/query/test_query_cache_processes.py checks the warning itself with pytest.warns.
    config.addinivalue_line("filterwarnings", "ignore::ponykit.errors.MemoryCacheWarning")


def pytest_sessionstart(session: pytest.Session) -> None:
    if REQUIRE:
        unset = [var for var in ENV_VARS.values() if not os.environ.get(var)]
        if unset:
            raise pytest.UsageError(
                f"PONYKIT_REQUIRE_BACKENDS is set but {', '.join(unset)} is not: every backend must run"
            )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        names = [n for n in BACKENDS if marker is None or n in marker.args]
        metafunc.parametrize("backend_name", names)


# ---------------------------------------------------------------------------------------------------------
# Server-side isolation: a schema (PostgreSQL) or a database (MariaDB) per test


class _Admin:
    """A plain driver connection used only to create and drop the per-test schemas and databases."""

    def __init__(self) -> None:
        self._conns: dict[str, Any] = {}

    def connection(self, name: str) -> Any:
        conn = self._conns.get(name)
        if conn is not None:
            return conn
        _provider, kwargs = ponykit.parse_url(os.environ[ENV_VARS[name]])
        try:
            if name == "postgres":
                import psycopg2

                conn = psycopg2.connect(**kwargs)
                conn.autocommit = True
            else:
                import pymysql

                kwargs = {k: v for k, v in kwargs.items() if k != "db"}
                conn = pymysql.connect(autocommit=True, **kwargs)
        except Exception as exc:
            pytest.fail(f"{name} server at {ENV_VARS[name]} does not answer: {exc}", pytrace=False)
        self._conns[name] = conn
        return conn

    def execute(self, name: str, sql: str) -> None:
        with self.connection(name).cursor() as cur:
            cur.execute(sql)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


@pytest.fixture(scope="session")
def _admin() -> Iterator[_Admin]:
    admin = _Admin()
    yield admin
    admin.close()


def _with_query(url: str, extra: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def _with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


@pytest.fixture
def backend(
    backend_name: str, tmp_path: Any, _admin: _Admin, request: pytest.FixtureRequest
) -> Iterator[Backend]:
    """An isolated database on one backend (the test runs once per backend)."""
    name = backend_name
    if name == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'test.db'}?create_db=1")
        return
    base = os.environ.get(ENV_VARS[name])
    if not base:
        _missing(name)
    assert base is not None
    unique = "pk_" + uuid.uuid4().hex[:12]
    if name == "postgres":
        _admin.execute(name, f'CREATE SCHEMA "{unique}"')
        url = _with_query(base, f"options=-c%20search_path%3D{unique}")
        drop = f'DROP SCHEMA IF EXISTS "{unique}" CASCADE'
    else:
        if request.node.get_closest_marker("server_collation") is not None:
            _admin.execute(name, f"CREATE DATABASE `{unique}`")  # the server's default collation
        else:
            _admin.execute(name, f"CREATE DATABASE `{unique}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        url = _with_path(base, "/" + unique)
        drop = f"DROP DATABASE IF EXISTS `{unique}`"
    try:
        yield Backend(name, url)
    finally:
        _admin.execute(name, drop)


@pytest.fixture(autouse=True)
def _forget_attached_databases() -> Iterator[None]:
    """Databases a test attached must not make ``on_commit()`` without ``db=`` ambiguous in later tests."""
    before = set(map(id, ponykit.kit.attached_databases()))
    yield
    for database in ponykit.kit.attached_databases():
        if id(database) not in before:
            ponykit.kit.forget(database)


@pytest.fixture
def make_db(backend: Backend) -> Iterator[Callable[[], Database]]:
    """A factory of fresh Databases bound to this test's isolated backend (declare entities, attach, map)."""
    made: list[Database] = []

    def make() -> Database:
        database = Database()
        url = backend.url
        if backend.name == "sqlite" and made:  # one file per Database: SQLite locks a file per writer
            url = url.replace("test.db", f"test{len(made)}.db")
        ponykit.bind_url(database, url)
        made.append(database)
        return database

    yield make
    for database in made:
        database.disconnect()
        # The next test must not see this test's Database when on_commit() guesses which one is meant.
        ponykit.kit.forget(database)


@pytest.fixture
def db(make_db: Callable[[], Database]) -> Database:
    """A fresh Database bound to this test's isolated backend, not yet attached or mapped."""
    return make_db()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL from ``PONYKIT_TEST_REDIS``; keys the test writes should use a unique prefix."""
    url = os.environ.get(ENV_VARS["redis"])
    if not url:
        _missing("redis")
    assert url is not None
    return url


@pytest.fixture
def amqp_url() -> str:
    """A RabbitMQ URL from ``PONYKIT_TEST_AMQP``; queues and exchanges the test declares should be unique."""
    url = os.environ.get(ENV_VARS["amqp"])
    if not url:
        _missing("amqp")
    assert url is not None
    return url


@pytest.fixture
def replica_url() -> str:
    """The URL of a streaming replica of the PostgreSQL test server, from ``PONYKIT_TEST_REPLICA``.

    The replica serves the primary's ``test`` database read-only; a test that binds to it with its
    ``postgres`` backend's schema takes ``replica_control.url_for(backend)``.
    """
    url = os.environ.get(ENV_VARS["replica"])
    if not url:
        _missing("replica")
    assert url is not None
    return url


_REPLICA_SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "replica.sh"


class ReplicaControl:
    """Stop, start and slow down the test replica (``.ci/replica.sh`` manages the server process).

    Every change is undone when the test ends: the replica runs again, without apply delay, caught up.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._kwargs = ponykit.parse_url(url)[1]
        self.primary_url = os.environ.get(ENV_VARS["postgres"], "")

    def url_for(self, backend: Backend) -> str:
        """The replica URL with ``backend``'s query (its isolated schema's ``search_path``)."""
        query = urlsplit(backend.url).query
        return urlunsplit(urlsplit(self.url)._replace(query=query))

    def _script(self, *args: str) -> None:
        result = subprocess.run(
            ["bash", str(_REPLICA_SCRIPT), *args], capture_output=True, text=True, timeout=180, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f".ci/replica.sh {' '.join(args)} failed: {result.stdout}{result.stderr}")

    def _query(self, kwargs: dict[str, Any], sql: str) -> Any:
        import psycopg2

        con = psycopg2.connect(connect_timeout=5, **kwargs)
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone()[0] if cur.description else None
        finally:
            con.close()

    def stop(self) -> None:
        """Stop the replica server (fast shutdown: its connections are cut)."""
        self._script("stop")

    def start(self) -> None:
        """Start the replica server and wait until it accepts connections."""
        self._script("start")

    def is_running(self) -> bool:
        """Whether the replica answers as a standby in recovery."""
        try:
            return bool(self._query(self._kwargs, "SELECT pg_is_in_recovery()"))
        except Exception:
            return False

    def set_apply_delay(self, ms: int) -> None:
        """Set ``recovery_min_apply_delay`` on the replica: commits become visible there ``ms`` later."""
        self._query(self._kwargs, f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(ms)}ms'")
        self._query(self._kwargs, "SELECT pg_reload_conf()")
        # The reload is asynchronous: once a new connection sees the value, the postmaster has re-read
        # its configuration and signalled every process (the startup process applying WAL included).
        deadline = time.monotonic() + 30
        while self._query(
            self._kwargs, "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'"
        ) != str(int(ms)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica did not take recovery_min_apply_delay = {int(ms)}ms")
            time.sleep(0.02)

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the replica replayed everything the primary has written so far."""
        primary = ponykit.parse_url(self.primary_url)[1]
        target = self._query(primary, "SELECT pg_current_wal_lsn()::text")
        deadline = time.monotonic() + timeout
        while True:
            if self._query(self._kwargs, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the replica did not replay the primary's WAL up to {target} in {timeout}s"
                )
            time.sleep(0.02)

    def _resume_replay(self) -> None:
        import psycopg2

        con = psycopg2.connect(self.url)
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute("SELECT pg_wal_replay_resume()")
        finally:
            con.close()

    def restore(self) -> None:
        """Back to the normal state: running, replaying WAL (not paused), no apply delay, caught up."""
        if not self.is_running():
            self.start()
        self._resume_replay()
        self.set_apply_delay(0)
        self.wait_caught_up()


@pytest.fixture
def replica_control(replica_url: str) -> Iterator[ReplicaControl]:
    """Control of the test replica (:class:`ReplicaControl`); restored to normal when the test ends."""
    if not os.environ.get(ENV_VARS["postgres"]):
        _missing("postgres")
    control = ReplicaControl(replica_url)
    if not control.is_running():
        pytest.fail(f"no replica answers at {replica_url}: run bash .ci/replica.sh start", pytrace=False)
    yield control
    control.restore()


@pytest.fixture
def mariadb_replica_url() -> str:
    """The URL of the MariaDB pair's replica (``PONYKIT_TEST_MARIADB_REPLICA``, ``.ci/mariadb-replica.sh``).

    It replicates its primary (``PONYKIT_TEST_MARIADB_PRIMARY``, default port 3307) with GTIDs; a test
    takes its own database on the pair from ``mariadb_replica_control.database()``.
    """
    url = os.environ.get(ENV_VARS["mariadb_replica"])
    if not url:
        _missing("mariadb_replica")
    assert url is not None
    return url


_MARIADB_REPLICA_SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "mariadb-replica.sh"


class MariadbReplicaControl:
    """The MariaDB primary+replica pair of ``.ci/mariadb-replica.sh``: per-test databases, stop and start
    the replica, its apply delay (``MASTER_DELAY``, whole seconds). Undone when the test ends: replica
    running and replicating without delay, caught up, the test's databases dropped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.primary_url = os.environ.get(MARIADB_PRIMARY_VAR) or MARIADB_PRIMARY_DEFAULT
        self._databases: list[str] = []

    @staticmethod
    def _connect(url: str) -> Any:
        import pymysql

        parts = urlsplit(url)
        return pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            connect_timeout=5,
            autocommit=True,
        )

    def _query(self, url: str, sql: str, args: Any = None) -> Any:
        con = self._connect(url)
        try:
            with con.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchone() if cur.description else None
        finally:
            con.close()

    def _slave_status(self) -> dict[str, Any]:
        con = self._connect(self.url)
        try:
            with con.cursor() as cur:
                cur.execute("SHOW SLAVE STATUS")
                row = cur.fetchone()
                return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else {}
        finally:
            con.close()

    def _script(self, *args: str) -> None:
        result = subprocess.run(
            ["bash", str(_MARIADB_REPLICA_SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f".ci/mariadb-replica.sh {' '.join(args)} failed: {result.stdout}{result.stderr}"
            )

    def database(self) -> tuple[str, str]:
        """A fresh database on the primary, replicated: ``(primary URL, replica URL)`` bound to it."""
        name = "pkr_" + uuid.uuid4().hex[:12]
        self._query(self.primary_url, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        self._databases.append(name)
        self.wait_caught_up()
        path = "/" + name
        return _with_path(self.primary_url, path), _with_path(self.url, path)

    def stop(self) -> None:
        """Stop the replica server (the primary keeps running)."""
        self._script("stop-replica")

    def start(self) -> None:
        """Start the replica server again and wait until it replicates."""
        self._script("start")

    def is_running(self) -> bool:
        """Whether the replica answers and its IO and SQL threads run."""
        try:
            status = self._slave_status()
        except Exception:
            return False
        return status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes"

    def stop_applying(self) -> None:
        """Stop the replica's SQL thread (``STOP SLAVE SQL_THREAD``): it receives but applies nothing."""
        self._query(self.url, "STOP SLAVE SQL_THREAD")

    def set_apply_delay(self, seconds: int) -> None:
        """``MASTER_DELAY`` (whole seconds): the replica applies each transaction that long after it."""
        for sql in ("STOP SLAVE", f"CHANGE MASTER TO MASTER_DELAY = {int(seconds)}", "START SLAVE"):
            self._query(self.url, sql)
        if int(self._slave_status().get("SQL_Delay") or 0) != int(seconds):
            raise RuntimeError(f"the MariaDB replica did not take MASTER_DELAY = {int(seconds)}")

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the replica applied everything the primary has written so far."""
        target = self._query(self.primary_url, "SELECT @@gtid_binlog_pos")[0]
        if not target:
            return
        waited = self._query(self.url, "SELECT MASTER_GTID_WAIT(%s, %s)", (target, timeout))[0]
        if waited != 0:
            raise RuntimeError(f"the MariaDB replica did not apply {target} in {timeout}s")

    def restore(self) -> None:
        """Back to normal: replica running and applying without delay, caught up; the test's databases
        dropped (on the primary, so the replica drops them too)."""
        if not self.is_running():
            self.start()
        if int(self._slave_status().get("SQL_Delay") or 0) != 0:
            self.set_apply_delay(0)
        self._query(self.url, "START SLAVE")  # a no-op (a warning) when both threads run
        for name in self._databases:
            self._query(self.primary_url, f"DROP DATABASE IF EXISTS `{name}`")
        self._databases.clear()
        self.wait_caught_up()


@pytest.fixture
def mariadb_replica_control(mariadb_replica_url: str) -> Iterator[MariadbReplicaControl]:
    """Control of the MariaDB pair (:class:`MariadbReplicaControl`); restored when the test ends."""
    control = MariadbReplicaControl(mariadb_replica_url)
    if not control.is_running():
        pytest.fail(
            f"no MariaDB replica replicates at {mariadb_replica_url}: run bash .ci/mariadb-replica.sh start",
            pytrace=False,
        )
    yield control
    control.restore()


@pytest.fixture
def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return "pktest:" + uuid.uuid4().hex[:12] + ":"


# ---------------------------------------------------------------------------------------------------------
# Per-backend counts, printed at the end and written for CI

_counts_key = pytest.StashKey[Counter[str]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    labels = []
    if callspec is not None and "backend_name" in callspec.params:
        labels.append(callspec.params["backend_name"])
    fixturenames = getattr(item, "fixturenames", ())
    labels.extend(label for name, label in SERVICE_FIXTURES.items() if name in fixturenames)
    report.ponykit_backends = labels  # type: ignore[attr-defined]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    counts = _counts(report)
    if counts is None:
        return
    for label in getattr(report, "ponykit_backends", ()):
        if report.when == "call" and report.passed:
            counts[f"{label} passed"] += 1
        elif hasattr(report, "wasxfail"):  # an expected failure ran on this backend: not a skip
            counts[f"{label} xfailed"] += 1
        elif report.skipped:
            counts[f"{label} skipped"] += 1
        elif report.failed:
            counts[f"{label} failed"] += 1


_config_ref: list[pytest.Config] = []


def _counts(report: pytest.TestReport) -> Counter[str] | None:
    return _config_ref[0].stash[_counts_key] if _config_ref else None


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    _config_ref[:] = [session.config]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    counts = config.stash.get(_counts_key, Counter())
    lines = []
    for label in (*BACKENDS, *SERVICE_FIXTURES.values()):
        parts = [f"{counts[f'{label} {kind}']} {kind}" for kind in ("passed", "failed", "skipped", "xfailed")]
        lines.append(f"{label}: " + ", ".join(parts))
    terminalreporter.write_sep("-", "ponykit tests per backend")
    for line in lines:
        terminalreporter.write_line(line)
    target = os.environ.get("PONYKIT_BACKEND_REPORT")
    if target:
        with open(target, "w", encoding="utf-8") as fh:
            for key, value in sorted(counts.items()):
                fh.write(f"{key}={value}\n")
