"""The shared cache backend, :class:`RedisCache` (re-exported by :mod:`ponykit.query.backends`).

Entries, generations and invalidations live in Redis under one key prefix, so every process that points
at the same Redis and prefix shares them. Outages send queries to the database; a restart or failover
(detected per new connection by the server's ``run_id``) resets the shared epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

from ..errors import ConfigurationError
from . import _plain
from ._backend import MISSING, BaseCache, check_ttl, log

__all__ = ["RedisCache"]

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


class RedisCache(BaseCache):
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
        check_ttl(ttl, "RedisCache(ttl=...)")
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
        digest = hashlib.blake2b(_plain.encode(key), digest_size=20).hexdigest()
        return f"{self.prefix}v:{digest}"

    # -- protocol ---------------------------------------------------------------------------------------

    def get(self, key: Hashable) -> Any:
        """The value stored under ``key``, or :data:`MISSING` (also while Redis is down)."""
        try:
            data = self._call(lambda c: c.get(self._entry_key(key)))
        except _Unavailable:
            return MISSING
        return MISSING if data is None else _plain.decode(data)

    def set(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: this cache's ``ttl``)."""
        check_ttl(ttl, "ttl")
        data = _plain.encode(value)
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

    def bump_epoch(self) -> None:
        """Make every entry under this prefix unreachable, for every Database and process using it (if
        Redis is down, as soon as it is back)."""
        try:
            self._call(lambda c: c.incr(self._epoch_key))
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
