"""The versioned envelope ponykit stores in an encrypted column, and the blind index of searchable values.

A stored value is ASCII text, one of::

    v1:<key id>:<base64(nonce || ciphertext || tag)>
    v1:<key id>:<blind index>:<base64(nonce || ciphertext || tag)>      (searchable attributes)

* AES-256-GCM with the ``"aead"`` subkey of master key ``<key id>``; a fresh 12-byte random nonce per
  value; the 16-byte tag at the end (as ``cryptography``'s ``AESGCM`` returns it).
* Associated data: the header text up to and including the last ``:`` (version, key id, blind index),
  a NUL byte, then the context ``"<root entity>.<attribute>"``. Changing the version, key id or blind
  index, or copying the value into another attribute or entity, makes authentication fail.
* Blind index: the first 16 bytes of HMAC-SHA256 with the ``"blind-index"`` subkey of the same master
  key over ``context || NUL || plaintext``, as 32 lowercase hex digits.
* Base64 is the standard alphabet with padding: no ``%``, ``_`` or ``:``, so SQL ``LIKE`` patterns over
  the header are exact.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os

from cryptography.exceptions import InvalidTag

from .keys import KeyRing

__all__ = [
    "BLIND_INDEX_HEX",
    "NONCE_BYTES",
    "VERSION",
    "EnvelopeError",
    "blind_index",
    "key_id_of",
    "lookup_patterns",
    "open_envelope",
    "primary_prefix_pattern",
    "seal",
]

VERSION = "v1"
NONCE_BYTES = 12
TAG_BYTES = 16
BLIND_INDEX_HEX = 32
_PREFIX = VERSION + ":"


class EnvelopeError(Exception):
    """Why a stored value does not open (a short reason that never contains data)."""


def blind_index(keys: KeyRing, key_id: str, plaintext: bytes, context: bytes) -> str:
    """The blind index of ``plaintext`` under master key ``key_id`` in ``context`` (32 hex digits)."""
    mac = hmac.digest(keys.subkey("blind-index", key_id), context + b"\x00" + plaintext, "sha256")
    return mac[: BLIND_INDEX_HEX // 2].hex()


def seal(
    keys: KeyRing,
    plaintext: bytes,
    context: bytes,
    *,
    searchable: bool = False,
    key_id: str | None = None,
    nonce: bytes | None = None,
) -> str:
    """Encrypt ``plaintext`` for ``context`` under ``key_id`` (default: the primary) into envelope text.

    ``nonce`` exists for known-answer tests only; leave it None so every value gets a fresh random one.
    """
    kid = keys.primary if key_id is None else key_id
    if searchable:
        header = f"{_PREFIX}{kid}:{blind_index(keys, kid, plaintext, context)}:"
    else:
        header = f"{_PREFIX}{kid}:"
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    sealed = keys.aead(kid).encrypt(nonce, plaintext, header.encode("ascii") + b"\x00" + context)
    return header + base64.b64encode(nonce + sealed).decode("ascii")


def _split(stored: str) -> tuple[str, str, str | None, str]:
    if not isinstance(stored, str) or not stored.startswith(_PREFIX):
        raise EnvelopeError("not a ponykit v1 envelope")
    parts = stored.split(":")
    if len(parts) == 3:
        return parts[0], parts[1], None, parts[2]
    if len(parts) == 4:
        return parts[0], parts[1], parts[2], parts[3]
    raise EnvelopeError("malformed envelope")


def key_id_of(stored: str) -> str:
    """The key id a stored value was encrypted under (EnvelopeError if it is no envelope)."""
    return _split(stored)[1]


def open_envelope(keys: KeyRing, stored: str, context: bytes) -> bytes:
    """Decrypt and authenticate envelope text for ``context``; EnvelopeError gives a data-free reason."""
    _version, kid, _index, body = _split(stored)
    if kid not in keys:
        raise EnvelopeError("encrypted under a key id that is not in the key ring")
    try:
        raw = base64.b64decode(body.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise EnvelopeError("malformed envelope body") from None
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise EnvelopeError("truncated envelope")
    header = stored[: len(stored) - len(body)]
    try:
        return keys.aead(kid).decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], header.encode("ascii") + b"\x00" + context
        )
    except InvalidTag:
        raise EnvelopeError(
            "authentication failed (tampered, truncated, moved from another attribute, or wrong key)"
        ) from None


def lookup_patterns(keys: KeyRing, plaintext: bytes, context: bytes) -> list[str]:
    """SQL ``LIKE`` patterns matching the stored envelopes of ``plaintext``, one per key of the ring."""
    return [f"{_PREFIX}{kid}:{blind_index(keys, kid, plaintext, context)}:%" for kid in keys.key_ids]


def primary_prefix_pattern(keys: KeyRing, *, searchable: bool) -> str:
    """A ``LIKE`` pattern matching exactly the envelopes already in their final form under the primary."""
    if searchable:
        return f"{_PREFIX}{keys.primary}:{'_' * BLIND_INDEX_HEX}:%"
    return f"{_PREFIX}{keys.primary}:%"
