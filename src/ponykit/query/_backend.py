"""What every cache backend shares: the :class:`CacheBackend` protocol, ``MISSING`` and a base class.

Below both backends (``backends`` defines MemoryCache, ``_redis`` RedisCache), so neither imports the other.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigurationError

__all__ = ("MISSING", "BaseCache", "CacheBackend", "Compute", "check_ttl", "log")

log = logging.getLogger("ponykit.cache")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""What :meth:`CacheBackend.get` returns for a key it does not hold (a stored ``None`` is a value)."""

Compute = Callable[[], "tuple[Any, bool]"]  # returns (value, may_store)


@runtime_checkable
class CacheBackend(Protocol):
    """What ponykit needs from a cache backend.

    Keys are tuples of plain values (stable across processes); values are plain data. ``generations``
    returns None when the backend is unavailable: callers then go to the database.
    """

    def get(self, key: Hashable) -> Any:
        """The value stored under ``key``, or :data:`MISSING`."""
        ...

    def set(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: the backend's default)."""
        ...

    def generations(self, names: Sequence[str]) -> tuple[int, ...] | None:
        """The current generation of each name (plus any backend-wide epoch), or None if unavailable."""
        ...

    def bump(self, names: Iterable[str]) -> None:
        """Advance the generation of each name, making entries keyed by the old ones unreachable."""
        ...

    def get_or_compute(self, key: Hashable, compute: Compute, ttl: float | None = None) -> tuple[Any, bool]:
        """``(value, hit)``: the stored value, or ``compute()`` run once for concurrent callers and stored
        if it says it may be."""
        ...

    def clear(self) -> None:
        """Drop every entry (generations are kept, so they never go back)."""
        ...


class KeyLocks:
    """One lock per key in use, so concurrent misses of a key wait for one computation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[Hashable, list[Any]] = {}

    @contextlib.contextmanager
    def hold(self, key: Hashable, timeout: float) -> Iterator[bool]:
        with self._lock:
            entry = self._locks.get(key)
            if entry is None:
                entry = self._locks[key] = [threading.Lock(), 0]
            entry[1] += 1
        acquired = entry[0].acquire(timeout=timeout)  # a stuck computation never blocks others forever
        try:
            yield acquired
        finally:
            if acquired:
                entry[0].release()
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]


class BaseCache:
    """What MemoryCache and RedisCache share: per-key stampede locks and ``get_or_compute``."""

    lock_timeout: float

    def __init__(self, lock_timeout: float) -> None:
        if lock_timeout <= 0:
            raise ConfigurationError(
                f"lock_timeout must be a positive number of seconds, got {lock_timeout!r}"
            )
        self.lock_timeout = lock_timeout
        self._key_locks = KeyLocks()

    def get(self, key: Hashable) -> Any:
        raise NotImplementedError  # abstract: MemoryCache and RedisCache define it

    def set(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        raise NotImplementedError  # abstract: MemoryCache and RedisCache define it

    def _other_process_lock(self, key: Hashable) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext(MISSING)

    def get_or_compute(self, key: Hashable, compute: Compute, ttl: float | None = None) -> tuple[Any, bool]:
        """``(value, hit)``: the stored value, or ``compute()`` run once for concurrent misses of ``key``.

        ``compute`` returns ``(value, may_store)``. Waiters that time out compute for themselves rather
        than wait on a stuck computation.
        """
        value = self.get(key)
        if value is not MISSING:
            return value, True
        with self._key_locks.hold(key, self.lock_timeout):
            value = self.get(key)
            if value is not MISSING:
                return value, True
            with self._other_process_lock(key) as found:
                if found is not MISSING:
                    return found, True
                value, may_store = compute()
                if may_store:
                    self.set(key, value, ttl)
                return value, False


def check_ttl(ttl: float | None, what: str) -> None:
    if ttl is not None and (not isinstance(ttl, (int, float)) or ttl <= 0 or math.isnan(ttl)):
        raise ConfigurationError(f"{what} must be a positive number of seconds or None, got {ttl!r}")
