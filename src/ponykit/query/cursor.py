"""Signed keyset cursors: opaque, URL-safe, bound to one query and sort order, tamper-evident.

Wire format (then URL-safe base64 without padding)::

    version (1 byte, 0x01) | payload (orjson list of the sort values) | HMAC-SHA256 tag (32 bytes)

The tag covers the version, a fingerprint of the query (entity, SQL text of the unpaged query, sort
specification) and the payload, so a cursor of another query, another sort order or another key fails
verification like a tampered one. Values are the column values Pony binds (after the attribute's
converter), tagged as in the cache codec (:mod:`ponykit.query._codec`) where JSON has no native
type. Cursors are signed, not encrypted: sorting by a sensitive or encrypted attribute is refused
(see :mod:`ponykit.query.keyset`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

from ..errors import ConfigurationError, InvalidCursor
from ._codec import from_plain, to_plain

__all__ = ["Signer", "decode_cursor", "encode_cursor", "fingerprint"]

VERSION = 1
_TAG_LEN = 32
_INVALID = (
    "invalid cursor: it was tampered with, truncated, or issued for another query, sort order or key; "
    "start again from the first page"
)


def fingerprint(*parts: str) -> bytes:
    """A digest binding a cursor to the query and sort specification it was issued for."""
    digest = hashlib.sha256(b"ponykit-cursor\x00")
    for part in parts:
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()


def _encode_value(value: Any) -> Any:
    try:
        return to_plain(value)
    except TypeError:
        raise ConfigurationError(
            f"cannot put a {type(value).__name__} sort value into a keyset cursor; sort by attributes of "
            "type int, float, str, bool, bytes, date/time, Decimal or UUID"
        ) from None


class Signer:
    """HMAC-SHA256 with one key, keyed once: each tag copies the keyed state instead of re-keying.

    Pass one to :func:`encode_cursor` and :func:`decode_cursor` in place of the key when many cursors
    use the same key (the key schedule and OpenSSL's digest lookup are most of a short HMAC).
    """

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def tag(self, data: bytes) -> bytes:
        """The HMAC-SHA256 tag of ``data``."""
        mac = self._keyed.copy()
        mac.update(data)
        return mac.digest()


def _tag(key: bytes | Signer, data: bytes) -> bytes:
    if isinstance(key, Signer):
        return key.tag(data)
    return hmac.digest(key, data, "sha256")


def encode_cursor(values: list[Any], key: bytes | Signer, bound_to: bytes) -> str:
    """Sign ``values`` (the sort values of one row) for the query fingerprint ``bound_to``."""
    payload = orjson.dumps([_encode_value(v) for v in values])
    head = bytes([VERSION]) + payload
    tag = _tag(key, bound_to + head)
    return base64.urlsafe_b64encode(head + tag).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: Any, key: bytes | Signer, bound_to: bytes, width: int) -> list[Any]:
    """Verify a cursor and return its ``width`` sort values; raise :class:`InvalidCursor` otherwise."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > 8192:
        raise InvalidCursor(_INVALID)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCursor(_INVALID) from None
    # Base64 has spare bits in its last character: only the canonical spelling is accepted.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != cursor:
        raise InvalidCursor(_INVALID)
    if len(raw) < 1 + _TAG_LEN + 2 or raw[0] != VERSION:
        raise InvalidCursor(_INVALID)
    head, tag = raw[:-_TAG_LEN], raw[-_TAG_LEN:]
    expected = _tag(key, bound_to + head)
    if not hmac.compare_digest(tag, expected):
        raise InvalidCursor(_INVALID)
    try:
        items = orjson.loads(head[1:])
        if not isinstance(items, list) or len(items) != width:
            raise ValueError("width")
        return [from_plain(item) for item in items]
    except (ValueError, TypeError, IndexError, KeyError, orjson.JSONDecodeError):
        raise InvalidCursor(_INVALID) from None
