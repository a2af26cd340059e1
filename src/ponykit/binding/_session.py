"""``replica_session()``: a ``db_session`` that only reads, served by a replica when one is configured."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, cast

from pony.orm import db_session

from .. import _pony
from ..errors import OptionError

__all__ = ["replica_session"]

F = TypeVar("F", bound=Callable[..., Any])

_ON_WRITE = ("raise", "primary")
_INTENTS = {
    (on_write, route): _pony.ReadIntent("replica_session()", cast(_pony.OnWrite, on_write), route=route)
    for on_write in _ON_WRITE
    for route in (True, False)
}


class replica_session:
    """A ``db_session`` that only reads: on a Database bound with ``replicas=``, it takes a healthy
    replica's connection (one that has replayed this scope's own last commit, see ``use_pin``).

    ``with replica_session(): ...`` or ``@replica_session()`` on a function. A write in it (a flush of
    changed objects; with ``attach()`` also any INSERT/UPDATE/DELETE/DDL statement) raises
    :class:`~ponykit.errors.ReadOnlySessionError` before any SQL is sent. With ``on_write="primary"``
    the session instead moves to the primary at its first write, keeping the objects it loaded: Pony's
    optimistic checks then compare the primary's rows with what was read on the replica, and a
    stale read ends in ``OptimisticCheckError`` rather than a lost update.

    On an ``async def`` function, the read intent is set for the whole coroutine (no session is opened
    on the event loop): its ``ponykit.run_in_session(...)`` calls run as replica sessions. Nested in an
    open ``db_session``, it joins it: the connection that session holds (or takes) stays, and writes
    inside the block are refused all the same. Without replicas it runs on the primary, with the
    same refusal of writes, so code behaves the same in development.
    """

    def __init__(self, *, on_write: str = "raise") -> None:
        if on_write not in _ON_WRITE:
            raise OptionError(
                f"replica_session(on_write=...) takes 'raise' (refuse writes before any SQL) or 'primary' "
                f"(move the session to the primary at its first write), got {on_write!r}"
            )
        self.on_write = cast(_pony.OnWrite, on_write)

    def _intent(self, route: bool) -> _pony.ReadIntent:
        return _INTENTS[self.on_write, route]

    def __enter__(self) -> None:
        _pony.push_read_intent(_INTENTS[self.on_write, not _pony.in_db_session()])
        try:
            db_session.__enter__()
        except BaseException:
            _pony.pop_read_intent()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            db_session.__exit__(exc_type, exc, tb)
        finally:
            _pony.pop_read_intent()

    def __call__(self, fn: F) -> F:
        """Decorate ``fn``: each call runs in its own replica session (see the class docstring)."""
        if not callable(fn):
            raise OptionError(f"@replica_session() decorates a function, got {type(fn).__name__}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise OptionError(
                f"replica_session() cannot decorate the generator function {fn.__qualname__}: its body runs "
                "after the call returns; open the session inside it (`with replica_session():`)"
            )
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                token = _pony.set_read_intent(self._intent(True))
                try:
                    return await fn(*args, **kwargs)
                finally:
                    _pony.reset_read_intent(token)

            return cast(F, run_async)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        return cast(F, run)
