"""Cross-session caching: ``cached_select(query)`` and ``@cached(depends_on=[...])``.

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
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import orjson
from pony.orm import TransactionError, db_session

from .. import _pony
from .._kit import Kit, get_kit
from ..errors import ConfigurationError
from . import _generations
from ._generations import db_state, must_bypass, register_backend
from .backends import MISSING, CacheBackend

__all__ = ["CacheInfo", "cached", "cached_select"]

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
        raise TypeError(
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


def _plan(kit: Any, q: _pony.QuerySQL) -> _Plan:
    state = db_state(kit)
    entity_names, gen_names = state.query_deps(q.sql)
    key = ("q", state.entry_namespace, q.sql, _args_key(q.arguments), q.limit, q.offset)
    return _Plan(_pony.query_database(q.query), kit, q, entity_names, gen_names, key)


def _serve(
    backend: CacheBackend, plan: _Plan, ttl: float | None, uncached: Callable[[], list[Any]]
) -> list[Any]:
    """The results of ``plan`` from ``backend``, or from the database (stored for later) on a miss.

    ``uncached`` runs the query through plain Pony: for queries Pony never reuses, inside a session that
    must read its own writes, and while the backend is unreachable. Outside a db_session, value results
    are served too (they outlive any session): a hit touches no database and a miss opens a session.
    """
    db, q = plan.db, plan.q
    in_session = _pony.in_db_session()
    if in_session:
        if not q.cacheable or must_bypass(db, plan.entity_names):
            return uncached()
    elif q.entity is not None or q.tuple_entities:
        raise TransactionError(
            f"cached reads of entities need a db_session, as the entities belong to one: {q.sql!r}"
        )
    elif not q.cacheable:
        return _in_new_session(uncached)
    gens = backend.generations(plan.gen_names)
    if gens is None:
        return uncached() if in_session else _in_new_session(uncached)
    key = (*plan.key, gens)
    payload = backend.get(key)  # the hit path, before building anything a miss needs
    if payload is MISSING:
        return _fill(db, backend, q, key, ttl, in_session)
    return _from_payload(q, payload)


def _fill(
    db: Any, backend: CacheBackend, q: _pony.QuerySQL, key: Any, ttl: float | None, in_session: bool
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

    payload, _hit = backend.get_or_compute(key, compute, ttl)
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
    """Counters of one ``@cached`` function in this process."""

    hits: int
    misses: int
    bypassed: int


def _arg_default(value: Any) -> Any:
    if _pony.is_entity_instance(value):
        return [type(value).__name__, _pony.raw_primary_key(value)]
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, tuple):
        return list(value)
    return str(value) if type(value).__name__ == "Decimal" else _reject(value)


def _reject(value: Any) -> Any:
    raise TypeError(
        f"@cached cannot build a key from an argument of type {type(value).__name__}: pass plain "
        "arguments (str, int, float, bool, None, dates, UUID, Decimal, entities, lists/dicts of those) "
        "or give @cached(key=lambda *args, **kwargs: ...) a function returning such a key"
    )


_KEY_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS


class _Cached:
    """The state behind one ``@cached`` function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        depends_on: Sequence[Any],
        ttl: float | None,
        key: Callable[..., Any] | None,
        cache: CacheBackend | None,
    ) -> None:
        self.fn = fn
        self.depends_on = tuple(depends_on)
        self.ttl = ttl
        self.key = key
        self.explicit_cache = cache
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self.hits = self.misses = self.bypassed = 0
        self._resolved: tuple[CacheBackend, tuple[str, ...], tuple[tuple[Any, tuple[str, ...]], ...]] | None
        self._resolved = None
        self._lock = threading.Lock()

    def resolve(self) -> tuple[CacheBackend, tuple[str, ...], tuple[tuple[Any, tuple[str, ...]], ...]]:
        resolved = self._resolved
        if resolved is not None:
            return resolved
        with self._lock:
            by_db: dict[Any, list[str]] = {}
            for entity in self.depends_on:
                by_db.setdefault(_pony.database_of(entity), []).append(entity.__name__)
            backend = self.explicit_cache
            if backend is None:
                if not by_db:
                    raise ConfigurationError(
                        f"@cached function {self.name} has no depends_on entities and no cache=: give "
                        "it cache=MemoryCache(...) or the entities whose writes must invalidate it"
                    )
                backend = _backend_of(next(iter(by_db)), f"@cached function {self.name}")
            gen_names: list[str] = []
            per_db = []
            for db, names in by_db.items():
                register_backend(db, backend)
                gens = db_state(get_kit(db)).gen_names(sorted(names))
                gen_names.extend(gens)
                per_db.append((db, tuple(names)))
            gen_names.append("fn/" + self.name)  # bumped by cache_clear()
            resolved = (backend, tuple(gen_names), tuple(per_db))
            self._resolved = resolved
            return resolved

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        backend, gen_names, per_db = self._resolved or self.resolve()
        if _pony.in_db_session():
            for db, names in per_db:
                if must_bypass(db, names):
                    self.bypassed += 1
                    return self.fn(*args, **kwargs)
        gens = backend.generations(gen_names)
        if gens is None:
            self.bypassed += 1
            return self.fn(*args, **kwargs)
        if self.key is not None:
            arg_key: Any = self.key(*args, **kwargs)
        elif kwargs:
            arg_key = orjson.dumps((args, kwargs), default=_arg_default, option=_KEY_OPTS)
        elif args:
            arg_key = orjson.dumps(args, default=_arg_default, option=_KEY_OPTS)
        else:
            arg_key = b""
        computed = []

        def compute() -> tuple[Any, bool]:
            result = self.fn(*args, **kwargs)
            try:
                data = orjson.dumps(result)
            except TypeError as exc:
                raise TypeError(
                    f"@cached function {self.name} returned {type(result).__name__} data orjson cannot "
                    f"serialize ({exc}); cached functions must return plain data (dicts, lists, str, "
                    "numbers, bool, None, datetimes, UUIDs): convert entities with to_dict() first"
                ) from exc
            computed.append(data)
            may_store = not any(_pony.snapshot_may_predate(db) for db, _ in per_db)
            return data, may_store

        data, hit = backend.get_or_compute(("f", self.name, arg_key, gens), compute, self.ttl)
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        # Hits and misses alike return what orjson.loads gives, so a caller never sees a difference.
        return orjson.loads(data)

    def info(self) -> CacheInfo:
        return CacheInfo(self.hits, self.misses, self.bypassed)

    def clear(self) -> None:
        backend, _gen_names, _per_db = self._resolved or self.resolve()
        backend.bump(["fn/" + self.name])
        self.hits = self.misses = self.bypassed = 0


def cached(
    *,
    depends_on: Sequence[Any],
    ttl: float | None = None,
    key: Callable[..., Any] | None = None,
    cache: CacheBackend | None = None,
) -> Callable[[F], F]:
    """Cache a service function that returns plain data, invalidated when ``depends_on`` entities change.

    ::

        @cached(depends_on=[Order, Customer], ttl=60)
        def revenue_by_customer(year: int) -> dict[str, float]: ...

    The result is stored per argument values (``key=`` replaces that with your own function of the
    arguments), serialized with orjson, and served until a transaction writing one of ``depends_on``
    commits, or ``ttl`` seconds pass. Hits and misses both return the JSON-decoded data (a datetime
    comes back as its ISO string, a tuple as a list). ``cache=`` picks a backend; the default is the
    cache attached to the entities' Database. Inside a db_session that has written one of
    ``depends_on``, the function runs uncached. The wrapper has ``cache_info()`` and ``cache_clear()``.
    """
    for entity in depends_on:
        if not _pony.is_entity_class(entity):
            raise TypeError(
                f"@cached(depends_on=...) takes entity classes, got {entity!r} ({type(entity).__name__})"
            )
    if cache is not None and not isinstance(cache, CacheBackend):
        raise TypeError(f"@cached(cache=...) takes a cache backend (MemoryCache, RedisCache), got {cache!r}")
    if key is not None and not callable(key):
        raise TypeError(f"@cached(key=...) takes a function of the arguments, got {key!r}")

    def decorate(fn: F) -> F:
        state = _Cached(fn, depends_on, ttl, key, cache)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return state(*args, **kwargs)

        wrapper.cache_info = state.info  # type: ignore[attr-defined]
        wrapper.cache_clear = state.clear  # type: ignore[attr-defined]
        wrapper.__ponykit_cached__ = state  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def install(kit: Kit) -> None:
    """Give ``kit.db`` the cache bookkeeping ``cached_select``/``@cached`` rely on (one of attach()'s
    installers, and the last: it may ask the server for the cache namespace, which needs the options of
    this ``attach()`` call and the transaction hooks in place)."""
    _generations.install(kit)
