"""Read replicas in the web integrations: GET/HEAD requests as replica sessions, pins in a cookie/header.

``install(app, replicas=ReplicaReads())`` (FastAPI) and ``Pony(app, replicas=ReplicaReads())`` (Flask):

* each request runs in a pin scope (``ponykit.binding.use_pin``) seeded with the pin token the client
  sent back (cookie ``ponykit_pin`` or header ``X-Ponykit-Pin``), so a user's reads after their own
  write see it, also when the write was in the previous request;
* GET and HEAD requests (``reads=True``) run with a read intent: their sessions use a replica of a
  Database bound with ``replicas=``, and a write in them raises ``ReadOnlySessionError`` before any SQL
  (``on_write="primary"``: moves to the primary instead);
* a response to a request that committed a write carries the new token (cookie and/or header).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextvars import Token
from dataclasses import dataclass
from typing import Any

from .. import _pony
from ..binding import current_pin, use_pin
from ..errors import OptionError

__all__ = ["READ_METHODS", "ReplicaReads", "RequestPin", "replica_reads"]

READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class ReplicaReads:
    """How a web app uses read replicas (``install(app, replicas=...)``, ``Pony(app, replicas=...)``).

    ``reads``: GET and HEAD requests run as replica sessions. ``cookie`` / ``header``: where the
    read-your-writes pin token travels (None: not there); both are read from the request and set on a
    response after a write. ``secret``: sign the tokens (HMAC), and accept only signed ones.
    ``max_age``: the cookie's lifetime in seconds (a pin is useless once replicas replayed it).
    ``on_write``: what a write in a GET request does: ``"raise"`` or ``"primary"``.
    """

    reads: bool = True
    cookie: str | None = "ponykit_pin"
    header: str | None = "X-Ponykit-Pin"
    secret: str | bytes | None = None
    max_age: int = 60
    on_write: str = "raise"

    def __post_init__(self) -> None:
        if self.on_write not in ("raise", "primary"):
            raise OptionError(f"ReplicaReads(on_write=...) takes 'raise' or 'primary', got {self.on_write!r}")
        if isinstance(self.max_age, bool) or not isinstance(self.max_age, int) or self.max_age < 1:
            raise OptionError(f"ReplicaReads(max_age=...) takes whole seconds >= 1, got {self.max_age!r}")


def replica_reads(value: ReplicaReads | bool | None) -> ReplicaReads | None:
    """The integrations' ``replicas=`` option: True means ``ReplicaReads()``; False/None: off."""
    if value is None or value is False:
        return None
    if value is True:
        return ReplicaReads()
    if not isinstance(value, ReplicaReads):
        raise OptionError(f"replicas= takes True or a ReplicaReads(...), got {type(value).__name__}")
    return value


class RequestPin:
    """The pin scope and read intent of one request: :meth:`enter` at its start, :meth:`exit` at its end."""

    def __init__(self, options: ReplicaReads, method: str, cookies: Any, headers: Any) -> None:
        self.options = options
        token = None
        if options.header is not None:
            token = headers.get(options.header)
        if token is None and options.cookie is not None:
            token = cookies.get(options.cookie)
        self.received = token if isinstance(token, str) else None
        self.read = options.reads and method.upper() in READ_METHODS
        self._scope: AbstractContextManager[Any] | None = None
        self._intent: Token[Any] | None = None

    def enter(self) -> None:
        """Open the request's pin scope (seeded with the client's token) and set its read intent."""
        self._scope = use_pin(self.received, secret=self.options.secret)
        self._scope.__enter__()
        if self.read:
            intent = _pony.ReadIntent("a GET request", self.options.on_write)  # type: ignore[arg-type]
            self._intent = _pony.set_read_intent(intent)

    def token(self) -> str | None:
        """The token to send back: set when the request committed a write (None otherwise)."""
        token = current_pin(secret=self.options.secret)
        return None if token is None or token == self.received else token

    def exit(self) -> None:
        """Close the scope and intent :meth:`enter` opened."""
        if self._intent is not None:
            _pony.reset_read_intent(self._intent)
            self._intent = None
        if self._scope is not None:
            scope, self._scope = self._scope, None
            scope.__exit__(None, None, None)
