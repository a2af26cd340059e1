"""Security: key rings and the encryption envelope, key rotation (sensitive-data masking joins here).

* :class:`KeyRing`: named master keys, one primary, HKDF subkeys per purpose (``keys.subkey("cursor")``).
* :func:`rotate_keys`: re-encrypt an entity's encrypted attributes under the primary key, in batches.
"""

from __future__ import annotations

from .keys import KeyRing
from .rotation import RotationProgress, rotate_keys

# The serialization area adds ``from .sensitive import mask, sensitive, is_sensitive`` here (and to
# __all__); encrypted attribute types carry ``__ponykit_sensitive__ = True`` for it.

__all__ = ["KeyRing", "RotationProgress", "rotate_keys"]
