"""Benchmark harness: one ``bench_item`` table, five contenders, every backend, one process.

A benchmark asks for ``bench_env`` and runs once per backend (``sqlite`` always; ``postgres`` and ``mysql``
when ``PONYKIT_TEST_POSTGRES`` / ``PONYKIT_TEST_MYSQL`` hold server URLs, exactly as for the tests). The
fixture is session-scoped: each backend is prepared once, and every contender sees the same table, created
by Pony's ``generate_mapping(create_tables=True)`` so that all of them run against identical DDL:

* the raw DB-API driver: ``env.raw_connect()`` (sqlite3, psycopg2 or pymysql),
* plain Pony: ``env.pony_db`` / ``env.PonyItem`` (no ponykit at all),
* ponykit: ``env.kit_db`` / ``env.KitItem`` (a separate Database, ``ponykit.attach`` before mapping),
* SQLAlchemy 2: ``env.sa_engine``, ``env.sa_table`` (Core), ``env.SAItem`` (ORM), ``env.sa_session_factory``,
* peewee: ``env.peewee_db`` / ``env.PeeweeItem``.

``@pytest.mark.bench_backends("sqlite", "postgres")`` restricts a benchmark to some backends.
``PONYKIT_BENCH_BACKENDS=sqlite,sqlite_mem`` chooses the backends of the whole run; ``sqlite_mem`` (a
SQLite file on the ``/dev/shm`` tmpfs, so no disk and no fsync cost) runs only when named there.
With ``PONYKIT_REQUIRE_BACKENDS=1`` (CI) a server backend whose URL is missing is an error, not a skip.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import pytest
from pony import orm

import ponykit

ALL_BACKENDS = ("sqlite", "sqlite_mem", "postgres", "mysql")
DEFAULT_BACKENDS = ("sqlite", "postgres", "mysql")
ENV_VARS = {"postgres": "PONYKIT_TEST_POSTGRES", "mysql": "PONYKIT_TEST_MYSQL"}
REQUIRE = os.environ.get("PONYKIT_REQUIRE_BACKENDS", "") not in ("", "0")
# The PostgreSQL schema and the MariaDB database the harness owns; set it to run two sessions side by side.
SCHEMA = os.environ.get("PONYKIT_BENCH_SCHEMA", "ponykit_bench")
TABLE = "bench_item"
COLUMNS = ("name", "qty", "price", "created", "active", "note")
SELECT_COLUMNS = ("id", *COLUMNS)

_EPOCH = dt.datetime(2024, 1, 1, 8, 0, 0)
_CENT = Decimal("0.01")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "bench_backends(*names): restrict a benchmark to these backends (sqlite, postgres, ...)"
    )
    # SQLite has no DECIMAL type; SQLAlchemy says so once per process. Every contender shares that limit.
    config.addinivalue_line(
        "filterwarnings",
        r"ignore:Dialect sqlite\+pysqlite does \*not\* support Decimal objects natively"
        ":sqlalchemy.exc.SAWarning",
    )


def selected_backends() -> tuple[str, ...]:
    """The backends of this run: ``PONYKIT_BENCH_BACKENDS`` (comma-separated) or the default three."""
    raw = os.environ.get("PONYKIT_BENCH_BACKENDS", "").strip()
    if not raw:
        return DEFAULT_BACKENDS
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    unknown = [n for n in names if n not in ALL_BACKENDS]
    if unknown:
        raise pytest.UsageError(
            f"PONYKIT_BENCH_BACKENDS names unknown backends {unknown}; known: {', '.join(ALL_BACKENDS)}"
        )
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_env" not in metafunc.fixturenames:
        return
    names = selected_backends()
    marker = metafunc.definition.get_closest_marker("bench_backends")
    if marker is not None:
        unknown = [n for n in marker.args if n not in ALL_BACKENDS]
        if unknown:
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: bench_backends names unknown backends {unknown}; "
                f"known: {', '.join(ALL_BACKENDS)}"
            )
        names = tuple(n for n in names if n in marker.args)
    metafunc.parametrize("bench_env", names, indirect=True, scope="session")


# ---------------------------------------------------------------------------------------------------------
# Deterministic data


def make_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` deterministic rows (row ``i`` for ``i`` in ``start .. start+n-1``) with the six data columns.

    ``qty = (37 * i) % 1000``: among rows 0..999 every qty from 0 to 999 occurs exactly once, so after
    ``seed(1000)`` a range ``lo <= qty < hi`` selects exactly ``hi - lo`` rows. Every 7th name and every
    4th note (from row 1) hold non-ASCII text, including a 4-byte character; every 4th note is None.
    """
    rows = []
    for i in range(start, start + n):
        name = f"pöny-{i:07d}-ünïcødé ✓🐴" if i % 7 == 3 else f"item-{i:07d}"
        if i % 4 == 0:
            note: str | None = None
        elif i % 4 == 1:
            note = f"naïve café ☕ note {i}"
        else:
            note = f"note {i}: " + "lorem ipsum " * (i % 5)
        rows.append(
            {
                "name": name,
                "qty": (37 * i) % 1000,
                "price": (Decimal((i * 7919) % 1_000_000) / 100).quantize(_CENT),
                "created": _EPOCH + dt.timedelta(seconds=61 * i),
                "active": i % 3 != 0,
                "note": note,
            }
        )
    return rows


def _sqlite_datetime(value: dt.datetime) -> str:
    # The text Pony writes for a datetime on SQLite, so raw-seeded rows read back identically everywhere.
    text = value.isoformat(" ")
    return text + ".000000" if len(text) == 19 else text


# ---------------------------------------------------------------------------------------------------------
# Model definitions (one set per backend: every contender gets its own metadata)


def define_pony_item(db: orm.Database) -> Any:
    """Declare ``Item`` on ``db``, mapped to ``bench_item``."""

    class Item(db.Entity):  # type: ignore[name-defined]
        _table_ = TABLE
        id = orm.PrimaryKey(int, auto=True)
        name = orm.Required(str, 100)
        qty = orm.Required(int)
        price = orm.Required(Decimal, precision=12, scale=2)
        created = orm.Required(dt.datetime)
        active = orm.Required(bool)
        note = orm.Optional(str, nullable=True)

    return Item


def define_sqlalchemy(engine: Any) -> tuple[Any, Any, Any]:
    """``(Core table, ORM mapped class, session factory)`` for ``bench_item`` on ``engine``."""
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase, sessionmaker

    class Base(DeclarativeBase):
        pass

    table = sa.Table(
        TABLE,
        Base.metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("qty", sa.Integer, nullable=False),
        sa.Column("price", sa.Numeric(12, 2), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
    )

    class SAItem(Base):
        __table__ = table

        def __repr__(self) -> str:
            return f"SAItem(id={self.id!r}, name={self.name!r})"

    return table, SAItem, sessionmaker(engine)


def define_peewee(database: Any) -> Any:
    """A peewee model for ``bench_item`` bound to ``database``."""
    import peewee as pw

    class PeeweeItem(pw.Model):
        id = pw.AutoField()
        name = pw.CharField(max_length=100)
        qty = pw.IntegerField()
        price = pw.DecimalField(max_digits=12, decimal_places=2, auto_round=False)
        created = pw.DateTimeField()
        active = pw.BooleanField()
        note = pw.TextField(null=True)

        class Meta:
            table_name = TABLE

    PeeweeItem.bind(database)
    return PeeweeItem


# ---------------------------------------------------------------------------------------------------------
# The environment one backend offers the contenders


class BenchEnv:
    """Everything a benchmark needs on one backend; see the module docstring.

    Attributes: ``name`` (``sqlite``, ``sqlite_mem``, ``postgres``, ``mysql``), ``provider`` (Pony's
    provider name), ``url`` (what ponykit binds to), ``connect_kwargs`` (DB-API connect arguments),
    ``paramstyle`` and ``placeholder`` (``?`` or ``%s``) of the raw driver, ``pony_db`` / ``PonyItem``,
    ``kit_db`` / ``KitItem`` / ``kit``, ``sa_engine`` / ``sa_table`` / ``SAItem`` / ``sa_session_factory``,
    ``peewee_db`` / ``PeeweeItem``.
    """

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.provider, self.connect_kwargs = ponykit.parse_url(url)
        self.driver: Any = _driver(self.provider)
        self.paramstyle: str = self.driver.paramstyle
        self.placeholder = "?" if self.paramstyle == "qmark" else "%s"
        self._raw_conns: list[Any] = []
        self._admin: Any = None
        self._closed = False

        # Plain Pony creates the table: every other contender maps onto exactly that DDL.
        self.pony_db = orm.Database()
        ponykit.bind_url(self.pony_db, url)  # binding only: this Database stays plain Pony
        self.PonyItem = define_pony_item(self.pony_db)
        self.pony_db.generate_mapping(create_tables=True)

        self.kit_db = orm.Database()
        ponykit.bind_url(self.kit_db, url)
        self.KitItem = define_pony_item(self.kit_db)
        self.kit = ponykit.attach(self.kit_db)
        self.kit_db.generate_mapping(create_tables=False)

        import peewee

        self.sa_engine = _sqlalchemy_engine(self.provider, self.connect_kwargs)
        self.sa_table, self.SAItem, self.sa_session_factory = define_sqlalchemy(self.sa_engine)

        self.peewee_db = _peewee_database(peewee, self.provider, self.connect_kwargs)
        self.PeeweeItem = define_peewee(self.peewee_db)

    def __repr__(self) -> str:
        return f"<BenchEnv {self.name} {ponykit.binding.redact_url(self.url)}>"

    # -- raw driver ------------------------------------------------------------------------------------

    def raw_connect(self) -> Any:
        """A new DB-API connection to the benchmark database (closed at session end if still open)."""
        conn = self._connect()
        self._raw_conns.append(conn)
        return conn

    def _connect(self) -> Any:
        kwargs = dict(self.connect_kwargs)
        if self.provider == "sqlite":
            return sqlite3.connect(kwargs["filename"], timeout=kwargs.get("timeout", 5.0))
        if self.provider == "mysql":
            kwargs = _mysql_kwargs(kwargs)
        return self.driver.connect(**kwargs)

    def admin(self) -> Any:
        """The harness's own autocommit connection (used by ``truncate``, ``seed``, ``count``)."""
        if self._admin is None:
            conn = self._connect()
            if self.provider == "sqlite":
                conn.isolation_level = None
            elif self.provider == "postgres":
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SET lock_timeout = '20s'")
            else:
                conn.autocommit(True)
                with conn.cursor() as cur:
                    cur.execute("SET SESSION lock_wait_timeout = 20")
            self._admin = conn
        return self._admin

    # -- data ------------------------------------------------------------------------------------------

    @staticmethod
    def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
        """``n`` deterministic row dicts (keys ``name, qty, price, created, active, note``); see make_rows."""
        return make_rows(n, start)

    def truncate(self) -> None:
        """Empty ``bench_item`` and restart its ids at 1."""
        conn = self.admin()
        cur = conn.cursor()
        try:
            if self.provider == "sqlite":
                cur.execute(f"DELETE FROM {TABLE}")
                has_seq = cur.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
                ).fetchone()
                if has_seq:
                    cur.execute("DELETE FROM sqlite_sequence WHERE name = ?", (TABLE,))
            elif self.provider == "postgres":
                cur.execute(f"TRUNCATE {TABLE} RESTART IDENTITY")
            else:
                cur.execute(f"TRUNCATE TABLE {TABLE}")
        finally:
            cur.close()

    def raw_values(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """``rows`` as the raw driver binds them, in ``COLUMNS`` order (SQLite gets Pony's text forms)."""
        if self.provider == "sqlite":
            return [
                (
                    r["name"],
                    r["qty"],
                    str(r["price"]),
                    _sqlite_datetime(r["created"]),
                    int(r["active"]),
                    r["note"],
                )
                for r in rows
            ]
        return [tuple(r[c] for c in COLUMNS) for r in rows]

    def seed(self, n: int, *, truncate: bool = True) -> int:
        """Insert ``rows(n)`` through the raw driver in one transaction (after ``truncate()`` by default).

        With the default, the table then holds exactly rows 0..n-1 with ids 1..n in order. Returns ``n``.
        """
        if truncate:
            self.truncate()
        rows = make_rows(n)
        if not rows:
            return 0
        columns = ", ".join(COLUMNS)
        conn = self.admin()
        cur = conn.cursor()
        try:
            values = self.raw_values(rows)
            if self.provider == "sqlite":
                marks = ", ".join("?" * len(COLUMNS))
                cur.execute("BEGIN")
                try:
                    cur.executemany(f"INSERT INTO {TABLE} ({columns}) VALUES ({marks})", values)
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            elif self.provider == "postgres":
                from psycopg2.extras import execute_values

                cur.execute("BEGIN")
                try:
                    execute_values(cur, f"INSERT INTO {TABLE} ({columns}) VALUES %s", values, page_size=1000)
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            else:
                marks = ", ".join(["%s"] * len(COLUMNS))
                conn.begin()
                try:
                    # PyMySQL turns this into multi-row INSERTs of up to ~1 MB each.
                    cur.executemany(f"INSERT INTO {TABLE} ({columns}) VALUES ({marks})", values)
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
        finally:
            cur.close()
        return n

    def count(self) -> int:
        """How many rows ``bench_item`` holds now."""
        cur = self.admin().cursor()
        try:
            cur.execute(f"SELECT COUNT(*) FROM {TABLE}")
            return int(cur.fetchone()[0])
        finally:
            cur.close()

    # -- teardown --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection the harness or a benchmark opened through it."""
        if self._closed:
            return
        self._closed = True
        for conn in self._raw_conns:
            _quietly(conn.close)
        self._raw_conns.clear()
        _quietly(self.pony_db.disconnect)
        _quietly(self.kit_db.disconnect)
        _quietly(self.sa_engine.dispose)
        _quietly(self.peewee_db.close)
        if self._admin is not None:
            _quietly(self._admin.close)
            self._admin = None


def _quietly(fn: Any) -> None:
    # A connection that is already closed, or whose server went away, is fine to ignore here.
    with contextlib.suppress(Exception):
        fn()


def _driver(provider: str) -> Any:
    if provider == "sqlite":
        return sqlite3
    if provider == "postgres":
        import psycopg2

        return psycopg2
    import pymysql

    return pymysql


def _mysql_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    renames = {"db": "database", "passwd": "password"}
    return {renames.get(k, k): v for k, v in kwargs.items()}


def _sqlalchemy_engine(provider: str, kwargs: dict[str, Any]) -> Any:
    """An engine reaching the same database as the raw driver, with the same driver settings."""
    import sqlalchemy
    from sqlalchemy.engine import URL

    if provider == "sqlite":
        return sqlalchemy.create_engine(f"sqlite:///{kwargs['filename']}")
    if provider == "mysql":
        drivername, kwargs = "mysql+pymysql", _mysql_kwargs(kwargs)
    else:
        drivername = "postgresql+psycopg2"
    fields = {
        "user": "username",
        "password": "password",
        "host": "host",
        "port": "port",
        "database": "database",
    }
    url = URL.create(drivername, **{fields[k]: v for k, v in kwargs.items() if k in fields})
    connect_args = {k: v for k, v in kwargs.items() if k not in fields}
    return sqlalchemy.create_engine(url, connect_args=connect_args)


def _peewee_database(peewee: Any, provider: str, kwargs: dict[str, Any]) -> Any:
    if provider == "sqlite":
        return peewee.SqliteDatabase(kwargs["filename"], timeout=kwargs.get("timeout", 5.0))
    if provider == "postgres":
        params = dict(kwargs)
        database = params.pop("database", None) or params.pop("dbname", None)
        return peewee.PostgresqlDatabase(database, **params)
    params = _mysql_kwargs(kwargs)
    database = params.pop("database", None)
    return peewee.MySQLDatabase(database, **params)


# ---------------------------------------------------------------------------------------------------------
# Per-backend preparation


def _missing(name: str) -> None:
    var = ENV_VARS[name]
    reason = f"{name} benchmarks not configured: set {var} to a server URL to run them"
    if REQUIRE:
        pytest.fail(f"{reason} (PONYKIT_REQUIRE_BACKENDS is set, so this is an error)", pytrace=False)
    pytest.skip(reason)


def _postgres_url(base: str) -> str:
    """``base`` with ``search_path`` set to the harness schema (merged into an existing ``options``)."""
    parts = urlsplit(base)
    params = parse_qsl(parts.query, keep_blank_values=True)
    options = [v for k, v in params if k == "options"]
    params = [(k, v) for k, v in params if k != "options"]
    params.append(("options", " ".join([*options, f"-c search_path={SCHEMA}"])))
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
    return urlunsplit(parts._replace(query=query))


def _server_admin(name: str, base: str) -> Any:
    """An autocommit connection to the server named by ``base`` (no particular database for MariaDB)."""
    provider, kwargs = ponykit.parse_url(base)
    try:
        if provider == "postgres":
            import psycopg2

            conn = psycopg2.connect(**kwargs)
            conn.autocommit = True
            return conn
        import pymysql

        kwargs = {k: v for k, v in _mysql_kwargs(kwargs).items() if k != "database"}
        return pymysql.connect(autocommit=True, **kwargs)
    except Exception as exc:
        pytest.fail(f"{name} server at {ENV_VARS[name]} does not answer: {exc}", pytrace=False)


def _prepare_server(name: str) -> tuple[str, list[str]]:
    """Drop and recreate the harness's schema/database; return the URL and the SQL that drops it again."""
    base = os.environ.get(ENV_VARS[name], "").strip()
    if not base:
        _missing(name)
    conn = _server_admin(name, base)
    try:
        with conn.cursor() as cur:
            if name == "postgres":
                cur.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
                cur.execute(f'CREATE SCHEMA "{SCHEMA}"')
                return _postgres_url(base), [f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE']
            cur.execute(f"DROP DATABASE IF EXISTS `{SCHEMA}`")
            cur.execute(f"CREATE DATABASE `{SCHEMA}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            return urlunsplit(urlsplit(base)._replace(path="/" + SCHEMA)), [
                f"DROP DATABASE IF EXISTS `{SCHEMA}`"
            ]
    finally:
        conn.close()


def _drop_server(name: str, statements: Sequence[str]) -> None:
    conn = _server_admin(name, os.environ[ENV_VARS[name]])
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def bench_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchEnv]:
    """The benchmark environment of one backend (session-scoped; the benchmark runs once per backend)."""
    name: str = request.param
    cleanup: list[str] = []
    tmpdir: str | None = None
    if name == "sqlite":
        path = tmp_path_factory.mktemp("bench-sqlite") / "bench.db"
        url = f"sqlite:///{path}?create_db=1"
    elif name == "sqlite_mem":
        if not os.path.isdir("/dev/shm"):
            pytest.skip("sqlite_mem needs a tmpfs at /dev/shm")
        tmpdir = tempfile.mkdtemp(prefix="ponykit-bench-", dir="/dev/shm")
        url = f"sqlite:///{tmpdir}/bench.db?create_db=1"
    else:
        url, cleanup = _prepare_server(name)
    env: BenchEnv | None = None
    try:
        env = BenchEnv(name, url)
        yield env
    finally:
        if env is not None:
            env.close()
        if cleanup:
            _drop_server(name, cleanup)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
