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
from ..errors import ConfigurationError, OptionError
from ..security.rls import current_rls_settings
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
        settings = current_rls_settings()
        if settings:
            key = (*key, tuple(sorted(settings.items())))
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


def _arg_default(value: Any) -> Any:
    if _pony.is_entity_instance(value):
        return [type(value).__name__, _pony.raw_primary_key(value)]
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, tuple):
        return list(value)
    return str(value) if type(value).__name__ == "Decimal" else _reject(value)


_KEY_HINT = (
    "pass plain arguments (str, int, float, bool, None, dates, UUID, Decimal, entities, lists/dicts of "
    "those) or give @cached(key=lambda *args, **kwargs: ...) a function returning such a key"
)


def _refusal(value: Any) -> OptionError:
    return OptionError(
        f"@cached cannot build a key from an argument of type {type(value).__name__}: {_KEY_HINT}"
    )


def _reject(value: Any) -> Any:
    raise _refusal(value)


_KEY_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _key_error(arguments: Any) -> OptionError:
    """The error for arguments orjson refused to key: _reject's, for the value it was raised on."""
    refused: list[Any] = []

    def default(value: Any) -> Any:
        try:
            return _arg_default(value)
        except OptionError:
            refused.append(value)
            raise

    try:
        orjson.dumps(arguments, default=default, option=_KEY_OPTS)
    except TypeError as exc:
        if not refused:  # not a type _arg_default refuses (an int beyond 64 bits ...): orjson's reason
            return OptionError(f"@cached cannot build a key from these arguments ({exc}); {_KEY_HINT}")
    return _refusal(refused[0] if refused else None)


class _Cached(CallCounts):
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
        super().__init__()
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
            gen_names.append(function_generation(self.name))  # bumped by cache_clear()
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
        elif kwargs or args:
            try:
                arg_key = orjson.dumps(
                    (args, kwargs) if kwargs else args, default=_arg_default, option=_KEY_OPTS
                )
            except TypeError:  # orjson drops the message of _reject's error: name the argument again
                raise _key_error((args, kwargs)) from None
        else:
            arg_key = b""
        computed = []

        def compute() -> tuple[Any, bool]:
            result = self.fn(*args, **kwargs)
            try:
                data = orjson.dumps(result)
            except TypeError as exc:
                raise OptionError(
                    f"@cached function {self.name} returned {type(result).__name__} data orjson cannot "
                    f"serialize ({exc}); cached functions must return plain data (dicts, lists, str, "
                    "numbers, bool, None, datetimes, UUIDs): convert entities with to_dict() first"
                ) from exc
            computed.append(data)
            may_store = not any(_pony.snapshot_may_predate(db) for db, _ in per_db)
            return data, may_store

        entry: tuple[Any, ...] = ("f", self.name, arg_key, gens)
        settings = current_rls_settings()
        if settings:  # the function's queries may run under row-level security: one entry per context
            entry += (tuple(sorted(settings.items())),)
        data, hit = backend.get_or_compute(entry, compute, self.ttl)
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        # Hits and misses alike return what orjson.loads gives, so a caller never sees a difference.
        return orjson.loads(data)

    def clear(self) -> None:
        """Invalidate this function's cached results (in every process sharing the backend)."""
        backend, _gen_names, _per_db = self._resolved or self.resolve()
        backend.bump([function_generation(self.name)])
        self.reset()


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
            raise OptionError(
                f"@cached(depends_on=...) takes entity classes, got {entity!r} ({type(entity).__name__}); "
                "name the entities the function reads: @cached(depends_on=(User, Order))"
            )
    if cache is not None and not isinstance(cache, CacheBackend):
        raise OptionError(
            "@cached(cache=...) takes a cache backend (MemoryCache, RedisCache), got "
            f"{type(cache).__name__}; leave it out to use the cache given to attach(db, cache=...)"
        )
    if key is not None and not callable(key):
        raise OptionError(
            f"@cached(key=...) takes a function of the arguments, got {type(key).__name__}; "
            "for example key=lambda user_id, **kw: user_id"
        )

    def decorate(fn: F) -> F:
        return cached_function(fn, _Cached(fn, depends_on, ttl, key, cache), "__ponykit_cached__")

    return decorate


def install(kit: Kit) -> None:
    """Give ``kit.db`` the cache bookkeeping ``cached_select``/``@cached`` rely on (one of attach()'s
    installers, and the last: it may ask the server for the cache namespace, which needs the options of
    this ``attach()`` call and the transaction hooks in place)."""
    _generations.install(kit)
