"""Where the audit history lives: one ``PonykitAudit`` entity (table ``ponykit_audit``) per Database.

One table for every audited entity of a Database (as django-auditlog's ``LogEntry``), not a shadow
table per entity (as django-simple-history): a new audited entity or attribute needs no migration of
the history, a record's ``changes`` name the attributes that changed, and a transaction's records of
all entities are one query away (``tx``). The table is declared by ponykit on the user's Database when
the first ``Audited`` entity is declared, so ``generate_mapping(create_tables=True)`` (or a migration)
creates it like the user's own tables. Its unique key ``(entity, key, tx)`` is the "one record per row
per transaction" rule, enforced by the database for both modes, and the index ``history()`` reads.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pony.orm import Optional, PrimaryKey, Required, composite_key

from .. import _pony
from ..types import AwareDatetime
from ._audit_plan import AuditPlan

__all__ = ["HISTORY_TABLE", "AuditRecord", "audit_entity", "declare_history", "to_record"]

HISTORY_TABLE = "ponykit_audit"

_entities: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def declare_history(db: Any) -> Any:
    """Declare the history entity on ``db`` (once; later calls return it)."""
    with _lock:
        entity = _entities.get(db)
        if entity is not None:
            return entity
        # A class statement, not type(): Pony's composite_key() declares the key in the namespace of
        # the class being defined (its caller's frame); called after type() it is silently lost.

        class PonykitAudit(db.Entity):  # type: ignore[misc]
            """One audit record: a row changed by one transaction (see ponykit.mixins.Audited)."""

            _table_ = HISTORY_TABLE
            id = PrimaryKey(int, auto=True, size=64)
            entity = Required(str, 100)
            key = Required(str, 255)
            op = Required(str, 6)
            changes = Required(str)  # JSON text {attribute: [old, new]}
            actor = Optional(str, 255, nullable=True)
            at = Required(AwareDatetime)
            tx = Required(str, 64)
            # Unique: the one-record-per-row-per-transaction rule; entity and key first: history() finds
            # an object's records through this index.
            composite_key(entity, key, tx)

        entity = PonykitAudit
        _entities[db] = entity
        return entity


def audit_entity(db: Any) -> Any:
    """The history entity (``PonykitAudit``, table ``ponykit_audit``) of ``db``; query it like any
    entity: ``select(r for r in pk.mixins.audit_entity(db) if r.actor == "alice")``. None when no
    ``Audited`` entity was declared on ``db``."""
    return _entities.get(db)


@dataclass(frozen=True)
class AuditRecord:
    """One history record, as :meth:`Audited.history` returns it.

    ``changes`` maps each changed attribute to ``(old, new)`` Python values (``None`` for the missing
    side of an insert or a delete; ``"***"`` for both sides of a sensitive or encrypted attribute);
    ``key`` is the row's primary key; ``at`` the UTC time of the commit (of the transaction's start
    in trigger mode); ``tx`` names the transaction (equal for all its records).
    """

    id: int
    entity: str
    key: Any
    op: str
    changes: dict[str, tuple[Any, Any]]
    actor: str | None
    at: datetime
    tx: str


def to_record(plan: AuditPlan, row: Any) -> AuditRecord:
    """The :class:`AuditRecord` of a stored history object."""
    fields = {f.name: f for f in plan.fields}
    raw: dict[str, Any] = orjson.loads(row.changes)
    changes: dict[str, tuple[Any, Any]] = {}
    for name, (old, new) in raw.items():
        field = fields.get(name)
        changes[name] = (old, new) if field is None else (field.load(old), field.load(new))
    return AuditRecord(
        id=row.id,
        entity=row.entity,
        key=plan.load_key(row.key),
        op=row.op,
        changes=changes,
        actor=row.actor,
        at=row.at,
        tx=row.tx,
    )


def is_history_entity(entity: Any) -> bool:
    """True for the history entity of its Database (never audited itself)."""
    return _entities.get(_pony.database_of(entity)) is entity
