"""Cache backends: one small protocol, an in-process :class:`MemoryCache` and a shared :class:`RedisCache`.

A backend stores plain data under keys, keeps per-entity *generation* counters (bumped after commits)
and protects a key against stampedes: concurrent misses compute the value once. The cache layer
(:mod:`ponykit.query.cache`) builds keys that include the generations read before a query ran, so a
bump makes every entry computed before it unreachable; backends never have to find and delete them.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import cachetools

from ..errors import ConfigurationError, MemoryCacheWarning
from ._backend import MISSING, BaseCache, CacheBackend, check_ttl
from ._redis import RedisCache

__all__ = ["MISSING", "CacheBackend", "MemoryCache", "RedisCache"]

# Every MemoryCache alive, so that a forked child can mark them: after fork() the child holds a copy of
# the parent's entries and generations, which commits in the parent or in sibling processes never bump.
_memory_caches: weakref.WeakSet[MemoryCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_memory_caches):
        cache._forked = True


if hasattr(os, "register_at_fork"):  # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


class MemoryCache(BaseCache):
    """An in-process cache: bounded (LRU beyond ``maxsize`` entries), entries expire after ``ttl`` seconds.

    Thread-safe. ``timer`` is the clock used for expiry (injectable for tests). ``ttl=None`` keeps
    entries until they are evicted or their generation moves on. Entries are plain data and are shared by
    every thread of the process; generations live in the instance, so give each process its own.

    **Per process**: commits made by another process never reach it. Used on a server database
    (PostgreSQL, MariaDB ...) or after ``fork()``, it warns once
    (:class:`~ponykit.errors.MemoryCacheWarning`); ``single_process=True`` says this process is the only
    one writing the data it serves, and silences it.
    """

    per_process = True  # read by the cache layer: commits of other processes never reach this backend

    def __init__(
        self,
        maxsize: int = 10_000,
        ttl: float | None = 300.0,
        *,
        timer: Callable[[], float] = time.monotonic,
        lock_timeout: float = 10.0,
        single_process: bool = False,
    ) -> None:
        super().__init__(lock_timeout)
        if not isinstance(maxsize, int) or maxsize <= 0:
            raise ConfigurationError(f"MemoryCache(maxsize=...) must be a positive int, got {maxsize!r}")
        check_ttl(ttl, "MemoryCache(ttl=...)")
        self.maxsize = maxsize
        self.ttl = ttl
        self.timer = timer
        # An LRU of (value, expires at) pairs, expiry checked on read: cheaper than cachetools' TLRUCache,
        # which consults the clock twice per hit; an expired entry left behind still counts against
        # maxsize until it is read or evicted, so the cache stays bounded.
        self._store: cachetools.LRUCache[Hashable, tuple[Any, float]] = cachetools.LRUCache(maxsize)
        self._lock = threading.Lock()
        self._generations: dict[str, int] = {}
        self.single_process = single_process
        self._warned_shared = single_process  # the server-database warning (see _generations)
        self._forked = False
        _memory_caches.add(self)

    def __repr__(self) -> str:
        return f"MemoryCache(maxsize={self.maxsize}, ttl={self.ttl})"

    def _warn_forked(self) -> None:
        self._forked = False
        if self.single_process:
            return
        warnings.warn(
            f"{self!r} is used in a forked process (pid {os.getpid()}): it holds a copy of its parent's "
            "entries, and commits made by the parent or by sibling processes never invalidate them, so "
            "they serve stale rows until their ttl. Create the cache after forking (one per worker) and "
            "use RedisCache when several processes write, or pass MemoryCache(..., single_process=True)",
            MemoryCacheWarning,
            stacklevel=4,
        )

    def get(self, key: Hashable) -> Any:
        """The value stored under ``key``, or :data:`MISSING` (also once it has expired)."""
        with self._lock:
            entry = self._store.get(key)
            if entry is None:
                return MISSING
            if entry[1] != math.inf and self.timer() >= entry[1]:
                del self._store[key]
                return MISSING
        return entry[0]

    def set(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: this cache's ``ttl``)."""
        check_ttl(ttl, "ttl")
        ttl = self.ttl if ttl is None else ttl
        expires = math.inf if ttl is None else self.timer() + ttl
        with self._lock:
            self._store[key] = (value, expires)

    def generations(self, names: Sequence[str]) -> tuple[int, ...]:
        """The current generation of each name (0 until first bumped)."""
        if self._forked:
            self._warn_forked()
        get = self._generations.get
        return tuple([get(name, 0) for name in names])

    def bump(self, names: Iterable[str]) -> None:
        """Advance the generation of each name."""
        with self._lock:
            for name in names:
                self._generations[name] = self._generations.get(name, 0) + 1

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._store.clear()

    def __len__(self) -> int:
        with self._lock:
            now = self.timer()
            for key in [key for key, (_value, expires) in self._store.items() if expires <= now]:
                del self._store[key]
            return len(self._store)
