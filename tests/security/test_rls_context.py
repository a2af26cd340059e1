"""``rls_context`` itself (names, values, nesting, reprs) and the row-level security set-up on databases
without RLS (SQLite, MariaDB): ``attach(rls_required=...)``, ``enable_rls`` and ``check_rls`` refuse there,
and a context is harmless."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Required, db_session, select

import ponykit as pk
from ponykit.security import check_rls, current_rls_settings, enable_rls, rls_context, setting_equals

SECRET = "s3cr3t-tenant-value"


def test_names_get_the_app_prefix_and_values_become_text() -> None:
    with rls_context(tenant_id=7, admin=True, ratio=0.5, off=False):
        assert current_rls_settings() == {
            "app.tenant_id": "7",
            "app.admin": "true",
            "app.ratio": "0.5",
            "app.off": "false",
        }
    with rls_context({"request.jwt.claims": '{"sub": "u1"}', "tenant_id": 3}):
        assert current_rls_settings() == {"request.jwt.claims": '{"sub": "u1"}', "app.tenant_id": "3"}
    assert current_rls_settings() == {}


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((), {"tenant_id": None}, "None"),
        ((), {"tenant_id": b"7"}, "decode"),
        (({"bad name": 1},), {}, "setting name"),
        (({"app.": 1},), {}, "setting name"),
        (({"a.b;drop": 1},), {}, "setting name"),
        (({1: 1},), {}, "must be a str"),
        ((["tenant_id"],), {}, "mapping"),
    ],
)
def test_bad_names_and_values_are_refused(args: tuple[Any, ...], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(pk.OptionError, match=match):
        rls_context(*args, **kwargs)


def test_nested_contexts_merge_inner_wins_and_unwind() -> None:
    with rls_context(tenant_id=1, user_id=5):
        with rls_context(tenant_id=2, role="admin"):
            assert current_rls_settings() == {"app.tenant_id": "2", "app.user_id": "5", "app.role": "admin"}
        assert current_rls_settings() == {"app.tenant_id": "1", "app.user_id": "5"}
    assert current_rls_settings() == {}


def test_one_context_object_can_be_reentered_and_used_as_a_decorator() -> None:
    ctx = rls_context(tenant_id=4)

    @ctx
    def inside() -> dict[str, str]:
        return current_rls_settings()

    with ctx:
        with ctx:
            assert inside() == {"app.tenant_id": "4"}
        assert current_rls_settings() == {"app.tenant_id": "4"}
    assert current_rls_settings() == {}
    assert inside() == {"app.tenant_id": "4"}


def test_one_context_object_entered_by_many_threads_and_tasks_at_once() -> None:
    shared = rls_context(tenant_id=1)
    barrier = threading.Barrier(8)
    seen: list[dict[str, str]] = []

    @shared
    def work(inner: int) -> None:
        barrier.wait()  # all eight threads are inside the same context object now
        with rls_context(user=inner):
            seen.append(current_rls_settings())
        barrier.wait()

    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(seen, key=lambda d: d["app.user"]) == [
        {"app.tenant_id": "1", "app.user": str(n)} for n in range(8)
    ]

    async def task(n: int) -> dict[str, str]:
        with shared:
            await asyncio.sleep(0.002 * n)  # the first to enter exits first
            return current_rls_settings()

    async def main() -> list[dict[str, str]]:
        return list(await asyncio.gather(*(task(n) for n in range(5))))

    assert asyncio.run(main()) == [{"app.tenant_id": "1"}] * 5
    assert current_rls_settings() == {}


def test_values_never_in_reprs() -> None:
    ctx = rls_context(tenant_id=SECRET)
    assert "app.tenant_id" in repr(ctx)
    assert SECRET not in repr(ctx)
    assert SECRET not in str(ctx)


def test_context_follows_tasks_and_copied_contexts_only() -> None:
    async def task(tenant: int) -> str:
        with rls_context(tenant_id=tenant):
            await asyncio.sleep(0)
            return current_rls_settings()["app.tenant_id"]

    async def main() -> list[str]:
        return list(await asyncio.gather(*(task(t) for t in range(5))))

    assert asyncio.run(main()) == ["0", "1", "2", "3", "4"]
    with rls_context(tenant_id=9):
        copied = contextvars.copy_context()
    assert copied.run(current_rls_settings) == {"app.tenant_id": "9"}
    assert current_rls_settings() == {}


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), st.integers(), max_size=5))
def test_any_plain_names_round_trip(values: dict[str, int]) -> None:
    with rls_context(**values):
        assert current_rls_settings() == {f"app.{k}": str(v) for k, v in values.items()}


# ---------------------------------------------------------------------------------------------------------
# Databases without row-level security


def declare(db: Database) -> Any:
    class Doc(db.Entity):
        tenant = Required(int)

    return Doc


@pytest.mark.backends("sqlite", "mysql")
def test_rls_required_needs_postgresql(db: Database) -> None:
    declare(db)
    with pytest.raises(pk.ConfigurationError, match="row-level security needs PostgreSQL") as caught:
        pk.attach(db, rls_required=("tenant_id",))
    assert "policies" in str(caught.value)
    assert pk.kit.find_kit(db) is None  # refused before anything was set: no silent half set-up
    kit = pk.attach(db)
    assert kit.rls_required == ()
    assert kit.before_statement is None


@pytest.mark.backends("sqlite", "mysql")
def test_enable_rls_and_check_rls_need_postgresql(db: Database) -> None:
    doc = declare(db)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with pytest.raises(pk.ConfigurationError, match="PostgreSQL"):
        enable_rls(doc, using="true")
    with pytest.raises(pk.ConfigurationError, match="PostgreSQL"):
        check_rls(db)


@pytest.mark.backends("sqlite", "mysql")
def test_a_context_is_harmless_where_there_is_no_rls(db: Database) -> None:
    doc = declare(db)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with rls_context(tenant_id=1), db_session:
        doc(tenant=1)
        doc(tenant=2)
    with rls_context(tenant_id=1), db_session:
        assert select(d for d in doc).count() == 2  # no RLS: a context filters nothing by itself


@pytest.mark.backends("postgres")
def test_enable_rls_refuses_bad_arguments(db: Database) -> None:
    doc = declare(db)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"using": None}, "give using"),
        ({"using": 5}, "SQL text or setting_equals"),
        ({"using": "true", "command": "MERGE"}, "one of ALL"),
        ({"using": "true", "command": "INSERT"}, "no USING"),
        ({"using": "true", "check": "true", "command": "SELECT"}, "no WITH CHECK"),
        ({"using": setting_equals("nope", "tenant_id")}, "no attribute 'nope'"),
    ]
    for kwargs, match in cases:
        with pytest.raises(pk.OptionError, match=match):
            enable_rls(doc, **kwargs)
    with pytest.raises(pk.OptionError, match="SQL type name"):
        setting_equals("tenant", "tenant_id", type="int); drop table doc; --")
    with pytest.raises(pk.OptionError, match="setting name"):
        setting_equals("tenant", "app.x'y")
    with pytest.raises(pk.ConfigurationError, match="db_session"):
        enable_rls(doc, using="true", apply=True)
    assert enable_rls(doc, using=None, check="true", command="insert")[-1] == (
        'CREATE POLICY "doc_insert_rls" ON "doc" FOR INSERT WITH CHECK (true)'
    )


def test_settings_values_stay_out_of_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with rls_context(tenant_id=SECRET):
        pass
    assert SECRET not in caplog.text


def test_a_decorated_async_function_runs_its_body_inside_the_context() -> None:
    @pk.rls_context(tenant_id=7)
    async def handler() -> dict[str, str]:
        await asyncio.sleep(0)
        return pk.security.current_rls_settings()

    async def main() -> dict[str, str]:
        with pk.rls_context(tenant_id=1):
            return await handler()

    assert asyncio.run(main())["app.tenant_id"] == "7"
    assert asyncio.run(handler()) == {"app.tenant_id": "7"}

    def rows() -> Any:
        yield pk.security.current_rls_settings()

    with pytest.raises(pk.OptionError, match="generator"):
        pk.rls_context(tenant_id=1)(rows)
