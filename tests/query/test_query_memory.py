"""Repeated pagination stays bounded: Pony's query caches do not grow per call, and nothing leaks.

Pony keeps one translator per query shape and one SQL text per shape and LIMIT/OFFSET in per-Database
dicts that are never emptied. paginate_keyset and paginate must add entries per query shape only,
never per cursor or page, and must not keep objects of finished sessions alive.
"""

from __future__ import annotations

import gc
import os
from collections import Counter
from typing import Any

from pony.orm import Database, Optional, Required, db_session, desc, select

import ponykit as pk
from ponykit import _pony
from ponykit.query import paginate, paginate_keyset

SECRET = os.urandom(32)
ROWS = 60


def make_item(db: Database) -> Any:
    """Item(a, b, name) with NULLs and ties in the nullable sort column ``a``, and ROWS rows."""

    class Item(db.Entity):
        a = Optional(int)
        b = Required(int)
        name = Optional(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(ROWS):
            Item(a=None if i % 7 == 0 else i % 5, b=i % 11, name=f"n{i}")
    return Item


def queries(item: Any) -> list[Any]:
    """The query shapes the walks use: plain and filtered, ascending, descending and mixed."""
    limit = 3  # an external variable: a parameter whose value Pony binds per query
    return [
        select(i for i in item).order_by(item.a),
        select(i for i in item).order_by(desc(item.a), item.b),
        select(i for i in item if i.b >= limit).order_by(item.b, desc(item.a)),
    ]


def walk(item: Any, per_page: int) -> int:
    """Every keyset page forwards then backwards, and every offset page, for each query shape."""
    calls = 0
    with db_session:
        for make in range(len(queries(item))):
            page = paginate_keyset(queries(item)[make], per_page, secret=SECRET)
            calls += 1
            while page.has_next:
                page = paginate_keyset(queries(item)[make], per_page, after=page.next_cursor, secret=SECRET)
                calls += 1
            while page.has_prev:
                page = paginate_keyset(queries(item)[make], per_page, before=page.prev_cursor, secret=SECRET)
                calls += 1
            pages = -(-ROWS // per_page)
            for number in range(1, pages + 2):
                for count in ("exact", "none", 10):
                    paginate(queries(item)[make], number, per_page, count=count)
                    calls += 1
    return calls


def live_objects() -> Counter[str]:
    """How many objects of Pony's, ponykit's and the plain container types are alive.

    The drivers' own bookkeeping (sqlite3 keeps weak references to old cursors and prunes them every
    so many cursors) is left out: it is bounded by the driver, not by the code under test.
    """
    gc.collect()
    kept = (dict, list, tuple)
    return Counter(
        type(o).__qualname__
        for o in gc.get_objects()
        if type(o) in kept or _package_of(type(o)) in ("pony", "ponykit") or _is_entity(o)
    )


def _package_of(cls: type) -> str:
    # Some libraries' classes hold a descriptor, not a str, in __module__ (seen with the web test tools).
    module = cls.__dict__.get("__module__", getattr(cls, "__module__", ""))
    return module.split(".")[0] if isinstance(module, str) else ""


def _is_entity(obj: Any) -> bool:
    return _pony.is_entity_instance(obj)


def test_repeated_pagination_does_not_grow_pony_caches_or_leak(db: Database) -> None:
    """Hundreds of distinct cursors and pages after a warm-up add nothing to Pony's caches or the heap."""
    item = make_item(db)
    # Warm-up with pages of one row: every row is a cursor once, so every query shape, direction and
    # pattern of NULLs in a cursor (each one its own SQL) is met before counting.
    walk(item, 1)
    caches = _pony.query_cache_sizes(db)
    sizes = (4, 3, 5, 7, 2, 9)
    calls = sum(walk(item, per_page) for per_page in sizes)
    assert calls > 600
    # Pony's translators are per query shape: no entry for new cursors, pages or page sizes.
    # Nor SQL texts: ponykit's prepared statements keep pages out of Pony's never-emptied dict,
    # so only the COUNT queries of the warm-up (one per shape and cap) are there.
    assert _pony.query_cache_sizes(db) == caches
    # The same walks again (every statement now prepared): nothing is kept per call. The census runs once
    # before counting: its isinstance() checks resolve the lazy proxies of a library imported by an earlier
    # test of the session (Celery's), which build their objects on first touch.
    live_objects()
    before = live_objects()
    calls = sum(walk(item, per_page) for per_page in sizes)
    after = live_objects()
    grown = {name: after[name] - before[name] for name in after if after[name] > before[name]}
    assert after[item.__qualname__] == 0, "objects of finished sessions are still referenced"
    assert sum(grown.values()) < 20, f"{calls} calls left {grown}"


def test_a_stream_of_page_numbers_keeps_the_memo_bounded(db: Database) -> None:
    """Asking for thousands of distinct page numbers keeps ponykit's statement memo bounded."""
    item = make_item(db)
    with db_session:
        for number in range(1, 1500):
            assert paginate(select(i for i in item).order_by(item.b), number, 1, count="none").items == (
                [] if number > ROWS else paginate(select(i for i in item).order_by(item.b), number, 1).items
            )
    memo = _pony.per_database_cache(db, "offset_pages", dict)
    assert 0 < len(memo) <= 1024
    assert _pony.query_cache_sizes(db)[1] < 20
