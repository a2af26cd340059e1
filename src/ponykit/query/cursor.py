"""Signed keyset cursors: opaque, URL-safe, bound to one query and sort order, tamper-evident.

Wire format (then URL-safe base64 without padding)::

    version (1 byte, 0x01) | payload (orjson list of the sort values) | HMAC-SHA256 tag (32 bytes)

The tag covers the version, a fingerprint of the query (entity, SQL text of the unpaged query, sort
specification and, unless switched off, a digest of the values of the query's parameters) and the
payload, so a cursor of another query, other parameter values, another sort order or another key fails
verification like a tampered one. Parameter values are hashed into the tag, never written into the
cursor. A cursor is signed with the first key given and verified under any of them (the key ring's
primary first), so cursors stay valid while a key ring is rotated. Values are the column values Pony
binds (after the attribute's converter), tagged as in the cache codec (:mod:`ponykit.query._plain`)
where JSON has no native type. Cursors are signed, not encrypted: sorting by a sensitive or encrypted
attribute is refused (see :mod:`ponykit.query.keyset`).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import ConfigurationError, InvalidCursor
from ._plain import from_plain, to_plain

__all__ = ["Signer", "bind_arguments", "decode_cursor", "encode_cursor", "fingerprint"]

VERSION = 1
_TAG_LEN = 32
_MAX_LEN = 8192  # characters: far above any sort key, far below anything that costs to look at
_BLOCK = 64  # SHA-256's block size, the length HMAC pads its key to
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
# URL-safe base64 is standard base64 with '-' and '_' for '+' and '/'.
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
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


_ARGUMENTS = b"ponykit-cursor-arguments\x00"


def _plain_argument(value: Any) -> Any:
    try:
        return to_plain(value)
    except TypeError:
        pass
    kind = type(value)
    adapted = getattr(value, "adapted", None)  # psycopg2's adapters (Binary, Json...) wrap the value
    if adapted is not None:
        return {"~a": [kind.__qualname__, _plain_argument(adapted)]}
    methods: tuple[Any, Any] = (kind.__str__, kind.__repr__)
    if methods == (object.__str__, object.__repr__):
        # Its text would be an address: different in every process, so no cursor could be reused.
        raise ConfigurationError(
            f"paginate_keyset() cannot bind a query parameter of type {kind.__module__}.{kind.__qualname__} "
            "into its cursors: use a parameter of a plain type, or pass bind_parameters=False (a cursor is "
            "then accepted whatever the parameter values are)"
        )
    return {"~?": [f"{kind.__module__}.{kind.__qualname__}", str(value)]}


def bind_arguments(bound_to: bytes, arguments: Sequence[Any]) -> bytes:
    """``bound_to`` (a :func:`fingerprint`) narrowed to one set of query parameter values.

    Only a digest of the values goes into the cursor's tag, so a cursor never reveals them.
    """
    if not arguments:
        return bound_to
    try:
        plain = [to_plain(value) for value in arguments]
    except TypeError:
        plain = [_plain_argument(value) for value in arguments]
    return hashlib.sha256(_ARGUMENTS + bound_to + orjson.dumps(plain)).digest()


def _encode_value(value: Any) -> Any:
    try:
        return to_plain(value)
    except TypeError:
        raise ConfigurationError(
            f"cannot put a {type(value).__name__} sort value into a keyset cursor; sort by attributes of "
            "type int, float, str, bool, bytes, date/time, Decimal or UUID"
        ) from None


class Signer:
    """HMAC-SHA256 with one key, keyed once: each tag copies two prepared SHA-256 states.

    Pass one to :func:`encode_cursor` and :func:`decode_cursor` in place of the key when many cursors
    use the same key. HMAC (RFC 2104) is ``H(key ^ opad || H(key ^ ipad || data))``; hashing the two
    padded keys once and copying those states per tag gives the same tag as :func:`hmac.digest`
    (the tests compare them) at under half its cost for a cursor-sized message: the key schedule,
    OpenSSL's digest lookup and ``hmac.HMAC``'s Python-level copy were most of a short HMAC.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def tag(self, data: bytes) -> bytes:
        """The HMAC-SHA256 tag of ``data``."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _tag(key: bytes | Signer, data: bytes) -> bytes:
    if isinstance(key, Signer):
        return key.tag(data)
    return hmac.digest(key, data, "sha256")


def encode_cursor(values: list[Any], key: bytes | Signer, bound_to: bytes) -> str:
    """Sign ``values`` (the sort values of one row) for the query fingerprint ``bound_to``."""
    head = bytes([VERSION]) + orjson.dumps([_encode_value(v) for v in values])
    data = head + _tag(key, bound_to + head)
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode("ascii")


def decode_cursor(
    cursor: Any, key: bytes | Signer | Sequence[bytes | Signer], bound_to: bytes, width: int
) -> list[Any]:
    """Verify a cursor and return its ``width`` sort values; raise :class:`InvalidCursor` otherwise.

    ``key`` is one key or several (a key ring's, primary first): the cursor is accepted when it was
    signed with any of them. The first is tried first, so a cursor signed with the primary costs
    one HMAC; only a cursor that does not match it (an older key's, or a forged one) costs more.
    """
    if not isinstance(cursor, str) or not 0 < len(cursor) <= _MAX_LEN or not cursor.isascii():
        raise InvalidCursor(_INVALID)
    text = cursor.encode("ascii")
    try:
        raw = binascii.a2b_base64(text.translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4))
    except binascii.Error:
        raise InvalidCursor(_INVALID) from None
    # Only the canonical spelling is accepted: decoding skips characters outside the alphabet, lets
    # '+' and '/' through (the translation above leaves them) and ignores the spare bits of the last
    # character; encoding again gives the input back only when it had none of those.
    if binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).rstrip(b"=") != text:
        raise InvalidCursor(_INVALID)
    if len(raw) < 1 + _TAG_LEN + 2 or raw[0] != VERSION:
        raise InvalidCursor(_INVALID)
    head, tag = raw[:-_TAG_LEN], raw[-_TAG_LEN:]
    data = bound_to + head
    keys = (key,) if isinstance(key, (bytes, bytearray, Signer)) else key
    for candidate in keys:
        if hmac.compare_digest(tag, _tag(candidate, data)):
            break
    else:
        raise InvalidCursor(_INVALID)
    try:
        items = orjson.loads(head[1:])
        if type(items) is not list or len(items) != width:
            raise ValueError("width")  # caught below: becomes InvalidCursor
        # Tagged values are dicts; plain ints, floats, strings, booleans and None come back as they are.
        return [from_plain(item) if type(item) is dict else item for item in items]
    except (ValueError, TypeError, IndexError, KeyError, orjson.JSONDecodeError):
        raise InvalidCursor(_INVALID) from None
