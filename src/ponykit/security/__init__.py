"""Security: key rings and the encryption envelope, key rotation, sensitive-data declarations and masking.

* :class:`KeyRing`: named master keys, one primary, HKDF subkeys per purpose (``keys.subkey("cursor")``).
* :func:`rotate_keys`: re-encrypt an entity's encrypted attributes under the primary key, in batches.
* :func:`sensitive`, :func:`is_sensitive`, :func:`mask`: attributes left out of serialized output and
  masked in reprs (encrypted attribute types carry ``__ponykit_sensitive__ = True``).
"""

from __future__ import annotations

from .keys import KeyRing
from .rotation import RotationInProgress, RotationProgress, rotate_keys
from .sensitive import is_sensitive, mask, sensitive, sensitive_names

__all__ = [
    "KeyRing",
    "RotationInProgress",
    "RotationProgress",
    "is_sensitive",
    "mask",
    "rotate_keys",
    "sensitive",
    "sensitive_names",
]
