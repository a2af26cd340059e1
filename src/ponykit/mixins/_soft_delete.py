"""``SoftDeletable``: ``deleted_at``, ``obj.soft_delete()`` / ``restore()``, ``Entity.live()`` /
``Entity.deleted()``, and ``bulk_delete(..., soft=True)``.

A soft-deleted row stays in its table with ``deleted_at`` set. Pony knows nothing of it: ``select``,
``get``, ``Entity[pk]`` and relation (``Set``) loads still return such rows. Query through ``live()``, or
turn on the PostgreSQL row-level security policy of :func:`~ponykit.mixins.soft_delete_policy_sql` to
hide them from every read path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pony.orm import Optional

from .. import _pony
from .._sql import dialect_of
from ..bulk._extensions import BulkExtension, register_extension
from ..errors import ConfigurationError
from ..types import AwareDatetime
from ._base import EntityMixin
from ._timestamps import option, utc_now

__all__ = ["SoftDeletable", "soft_delete_name"]


class SoftDeletable(EntityMixin):
    """``deleted_at`` (``Optional(AwareDatetime)``, None while the row is live) on the entity.

    ``obj.soft_delete()`` sets it, ``obj.restore()`` clears it; ``Entity.live()`` and
    ``Entity.deleted()`` are Pony queries (chain ``.filter``, ``.order_by``, ``.page`` ... on them);
    ``bulk_delete(Entity, keys_or_query, soft=True)`` marks the live rows among those given. Rename the
    attribute with ``deleted_at_name = "removed"`` in the class body.
    """

    _ponykit_options_: ClassVar[tuple[str, ...]] = ("deleted_at_name",)

    @classmethod
    def _ponykit_attributes_(cls, entity: Any) -> dict[str, Any]:
        return {option(entity, "deleted_at_name", "deleted_at"): Optional(AwareDatetime, precision=6)}

    @classmethod
    def _ponykit_setup_(cls, entity: Any) -> None:
        name = option(entity, "deleted_at_name", "deleted_at")
        entity._ponykit_soft_delete_ = name
        register_extension(entity, SoftDeleteExtension(name))

    def soft_delete(self) -> bool:
        """Mark the object deleted now (written at the next flush); False if it already was (its
        ``deleted_at`` is then kept)."""
        name = soft_delete_name(type(self))
        if getattr(self, name) is not None:
            return False
        setattr(self, name, utc_now())
        return True

    def restore(self) -> bool:
        """Make a soft-deleted object live again; False if it was live."""
        name = soft_delete_name(type(self))
        if getattr(self, name) is None:
            return False
        setattr(self, name, None)
        return True

    @property
    def is_deleted(self) -> bool:
        """True once the object is soft-deleted."""
        return getattr(self, soft_delete_name(type(self))) is not None

    @classmethod
    def live(cls) -> Any:
        """A Pony query of the objects that are not soft-deleted (``deleted_at IS NULL``)."""
        name = soft_delete_name(cls)
        return cls.select(lambda e: getattr(e, name) is None)  # type: ignore[attr-defined]

    @classmethod
    def deleted(cls) -> Any:
        """A Pony query of the soft-deleted objects."""
        name = soft_delete_name(cls)
        return cls.select(lambda e: getattr(e, name) is not None)  # type: ignore[attr-defined]


def soft_delete_name(entity: Any) -> str:
    """The name of the soft-delete attribute of a SoftDeletable entity."""
    name: str = entity._ponykit_soft_delete_
    return name


class SoftDeleteExtension(BulkExtension):
    """``bulk_delete(..., soft=True)``: the rows that mark the live rows among the keys deleted."""

    def __init__(self, name: str) -> None:
        self.name = name

    def soft_delete_rows(self, entity: Any, keys: Sequence[Any]) -> list[Any] | None:
        """One ``{pk..., deleted_at: now}`` row per key whose row is live (read under a row lock on the
        server backends, so a concurrent soft delete is not marked twice)."""
        info = _pony.entity_info(entity)
        live = live_keys(entity, self.name, list(dict.fromkeys(keys)))
        now = utc_now()
        if len(info.pk_attrs) == 1:
            pk = info.pk_attrs[0]
            return [{pk: k, self.name: now} for k in live]
        if len(info.pk_attrs) != len(info.pk_columns):
            raise ConfigurationError(
                f"bulk_delete({entity.__name__}, soft=True) does not support a primary key whose parts span "
                "several columns; soft-delete the objects with obj.soft_delete()"
            )
        return [{**dict(zip(info.pk_attrs, k, strict=True)), self.name: now} for k in live]


def live_keys(entity: Any, name: str, keys: list[Any]) -> list[Any]:
    """The keys (as bound: scalars, tuples for a composite key) of the rows among ``keys`` that are live."""
    db = _pony.database_of(entity)
    dialect = dialect_of(db)
    info = _pony.entity_info(entity)
    column = _pony.attr_info(_pony.entity_attribute(entity, name)).columns[0]
    npk = len(info.pk_columns)
    lock = "" if dialect.name == "sqlite" else " FOR UPDATE"
    per = max(1, dialect.max_params // npk)
    found: list[Any] = []
    for start in range(0, len(keys), per):
        chunk = keys[start : start + per]
        sql = dialect.select_by_keys(info.table, info.pk_columns, info.pk_columns, len(chunk))
        sql += f" AND {dialect.q(column)} IS NULL{lock}"
        args = tuple(chunk) if npk == 1 else tuple(v for k in chunk for v in k)
        rows = _pony.execute_in_session(db, sql, args).fetchall()
        found.extend(r[0] if npk == 1 else tuple(r) for r in rows)
    return found
