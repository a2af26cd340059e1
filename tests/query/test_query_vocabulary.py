"""One API vocabulary in ponykit.query: cache_clear()/cache_info() alike on @cached and @cached_query,
Page and CursorPage built alike, one per_page check, and prefetch's query_or_objects."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
from pony.orm import Database, Required, Set, db_session, select

import ponykit as pk
from ponykit.errors import InvalidPage
from ponykit.query import (
    CacheInfo,
    CursorPage,
    Page,
    cached,
    cached_query,
    paginate,
    paginate_keyset,
    prefetch,
)
from ponykit.query.backends import MemoryCache, RedisCache

SECRET = b"0123456789abcdef0123456789abcdef"


class Library:
    """Authors and books, attached with ``cache``, counting SELECTs."""

    def __init__(self, db: Database, cache: Any) -> None:
        class Writer(db.Entity):
            name = Required(str)
            works = Set("Work")

        class Work(db.Entity):
            title = Required(str)
            year = Required(int)
            writer = Required(Writer)

        self.db, self.Writer, self.Work = db, Writer, Work
        self.kit = pk.attach(db, cache=cache)
        db.generate_mapping(create_tables=True)
        self.selects = 0
        self.kit.add_execute_listener(self._count)
        with db_session:
            ann = Writer(name="ann")
            for i in range(12):
                Work(title=f"w{i:02d}", year=2000 + i, writer=ann)

    def _count(self, db: Any, sql: str, arguments: Any, seconds: float, error: Any) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            self.selects += 1


# ---------------------------------------------------------------------------------------------------------
# cache_clear() and cache_info()


def _check_clear_invalidates_results(lib: Library) -> None:
    built: list[int] = []
    work = lib.Work

    @cached_query
    def titles(year: int) -> Any:
        built.append(year)
        return select(w.title for w in work if w.year >= year).order_by(1)

    assert titles(2010) == ["w10", "w11"]
    assert titles(2010) == ["w10", "w11"]
    info = titles.cache_info()  # type: ignore[attr-defined]
    assert isinstance(info, CacheInfo)
    assert info == CacheInfo(hits=1, misses=1, bypassed=0)
    selects = lib.selects
    titles.cache_clear()  # type: ignore[attr-defined]
    assert titles.cache_info() == (0, 0, 0)  # type: ignore[attr-defined]
    assert titles(2010) == ["w10", "w11"]
    assert lib.selects == selects + 1  # the result was invalidated: the query ran again
    assert built == [2010, 2010]  # and the statement was forgotten: built again
    assert titles.cache_info() == (0, 1, 0)  # type: ignore[attr-defined]
    assert titles(2010) == ["w10", "w11"]  # cached again after the clear
    assert lib.selects == selects + 1
    assert titles.cache_info() == (1, 1, 0)  # type: ignore[attr-defined]


def test_cached_query_cache_clear_invalidates_its_results(db: Database) -> None:
    """cache_clear() on a @cached_query function drops its cached results, as on @cached."""
    _check_clear_invalidates_results(Library(db, MemoryCache(maxsize=100, ttl=None)))


@pytest.mark.backends("sqlite")
def test_cached_query_cache_clear_reaches_redis(db: Database, redis_url: str, unique_prefix: str) -> None:
    """On Redis the clear is a generation bump: it reaches every process sharing the prefix."""
    lib = Library(db, RedisCache(redis_url, prefix=unique_prefix))
    _check_clear_invalidates_results(lib)
    work = lib.Work

    @cached_query
    def count_from(year: int) -> Any:
        return select(w for w in work if w.year >= year).order_by(work.id)

    with db_session:
        assert len(count_from(2005)) == 7
    # Another process: its own backend object and its own statements, the same Redis and prefix.
    lib.kit.cache = RedisCache(redis_url, prefix=unique_prefix)
    count_from.__ponykit_cached_query__.plans.clear()  # type: ignore[attr-defined]
    selects = lib.selects
    with db_session:
        assert len(count_from(2005)) == 7
    assert lib.selects == selects  # served from the entry the first "process" stored
    count_from.cache_clear()  # type: ignore[attr-defined]
    with db_session:
        assert len(count_from(2005)) == 7
    assert lib.selects == selects + 1


def test_cached_query_clear_keeps_other_functions_and_cached_select(db: Database) -> None:
    """Clearing one function leaves other functions' entries (even of the same SQL) and cached_select's."""
    lib = Library(db, MemoryCache(maxsize=100, ttl=None))
    work = lib.Work

    @cached_query
    def first(year: int) -> Any:
        return select(w.title for w in work if w.year >= year).order_by(1)

    @cached_query
    def second(year: int) -> Any:
        return select(w.title for w in work if w.year >= year).order_by(1)

    assert first(2011) == second(2011) == ["w11"]
    assert pk.cached_select(select(w.title for w in work if w.year >= 2011).order_by(1)) == ["w11"]
    selects = lib.selects
    first.cache_clear()  # type: ignore[attr-defined]
    assert second(2011) == ["w11"]
    assert pk.cached_select(select(w.title for w in work if w.year >= 2011).order_by(1)) == ["w11"]
    assert lib.selects == selects
    assert first(2011) == ["w11"]
    assert lib.selects == selects + 1


def test_cached_query_counts_bypassed_calls(db: Database) -> None:
    """A call inside a session that wrote a dependency runs uncached and is counted as bypassed."""
    lib = Library(db, MemoryCache(maxsize=100, ttl=None))
    work, writer = lib.Work, lib.Writer

    @cached_query
    def count_works() -> Any:
        return select(w.id for w in work)

    with db_session:
        assert len(count_works()) == 12
        work(title="new", year=1990, writer=writer.get(name="ann"))
        assert len(count_works()) == 13
    assert count_works.cache_info() == CacheInfo(0, 1, 1)  # type: ignore[attr-defined]


def test_cached_query_clear_before_any_call_is_harmless(db: Database) -> None:
    """A function never called has nothing cached: cache_clear() simply resets its counters."""

    @cached_query(ttl=5)
    def nothing() -> Any:
        raise AssertionError("not called")

    nothing.cache_clear()  # type: ignore[attr-defined]
    assert nothing.cache_info() == (0, 0, 0)  # type: ignore[attr-defined]


def test_both_decorators_return_the_same_kind_of_function(db: Database) -> None:
    """@cached and @cached_query functions keep the wrapped function's name and docstring and have the
    same cache_info()/cache_clear() (bound methods of their state)."""
    lib = Library(db, MemoryCache(maxsize=100, ttl=None))
    work = lib.Work

    @cached(depends_on=[work])
    def plain_titles() -> list[str]:
        """Plain titles."""
        with db_session:
            return sorted(select(w.title for w in work))

    @cached_query
    def query_titles() -> Any:
        """Query titles."""
        return select(w.title for w in work)

    for fn, marker in ((plain_titles, "__ponykit_cached__"), (query_titles, "__ponykit_cached_query__")):
        state = getattr(fn, marker)
        assert fn.__doc__ in ("Plain titles.", "Query titles.")
        assert fn.__wrapped__.__name__ == fn.__name__  # type: ignore[attr-defined]
        assert fn.cache_info.__func__ is type(state).info  # type: ignore[attr-defined]
        assert fn.cache_info() == CacheInfo(0, 0, 0)  # type: ignore[attr-defined]
        assert inspect.signature(fn.cache_clear).parameters == {}  # type: ignore[attr-defined]
    assert query_titles.uncached.__self__ is query_titles.__ponykit_cached_query__  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------------------
# Page and CursorPage


def test_page_and_cursor_page_are_built_alike(db: Database) -> None:
    """Both are frozen slotted dataclasses and sequences of their items, with equal field names in common."""
    lib = Library(db, None)
    work = lib.Work
    with db_session:
        page = paginate(select(w for w in work), page=1, per_page=5)
        keyset = paginate_keyset(select(w for w in work).order_by(work.year), per_page=5, secret=SECRET)
        empty = paginate(select(w for w in work), page=9, per_page=5)
        for p in (page, keyset):
            assert dataclasses.is_dataclass(p)
            assert not hasattr(p, "__dict__")  # slotted
            with pytest.raises(dataclasses.FrozenInstanceError):
                p.per_page = 6  # type: ignore[misc]
            assert len(p) == 5
            assert list(p) == p.items
            assert p[0] is p.items[0] and p[-1] is p.items[-1] and p[1:3] == p.items[1:3]
            assert bool(p)
            assert {"items", "per_page", "has_next", "has_prev"} <= {f.name for f in dataclasses.fields(p)}
        assert not empty and len(empty) == 0 and list(empty) == []
        assert [w.title for w in keyset] == ["w00", "w01", "w02", "w03", "w04"]
        assert keyset.next_cursor is not None and keyset.prev_cursor is None
        again = paginate_keyset(select(w for w in work).order_by(work.year), per_page=5, secret=SECRET)
        assert again == keyset  # equal fields; the cursors are not compared
        assert repr(keyset) == "<CursorPage of 5 items has_prev=False has_next=True per_page=5>"
    assert isinstance(page, Page) and isinstance(keyset, CursorPage)


@pytest.mark.parametrize("bad", [0, -1, 1001, True, 2.0, "10", None])
def test_per_page_is_checked_once_for_both(db: Database, bad: Any) -> None:
    """paginate and paginate_keyset refuse a bad per_page with the same message, before any SQL."""
    lib = Library(db, None)
    messages = []
    selects = lib.selects
    with db_session:
        for run in (
            lambda: paginate(select(w for w in lib.Work), per_page=bad),
            lambda: paginate_keyset(select(w for w in lib.Work), per_page=bad, secret=SECRET),
        ):
            with pytest.raises(InvalidPage) as caught:
                run()
            messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith("per_page must be an integer between 1 and 1000, got ")
    assert lib.selects == selects


# ---------------------------------------------------------------------------------------------------------
# query_or_objects


def test_prefetch_takes_query_or_objects(db: Database) -> None:
    """prefetch's first parameter has the vocabulary's name and takes a query or objects by keyword."""
    lib = Library(db, None)
    assert next(iter(inspect.signature(prefetch).parameters)) == "query_or_objects"
    with db_session:
        works = prefetch(query_or_objects=select(w for w in lib.Work).order_by(lib.Work.id))
        assert [w.title for w in works][:2] == ["w00", "w01"]
        again = prefetch(list(works), "writer")
        assert again == works
