"""Cache backends: one small protocol, an in-process :class:`MemoryCache` and a shared :class:`RedisCache`.

A backend stores plain data under keys, keeps per-entity *generation* counters (bumped after commits)
and protects a key against stampedes: concurrent misses compute the value once. The cache layer
(:mod:`ponykit.query.cache`) builds keys that include the generations read before a query ran, so a
bump makes every entry computed before it unreachable; backends never have to find and delete them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import secrets
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import cachetools

from ..errors import ConfigurationError, MemoryCacheWarning
from . import _codec

__all__ = ["MISSING", "CacheBackend", "MemoryCache", "RedisCache"]

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


class _KeyLocks:
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


class _BaseCache:
    lock_timeout: float

    def __init__(self, lock_timeout: float) -> None:
        if lock_timeout <= 0:
            raise ConfigurationError(
                f"lock_timeout must be a positive number of seconds, got {lock_timeout!r}"
            )
        self.lock_timeout = lock_timeout
        self._key_locks = _KeyLocks()

    def get(self, key: Hashable) -> Any:
        raise NotImplementedError

    def set(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        raise NotImplementedError

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


def _check_ttl(ttl: float | None, what: str) -> None:
    if ttl is not None and (not isinstance(ttl, (int, float)) or ttl <= 0 or math.isnan(ttl)):
        raise ConfigurationError(f"{what} must be a positive number of seconds or None, got {ttl!r}")


# Every MemoryCache alive, so that a forked child can mark them: after fork() the child holds a copy of
# the parent's entries and generations, which commits in the parent or in sibling processes never bump.
_memory_caches: weakref.WeakSet[MemoryCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_memory_caches):
        cache._forked = True


if hasattr(os, "register_at_fork"):  # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


class MemoryCache(_BaseCache):
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
        _check_ttl(ttl, "MemoryCache(ttl=...)")
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
        _check_ttl(ttl, "ttl")
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


# ---------------------------------------------------------------------------------------------------------
# Redis

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class _Unavailable(Exception):
    pass


# Run on every new connection to Redis: if the server's run_id is not the one the epoch was last checked
# under, Redis has restarted (maybe from an RDB/AOF snapshot, which brings back old generation counters
# together with the entries computed under them) or a replica was promoted. The epoch then jumps to a
# random value nothing was ever stored under. The run_id key is restored by a snapshot too, but with the
# old server's run_id, which a restarted server never has.
_CHECK_RUN = (
    "if redis.call('get', KEYS[2]) ~= ARGV[1] then "
    "redis.call('set', KEYS[1], ARGV[2]) redis.call('set', KEYS[2], ARGV[1]) return 1 end return 0"
)
_RUN_ID = re.compile(rb"^run_id:([0-9a-fA-F]+)", re.MULTILINE)


def _restart_check(
    cache_ref: weakref.ref[RedisCache], previous: Callable[[Any], None] | None
) -> Callable[[Any], None]:
    """A redis-py ``redis_connect_func``: the usual handshake, then the restart check, on the new
    connection itself (a command through the client would wait for a connection from the pool)."""

    def on_connect(connection: Any) -> None:
        if previous is not None:
            previous(connection)
        else:
            connection.on_connect()
        cache = cache_ref()
        if cache is not None:
            cache._check_restart(connection)

    return on_connect


class RedisCache(_BaseCache):
    """A cache shared by every process that points at the same Redis (and the same ``prefix``).

    Entries, generations and invalidations are shared: a commit in one process makes the entries it
    invalidates unreachable for all of them. Needs the ``redis`` extra (``pip install 'ponykit[redis]'``).

    If Redis cannot be reached, every call goes to the database (a warning is logged at most once per
    ``warn_interval`` seconds; Redis is tried again after ``retry_interval``). A process that saw Redis
    fail bumps a shared epoch as soon as it reaches Redis again, so entries it may have failed to
    invalidate are never served. Concurrent misses of one key compute once across processes: the first
    takes a lock (``SET NX PX``, expiring after ``lock_timeout``); the others poll for its result and
    compute for themselves when the lock times out.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: Any = None,
        prefix: str = "ponykit:",
        ttl: float | None = 300.0,
        lock_timeout: float = 10.0,
        socket_timeout: float = 0.5,
        retry_interval: float = 5.0,
        warn_interval: float = 60.0,
        poll_interval: float = 0.01,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(lock_timeout)
        _check_ttl(ttl, "RedisCache(ttl=...)")
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - the dev extra installs redis
            raise ConfigurationError(
                "RedisCache needs the redis client: pip install 'ponykit[redis]'"
            ) from exc
        self._redis = redis
        check = _restart_check(weakref.ref(self), None)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                redis_connect_func=check,
            )
        else:  # connections the client makes from now on check for a restart too
            kwargs = client.connection_pool.connection_kwargs
            kwargs["redis_connect_func"] = _restart_check(weakref.ref(self), kwargs.get("redis_connect_func"))
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.retry_interval = retry_interval
        self.warn_interval = warn_interval
        self.poll_interval = poll_interval
        self.timer = timer
        self._epoch_key = prefix + "epoch"
        self._run_key = prefix + "run_id"
        self._check_warned = False
        self._retry_at = -math.inf
        self._warned_at = -math.inf
        self._need_epoch_bump = False
        self._state_lock = threading.Lock()
        self._release_script: Any = None

    def __repr__(self) -> str:
        # The URL may carry a password: never show it.
        return f"RedisCache(prefix={self.prefix!r}, ttl={self.ttl})"

    @property
    def available(self) -> bool:
        """False while Redis is considered down (until the next retry)."""
        return self.timer() >= self._retry_at

    # -- plumbing --------------------------------------------------------------------------------------

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        if self.timer() < self._retry_at:
            raise _Unavailable
        client = self.client
        try:
            if self._need_epoch_bump:
                # Back after an outage: this process may have missed publishing invalidations, so make
                # every entry written under the old epoch unreachable before using any.
                client.incr(self._epoch_key)
                with self._state_lock:
                    self._need_epoch_bump = False
                log.warning("ponykit: Redis cache reachable again; bumped the cache epoch")
            return fn(client)
        except (self._redis.RedisError, OSError) as exc:
            self._mark_down(exc)
            raise _Unavailable from exc

    def _mark_down(self, exc: BaseException) -> None:
        now = self.timer()
        with self._state_lock:
            self._need_epoch_bump = True
            self._retry_at = now + self.retry_interval
            warn = now - self._warned_at >= self.warn_interval
            if warn:
                self._warned_at = now
        if warn:
            log.warning(
                "ponykit: Redis cache unreachable (%s); queries go to the database, retrying in %.1fs",
                type(exc).__name__,
                self.retry_interval,
            )

    def _check_restart(self, connection: Any) -> None:
        """Reset the epoch if Redis restarted or failed over since the epoch was last checked.

        Runs once per new connection (redis-py reconnects transparently after a restart, and a restart
        drops every connection of every process), so the hit path pays nothing for it.
        """
        try:
            connection.send_command("INFO", "server")
            info = connection.read_response()
            found = _RUN_ID.search(info.encode() if isinstance(info, str) else bytes(info))
            if found is None:
                raise self._redis.ResponseError("INFO server has no run_id")
            connection.send_command(
                "EVAL", _CHECK_RUN, 2, self._epoch_key, self._run_key, found.group(1), secrets.randbits(62)
            )
            if connection.read_response() == 1:
                log.warning(
                    "ponykit: Redis at a new run_id (restarted, maybe from a snapshot, or failed over): "
                    "the cache epoch was reset, entries from before are never served"
                )
        except self._redis.ResponseError as exc:
            # INFO renamed or disabled (some managed services): no restart detection, said once.
            if not self._check_warned:
                self._check_warned = True
                log.warning(
                    "ponykit: cannot read Redis's run_id (%s): restarts from snapshots go unseen", exc
                )

    def _entry_key(self, key: Hashable) -> str:
        digest = hashlib.blake2b(_codec.encode(key), digest_size=20).hexdigest()
        return f"{self.prefix}v:{digest}"

    # -- protocol ---------------------------------------------------------------------------------------

    def get(self, key: Hashable) -> Any:
        """The value stored under ``key``, or :data:`MISSING` (also while Redis is down)."""
        try:
            data = self._call(lambda c: c.get(self._entry_key(key)))
        except _Unavailable:
            return MISSING
        return MISSING if data is None else _codec.decode(data)

    def set(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: this cache's ``ttl``)."""
        _check_ttl(ttl, "ttl")
        data = _codec.encode(value)
        ttl = self.ttl if ttl is None else ttl
        px = None if ttl is None else max(1, int(ttl * 1000))
        with contextlib.suppress(_Unavailable):
            self._call(lambda c: c.set(self._entry_key(key), data, px=px))

    def generations(self, names: Sequence[str]) -> tuple[int, ...] | None:
        """``(epoch, *generations)`` read in one round trip, or None while Redis is unreachable.

        A missing counter (never set, or lost in a Redis restart or eviction) starts at a random value,
        so it can never come back to a number that entries were once computed under.
        """
        keys = [self._epoch_key, *(self.prefix + "g:" + n for n in names)]
        try:
            values = self._call(lambda c: c.mget(keys))
            if None in values:
                missing = [k for k, v in zip(keys, values, strict=True) if v is None]

                def init(c: Any) -> Any:
                    pipe = c.pipeline(transaction=False)
                    for k in missing:
                        pipe.set(k, secrets.randbits(62), nx=True)
                    pipe.mget(keys)
                    return pipe.execute()[-1]

                values = self._call(init)
        except _Unavailable:
            return None
        return tuple(int(v) for v in values)

    def bump(self, names: Iterable[str]) -> None:
        """Advance the generation of each name; if Redis is down, the epoch is bumped when it is back."""
        keys = [self.prefix + "g:" + n for n in names]
        if not keys:
            return

        def incr(c: Any) -> Any:
            pipe = c.pipeline(transaction=False)
            for k in keys:
                pipe.incr(k)
            return pipe.execute()

        try:
            self._call(incr)
        except _Unavailable:
            with self._state_lock:
                self._need_epoch_bump = True

    def clear(self) -> None:
        """Drop every entry under this prefix (generations and the epoch are kept)."""

        def scan_delete(c: Any) -> None:
            batch = []
            for k in c.scan_iter(match=self.prefix + "v:*", count=500):
                batch.append(k)
                if len(batch) >= 500:
                    c.delete(*batch)
                    batch.clear()
            if batch:
                c.delete(*batch)

        with contextlib.suppress(_Unavailable):
            self._call(scan_delete)

    @contextlib.contextmanager
    def _other_process_lock(self, key: Hashable) -> Iterator[Any]:
        lock_key = self._entry_key(key).replace(":v:", ":l:", 1)
        token = secrets.token_hex(8)
        px = max(1, int(self.lock_timeout * 1000))
        try:
            acquired = self._call(lambda c: c.set(lock_key, token, nx=True, px=px))
        except _Unavailable:
            yield MISSING
            return
        if not acquired:
            # Another process computes this key: wait for its result, never longer than the lock lives.
            deadline = time.monotonic() + self.lock_timeout
            while time.monotonic() < deadline:
                time.sleep(self.poll_interval)
                value = self.get(key)
                if value is not MISSING:
                    yield value
                    return
                try:
                    acquired = self._call(lambda c: c.set(lock_key, token, nx=True, px=px))
                except _Unavailable:
                    break
                if acquired:
                    break
        try:
            yield MISSING
        finally:
            if acquired:
                with contextlib.suppress(_Unavailable):
                    self._call(lambda c: c.eval(_RELEASE, 1, lock_key, token))
