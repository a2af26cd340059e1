"""Read-your-writes pins: the WAL position of one's last commit on each primary, and its token form.

After a transaction that wrote commits on a primary with replicas, the router records the commit's WAL
position (PostgreSQL ``pg_current_wal_lsn()``, an int; MariaDB ``@@gtid_binlog_pos``, a :class:`Gtid`) in
the current *pin scope*; a replica serves a session of that scope
only once it has replayed that far. A scope is a small mutable box held in a ``ContextVar``: the box is
shared (not copied) by everything that inherits the context, so a commit in a ``run_in_session`` worker
thread or in an asyncio task pins the request that started it. Without an explicit scope, the first
commit creates one in the current context (a thread's own context, for plain threads).

A token (``current_pin()``) carries the pins to the next request in a cookie or header; ``use_pin(token)``
opens a scope seeded with it. Tokens are ``pk1.<payload>`` or, with a secret, ``pk1.<payload>.<mac>``
(HMAC-SHA256); the payload maps each primary's key to a ``pg_lsn`` text (PostgreSQL) or to a list of
``[domain, server_id, seq_no]`` triples (MariaDB GTID). A token that does not parse, is too long, or
whose MAC does not match is ignored (logged without its text): a pin is a freshness hint, and a forged
one can only make a reader wait for, or skip, the replicas, never read another user's data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ._gtid import Gtid, Position

__all__ = [
    "PinScope",
    "current_pin",
    "format_lsn",
    "parse_lsn",
    "pin_for",
    "record_pin",
    "token_pins",
    "use_pin",
]

log = logging.getLogger("ponykit.binding")

_PREFIX = "pk1"
_MAX_TOKEN = 2048
_MAX_KEYS = 32
_KEY_RE = re.compile(r"[0-9a-f]{12}")
_LSN_RE = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_MAC_BYTES = 16


def parse_lsn(text: str) -> int:
    """``"16/B374D848"`` (PostgreSQL's ``pg_lsn``) -> the WAL position as one integer."""
    match = _LSN_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a PostgreSQL WAL position (pg_lsn): {text[:40]!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    """The ``pg_lsn`` text of a WAL position (:func:`parse_lsn` backwards)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class PinScope:
    """The pins of one scope (a request, a thread): primary key -> WAL position (an int for PostgreSQL, a
    :class:`Gtid` for MariaDB), only ever growing."""

    __slots__ = ("_lock", "pins")

    def __init__(self, pins: Mapping[str, Position] | None = None) -> None:
        self.pins: dict[str, Position] = dict(pins or {})
        self._lock = threading.Lock()

    def add(self, key: str, lsn: Position) -> None:
        """Keep ``lsn`` for ``key`` unless a later position is already kept."""
        with self._lock:
            kept = self.pins.get(key, -1)
            if isinstance(lsn, Gtid) and isinstance(kept, Gtid):
                self.pins[key] = kept.merged(lsn)  # GTIDs of several domains: the highest of each
            elif lsn > kept:
                self.pins[key] = lsn

    def __repr__(self) -> str:
        return f"<PinScope {len(self.pins)} primaries>"


_scope: ContextVar[PinScope | None] = ContextVar("ponykit_pins", default=None)


def pin_for(key: str) -> Position | None:
    """The pinned WAL position for the primary named ``key`` in the current scope, or None."""
    scope = _scope.get()
    return None if scope is None else scope.pins.get(key)


def record_pin(key: str, lsn: Position) -> None:
    """Pin the current scope to ``lsn`` on the primary ``key`` (a scope is created if there is none)."""
    scope = _scope.get()
    if scope is None:
        scope = PinScope()
        _scope.set(scope)
    scope.add(key, lsn)


def _secret_bytes(secret: str | bytes | None) -> bytes | None:
    if secret is None:
        return None
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def _mac(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, f"{_PREFIX}.{payload}".encode("ascii"), hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def current_pin(*, secret: str | bytes | None = None) -> str | None:
    """The pins of the current scope as an opaque token (for a cookie or header), or None when unpinned.

    With ``secret`` the token is signed (HMAC-SHA256), and :func:`use_pin` with the same secret accepts
    only tokens signed with it. The token names no host or database: primaries are named by a hash.
    """
    scope = _scope.get()
    if scope is None or not scope.pins:
        return None
    with scope._lock:
        body = {key: _token_value(lsn) for key, lsn in sorted(scope.pins.items())}
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode("ascii")
    payload = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    key = _secret_bytes(secret)
    return f"{_PREFIX}.{payload}" if key is None else f"{_PREFIX}.{payload}.{_mac(key, payload)}"


def _token_value(lsn: Position) -> Any:
    # PostgreSQL: the pg_lsn text, as tokens always held; MariaDB: [[domain, server_id, seq_no], ...].
    return format_lsn(lsn) if isinstance(lsn, int) else [list(t) for t in lsn.triples]


def _parse_value(value: Any) -> Position:
    if isinstance(value, str):
        return parse_lsn(value)
    if not isinstance(value, list) or not value:
        raise ValueError("neither a pg_lsn text nor a list of GTID triples")
    triples = []
    for triple in value:
        if not (
            isinstance(triple, list)
            and len(triple) == 3
            and all(isinstance(n, int) and not isinstance(n, bool) for n in triple)
        ):
            raise ValueError("a GTID triple is [domain, server_id, seq_no]")
        triples.append((triple[0], triple[1], triple[2]))
    return Gtid(tuple(triples))


def token_pins(token: str | None, *, secret: str | bytes | None = None) -> dict[str, Position] | None:
    """The pins a token carries, or None when it is absent, malformed, or (with ``secret``) not signed
    with that secret. Never raises for any text."""
    if not token or not isinstance(token, str) or len(token) > _MAX_TOKEN:
        return None
    parts = token.split(".")
    key = _secret_bytes(secret)
    if parts[0] != _PREFIX or len(parts) not in (2, 3) or (key is not None and len(parts) != 3):
        return None
    payload = parts[1]
    if key is not None and not hmac.compare_digest(_mac(key, payload), parts[2]):
        return None
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        body = json.loads(raw.decode("ascii"))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or len(body) > _MAX_KEYS:
        return None
    pins: dict[str, Position] = {}
    for name, value in body.items():
        if not (isinstance(name, str) and _KEY_RE.fullmatch(name)):
            return None
        try:
            pins[name] = _parse_value(value)
        except ValueError:
            return None
    return pins


@contextmanager
def use_pin(token: str | None = None, *, secret: str | bytes | None = None) -> Iterator[PinScope]:
    """A pin scope for the block (a request), seeded with the pins of ``token`` (from :func:`current_pin`).

    Commits in the block (in this thread, in ``run_in_session`` calls, in tasks started from it) add to
    the scope; :func:`current_pin` inside it gives the token to send back. A token that does not parse
    or whose signature does not match ``secret`` is ignored with a warning (logger ``ponykit.binding``,
    without the token's text). The scope that was current before comes back after the block.
    """
    pins = token_pins(token, secret=secret) if token else None
    if token and pins is None:
        log.warning("ponykit: ignored a read-your-writes pin token that is malformed or not signed right")
    scope = PinScope(pins)
    reset = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(reset)
