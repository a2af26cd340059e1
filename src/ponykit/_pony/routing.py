"""Which server a session's connection comes from: the read intent, and the session facts a router needs.

``ponykit.binding`` installs a router as the pool of a Database bound with replicas. Pony asks the pool
for a connection when a ``db_session`` first needs one (``SessionCache.connect``), and gives it back when
the session ends (``release``) or the connection failed (``drop``). This module holds what both the
router (``binding``) and the statement hook (``transactions``) need, below both of them:

- the *read intent* of the current context (``replica_session()``, ``transaction(read_only=True)``, a GET
  request of a web integration): a ``ContextVar``, so it follows asyncio tasks and copied contexts;
- what a router reads of Pony's session cache (is a write about to start, has the session been moved to
  the primary) and the exception that moves a session from a replica to the primary through Pony's own
  reconnect path (``SessionCache.reconnect`` asks ``provider.should_reconnect`` and drops the connection);
- chaining a provider method on one provider instance without ponykit's "wrapped" mark, so that
  ``attach()`` (which refuses to wrap a method twice) still wraps it afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Literal

from pony.orm import Database

from ..errors import ConfigurationError, ReadOnlySessionError
from ._typing import SessionCache
from .session import session_cache

__all__ = [
    "MoveToPrimary",
    "OnWrite",
    "ReadIntent",
    "chain_provider_method",
    "describe_flush",
    "end_read_transaction",
    "is_moved_to_primary",
    "pending_flush",
    "pop_read_intent",
    "push_read_intent",
    "read_intent",
    "refuse_write",
    "reset_read_intent",
    "routes_reads",
    "set_read_intent",
    "set_router",
    "write_starting",
]

OnWrite = Literal["raise", "primary"]


@dataclass(frozen=True)
class ReadIntent:
    """The current context only reads: its sessions may use a replica.

    ``source`` names what declared it, for messages (``"replica_session()"``). ``on_write``: ``"raise"``
    refuses a write before any SQL; ``"primary"`` moves the session to the primary at its first write.
    ``transaction``: the session runs one real read-only transaction (``transaction(read_only=True)``),
    so Pony asks for a transaction at connect time without writing. ``route``: False when the intent
    only guards writes (a ``replica_session()`` nested in an ordinary session keeps its connection).
    ``database``: the one Database it is for (``transaction(db=..., read_only=True)``), None for all.
    """

    source: str
    on_write: OnWrite = "raise"
    transaction: bool = False
    route: bool = True
    database: Any = None


# The read intents entered in a context form a stack: (intent, the frame it covers), innermost first.
# Plain tuples: one is made per replica_session(), so the cheapest object Python has.
_Frame = tuple[ReadIntent | None, Any]
_intent: ContextVar[_Frame | None] = ContextVar("ponykit_read_intent", default=None)
_ROUTER_ATTR = "_ponykit_router_"
_MOVED_ATTR = "_ponykit_moved_to_primary_"


def read_intent(db: Database | None = None) -> ReadIntent | None:
    """The read intent of the current context that applies to ``db``, or None (ordinary sessions: the
    primary). An intent for another Database is skipped (the one outside it may apply); without ``db``,
    the innermost intent whatever its Database."""
    frame = _intent.get()
    while frame is not None:
        intent = frame[0]
        if intent is None or db is None or intent.database is None or intent.database is db:
            return intent
        frame = frame[1]
    return None


def set_read_intent(intent: ReadIntent | None) -> Token[_Frame | None]:
    """Set the read intent of the current context; the token for :func:`reset_read_intent`."""
    return _intent.set((intent, _intent.get()))


def reset_read_intent(token: Token[_Frame | None]) -> None:
    """Put back the read intent :func:`set_read_intent` replaced."""
    _intent.reset(token)


def push_read_intent(intent: ReadIntent | None) -> None:
    """Set the read intent of the current context until the matching :func:`pop_read_intent` (no token
    to keep: one object, a decorator or a module constant, can be entered by many threads and tasks)."""
    _intent.set((intent, _intent.get()))


def pop_read_intent() -> None:
    """End the innermost :func:`push_read_intent` of the current context."""
    frame = _intent.get()
    _intent.set(None if frame is None else frame[1])


def set_router(db: Database, router: Any) -> None:
    """Install ``router`` in front of ``db``'s pool (Pony's, or a bounded pool): this provider instance
    only. ``router.original`` becomes the pool it routes writes to. Refused under ponykit.testing's
    outer-transaction pool and when a router is already there."""
    provider = db.provider
    current = provider.pool
    if type(current).__name__ == "OuterPool" or provider.__dict__.get(_ROUTER_ATTR) is not None:
        raise ConfigurationError(
            f"cannot route {db!r} to replicas: its pool is already replaced ({type(current).__name__}); "
            "bind it once with replicas=, before ponykit.testing installs its test pool"
        )
    router.original = current
    setattr(provider, _ROUTER_ATTR, router)
    provider.pool = router


def routes_reads(db: Database) -> Any:
    """The router installed on ``db`` by ``bind_url(..., replicas=...)``, or None."""
    provider = db.provider
    return None if provider is None else provider.__dict__.get(_ROUTER_ATTR)


def write_starting(db: Database) -> bool:
    """True when the current session on ``db`` is about to write: Pony has flagged its cache
    ``immediate`` (a flush, ``db.execute``, ``for_update()``, ``get_connection()``)."""
    cache = session_cache(db)
    return bool(cache is not None and cache.immediate)


def pending_flush(cache: SessionCache) -> bool:
    """True when ``cache`` holds changed objects Pony is flushing or will flush (a write, not a read)."""
    return bool(cache.modified)


def describe_flush(cache: SessionCache) -> str:
    """``"a flush of changed objects (Account[2], Account[3])"``: what a flush of ``cache`` would write,
    for messages (the objects' reprs name the entity and primary key only, never attribute values)."""
    objects = [obj for obj in cache.objects_to_save if obj is not None]
    names = ", ".join(repr(obj) for obj in objects[:3]) + (", ..." if len(objects) > 3 else "")
    return f"a flush of changed objects ({names})" if names else "a flush of changed objects"


def is_moved_to_primary(db: Database) -> bool:
    """True when the current session on ``db`` was moved from a replica to the primary by its first write."""
    cache = session_cache(db)
    return bool(cache is not None and cache.__dict__.get(_MOVED_ATTR))


class MoveToPrimary(Exception):
    """Raised inside Pony's statement path to make it drop the replica connection and connect again;
    the router's ``should_reconnect`` says yes to it, its ``connect`` then hands out the primary."""


def end_read_transaction(cache: Any) -> None:
    """Treat a read-only session's transaction as committed without a COMMIT: it wrote nothing, and the
    connection's release rolls it back (what Pony's own commit would have left behind)."""
    if cache is not None:
        cache.in_transaction = False


def refuse_write(db: Database | None, what: str) -> None:
    """A write (``what``: ``"an UPDATE statement"``, ``"a flush of changed objects"``) is about to start in
    a session with a read intent: raise :class:`ReadOnlySessionError`, or with ``on_write="primary"`` mark
    the session moved and raise :class:`MoveToPrimary` (the session continues on the primary).

    Does nothing without a read intent for ``db``, or when the session already runs on the primary after
    a move.
    """
    intent = read_intent(db)
    if intent is None:
        return
    if intent.on_write == "primary" and not intent.transaction:
        if db is None:
            return
        cache = session_cache(db)
        if cache is None or cache.__dict__.get(_MOVED_ATTR):
            return
        cache.__dict__[_MOVED_ATTR] = True
        router = routes_reads(db)
        if router is None or not router.holds_replica(cache.connection):
            return  # the session already runs on the primary (no replica, or it fell back)
        raise MoveToPrimary(what)
    raise ReadOnlySessionError(
        f"{what} was refused in a read-only session ({intent.source}): it may run on a read replica, "
        "where nothing can be written. Nothing was sent to the database. Write in an ordinary db_session "
        "or transaction(), or use replica_session(on_write='primary') to move the session to the primary "
        "at its first write"
    )


def chain_provider_method(
    db: Database, name: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Replace ``db.provider.<name>`` on this provider instance with ``make_wrapper(original)``, without
    ponykit's "wrapped" mark: ``attach()`` wraps the method again on top of this one (its hooks outside).
    """
    provider = db.provider
    original = getattr(provider, name)
    setattr(provider, name, functools.wraps(original)(make_wrapper(original)))
