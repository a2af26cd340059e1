"""Security: key rings and the encryption envelope, key rotation, sensitive-data declarations and masking.

* :class:`KeyRing`: named master keys, one primary, HKDF subkeys per purpose (``keys.subkey("cursor")``).
* :func:`rotate_keys`: re-encrypt an entity's encrypted attributes under the primary key, in batches.
* :func:`sensitive`, :func:`is_sensitive`, :func:`mask`: attributes left out of serialized output and
  masked in reprs (encrypted attribute types carry ``__ponykit_sensitive__ = True``).
* :func:`policy`, :func:`scoped`, :func:`can`, :class:`Scoped`: row policies as Pony predicates, applied in
  the SQL on every backend; :func:`requires`, :func:`acting_as`, :func:`current_principal`: who is acting
  and what they may call (:class:`~ponykit.errors.PermissionDenied` otherwise).
* :class:`rls_context`, :func:`enable_rls`, :func:`setting_equals`, :func:`check_rls`: row-level security
  on PostgreSQL (settings applied in every transaction, policy DDL, a check of tables and role).
"""

from __future__ import annotations

from ..errors import PermissionDenied, RLSContextError
from ._principal import (
    acting_as,
    current_principal,
    permission_checker,
    principal_source,
    requires,
    reset_principal,
    set_principal,
)
from ._rls_ddl import RLSProblem, RLSReport, SettingEquals, check_rls, enable_rls, setting_equals
from .keys import KeyRing
from .policies import Policy, Scoped, can, policy, registered_policies, scoped
from .rls import current_rls_settings, rls_context
from .rotation import RotationInProgress, RotationProgress, rotate_keys
from .sensitive import is_sensitive, mask, sensitive, sensitive_names

__all__ = [
    "KeyRing",
    "PermissionDenied",
    "Policy",
    "RLSContextError",
    "RLSProblem",
    "RLSReport",
    "RotationInProgress",
    "RotationProgress",
    "Scoped",
    "SettingEquals",
    "acting_as",
    "can",
    "check_rls",
    "current_principal",
    "current_rls_settings",
    "enable_rls",
    "is_sensitive",
    "mask",
    "permission_checker",
    "policy",
    "principal_source",
    "registered_policies",
    "requires",
    "reset_principal",
    "rls_context",
    "rotate_keys",
    "scoped",
    "sensitive",
    "sensitive_names",
    "set_principal",
    "setting_equals",
]
