"""Cross-session caching: ``cached_select(query)`` (and the machinery ``@cached`` and ``cached_query`` share).

Pony caches query results only inside one ``db_session``. These two keep results across sessions,
threads and (with :class:`~ponykit.query.backends.RedisCache`) processes, and stay correct:

* every entry is keyed by the generations of the entities it depends on, read *before* the query ran;
  a generation moves on only after a transaction that wrote the entity has committed (rollbacks change
  nothing), so nothing computed before a commit is served after it;
* inside a ``db_session`` that has written a dependent entity and not committed yet, the cache is
  bypassed: the session reads its own writes;
* concurrent misses of one key run the query once (per process; across processes on Redis);
* results are stored as plain data (rows of primitive values), never as entity objects; entities come
  back as ordinary objects of the current ``db_session``, rebuilt without SQL.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from pony.orm import TransactionError, db_session

from .. import _pony
from .._kit import Kit, get_kit
from ..errors import ConfigurationError, OptionError
from ..security.rls import settings_key
from . import _generations
from ._generations import db_state, must_bypass
from .backends import MISSING, CacheBackend

__all__ = ["CacheInfo", "CallCounts", "cached_function", "cached_select", "function_generation"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_MUTABLE = (list, dict, set, bytearray)


def _kit_backend(db: Any, what: str) -> tuple[Any, CacheBackend]:
    kit = get_kit(db)
    backend = kit.cache
    if backend is None:
        raise ConfigurationError(
            f"{what} needs a cache backend on {db!r}: attach it with "
            "ponykit.attach(db, cache=ponykit.query.MemoryCache()) (or RedisCache(url))"
        )
    return kit, backend


def _backend_of(db: Any, what: str) -> CacheBackend:
    return _kit_backend(db, what)[1]


def _args_key(arguments: Any) -> Any:
    if type(arguments) is dict:
        return tuple(sorted(arguments.items()))
    if arguments is None:
        return ()
    return tuple(arguments)


# ---------------------------------------------------------------------------------------------------------
# cached_select


def cached_select(query: Any, *, ttl: float | None = None) -> list[Any]:
    """Run a Pony query through the Database's cache and return its results as a list.

    ``query`` is a query object (``select(...)``, ``Entity.select(...)``, with ``order_by``, ``filter``
    ...) or a not-yet-fetched slice of one (``query.limit(n, offset=m)``, ``query.page(p, n)``). Later
    identical queries (same SQL, same arguments) in any session are served from the cache until a
    transaction writing one of the entities the SQL reads commits, or ``ttl`` seconds pass (default:
    the backend's). Entity results come back as entities of the current ``db_session``, built without
    SQL; other selects (tuples, scalars, aggregates) as values.

    Needs ``attach(db, cache=...)``, and for entity results an open ``db_session`` (value results can
    be read outside one: a hit touches no database, a miss opens a session). Queries Pony itself
    never reuses (``for_update()``, ``random()``, ``prefetch()``) run uncached, as do all queries in a
    session that has written one of the entities they read.
    """
    source = _pony.query_source(query)
    if source is None:
        raise OptionError(
            "cached_select() takes a Pony query: select(...), Entity.select(...), query.limit(n) or "
            f"query.page(p, n) (not an already fetched result or a list); got {type(query).__name__}"
        )
    pony_query, limit, offset = source
    db = _pony.query_database(pony_query)
    kit, backend = _kit_backend(db, "cached_select()")
    plan = _plan(kit, _pony.query_sql(pony_query, limit, offset))
    return _serve(backend, plan, ttl, lambda: _pony.fetch(pony_query, limit, offset))


class _Plan(NamedTuple):
    """Everything about one query statement that does not change between calls."""

    db: Any
    kit: Any
    q: _pony.QuerySQL
    entity_names: tuple[str, ...]  # the entities its SQL reads
    gen_names: tuple[str, ...]  # their generation counters
    key: tuple[Any, ...]  # the cache key, short of the generations


def _plan(kit: Any, q: _pony.QuerySQL, function: str | None = None) -> _Plan:
    """The plan of one statement; with ``function`` (a ``@cached_query`` function's name) its entries are
    that function's own, keyed by its generation too, so that its ``cache_clear()`` reaches them."""
    state = db_state(kit)
    entity_names, gen_names = state.query_deps(q.sql)
    key: tuple[Any, ...] = ("q", state.entry_namespace, q.sql, _args_key(q.arguments), q.limit, q.offset)
    if function is not None:
        key += (function,)
        gen_names += (function_generation(function),)
    return _Plan(_pony.query_database(q.query), kit, q, entity_names, gen_names, key)


def function_generation(name: str) -> str:
    """The generation counter a cached function's ``cache_clear()`` bumps (``name``: module.qualname)."""
    return "fn/" + name


def _serve(
    backend: CacheBackend,
    plan: _Plan,
    ttl: float | None,
    uncached: Callable[[], list[Any]],
    counts: CallCounts | None = None,
) -> list[Any]:
    """The results of ``plan`` from ``backend``, or from the database (stored for later) on a miss.

    ``uncached`` runs the query through plain Pony: for queries Pony never reuses, inside a session that
    must read its own writes, and while the backend is unreachable. Outside a db_session, value results
    are served too (they outlive any session): a hit touches no database and a miss opens a session.
    ``counts``, when given, counts the hit, miss or bypass.
    """
    db, q = plan.db, plan.q
    in_session = _pony.in_db_session()
    if in_session:
        if not q.cacheable or must_bypass(db, plan.entity_names):
            if counts is not None:
                counts.bypassed += 1
            return uncached()
    elif q.entity is not None or q.tuple_entities:
        raise TransactionError(
            f"cached reads of entities need a db_session, as the entities belong to one: {q.sql!r}"
        )
    elif not q.cacheable:
        if counts is not None:
            counts.bypassed += 1
        return _in_new_session(uncached)
    gens = backend.generations(plan.gen_names)
    if gens is None:
        if counts is not None:
            counts.bypassed += 1
        return uncached() if in_session else _in_new_session(uncached)
    key = (*plan.key, gens)
    if plan.kit.before_statement is not None:  # row-level security on: the rows depend on the settings
        key += settings_key()
    payload = backend.get(key)  # the hit path, before building anything a miss needs
    if payload is MISSING:
        return _fill(db, backend, q, key, ttl, in_session, counts)
    if counts is not None:
        counts.hits += 1
    return _from_payload(q, payload)


def _fill(
    db: Any,
    backend: CacheBackend,
    q: _pony.QuerySQL,
    key: Any,
    ttl: float | None,
    in_session: bool,
    counts: CallCounts | None,
) -> list[Any]:
    computed: list[list[Any]] = []

    def compute() -> tuple[Any, bool]:
        if not in_session:
            return _in_new_session(compute_in_session)
        return compute_in_session()

    def compute_in_session() -> tuple[Any, bool]:
        may_store = not _pony.snapshot_may_predate(db)
        items = _pony.run_query_uncached(q)
        computed.append(items)
        return _to_payload(q, items), may_store

    payload, hit = backend.get_or_compute(key, compute, ttl)
    if counts is not None:
        if hit:
            counts.hits += 1  # a concurrent caller computed it
        else:
            counts.misses += 1
    if computed:
        return computed[0]
    return _from_payload(q, payload)


def _in_new_session(fn: Callable[[], T]) -> T:
    with db_session:
        return fn()


def _to_payload(q: _pony.QuerySQL, items: list[Any]) -> tuple[Any, ...]:
    if q.entity is not None:
        return ("e", _pony.entity_rows(q, items))
    if q.tuple_entities:
        positions = [i for i, _ in q.tuple_entities]
        rows = []
        for row in items:
            values = list(row)
            for i in positions:
                if values[i] is not None:
                    values[i] = _pony.raw_primary_key(values[i])
            rows.append(tuple(values))
        return ("t", tuple(rows), _needs_copy(rows))
    return ("s", tuple(items), _needs_copy(items))


def _needs_copy(values: Sequence[Any]) -> bool:
    for value in values:
        if isinstance(value, _MUTABLE):
            return True
        if isinstance(value, tuple) and _needs_copy(value):
            return True
    return False


def _from_payload(q: _pony.QuerySQL, payload: tuple[Any, ...]) -> list[Any]:
    kind = payload[0]
    if kind == "e":
        return _pony.rebuild_entities(q, payload[1])
    values = list(payload[1])
    if payload[2]:
        values = copy.deepcopy(values)  # callers may mutate what they get; the cached copy must not change
    if kind == "t":
        rows = []
        for row in values:
            row = list(row)
            for i, entity in q.tuple_entities:
                if row[i] is not None:
                    row[i] = _pony.entity_by_raw_pk(entity, tuple(row[i]))
            rows.append(tuple(row))
        for i, entity in q.tuple_entities:
            if _pony.has_subclasses(entity):
                _pony.load_seeds(entity, [row[i] for row in rows if row[i] is not None])
        return rows
    return values


# ---------------------------------------------------------------------------------------------------------
# @cached


class CacheInfo(NamedTuple):
    """Counters of one ``@cached`` or ``@cached_query`` function in this process, since it was defined or
    its ``cache_clear()`` last ran: calls served from the cache (``hits``), computed and offered to the
    cache (``misses``), and run uncached (``bypassed``: inside a session that wrote a dependency, for
    queries Pony never reuses, or while the backend is unreachable)."""

    hits: int
    misses: int
    bypassed: int


class CallCounts:
    """The counters behind ``cache_info()`` (plain ints: a lost increment between threads is harmless)."""

    def __init__(self) -> None:
        self.hits = self.misses = self.bypassed = 0

    def info(self) -> CacheInfo:
        """The counters as a :class:`CacheInfo`."""
        return CacheInfo(self.hits, self.misses, self.bypassed)

    def reset(self) -> None:
        """Start counting again (``cache_clear()``)."""
        self.hits = self.misses = self.bypassed = 0


def cached_function(fn: F, state: Any, marker: str, **extra: Any) -> F:
    """The function ``@cached`` and ``@cached_query`` return: ``fn``'s name and docstring, calls go to
    ``state``, with ``cache_info()`` and ``cache_clear()`` (``state.info``/``state.clear``), the
    ``extra`` attributes, and ``state`` itself under ``marker`` (for tests and introspection)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return state(*args, **kwargs)

    wrapper.cache_info = state.info  # type: ignore[attr-defined]
    wrapper.cache_clear = state.clear  # type: ignore[attr-defined]
    for name, value in extra.items():
        setattr(wrapper, name, value)
    setattr(wrapper, marker, state)
    return wrapper  # type: ignore[return-value]


def install(kit: Kit) -> None:
    """Give ``kit.db`` the cache bookkeeping ``cached_select``/``@cached`` rely on (one of attach()'s
    installers, and the last: it may ask the server for the cache namespace, which needs the options of
    this ``attach()`` call and the transaction hooks in place)."""
    _generations.install(kit)
