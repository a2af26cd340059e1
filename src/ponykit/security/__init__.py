"""Security: key rings and the encryption envelope, key rotation, sensitive-data declarations and masking.

* :class:`KeyRing`: named master keys, one primary, HKDF subkeys per purpose (``keys.subkey("cursor")``).
* :func:`rotate_keys`: re-encrypt an entity's encrypted attributes under the primary key, in batches.
* :func:`sensitive`, :func:`is_sensitive`, :func:`mask`: attributes left out of serialized output and
  masked in reprs (encrypted attribute types carry ``__ponykit_sensitive__ = True``).
* :class:`rls_context`, :func:`enable_rls`, :func:`setting_equals`, :func:`check_rls`: row-level security
  on PostgreSQL (settings applied in every transaction, policy DDL, a check of tables and role).
"""

from __future__ import annotations

from ..errors import RLSContextError
from ._rls_ddl import RLSProblem, RLSReport, SettingEquals, check_rls, enable_rls, setting_equals
from .keys import KeyRing
from .rls import current_rls_settings, rls_context
from .rotation import RotationInProgress, RotationProgress, rotate_keys
from .sensitive import is_sensitive, mask, sensitive, sensitive_names

__all__ = [
    "KeyRing",
    "RLSContextError",
    "RLSProblem",
    "RLSReport",
    "RotationInProgress",
    "RotationProgress",
    "SettingEquals",
    "check_rls",
    "current_rls_settings",
    "enable_rls",
    "is_sensitive",
    "mask",
    "rls_context",
    "rotate_keys",
    "sensitive",
    "sensitive_names",
    "setting_equals",
]
