"""``Timestamped``: ``created_at`` and ``updated_at`` kept right by the ORM and by the bulk writes.

Where each value comes from:

* ``Entity(...)``: both set to one UTC instant when the object is made (unless given);
* a flush that updates the object: ``updated_at`` set to the time of the flush (unless the code changed
  it itself), never moved backwards if the clock is;
* ``bulk_insert``: both set to one instant per batch in rows that do not give them;
* ``bulk_update`` / ``bulk_upsert``: ``updated_at`` set to one instant per batch in rows that do not give
  it (also with ``fields=`` / ``update=``); a row ``bulk_upsert`` inserts gets ``created_at`` from the
  attribute's default, an existing row keeps its ``created_at``.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from pony.orm import Required

from .. import _pony
from ..bulk._extensions import BulkExtension, Change, register_extension
from ..errors import ConfigurationError
from ..types import AwareDatetime
from ._base import EntityMixin

__all__ = ["Timestamped", "utc_now"]

_UTC = _dt.timezone.utc


def utc_now() -> _dt.datetime:
    """The current time as an aware UTC datetime (what the timestamp mixins store)."""
    return _dt.datetime.now(_UTC)


class _BatchClock(threading.local):
    # The instant of the bulk batch being encoded: bulk_upsert's rows get updated_at from prepare_update and
    # created_at (on insert) from the attribute's default, called while the batch is encoded; both must be
    # the same instant (else a new row's updated_at would precede its created_at).
    now: _dt.datetime | None = None


_batch = _BatchClock()


def _default_now() -> _dt.datetime:
    """The timestamps' default: the current bulk batch's instant, else now."""
    return _batch.now or utc_now()


def option(entity: Any, name: str, default: str) -> str:
    """The value of a mixin option (a class attribute such as ``created_at_name``); ConfigurationError
    unless it is a valid attribute name."""
    value = getattr(entity, name, default)
    if not isinstance(value, str) or not value.isidentifier() or value.startswith("_"):
        raise ConfigurationError(
            f"{entity.__name__}.{name} must be an attribute name (a str such as {default!r} that does not "
            f"start with '_'), got {type(value).__name__} {value!r}"
        )
    return value


class Timestamped(EntityMixin):
    """``created_at`` and ``updated_at`` (``Required(AwareDatetime)``, UTC-aware) on the entity.

    ``created_at`` is set when a row is created and never changed by ponykit afterwards; ``updated_at``
    when it is created and at every update: by Pony's flush, and by ``bulk_insert``, ``bulk_update``
    and ``bulk_upsert`` (one timestamp per batch). A value the code gives itself wins. Rename the
    attributes with ``created_at_name = "created"`` / ``updated_at_name = "modified"`` in the class body.
    """

    _ponykit_options_: ClassVar[tuple[str, ...]] = ("created_at_name", "updated_at_name")

    @classmethod
    def _ponykit_attributes_(cls, entity: Any) -> dict[str, Any]:
        created = option(entity, "created_at_name", "created_at")
        updated = option(entity, "updated_at_name", "updated_at")
        if created == updated:
            raise ConfigurationError(
                f"{entity.__name__}: created_at_name and updated_at_name are both {created!r}; give the "
                "Timestamped mixin two different attribute names"
            )
        # Declared in this order: Pony orders attributes by creation, so columns come out created, updated.
        return {
            created: Required(AwareDatetime, default=_default_now, precision=6),
            updated: Required(AwareDatetime, default=_default_now, precision=6),
        }

    @classmethod
    def _ponykit_setup_(cls, entity: Any) -> None:
        created = option(entity, "created_at_name", "created_at")
        updated = option(entity, "updated_at_name", "updated_at")
        entity.__init__ = _same_instant_init(entity.__init__, created, updated)
        _pony.add_save_hook(entity, "before", _touch_hook(updated))
        register_extension(entity, TimestampExtension(created, updated))


def _same_instant_init(original: Callable[..., None], created: str, updated: str) -> Callable[..., None]:
    """``Entity(...)`` with both timestamps set to one instant (each attribute's default would call the
    clock once each, a microsecond apart, and ``created_at == updated_at`` is how "never edited" reads)."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if created not in kwargs or updated not in kwargs:
            now = utc_now()
            kwargs.setdefault(created, now)
            kwargs.setdefault(updated, now)
        original(self, *args, **kwargs)

    __init__.__doc__ = original.__doc__
    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    return __init__


def _touch_hook(updated: str) -> _pony.SaveHook:
    def touch(obj: Any, op: str) -> None:
        if op != "update":
            return
        if _pony.is_modified(obj, updated):
            return  # the code set updated_at itself: keep its value
        current = _pony.loaded_value_by_name(obj, updated)  # read without making Pony check it at UPDATE
        now = utc_now()
        if isinstance(current, _dt.datetime) and current > now:
            now = current  # a clock stepped back: updated_at never goes backwards
        setattr(obj, updated, now)

    return touch


class TimestampExtension(BulkExtension):
    """The timestamps of ``bulk_insert`` / ``bulk_update`` / ``bulk_upsert`` rows: one instant per batch,
    in new dicts (the caller's rows are never changed)."""

    def __init__(self, created: str, updated: str) -> None:
        self.created = created
        self.updated = updated

    def prepare_insert(self, entity: Any, batch: list[Any]) -> list[Any]:
        """Both timestamps in each row that does not give them."""
        now = utc_now()
        created, updated = self.created, self.updated
        stamps = {created: now, updated: now}
        try:
            return [{**stamps, **row} for row in batch]  # a value the row gives wins: it comes last
        except TypeError:
            pass  # a row that is not a mapping: the loop below keeps it as it is, for bulk_insert's error
        out = []
        for row in batch:
            if type(row) is dict:
                has_c = created in row
                has_u = updated in row
                if not has_c and not has_u:
                    row = {**row, created: now, updated: now}
                elif not (has_c and has_u):
                    row = {**row, (updated if has_c else created): now}
            out.append(row)  # not a dict: bulk_insert names the row in its error
        return out

    def prepare_update(self, entity: Any, batch: list[Any]) -> list[Any]:
        """``updated_at`` in each row that does not give it (and the batch's instant for a row
        ``bulk_upsert`` inserts, until the batch is written)."""
        now = _batch.now = utc_now()
        updated = self.updated
        return [{**r, updated: now} if type(r) is dict and updated not in r else r for r in batch]

    def before_change(self, change: Change) -> None:
        """The batch is encoded: defaults take the current time again."""
        _batch.now = None

    def update_names(self, entity: Any) -> tuple[str, ...]:
        """``updated_at`` is written by every update, also one that names its ``fields``."""
        return (self.updated,)
