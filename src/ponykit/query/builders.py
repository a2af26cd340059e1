"""``@cached_query``: query builders whose statements are built once per distinct arguments.

``cached_select(query)`` takes a query the caller has already built, and Pony's query construction
(decompiling the generator, extracting its variables, looking up the translation: tens of
microseconds) happens on every call before the cache is even asked. A builder function decorated with
``@cached_query`` is called once per distinct arguments; later calls go straight to the remembered
statement and from there to the cache, served and invalidated exactly as ``cached_select`` does.
"""

from __future__ import annotations

import datetime as dt
import enum
import weakref
from collections.abc import Callable, Hashable
from decimal import Decimal
from typing import Any, TypeVar, overload
from uuid import UUID

from .. import _pony
from ..errors import ConfigurationError, OptionError
from .cache import (
    CallCounts,
    _backend_of,
    _kit_backend,
    _Plan,
    _plan,
    _serve,
    cached_function,
    function_generation,
)

__all__ = ["cached_query"]

F = TypeVar("F", bound=Callable[..., Any])

# Argument types a query builder may take: immutable, hashed by value, and kept apart by type in the key
# (1, 1.0 and True are equal dict keys but can make different SQL).
_PLAIN_ARGS: frozenset[type] = frozenset(
    {str, int, float, bool, type(None), bytes, Decimal, UUID, dt.date, dt.datetime, dt.time, dt.timedelta}
)


def _plain_arg(value: Any) -> bool:
    kind = type(value)
    if kind in _PLAIN_ARGS or isinstance(value, enum.Enum):
        return True
    if kind is tuple or kind is frozenset:
        return all(_plain_arg(item) for item in value)
    return False


class _CachedQuery(CallCounts):
    """The state behind one ``@cached_query`` function: its statements by argument values."""

    def __init__(self, fn: Callable[..., Any], ttl: float | None, maxsize: int) -> None:
        super().__init__()
        self.fn = fn
        self.ttl = ttl
        self.maxsize = maxsize
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        # (args, kwargs, the args' types) -> plan. A plain dict: reads and writes are atomic, and the rare
        # rebuild after clearing it costs one query construction.
        self.plans: dict[Hashable, _Plan] = {}
        # The Kits its statements were built on: cache_clear() invalidates in each one's backend.
        self.kits: weakref.WeakSet[Any] = weakref.WeakSet()

    def __call__(self, *args: Any, **kwargs: Any) -> list[Any]:
        if kwargs:
            key: Hashable = (args, tuple(sorted(kwargs.items())), tuple(map(type, args)))
        elif len(args) == 1:
            key = (args, type(args[0]))
        else:
            key = (args, tuple(map(type, args)))
        try:
            plan = self.plans.get(key)
        except TypeError:
            plan = None  # unhashable: _build says which argument
        if plan is None:
            plan = self._build(key, args, kwargs)
        backend = plan.kit.cache  # read per call: it may have been replaced since
        if backend is None:  # detached since: raise the error that says how to attach one
            backend = _backend_of(plan.db, f"@cached_query function {self.name}")
        return _serve(backend, plan, self.ttl, lambda: self.uncached(*args, **kwargs), self)

    def _query_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, int | None, int | None]:
        result = self.fn(*args, **kwargs)
        source = _pony.query_source(result)
        if source is None:
            raise OptionError(
                f"@cached_query function {self.name} must return a Pony query (select(...), "
                f"Entity.select(...), query.limit(n) or query.page(p, n)), not {type(result).__name__}"
            )
        return source

    def uncached(self, *args: Any, **kwargs: Any) -> list[Any]:
        """Build the query and run it through plain Pony."""
        return _pony.fetch(*self._query_of(args, kwargs))

    def _build(self, key: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan:
        for where, value in [*enumerate(args), *kwargs.items()]:
            if not _plain_arg(value):
                raise OptionError(
                    f"@cached_query function {self.name}: argument {where!r} is a {type(value).__name__}; "
                    "query builders take plain immutable values (str, int, float, bool, None, bytes, "
                    "Decimal, UUID, dates and times, enums, tuples of those), because the statement is "
                    "built once per distinct arguments. Pass an entity's primary key instead of the "
                    "entity, or use cached_select(query) for a query built from anything else."
                )
        query, limit, offset = self._query_of(args, kwargs)
        db = _pony.query_database(query)
        kit, _backend = _kit_backend(db, f"@cached_query function {self.name}")
        plan = _plan(kit, _pony.query_sql(query, limit, offset), self.name)
        self.kits.add(kit)
        if len(self.plans) >= self.maxsize:
            self.plans.clear()
        self.plans[key] = plan
        return plan

    def clear(self) -> None:
        """Invalidate this function's cached results (as ``@cached`` does: in every process sharing the
        backend of each Database it has queried here) and forget its statements."""
        self.plans.clear()
        for backend in {id(k.cache): k.cache for k in list(self.kits) if k.cache is not None}.values():
            backend.bump([function_generation(self.name)])
        self.reset()


@overload
def cached_query(fn: F, *, ttl: float | None = None, maxsize: int = 1024) -> F: ...


@overload
def cached_query(fn: None = None, *, ttl: float | None = None, maxsize: int = 1024) -> Callable[[F], F]: ...


def cached_query(
    fn: Callable[..., Any] | None = None, *, ttl: float | None = None, maxsize: int = 1024
) -> Any:
    """Cache a function that builds a Pony query from its arguments; calling it returns the results.

    ::

        @cached_query(ttl=60)
        def cheapest(category: str, limit: int):
            return select(p for p in Product if p.category == category).order_by(Product.price).limit(limit)

        with db_session:
            products = cheapest("books", 20)  # a list, as cached_select(...) returns

    Results are served and invalidated exactly as :func:`cached_select` serves them. What this adds: the
    statement is built once per distinct arguments and remembered (up to ``maxsize`` argument sets), so
    a hit skips Pony's query construction (tens of microseconds, more than the rest of a hit). The
    function must build its query from its arguments alone: anything else it reads (a global, the
    clock, a row it looks up) is frozen at the first call with those arguments. Arguments must be
    plain immutable values. Value results (tuples, scalars, aggregates) can be read outside a
    ``db_session``; entity results need one. The function has ``cache_info()`` and ``cache_clear()``
    as ``@cached`` functions do: ``cache_clear()`` invalidates this function's cached results (and
    forgets its statements). ``.uncached(...)`` runs the query through plain Pony.
    """
    if not isinstance(maxsize, int) or maxsize <= 0:
        raise ConfigurationError(f"@cached_query(maxsize=...) must be a positive int, got {maxsize!r}")

    def decorate(fn: F) -> F:
        state = _CachedQuery(fn, ttl, maxsize)
        return cached_function(fn, state, "__ponykit_cached_query__", uncached=state.uncached)

    return decorate if fn is None else decorate(fn)
