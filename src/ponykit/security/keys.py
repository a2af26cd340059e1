"""``KeyRing``: named master keys, one primary, and per-purpose subkeys derived with HKDF.

A master key never encrypts anything itself: every use derives its own 32-byte subkey with HKDF-SHA256
(``info = b"ponykit/v1/" + purpose``), so the AES-GCM key, the blind-index key and the cursor-signing key
of one master key are independent. Key ids name keys inside stored values, so they are restricted to
lowercase letters, digits and ``-`` (they appear in SQL ``LIKE`` patterns and must compare equal under
any collation).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import ConfigurationError, OptionError

__all__ = ["KEY_BYTES", "KeyRing"]

KEY_BYTES = 32
_KEY_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_SALT = b"ponykit-keyring-v1"


# A random 32-byte key has fewer than 16 distinct byte values with probability about 3e-17, and repeats
# a pattern of 16 bytes or fewer with probability about 2**-128: refusing those never refuses a real key,
# and catches what a blank or placeholder secret turns into (all zeros, "A"*43, b"password"*4).
MIN_DISTINCT_BYTES = 16
MAX_REFUSED_PERIOD = 16


def _decode_text(key_id: str, text: str) -> bytes:
    """Strict base64 (URL-safe or standard alphabet, padding optional), canonical spelling only."""
    bad = ConfigurationError(
        f"key {key_id!r} is not valid base64: give {KEY_BYTES} random bytes encoded with "
        "base64 (KeyRing.generate_key() makes one), with nothing before or after it"
    )
    if not text.isascii() or (set("-_") & set(text) and set("+/") & set(text)):
        raise bad
    standard = text.replace("-", "+").replace("_", "/")
    body = standard.rstrip("=")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise bad from None
    # Decoding ignores spare bits in the last character; only the one spelling of these bytes is a key
    # (with or without its padding), so junk or a typo is refused instead of silently becoming a key.
    canonical = base64.b64encode(raw).decode("ascii")
    if standard not in (canonical, canonical.rstrip("=")):
        raise bad
    return raw


def _check_strength(key_id: str, raw: bytes) -> None:
    """Refuse keys that cannot have come from a random generator (the message shows no key material)."""
    if len(set(raw)) < MIN_DISTINCT_BYTES:
        raise ConfigurationError(
            f"key {key_id!r} is not random: it has fewer than {MIN_DISTINCT_BYTES} distinct byte values "
            "(a blank secret, a passphrase or a placeholder?); use KeyRing.generate_key()"
        )
    for period in range(1, MAX_REFUSED_PERIOD + 1):
        if raw[period:] == raw[:-period]:
            raise ConfigurationError(
                f"key {key_id!r} is not random: it repeats a pattern of {period} bytes; "
                "use KeyRing.generate_key()"
            )


def _decode_key(key_id: str, material: str | bytes) -> bytes:
    if isinstance(material, (bytes, bytearray)):
        raw = bytes(material)
    elif isinstance(material, str):
        raw = _decode_text(key_id, material.strip())
    else:
        raise ConfigurationError(
            f"key {key_id!r} must be bytes or a base64 string, got {type(material).__name__}"
        )
    if len(raw) != KEY_BYTES:
        raise ConfigurationError(
            f"key {key_id!r} is {len(raw)} bytes long; ponykit keys are exactly {KEY_BYTES} bytes "
            "(KeyRing.generate_key() makes one)"
        )
    _check_strength(key_id, raw)
    return raw


def _check_key_id(key_id: object) -> str:
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        shown = repr(key_id) if isinstance(key_id, str) and len(key_id) <= 40 else type(key_id).__name__
        raise ConfigurationError(
            f"invalid key id {shown}: key ids are 1-32 characters of lowercase letters, digits and '-', "
            "starting with a letter or digit (for example 'k2025-01')"
        )
    return key_id


class KeyRing:
    """Master keys by id: ``primary`` encrypts, every key decrypts.

    ``KeyRing({"k2": key2, "k1": key1}, primary="k2")``; keys are 32 bytes, or base64 text of 32 bytes.
    Keys are validated here, with messages that name the key id but never show key material. The
    repr lists key ids only.
    """

    __slots__ = ("_aead", "_keys", "_lock", "_primary", "_subkeys")

    def __init__(self, keys: Mapping[str, str | bytes], primary: str | None = None) -> None:
        if not isinstance(keys, Mapping) or not keys:
            raise ConfigurationError(
                "a KeyRing needs at least one key: KeyRing({'k1': KeyRing.generate_key()}, primary='k1')"
            )
        decoded: dict[str, bytes] = {}
        for key_id, material in keys.items():
            decoded[_check_key_id(key_id)] = _decode_key(key_id, material)
        if primary is None:
            primary = next(iter(decoded))
        if primary not in decoded:
            raise ConfigurationError(
                f"primary key id {primary!r} is not in the key ring (ids: {', '.join(sorted(decoded))})"
            )
        if len(set(decoded.values())) != len(decoded):
            raise ConfigurationError("two key ids hold the same key material: every key must be distinct")
        self._keys = decoded
        self._primary = primary
        self._subkeys: dict[tuple[str, str], bytes] = {}
        self._aead: dict[str, AESGCM] = {}
        self._lock = threading.Lock()

    # -- construction ----------------------------------------------------------------------------------

    @staticmethod
    def generate_key() -> str:
        """A fresh random key (32 bytes from ``os.urandom``) as URL-safe base64 text."""
        return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")

    @classmethod
    def from_mapping(cls, keys: Mapping[str, str | bytes], primary: str | None = None) -> KeyRing:
        """A ring from ``{key_id: key}``; the primary is ``primary`` or else the first key given."""
        return cls(keys, primary)

    @classmethod
    def from_string(cls, text: str, *, source: str = "the key string") -> KeyRing:
        """Parse ``"k2:<base64>,k1:<base64>"``: comma-separated ``id:key`` pairs, the first is primary."""
        pairs: dict[str, str] = {}
        for index, item in enumerate(p.strip() for p in text.split(",")):
            if not item:
                continue
            key_id, sep, material = item.partition(":")
            if not sep:
                raise ConfigurationError(
                    f"{source}: entry {index + 1} is not of the form id:base64key "
                    "(expected 'k2:<base64>,k1:<base64>', the first being the primary)"
                )
            key_id = _check_key_id(key_id.strip())
            if key_id in pairs:
                raise ConfigurationError(f"{source}: key id {key_id!r} appears twice")
            pairs[key_id] = material
        if not pairs:
            raise ConfigurationError(f"{source} holds no keys (expected 'k2:<base64>,k1:<base64>')")
        return cls(pairs)

    @classmethod
    def from_env(cls, name: str = "PONYKIT_KEYS", environ: Mapping[str, str] | None = None) -> KeyRing:
        """A ring from the environment variable ``name``: ``"k2:<base64>,k1:<base64>"``, first is primary."""
        env = os.environ if environ is None else environ
        text = env.get(name)
        if not text:
            raise ConfigurationError(
                f"environment variable {name} is not set: set it to 'k1:<key>' with a key from "
                "`python -c 'import ponykit.security as s; print(s.KeyRing.generate_key())'`"
            )
        return cls.from_string(text, source=f"environment variable {name}")

    # -- access ----------------------------------------------------------------------------------------

    @property
    def primary(self) -> str:
        """The id of the key that encrypts new values."""
        return self._primary

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, the primary first."""
        return (self._primary, *(k for k in self._keys if k != self._primary))

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __repr__(self) -> str:
        return f"KeyRing(primary={self._primary!r}, key_ids={list(self.key_ids)!r})"

    def with_primary(self, key_id: str) -> KeyRing:
        """The same keys with another primary."""
        return KeyRing(self._keys, key_id)

    def subkey(self, purpose: str, key_id: str | None = None) -> bytes:
        """A 32-byte key for one ``purpose`` derived from master key ``key_id`` (default: the primary).

        HKDF-SHA256 with a fixed salt and ``info = b"ponykit/v1/" + purpose``; different purposes give
        independent keys. Unknown key ids raise KeyError.
        """
        key_id = self._primary if key_id is None else key_id
        cache_key = (key_id, purpose)
        found = self._subkeys.get(cache_key)
        if found is not None:
            return found
        master = self._keys[key_id]
        derived = HKDF(
            algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_SALT, info=b"ponykit/v1/" + purpose.encode()
        ).derive(master)
        with self._lock:
            self._subkeys[cache_key] = derived
        return derived

    def aead(self, key_id: str) -> AESGCM:
        """The AES-256-GCM cipher of key ``key_id`` (its ``"aead"`` subkey); KeyError if unknown."""
        cipher = self._aead.get(key_id)
        if cipher is None:
            cipher = AESGCM(self.subkey("aead", key_id))
            with self._lock:
                self._aead[key_id] = cipher
        return cipher

    def __reduce__(self) -> Any:
        raise OptionError("KeyRing objects are not picklable: key material must not travel in pickles")
