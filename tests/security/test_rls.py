"""Row-level security on PostgreSQL (issue #19 part 1): ``rls_context``, ``rls_required``, ``enable_rls``,
``check_rls`` against a real policy, read through a role that neither owns the tables nor bypasses RLS.

Set-up per test: the test's schema holds ``Doc`` (created by the ``postgres`` superuser Database, the
owner), with RLS enabled, forced and a ``tenant = app.tenant_id`` policy. The application Database binds
to the same schema as the LOGIN role ``ponykit_rls_app`` (created once, cluster-wide) that has
SELECT/INSERT/UPDATE/DELETE on the schema's tables. The fixture's ``DROP SCHEMA ... CASCADE`` removes
the tables and the grants on them; the role owns nothing, so it can stay.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import (
    Database,
    Optional,
    Required,
    Set,
    commit,
    count,
    db_session,
    rollback,
    select,
    set_sql_debug,
)

import ponykit as pk
from ponykit import _pony
from ponykit.security import check_rls, enable_rls, setting_equals

pytestmark = pytest.mark.backends("postgres")

APP_ROLE = "ponykit_rls_app"
ROWS = {1: 5, 2: 3, 3: 4}  # tenant -> rows seeded


def declare(db: Database) -> Any:
    class Folder(db.Entity):  # no RLS of its own: shared by every tenant
        name = Required(str)
        docs = Set("Doc")

    class Doc(db.Entity):
        tenant = Required(int, index=True)
        body = Required(str)
        folder = Optional(Folder)

    return Doc


@dataclass
class RLS:
    """The owner (superuser) side and a factory of application Databases (role ``ponykit_rls_app``)."""

    owner: Database
    owner_doc: Any
    schema: str
    app_url: str
    admin: Any
    made: list[Database]

    def app(
        self, *, required: tuple[str, ...] | None = ("tenant_id",), attach: bool = True, **options: Any
    ) -> tuple[Any, Any]:
        db = Database()
        pk.bind_url(db, self.app_url)
        doc = declare(db)
        if attach:
            pk.attach(db, rls_required=required, **options)
        db.generate_mapping(check_tables=True)
        self.made.append(db)
        return db, doc

    def sql(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a statement on the admin (superuser, autocommit) connection; the rows if it returns any."""
        with self.admin.connection("postgres").cursor() as cur:
            cur.execute(f'SET search_path TO "{self.schema}"')
            try:
                cur.execute(sql)
                return list(cur.fetchall()) if cur.description else []
            finally:
                cur.execute("RESET search_path")


def _ensure_role(admin: Any) -> None:
    # Cluster-wide and shared with other runs: create it once, tolerating a concurrent creation.
    admin.execute(
        "postgres",
        f"DO $$ BEGIN CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS; "
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )


@pytest.fixture
def rls(backend: Any, make_db: Callable[[], Database], _admin: Any) -> Iterator[RLS]:
    owner = make_db()
    doc = declare(owner)
    pk.attach(owner)
    owner.generate_mapping(create_tables=True)
    with db_session:
        schema = owner.select("SELECT current_schema()")[0]
        enable_rls(doc, using=setting_equals("tenant", "tenant_id", type="integer"), apply=True)
        shared = owner.Folder(name="shared")
        for tenant, n in ROWS.items():
            for i in range(n):
                doc(tenant=tenant, body=f"t{tenant}-{i}", folder=shared)
    _ensure_role(_admin)
    for grant in (
        f'GRANT USAGE ON SCHEMA "{schema}" TO {APP_ROLE}',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO {APP_ROLE}',
        f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO {APP_ROLE}',
    ):
        _admin.execute("postgres", grant)
    parts = urlsplit(backend.url)
    app_url = urlunsplit(parts._replace(netloc=f"{APP_ROLE}@{parts.hostname}:{parts.port or 5432}"))
    state = RLS(owner, doc, schema, app_url, _admin, [])
    try:
        yield state
    finally:
        for db in state.made:
            db.disconnect()
            pk.kit.forget(db)
        # The role's grants live in the schema's objects and go with DROP SCHEMA ... CASCADE; the schema
        # itself is granted too, so revoke that (DROP SCHEMA also would, this keeps pg_shdepend tidy).
        _admin.execute("postgres", f'REVOKE ALL ON SCHEMA "{schema}" FROM {APP_ROLE}')


def count_all(doc: Any) -> int:
    return int(select(d for d in doc).count())


# ---------------------------------------------------------------------------------------------------------
# Why rls_context exists: Pony's read-only sessions run in autocommit


def test_pony_naive_set_config_is_gone_by_the_next_statement(rls: RLS) -> None:
    """Plain Pony: ``SELECT set_config(..., true)`` at the start of a read-only session is lost (autocommit),
    so the RLS-protected count is 0 although the tenant has rows. (db.execute would have started a
    transaction; a read-only session that uses db.select, as most would for a SELECT, does not.)"""
    db, doc = rls.app(attach=False)
    with db_session:
        db.select("SELECT set_config('app.tenant_id', '1', true)")
        assert count_all(doc) == 0
    with db_session:  # the same statements with ponykit's context: the tenant's rows
        db.select("SELECT 1")
        assert count_all(doc) == 0  # no context at all: nothing visible (the policy fails closed)


def test_rls_context_covers_every_statement_of_a_read_only_session(rls: RLS) -> None:
    db, doc = rls.app()
    with pk.rls_context(tenant_id=1), db_session:
        assert count_all(doc) == ROWS[1]
        assert {d.tenant for d in select(d for d in doc)} == {1}
        assert db.select("SELECT count(*) FROM doc")[0] == ROWS[1]  # raw SQL is covered too
        assert db.select("SELECT current_setting('app.tenant_id')")[0] == "1"
    with pk.rls_context(tenant_id=2), db_session:
        assert count_all(doc) == ROWS[2]


def test_cached_queries_keep_one_entry_per_context(rls: RLS) -> None:
    """A result cached under one tenant's settings is never served under another's."""
    _db, doc = rls.app(cache=pk.query.MemoryCache())

    @pk.cached(depends_on=[doc])
    def bodies() -> list[str]:
        return sorted(d.body for d in select(d for d in doc))

    for tenant in (1, 2, 1, 2):
        with pk.rls_context(tenant_id=tenant), db_session:
            assert {d.tenant for d in pk.cached_select(select(d for d in doc))} == {tenant}
            assert pk.cached_select(select(count(d) for d in doc)) == [ROWS[tenant]]
            assert {b.split("-")[0] for b in bodies()} == {f"t{tenant}"}
    assert bodies.cache_info().hits == 2  # the second round of each tenant was served from the cache


def test_a_failing_statement_never_quotes_the_settings(rls: RLS) -> None:
    """The settings ride in front of the statement on a line of their own: PostgreSQL's error quotes
    the statement's line only."""
    db, _doc = rls.app()
    with (
        pk.rls_context(tenant_id=1, note="SECRET-VALUE-123"),
        db_session,
        pytest.raises(Exception, match="nosuchcol") as info,
    ):
        db.select("SELECT nosuchcol FROM doc")
    assert "SECRET-VALUE-123" not in str(info.value)


def test_collection_loads_and_lookups_are_filtered_too(rls: RLS) -> None:
    """Every read path: a Set loaded from a shared object, its count, a lookup by key, a prefetch."""
    db, doc = rls.app()
    folder = db.entities["Folder"]
    with db_session(), pk.rls_context(tenant_id=1):
        mine = select(d.id for d in doc)[:]
    with pk.rls_context(tenant_id=2), db_session:
        shared = folder.get(name="shared")
        assert {d.tenant for d in shared.docs} == {2}
        assert shared.docs.count() == ROWS[2]
        assert doc.get(id=mine[0]) is None
        assert {d.tenant for d in select(f for f in folder).prefetch(folder.docs).first().docs} == {2}


def test_settings_are_transaction_local_never_seen_by_the_next_borrower(rls: RLS) -> None:
    db, _doc = rls.app(required=None)
    with pk.rls_context(tenant_id=1), db_session:
        pid = db.select("SELECT pg_backend_pid()")[0]
        assert db.select("SELECT current_setting('app.tenant_id', true)")[0] == "1"
    with db_session:  # same thread: Pony's pool gives the same connection back
        assert db.select("SELECT pg_backend_pid()")[0] == pid
        assert db.select("SELECT current_setting('app.tenant_id', true)")[0] in ("", None)


def test_setting_values_stay_out_of_pony_sql_log_and_ponykit_logs(
    rls: RLS, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "424242"
    _db, doc = rls.app(required=None)
    caplog.set_level(logging.DEBUG)
    set_sql_debug(True, show_values=True)
    try:
        with pk.rls_context(tenant_id=secret), db_session:
            assert count_all(doc) == 0
    finally:
        set_sql_debug(False)
    logged = caplog.text + capsys.readouterr().out
    assert "app.tenant_id" in logged  # the name is shown, as Pony shows its own SET TRANSACTION
    assert secret not in logged


def test_values_with_quotes_and_percent_signs_arrive_exactly(rls: RLS) -> None:
    """The settings ride in front of the first statement, quoted by the driver: with and without that
    statement's own parameters (where ``%`` must be doubled), a hostile value arrives byte for byte."""
    db, doc = rls.app(required=None)
    weird = "50% o'clock'); DROP TABLE doc; -- \\ %s %(x)s ü"
    tenant = 1
    with pk.rls_context({"app.note": weird}, tenant_id=tenant), db_session:
        assert select(d for d in doc if d.tenant == tenant).count() == ROWS[1]  # a parameter: %(p1)s
        assert db.select("SELECT current_setting('app.note')")[0] == weird
    with pk.rls_context({"app.note": weird}), db_session:
        assert db.select("SELECT current_setting('app.note')")[0] == weird  # no parameters
    with pk.rls_context({"app.note": weird}, tenant_id=3), db_session:
        doc(tenant=3, body=weird)  # the first statement is an INSERT ... RETURNING id
    assert rls.sql("SELECT count(*) FROM doc WHERE tenant = 3") == [(ROWS[3] + 1,)]


def test_rls_required_refuses_before_any_sql(rls: RLS) -> None:
    db, doc = rls.app()
    statements: list[str] = []
    pk.get_kit(db).add_execute_listener(lambda _db, sql, *_: statements.append(sql))
    with db_session:
        with pytest.raises(pk.RLSContextError, match=r"app\.tenant_id") as caught:
            count_all(doc)
        assert caught.value.missing == ("app.tenant_id",)
        with pytest.raises(pk.RLSContextError):
            db.select("SELECT 1")
    with pytest.raises(pk.RLSContextError), db_session:
        doc(tenant=1, body="refused at flush")
    with pk.rls_context(user_id=3), pytest.raises(pk.RLSContextError), db_session:  # another name
        count_all(doc)
    with pk.rls_context(tenant_id=""), pytest.raises(pk.RLSContextError), db_session:  # empty = unset
        count_all(doc)
    assert statements == []
    assert rls.sql("SELECT count(*) FROM doc WHERE body = 'refused at flush'") == [(0,)]


def test_rls_required_names_are_normalized_and_checked(rls: RLS) -> None:
    db, _doc = rls.app(required=("tenant_id", "app.tenant_id", "request.user"))
    assert pk.get_kit(db).rls_required == ("app.tenant_id", "request.user")
    fresh = Database()
    pk.bind_url(fresh, rls.app_url)
    rls.made.append(fresh)
    with pytest.raises(pk.OptionError, match="list or tuple"):
        pk.attach(fresh, rls_required="tenant_id")  # type: ignore[arg-type]
    with pytest.raises(pk.OptionError, match="setting name"):
        pk.attach(fresh, rls_required=["bad-name"])
    assert pk.kit.find_kit(fresh) is None  # refused before anything was set


def test_leaving_a_context_mid_transaction_clears_its_settings(rls: RLS) -> None:
    db, doc = rls.app(required=None)
    with db_session:
        db.execute("SELECT 1")  # a writing transaction is open before any context
        with pk.rls_context(tenant_id=1, user_id=9):
            assert count_all(doc) == ROWS[1]
            with pk.rls_context(tenant_id=2):  # nested: merged, inner wins
                assert count_all(doc) == ROWS[2]
                assert db.select("SELECT current_setting('app.user_id')")[0] == "9"
            assert count_all(doc) == ROWS[1]
        assert count_all(doc) == 0
        assert db.select("SELECT current_setting('app.tenant_id', true)")[0] == ""
        assert db.select("SELECT current_setting('app.user_id', true)")[0] == ""


def test_explicit_commit_and_rollback_mid_session_reapply(rls: RLS) -> None:
    _db, doc = rls.app()
    with pk.rls_context(tenant_id=1), db_session:
        doc(tenant=1, body="new")
        commit()
        assert count_all(doc) == ROWS[1] + 1
        rollback()
        assert count_all(doc) == ROWS[1] + 1
        doc(tenant=1, body="rolled back")
        rollback()
        assert count_all(doc) == ROWS[1] + 1


def test_savepoint_rollback_keeps_the_settings(rls: RLS) -> None:
    db, doc = rls.app()
    with pk.rls_context(tenant_id=1), db_session:
        with pytest.raises(ZeroDivisionError), pk.savepoint(db=db):
            assert count_all(doc) == ROWS[1]  # settings applied inside the savepoint ...
            raise ZeroDivisionError
        assert count_all(doc) == ROWS[1]  # ... are applied again after ROLLBACK TO
        doc(tenant=1, body="after savepoint")
    with pk.rls_context(tenant_id=1), db_session:
        assert count_all(doc) == ROWS[1] + 1


def test_a_rollback_to_savepoint_never_brings_back_cleared_settings(rls: RLS) -> None:
    """Cleared inside a savepoint, then ROLLBACK TO it: the server holds the old value again; ponykit
    clears it again before the next statement."""
    db, doc = rls.app(required=None)
    with db_session:
        context = pk.rls_context(tenant_id=1)
        context.__enter__()
        assert count_all(doc) == ROWS[1]
        savepoint = pk.savepoint(db=db)
        savepoint.__enter__()  # SAVEPOINT while the context is active
        context.__exit__(None, None, None)  # the context ends inside the savepoint ...
        assert db.select("SELECT current_setting('app.tenant_id', true)")[0] == ""  # ... cleared in it
        savepoint.__exit__(ZeroDivisionError, ZeroDivisionError(), None)  # ROLLBACK TO: '1' is back
        assert db.select("SELECT current_setting('app.tenant_id', true)")[0] == ""
        assert db.select("SELECT count(*) FROM doc")[0] == 0


def test_bulk_savepoints_do_not_take_the_settings_away(rls: RLS) -> None:
    """Bulk operations open savepoints on the driver's cursor; one may be a transaction's first statement.
    The settings go before it, so a ROLLBACK TO it keeps them (and one after it makes them re-applied)."""
    db, doc = rls.app()
    with pk.rls_context(tenant_id=1), db_session:
        _pony.bookkeeping_in_session(db, "SAVEPOINT sp1")  # the transaction's first statement
        assert count_all(doc) == ROWS[1]
        _pony.bookkeeping_in_session(db, "ROLLBACK TO SAVEPOINT sp1")
        assert db.select("SELECT count(*) FROM doc")[0] == ROWS[1]
        _pony.bookkeeping_in_session(db, "SAVEPOINT sp2")
        with pk.rls_context(tenant_id=2):
            assert db.select("SELECT count(*) FROM doc")[0] == ROWS[2]  # applied inside sp2 ...
            _pony.bookkeeping_in_session(db, "ROLLBACK TO SAVEPOINT sp2")  # ... and undone: re-applied
            assert db.select("SELECT count(*) FROM doc")[0] == ROWS[2]
        assert db.select("SELECT count(*) FROM doc")[0] == ROWS[1]
    with pk.rls_context(tenant_id=2), db_session:
        pk.bulk_insert(doc, [{"tenant": 2, "body": "a"}])
    with pk.rls_context(tenant_id=2), db_session:  # the plan is cached: SAVEPOINT comes first now
        pk.bulk_insert(doc, [{"tenant": 2, "body": "b"}])
        assert count_all(doc) == ROWS[2] + 2


def test_reapplied_after_pony_reconnects(rls: RLS) -> None:
    db, doc = rls.app()
    with pk.rls_context(tenant_id=1), db_session:
        pid = db.select("SELECT pg_backend_pid()")[0]
        assert count_all(doc) == ROWS[1]
    rls.sql(f"SELECT pg_terminate_backend({pid})")
    with pk.rls_context(tenant_id=2), db_session:  # Pony reconnects silently; settings applied again
        assert count_all(doc) == ROWS[2]
        pid2 = db.select("SELECT pg_backend_pid()")[0]
        assert pid2 != pid
        rls.sql(f"SELECT pg_terminate_backend({pid2})")  # mid-session, before any write
        assert db.select("SELECT count(*) FROM doc")[0] == ROWS[2]
        assert db.select("SELECT pg_backend_pid()")[0] != pid2


def test_other_tenants_rows_are_not_writable(rls: RLS) -> None:
    db, doc = rls.app()
    with db_session(), pk.rls_context(tenant_id=2):
        other = [d.id for d in select(d for d in doc)]
    with pk.rls_context(tenant_id=1):
        with pytest.raises(Exception, match="row-level security"), db_session:
            doc(tenant=2, body="smuggled")
        with db_session:
            assert doc.get(id=other[0]) is None
            assert db.execute("UPDATE doc SET body = 'x' WHERE tenant = 2").rowcount == 0
            assert db.execute("DELETE FROM doc WHERE tenant = 2").rowcount == 0
        with pytest.raises(Exception, match="row-level security"), db_session:
            db.execute("UPDATE doc SET tenant = 2 WHERE tenant = 1")  # WITH CHECK: cannot move rows
    assert rls.sql("SELECT tenant, count(*) FROM doc GROUP BY tenant ORDER BY 1") == sorted(ROWS.items())


def test_bulk_insert_falls_back_from_copy_under_rls(rls: RLS) -> None:
    _db, doc = rls.app()
    rows = [{"tenant": 3, "body": f"bulk {i}"} for i in range(50)]
    with pk.rls_context(tenant_id=3), db_session:
        pk.bulk_insert(doc, rows)
    with pk.rls_context(tenant_id=3), db_session:
        assert count_all(doc) == ROWS[3] + 50
    with pytest.raises(Exception, match="row-level security"), pk.rls_context(tenant_id=1), db_session:
        pk.bulk_insert(doc, rows)
    assert rls.sql("SELECT count(*) FROM doc WHERE tenant = 3") == [(ROWS[3] + 50,)]


def test_context_follows_asyncio_tasks_and_copied_threads(rls: RLS) -> None:
    _db, doc = rls.app()

    def count() -> int:
        with db_session:
            return count_all(doc)

    async def request(tenant: int) -> int:
        with pk.rls_context(tenant_id=tenant):
            return await asyncio.to_thread(count)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(request(t) for t in (1, 2, 3, 1))))

    assert asyncio.run(main()) == [ROWS[1], ROWS[2], ROWS[3], ROWS[1]]
    results: dict[str, Any] = {}

    def in_thread(key: str) -> None:
        try:
            results[key] = count()
        except Exception as exc:
            results[key] = exc

    with pk.rls_context(tenant_id=2):
        copied = threading.Thread(target=contextvars.copy_context().run, args=(in_thread, "copied"))
        plain = threading.Thread(target=in_thread, args=("plain",))
        for t in (copied, plain):
            t.start()
            t.join()
    assert results["copied"] == ROWS[2]
    assert isinstance(results["plain"], pk.RLSContextError)  # a plain thread starts without one


# ---------------------------------------------------------------------------------------------------------
# check_rls


def test_check_rls_passes_a_forced_table_and_a_plain_role(rls: RLS) -> None:
    db, doc = rls.app()
    report = check_rls(db, entities=[doc])
    assert report.ok, str(report)
    assert report.role == APP_ROLE
    assert report.tables == ("doc",)
    assert "ok" in str(report)
    everything = check_rls(db)  # the shared table has no RLS: flagged when it is checked
    assert [(p.kind, p.table) for p in everything.problems] == [("rls_disabled", "folder")]
    with pytest.raises(pk.OptionError, match="entity classes"):
        check_rls(db, entities=[rls.owner_doc])  # an entity of another Database


def test_check_rls_flags_not_forced_disabled_owner_and_superuser(rls: RLS) -> None:
    rls.sql("ALTER TABLE doc NO FORCE ROW LEVEL SECURITY")
    db, doc = rls.app()
    assert [(p.kind, p.table) for p in check_rls(db, entities=[doc]).problems] == [("rls_not_forced", "doc")]
    rls.sql(f"ALTER TABLE doc OWNER TO {APP_ROLE}")
    kinds = {p.kind for p in check_rls(db, entities=[doc]).problems}
    assert kinds == {"rls_not_forced", "role_owns_table"}
    rls.sql("ALTER TABLE doc DISABLE ROW LEVEL SECURITY")
    assert {p.kind for p in check_rls(db, entities=[doc]).problems} == {"rls_disabled", "role_owns_table"}
    rls.sql("ALTER TABLE doc ENABLE ROW LEVEL SECURITY")
    rls.sql("DROP POLICY doc_all_rls ON doc")
    assert {p.kind for p in check_rls(db, entities=[doc]).problems} == {
        "rls_not_forced",
        "no_policy",
        "role_owns_table",
    }
    owner_report = check_rls(rls.owner)  # the postgres superuser
    assert "role_is_superuser" in {p.kind for p in owner_report.problems}
    assert not owner_report.ok
    assert "role_is_superuser" in str(owner_report)


# ---------------------------------------------------------------------------------------------------------
# enable_rls


def test_enable_rls_statements(rls: RLS) -> None:
    doc = rls.owner_doc
    statements = enable_rls(doc, using=setting_equals("tenant", "tenant_id", type="integer"))
    assert statements == [
        'ALTER TABLE "doc" ENABLE ROW LEVEL SECURITY',
        'ALTER TABLE "doc" FORCE ROW LEVEL SECURITY',
        'DROP POLICY IF EXISTS "doc_all_rls" ON "doc"',
        'CREATE POLICY "doc_all_rls" ON "doc" FOR ALL USING '
        "(\"tenant\" = (select nullif(current_setting('app.tenant_id', true), '')::integer))",
    ]
    statements = enable_rls(
        doc,
        using="true",
        check=setting_equals("body", "request.owner"),
        force=False,
        command="update",
        policy_name="edit own",
        role=APP_ROLE,
    )
    assert statements == [
        'ALTER TABLE "doc" ENABLE ROW LEVEL SECURITY',
        'DROP POLICY IF EXISTS "edit own" ON "doc"',
        f'CREATE POLICY "edit own" ON "doc" FOR UPDATE TO "{APP_ROLE}" USING (true) WITH CHECK '
        "(\"body\" = (select nullif(current_setting('request.owner', true), '')))",
    ]


def test_enable_rls_apply_is_idempotent_and_the_policy_holds(rls: RLS) -> None:
    with db_session:  # applied a second time: the policy is replaced, not duplicated
        enable_rls(rls.owner_doc, using=setting_equals("tenant", "tenant_id", type="integer"), apply=True)
    assert rls.sql("SELECT count(*) FROM pg_policy WHERE polrelid = 'doc'::regclass") == [(1,)]
    _db, doc = rls.app()
    with pk.rls_context(tenant_id=3), db_session:
        assert count_all(doc) == ROWS[3]


# ---------------------------------------------------------------------------------------------------------
# The cross-tenant leak oracle: requests of random tenants on pooled connections across threads


@dataclass(frozen=True)
class Request:
    thread: int
    tenant: int | None  # None: a request without any context (must be refused before any SQL)
    kind: str  # read, write (insert own rows), commit_mid (insert, commit(), read), foreign (cross-tenant
    # update and insert), kill_mid (the connection is terminated between two reads of one session)
    kill_before: bool  # terminate this thread's connection from the admin side before the request


REQUESTS = st.lists(
    st.builds(
        Request,
        thread=st.integers(0, 2),
        tenant=st.one_of(st.sampled_from([1, 2, 3]), st.none()),
        kind=st.sampled_from(["read", "write", "commit_mid", "foreign", "kill_mid"]),
        kill_before=st.integers(0, 3).map(lambda n: n == 0),
    ),
    min_size=1,
    max_size=12,
)
SEEDS = st.lists(st.sampled_from([1, 2, 3]), min_size=0, max_size=12)


class Harness:
    """Runs one example: seeds rows, runs each thread's requests in its own thread, records what happened."""

    def __init__(self, rls: RLS, db: Database, doc: Any) -> None:
        self.rls, self.db, self.doc = rls, db, doc
        self.lock = threading.Lock()
        self.violations: list[str] = []
        self.inserted: dict[int, int] = {}

    def admin(self, sql: str) -> list[tuple[Any, ...]]:
        with self.lock:  # one admin connection for all threads
            return self.rls.sql(sql)

    def seed(self, tenants: list[int]) -> dict[int, set[int]]:
        self.admin("TRUNCATE doc RESTART IDENTITY")
        for tenant in tenants:
            self.admin(f"INSERT INTO doc (tenant, body) VALUES ({tenant}, 'seed')")
        seeded: dict[int, set[int]] = {1: set(), 2: set(), 3: set()}
        for row_id, tenant in self.admin("SELECT id, tenant FROM doc"):
            seeded[tenant].add(row_id)
        return seeded

    def run_thread(self, requests: list[Request], seeded: dict[int, set[int]]) -> None:
        pid: int | None = None
        for request in requests:
            if request.kill_before and pid is not None:
                self.admin(f"SELECT pg_terminate_backend({pid})")
            if request.tenant is None:
                try:
                    with db_session:
                        count_all(self.doc)
                    self.violations.append(f"{request}: ran without a context")
                except pk.RLSContextError:
                    pass
                continue
            with pk.rls_context(tenant_id=request.tenant):
                pid = self.one(request, request.tenant, seeded)

    def read(self, tenant: int, seeded: dict[int, set[int]], request: Request) -> None:
        rows = {(d.id, d.tenant) for d in select(d for d in self.doc)}
        raw = self.db.select("SELECT id, tenant FROM doc")
        for row_id, row_tenant in rows | set(raw):
            if row_tenant != tenant:
                self.violations.append(f"{request}: saw row {row_id} of tenant {row_tenant}")
        if not seeded[tenant] <= {row_id for row_id, _ in rows}:
            self.violations.append(f"{request}: missed its own rows (settings not applied)")

    def one(self, request: Request, tenant: int, seeded: dict[int, set[int]]) -> int:
        with db_session:
            pid = int(self.db.select("SELECT pg_backend_pid()")[0])
            self.read(tenant, seeded, request)
            if request.kind in ("write", "commit_mid"):
                self.doc(tenant=tenant, body="own")
                with self.lock:
                    self.inserted[tenant] = self.inserted.get(tenant, 0) + 1
                if request.kind == "commit_mid":
                    commit()
                    self.read(tenant, seeded, request)
            if request.kind == "kill_mid":  # the connection dies mid-session, before any write
                self.admin(f"SELECT pg_terminate_backend({pid})")
                self.read(tenant, seeded, request)
            if request.kind == "foreign":
                other = {1: 2, 2: 3, 3: 1}[tenant]
                changed = self.db.execute(f"UPDATE doc SET body = 'stolen' WHERE tenant = {other}").rowcount
                if changed:
                    self.violations.append(f"{request}: updated {changed} rows of tenant {other}")
        if request.kind == "foreign":
            try:
                with db_session:
                    self.doc(tenant={1: 2, 2: 3, 3: 1}[tenant], body="smuggled")
                self.violations.append(f"{request}: inserted a row for another tenant")
            except pk.RLSContextError:
                self.violations.append(f"{request}: context lost")
            except Exception as exc:
                if "row-level security" not in str(exc):
                    raise
        return pid


@settings(max_examples=25)
@given(seeds=SEEDS, requests=REQUESTS)
def test_cross_tenant_leak_oracle(rls: RLS, seeds: list[int], requests: list[Request]) -> None:
    """0 rows of another tenant visible or writable, 0 statements without a context, across threads that
    reuse their pooled connection for requests of different tenants, with commits mid-session and
    connections killed between requests (Pony reconnects silently; the settings must follow)."""
    if not hasattr(rls, "app_pair"):
        rls.app_pair = rls.app()  # type: ignore[attr-defined]  # one app Database for every example
    db, doc = rls.app_pair  # type: ignore[attr-defined]
    harness = Harness(rls, db, doc)
    seeded = harness.seed(seeds)
    errors: list[BaseException] = []

    def worker(mine: list[Request]) -> None:
        try:
            harness.run_thread(mine, seeded)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=([r for r in requests if r.thread == n],)) for n in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert harness.violations == []
    counts = dict(harness.admin("SELECT tenant, count(*) FROM doc GROUP BY tenant"))
    for tenant in (1, 2, 3):
        expected = seeds.count(tenant) + harness.inserted.get(tenant, 0)
        assert counts.get(tenant, 0) == expected
    assert harness.admin("SELECT count(*) FROM doc WHERE body IN ('stolen', 'smuggled')") == [(0,)]
