"""A state machine interleaving cached reads with writes, bulk writes, commits and rollbacks.

Every cached read is checked against the same query run uncached in a fresh session. It runs with a
MemoryCache on every backend, and with a RedisCache shared with a second process that does the writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from pony.orm import Database, Optional, Required, Set, count, db_session, flush, rollback, select

import ponykit as pk
from ponykit.query import cached, cached_query, cached_select
from ponykit.query.backends import MemoryCache, RedisCache


def declare(db: Database, version: int = 1) -> tuple[Any, Any]:
    """The schema both processes use: items in groups. Version 2 (the next release of the application,
    during a rolling deploy) has one more column."""

    class Group(db.Entity):
        label = Required(str)
        items = Set("Item")

    class Item(db.Entity):
        name = Required(str)
        qty = Required(int)
        group = Optional(Group)
        if version == 2:
            note = Optional(str, nullable=True)  # a column added by a migration: NULL for old rows

    return Group, Item


def queries(Group: Any, Item: Any) -> list[Callable[[], Any]]:
    """The queries read through the cache."""
    return [
        lambda: Item.select().order_by(Item.id),
        lambda: select(i for i in Item if i.qty >= 5).order_by(Item.id),
        lambda: select((i.name, i.qty) for i in Item).order_by(1, 2),
        lambda: select(count(i) for i in Item if i.qty < 5),
        lambda: select((g.label, count(g.items)) for g in Group).order_by(1),
        lambda: Item.select().order_by(Item.id).page(2, 3),
    ]


def plain(value: Any) -> Any:
    """Results as plain data, entities with their values, so results of two sessions compare."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "_pkval_"):
        if hasattr(value, "qty"):
            return ("Item", value.id, value.name, value.qty, value.group and value.group.id)
        return (type(value).__name__, value.get_pk())
    return value


def write(Group: Any, Item: Any, db: Database, op: str, n: int) -> None:
    """One write, inside the caller's db_session."""
    items = Item.select().order_by(Item.id)[:]
    if op == "create":
        Item(name=f"i{n}", qty=n % 10, group=Group.select().order_by(Group.id).first() if n % 2 else None)
    elif op == "update" and items:
        items[n % len(items)].qty = n % 10
    elif op == "delete" and items:
        items[n % len(items)].delete()
    elif op == "group":
        Group(label=f"g{n % 3}")
    elif op == "raw":  # a bulk-style write behind Pony's back, reported as bulk operations do
        table = db.provider.quote_name(Item._table_)
        db.execute(f"UPDATE {table} SET qty = qty + 1 WHERE qty < {n % 10}")
        pk.transactions.record_writes(db, Item, None)
    elif op == "bulk_delete":
        Item.select(lambda i: i.qty == n % 10).delete(bulk=True)


OPS = st.sampled_from(["create", "create", "update", "delete", "group", "raw", "bulk_delete"])


class CacheMachine(RuleBasedStateMachine):
    """Reads through the cache must always equal the uncached query."""

    db: Database
    Group: Any
    Item: Any
    remote: Any = None  # a second process doing the writes (RedisCache variant)

    def __init__(self) -> None:
        super().__init__()
        self.queries = queries(self.Group, self.Item)

        @cached(depends_on=[self.Item, self.Group])
        def summary() -> list[Any]:
            with db_session:
                return sorted((i.name, i.qty) for i in self.Item.select())

        self.summary = summary
        item = self.Item

        @cached_query
        def at_least(qty: int, *, entities: bool = True) -> Any:
            if entities:
                return select(i for i in item if i.qty >= qty).order_by(item.id)
            return select((i.name, i.qty) for i in item if i.qty >= qty).order_by(1, 2)

        self.at_least = at_least

    @initialize()
    def clear(self) -> None:
        self.do_write("reset", 0, commit=True)

    def do_write(self, op: str, n: int, commit: bool) -> None:
        if self.remote is not None:
            self.remote(op, n, commit)
            return
        with db_session:
            if op == "reset":
                self.Item.select().delete(bulk=True)
                self.Group.select().delete(bulk=True)
            else:
                write(self.Group, self.Item, self.db, op, n)
            if not commit:
                flush()
                rollback()

    @rule(i=st.integers(0, 5))
    def cached_read(self, i: int) -> None:
        with db_session:
            got = plain(cached_select(self.queries[i]()))
        with db_session:
            expected = plain(list(self.queries[i]()))
        assert got == expected

    @rule(qty=st.integers(0, 10), entities=st.booleans())
    def cached_query_read(self, qty: int, entities: bool) -> None:
        with db_session:
            got = plain(self.at_least(qty, entities=entities))
        with db_session:
            expected = plain(self.at_least.uncached(qty, entities=entities))
        assert got == expected

    @rule()
    def cached_function(self) -> None:
        with db_session:
            expected = sorted([i.name, i.qty] for i in self.Item.select())
        assert self.summary() == expected

    @rule(op=OPS, n=st.integers(0, 50))
    def write_commit(self, op: str, n: int) -> None:
        self.do_write(op, n, commit=True)

    @rule(op=OPS, n=st.integers(0, 50))
    def write_rollback(self, op: str, n: int) -> None:
        self.do_write(op, n, commit=False)

    @rule(op=OPS, n=st.integers(0, 50), i=st.integers(0, 5))
    def read_own_write(self, op: str, n: int, i: int) -> None:
        if self.remote is not None:
            return
        with db_session:
            write(self.Group, self.Item, self.db, op, n)
            got = plain(cached_select(self.queries[i]()))
            expected = plain(list(self.queries[i]()))
            assert got == expected
            assert plain(self.at_least(n % 10)) == plain(self.at_least.uncached(n % 10))
            rollback()


def run_machine(db: Database, remote: Any = None) -> None:
    group, item = declare(db)
    db.generate_mapping(create_tables=True)
    machine = type(
        "Machine", (CacheMachine,), {"db": db, "Group": group, "Item": item, "remote": staticmethod(remote)}
    )
    run_state_machine_as_test(
        machine, settings=settings(max_examples=12, stateful_step_count=25, deadline=None)
    )


def test_memory_cache_matches_uncached(db: Database) -> None:
    """With a MemoryCache, every cached read equals the uncached query, whatever writes came before."""
    pk.attach(db, cache=MemoryCache(ttl=None))
    run_machine(db)


WORKER = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{src!r}, {tests!r}]
    from pony.orm import Database, db_session, flush, rollback
    import ponykit as pk
    from ponykit.query.backends import RedisCache
    from test_query_cache_stateful import declare, write
    db = Database()
    pk.bind_url(db, {url!r})
    pk.attach(db, cache=RedisCache({redis!r}, prefix={prefix!r}))
    Group, Item = declare(db, {version!r})
    db.generate_mapping(create_tables=True)  # before the reader's: a version 2 worker adds its column
    print("ready", flush=True)
    for line in sys.stdin:
        op, n, commit = line.split()
        with db_session:
            if op == "reset":
                Item.select().delete(bulk=True)
                Group.select().delete(bulk=True)
            else:
                write(Group, Item, db, op, int(n))
            if commit != "1":
                flush()
                rollback()
        print("done", flush=True)
    """
)


def other_client_options(backend: Any, tmp_path: Any) -> tuple[str, str]:
    """Two URLs of the same database that differ only in client details, as a web process's and a
    worker's do: ``application_name`` (PostgreSQL), ``connect_timeout`` (MariaDB; PyMySQL's ``conv``
    dict differs between processes anyway), the path through a symlink (SQLite)."""
    url = backend.url
    if backend.name == "postgres":
        return url + "&application_name=web", url + "&application_name=worker"
    if backend.name == "mysql":
        return url + "?connect_timeout=7", url + "?connect_timeout=9"
    link = tmp_path / "link"
    link.symlink_to(tmp_path, target_is_directory=True)
    return url, url.replace(str(tmp_path), str(link))


@pytest.mark.parametrize("worker_version", [1, 2])
def test_redis_cache_shared_by_two_processes_matches_uncached(
    make_db: Any, backend: Any, redis_url: str, unique_prefix: str, tmp_path: Any, worker_version: int
) -> None:
    """With a RedisCache shared with a second process that writes, cached reads equal uncached ones: on
    every backend, with URLs that differ in client options, and with the worker one mapping version
    ahead (it shares invalidations with the reader, never entries)."""
    reader_url, worker_url = other_client_options(backend, tmp_path)
    db = Database()
    pk.bind_url(db, reader_url)
    pk.attach(db, cache=RedisCache(redis_url, prefix=unique_prefix))
    group, item = declare(db)
    here = os.path.dirname(__file__)
    source = WORKER.format(
        src=os.path.join(here, "..", "src"),
        tests=here,
        url=worker_url,
        redis=redis_url,
        prefix=unique_prefix,
        version=worker_version,
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", source], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        db.generate_mapping(create_tables=False)

        def remote(op: str, n: int, commit: bool) -> None:
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.write(f"{op} {n} {int(commit)}\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "done"

        machine = type(
            "Machine",
            (CacheMachine,),
            {"db": db, "Group": group, "Item": item, "remote": staticmethod(remote)},
        )
        run_state_machine_as_test(
            machine, settings=settings(max_examples=5, stateful_step_count=25, deadline=None)
        )
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)
        db.disconnect()
