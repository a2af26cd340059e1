"""Entity mixins: timestamps, soft delete, a version column and an audit history, on every write path.

``class User(db.Entity, pk.mixins.Timestamped, pk.mixins.Versioned): ...`` puts real attributes on the
entity (Pony ignores attributes declared on a plain base class; the mixins add them to the entity class
itself, see :class:`~ponykit.mixins._base.EntityMixin`), keeps them right when Pony flushes an object,
and also when ponykit's bulk functions write rows (``bulk_insert``, ``bulk_update``, ``bulk_upsert``,
``bulk_delete``), which is where the mixins of other ORMs fall short. See docs/mixins.md.
"""

from __future__ import annotations

from ..errors import VersionConflict
from ._audit import Audited
from ._audit_journal import audit_actor
from ._audit_store import AuditRecord, audit_entity
from ._audit_triggers import audit_trigger_sql, install_audit_triggers
from ._base import EntityMixin
from ._live_sql import (
    SHOW_DELETED_SETTING,
    create_live_unique_indexes,
    live_unique_sql,
    showing_deleted,
    soft_delete_policy_sql,
    unique_live,
)
from ._soft_delete import SoftDeletable
from ._timestamps import Timestamped, utc_now
from ._version import Versioned

__all__ = [
    "SHOW_DELETED_SETTING",
    "AuditRecord",
    "Audited",
    "EntityMixin",
    "SoftDeletable",
    "Timestamped",
    "VersionConflict",
    "Versioned",
    "audit_actor",
    "audit_entity",
    "audit_trigger_sql",
    "create_live_unique_indexes",
    "install_audit_triggers",
    "live_unique_sql",
    "showing_deleted",
    "soft_delete_policy_sql",
    "unique_live",
    "utc_now",
]
