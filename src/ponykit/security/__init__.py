"""Security: key rings and the encryption envelope, key rotation, sensitive-data declarations and masking.

* :class:`KeyRing`: named master keys, one primary, HKDF subkeys per purpose (``keys.subkey("cursor")``).
* :func:`rotate_keys`: re-encrypt an entity's encrypted attributes under the primary key, in batches.
* :func:`sensitive`, :func:`is_sensitive`, :func:`mask`: attributes left out of serialized output and
  masked in reprs (encrypted attribute types carry ``__ponykit_sensitive__ = True``).
* :func:`policy`, :func:`scoped`, :func:`can`, :class:`Scoped`: row policies as Pony predicates, applied in
  the SQL on every backend; :func:`requires`, :func:`acting_as`, :func:`current_principal`: who is acting
  and what they may call (:class:`~ponykit.errors.PermissionDenied` otherwise).
"""

from __future__ import annotations

from ..errors import PermissionDenied
from ._principal import (
    acting_as,
    current_principal,
    permission_checker,
    principal_source,
    requires,
    reset_principal,
    set_principal,
)
from .keys import KeyRing
from .policies import Policy, Scoped, can, policy, registered_policies, scoped
from .rotation import RotationInProgress, RotationProgress, rotate_keys
from .sensitive import is_sensitive, mask, sensitive, sensitive_names

__all__ = [
    "KeyRing",
    "PermissionDenied",
    "Policy",
    "RotationInProgress",
    "RotationProgress",
    "Scoped",
    "acting_as",
    "can",
    "current_principal",
    "is_sensitive",
    "mask",
    "permission_checker",
    "policy",
    "principal_source",
    "registered_policies",
    "requires",
    "reset_principal",
    "rotate_keys",
    "scoped",
    "sensitive",
    "sensitive_names",
    "set_principal",
]
