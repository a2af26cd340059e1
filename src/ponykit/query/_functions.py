"""``@cached(depends_on=[...])``: service functions whose plain-data results are cached across sessions.

Keyed by the function, its arguments and the generations of the entities it depends on (see
``ponykit.query.cache``), and by the settings of the current ``rls_context``: the function's queries may
run under row-level security, so a result computed for one tenant is never served to another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from .. import _pony
from .._kit import get_kit
from ..errors import ConfigurationError, OptionError
from ..security.rls import settings_key
from ._generations import db_state, must_bypass, register_backend
from .backends import CacheBackend
from .cache import CallCounts, _backend_of, cached_function, function_generation

__all__ = ["cached"]

F = TypeVar("F", bound=Callable[..., Any])


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

        # The function's queries may run under row-level security: one entry per rls_context.
        data, hit = backend.get_or_compute(
            ("f", self.name, arg_key, gens, *settings_key()), compute, self.ttl
        )
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
