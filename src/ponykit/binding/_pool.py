"""A bounded connection pool for one Database: ``bind_url(db, url, pool=PoolConfig(max_size=8))``.

Pony keeps one connection per thread, for as long as the thread lives: 64 worker threads hold 64 server
connections, idle or not. :class:`BoundedPool` shares at most ``max_size`` connections between all the
threads of the process: a ``db_session`` takes one when it first needs it and gives it back when it
ends, waiting up to ``timeout`` seconds for one when all are in use (then :class:`PoolTimeout`).
Connections are made and reset exactly as Pony's pool does (rollback; ``DISCARD ALL`` on PostgreSQL), so
sessions behave as before and nothing of one session's state reaches the next.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pony.orm import Database

from .. import _pony
from ..errors import OptionError, PoolTimeout

__all__ = [
    "BoundedPool",
    "PoolConfig",
    "PoolStats",
    "install_bounded_pool",
    "make_bounded_pool",
    "pool_stats",
]


@dataclass(frozen=True)
class PoolConfig:
    """How many server connections a Database may hold per process, and how they are kept healthy.

    - ``max_size``: at most this many connections to the database, across all threads of the process.
    - ``timeout``: seconds a session waits for a free connection before :class:`ponykit.errors.PoolTimeout`
      (0: do not wait).
    - ``pre_ping``: check a kept connection with one round trip before handing it out; a dead one
      (server restarted, connection killed, network cut) is closed and replaced, never handed out.
    - ``max_lifetime``: seconds after which a connection is closed and replaced when it is given back or
      taken (None: kept for ever); lets a load balancer or a failover move clients over.
    """

    max_size: int = 10
    timeout: float = 30.0
    pre_ping: bool = True
    max_lifetime: float | None = 3600.0

    def __post_init__(self) -> None:
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int) or self.max_size < 1:
            raise OptionError(
                f"PoolConfig(max_size=...) must be a whole number of connections >= 1, not {self.max_size!r}"
            )
        _seconds("timeout", self.timeout, allow_zero=True)
        if not isinstance(self.pre_ping, bool):
            raise OptionError(f"PoolConfig(pre_ping=...) must be True or False, not {self.pre_ping!r}")
        if self.max_lifetime is not None:
            _seconds("max_lifetime", self.max_lifetime, allow_zero=False)


def _seconds(name: str, value: object, *, allow_zero: bool) -> None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        extra = "" if allow_zero else " (None: no limit)"
        raise OptionError(
            f"PoolConfig({name}=...) must be a finite number of seconds {bound}{extra}, not {value!r}"
        )


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a :class:`BoundedPool`: connections open, in use, idle, and what happened so far."""

    max_size: int
    open: int
    in_use: int
    idle: int
    created: int
    replaced: int  # dead connections found by pre_ping and replaced
    recycled: int  # closed for being older than max_lifetime
    waits: int  # checkouts that had to wait for a free connection
    timeouts: int  # checkouts that gave up (PoolTimeout)


class _Slot:
    __slots__ = ("con", "created", "pid")

    def __init__(self, con: Any, created: float, pid: int) -> None:
        self.con = con
        self.created = created
        self.pid = pid


# Connections inherited from a parent process: never used, never closed in the child (closing one would
# end the parent's session on the server), only kept referenced so that the garbage collector does not
# close them either. Pony's own pool does the same (Pool.forked_connections).
_FORKED: list[Any] = []
_POOLS: weakref.WeakSet[BoundedPool] = weakref.WeakSet()


class BoundedPool(_pony.PoolWrapper):
    """The pool of one Database's provider: at most ``config.max_size`` connections shared by all threads.

    Built by :func:`install_bounded_pool` (``bind_url(..., pool=PoolConfig(...))``); Pony calls
    ``connect()`` when a session needs a connection and ``release()``/``drop()`` when it ends.
    """

    def __init__(
        self,
        config: PoolConfig,
        *,
        connect: Callable[[], Any],
        reset: Callable[[Any], None],
        ping: Callable[[Any], bool],
        name: str,
        prepare: Callable[[Any], None] | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self._open_connection = connect
        self._reset = reset
        self._ping = ping
        self._prepare = prepare
        self._lock = threading.Lock()
        self._free = threading.Condition(self._lock)
        self._idle: list[_Slot] = []  # most recently used last: taken first, the others may age out
        self._busy: dict[int, _Slot] = {}  # id(connection) -> slot, while a session holds it
        self._opening = 0
        self._pid = os.getpid()
        self._counts = {"created": 0, "replaced": 0, "recycled": 0, "waits": 0, "timeouts": 0}
        _POOLS.add(self)

    # -- what Pony calls --------------------------------------------------------------------------------

    def connect(self) -> tuple[Any, bool]:
        """A connection for the session starting: ``(connection, is_new)``. Waits up to ``timeout`` for a
        free one, then raises PoolTimeout.

        With ``prepare`` (the Database's on_connect callbacks), a new connection is prepared here and
        reported as not new: Pony runs the callbacks outside the code that gives a failed connection
        back, so a failing callback would keep its slot in use for ever; here it is closed and its slot
        freed before the error goes on."""
        if self._pid != os.getpid():
            self._after_fork()
        slot = self._take()
        if slot is None:
            return self._new()
        config = self.config
        if config.max_lifetime is not None and time.monotonic() - slot.created >= config.max_lifetime:
            self._count("recycled")
        elif config.pre_ping and not self._ping(slot.con):
            self._count("replaced")
        else:
            return slot.con, False
        # Its slot goes to the replacement: the number of connections never passes max_size.
        with self._lock:
            del self._busy[id(slot.con)]
            self._opening += 1
        _pony.close_connection(slot.con)
        return self._new()

    def release(self, con: Any) -> None:
        """Take back the connection of a session that ended: reset as Pony resets it, then kept (or closed
        when older than ``max_lifetime``)."""
        slot = self._busy.get(id(con))
        if slot is None or slot.con is not con or slot.pid != os.getpid():
            self._forget(con, slot)
            return
        try:
            self._reset(con)  # still counted as in use meanwhile: no other thread opens one in its place
        except BaseException:
            self._discard(slot, close=True)  # Pony's release closes it too; the error goes on
            raise
        lifetime = self.config.max_lifetime
        if lifetime is not None and time.monotonic() - slot.created >= lifetime:
            self._count("recycled")
            self._discard(slot, close=True)
            return
        with self._lock:
            if self._busy.pop(id(con), None) is slot:
                self._idle.append(slot)
            self._free.notify()

    def drop(self, con: Any) -> None:
        """Close the connection of a session that failed (Pony found it broken): its place is free."""
        slot = self._busy.get(id(con))
        if slot is None or slot.con is not con or slot.pid != os.getpid():
            self._forget(con, slot)
            return
        self._discard(slot, close=True)

    def disconnect(self) -> None:
        """Close the idle connections (``db.disconnect()``); connections in use are closed when given back
        only if they are past their lifetime, as usual."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._free.notify_all()
        for slot in idle:
            _pony.close_connection(slot.con)

    # -- for users and tests ----------------------------------------------------------------------------

    @property
    def pings_kept(self) -> bool:
        """True when a kept connection is checked before it is handed out (``pre_ping``)."""
        return self.config.pre_ping

    def stats(self) -> PoolStats:
        """A snapshot of the pool's state and counters."""
        with self._lock:
            return PoolStats(
                max_size=self.config.max_size,
                open=len(self._idle) + len(self._busy) + self._opening,
                in_use=len(self._busy),
                idle=len(self._idle),
                **self._counts,
            )

    def close(self) -> None:
        """Close every idle connection (same as :meth:`disconnect`)."""
        self.disconnect()

    # -- inside -----------------------------------------------------------------------------------------

    def _take(self) -> _Slot | None:
        """An idle slot (moved to busy), or None after reserving the right to open a new connection."""
        config = self.config
        deadline = 0.0
        started = 0.0
        with self._lock:
            while True:
                if self._idle:
                    slot = self._idle.pop()
                    self._busy[id(slot.con)] = slot
                    return slot
                if len(self._busy) + self._opening < config.max_size:
                    self._opening += 1
                    return None
                now = time.monotonic()
                if not started:
                    started, deadline = now, now + config.timeout
                    self._counts["waits"] += 1
                if now >= deadline:
                    self._counts["timeouts"] += 1
                    raise self._timeout_error(now - started)
                self._free.wait(deadline - now)

    def _new(self) -> tuple[Any, bool]:
        """A new connection in a slot reserved by the caller, prepared (see :meth:`connect`)."""
        con = self._open()
        if self._prepare is None:
            return con, True
        try:
            self._prepare(con)
        except BaseException:
            self._discard(self._busy[id(con)], close=True)
            raise
        return con, False

    def _open(self) -> Any:
        """Open a connection in a slot reserved by the caller (``_opening``)."""
        try:
            con = self._open_connection()
        except BaseException:
            with self._lock:
                self._opening -= 1
                self._free.notify()
            raise
        with self._lock:
            self._opening -= 1
            self._busy[id(con)] = _Slot(con, time.monotonic(), os.getpid())
            self._counts["created"] += 1
        return con

    def _discard(self, slot: _Slot, *, close: bool) -> None:
        with self._lock:
            if self._busy.get(id(slot.con)) is slot:
                del self._busy[id(slot.con)]
            self._free.notify()
        if close:
            _pony.close_connection(slot.con)

    def _forget(self, con: Any, slot: _Slot | None) -> None:
        # Not a connection of this pool in this process: a parent's (fork), left alone and kept referenced,
        # or a stand-in such as ponykit's LostConnection, which is none of the pool's business.
        if slot is not None:
            with self._lock:
                self._busy.pop(id(con), None)
                self._free.notify()
            _FORKED.append(con)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _after_fork(self) -> None:
        """In a child process: the parent's connections are never used (nor closed) here."""
        _FORKED.extend(slot.con for slot in (*self._idle, *self._busy.values()))
        self._lock = threading.Lock()  # the parent's may have been held by a thread that does not exist here
        self._free = threading.Condition(self._lock)
        self._idle = []
        self._busy = {}
        self._opening = 0
        self._pid = os.getpid()

    def _timeout_error(self, waited: float) -> PoolTimeout:
        config = self.config
        return PoolTimeout(
            f"no connection to {self.name} became free within the pool's timeout of {config.timeout:g}s "
            f"(waited {waited:.3f}s; max_size={config.max_size}, {len(self._busy)} in use by sessions, "
            f"{self._opening} being opened): raise PoolConfig(max_size=...) or timeout=, or keep "
            "db_sessions shorter (a session holds its connection until it ends)"
        )


def _reset_pools_in_child() -> None:
    for pool in list(_POOLS):
        pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pools_in_child)


def make_bounded_pool(
    db: Database, config: PoolConfig, name: str, kwargs: dict[str, Any] | None = None
) -> BoundedPool:
    """A :class:`BoundedPool` making and resetting connections as ``db``'s provider does, not installed.

    ``kwargs`` are the driver's connection arguments of another server of the same kind (a replica); by
    default the Database's own. ``name`` (a redacted URL) identifies the server in messages.
    """
    if not isinstance(config, PoolConfig):
        raise OptionError(
            f"pool= takes a ponykit.PoolConfig (for example PoolConfig(max_size=10, timeout=30)), "
            f"not {type(config).__name__}"
        )

    def ping(con: Any) -> bool:
        return _pony.ping_connection(db, con)

    def prepare(con: Any) -> None:
        _pony.run_on_connect(db, con)

    return BoundedPool(
        config,
        connect=_pony.connection_factory(db, kwargs),
        reset=_pony.reset_function(db),
        ping=ping,
        name=name,
        prepare=prepare,
    )


def install_bounded_pool(db: Database, config: PoolConfig, name: str) -> BoundedPool:
    """Put a :class:`BoundedPool` with ``config`` in place of ``db``'s pool; ``name`` (a redacted URL)
    identifies the database in messages."""
    pool = make_bounded_pool(db, config, name)
    _pony.install_pool(db, pool)
    return pool


def pool_stats(db: Database) -> PoolStats | None:
    """A :class:`PoolStats` snapshot of the bounded pool ``bind_url(db, ..., pool=PoolConfig(...))`` gave
    ``db`` (its primary's, when replicas are configured too: see ``replica_status`` for those); None when
    ``db`` uses Pony's own per-thread pool."""
    pool = _pony.provider_pool(db)
    while not isinstance(pool, BoundedPool):
        if not isinstance(pool, _pony.PoolWrapper):
            return None
        pool = pool.original
    return pool.stats()
