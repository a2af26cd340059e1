"""Pony models declared again from a snapshot: mapped offline for a dialect, or bound to a live connection.

:func:`build` declares a snapshot's entities in a fresh Database with Pony's own classes and maps it
offline, so Pony computes every table, column, index and constraint name and SQL type of that state;
the result is a :class:`Mapped` that answers where an entity or attribute lives. Builds are cached by
(snapshot hash, dialect, server version): the planner asks for the same states many times, and a
mapped Database is never changed by its readers.
:func:`bind_historical` is the same model on a live connection whose transaction the caller owns (the
historical Database a ``RunPython`` receives).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import cached_property
from typing import Any

from pony.orm import Database

from .. import _pony
from ..security import KeyRing
from ._snapshot import _check, snapshot_hash, throwaway_database

__all__ = ["Mapped", "bind_historical", "build", "clear_cache"]

_CACHE_SIZE = 128
_cache: OrderedDict[tuple[str, str, Any], Mapped] = OrderedDict()
_cache_lock = threading.Lock()


class Mapped:
    """A snapshot's entities mapped for one dialect: the Database and where each thing lives in it."""

    def __init__(self, db: Database, dialect: str) -> None:
        self.db = db
        self.dialect = dialect

    def __repr__(self) -> str:
        return f"<Mapped {self.dialect} {len(self.db.entities)} entities>"

    @cached_property
    def schema(self) -> _pony.PhysicalSchema:
        """The physical schema Pony computed (tables, columns, indexes, foreign keys, DDL)."""
        return _pony.physical_schema(self.db)

    def _entity(self, entity: str) -> str:
        if entity not in self.db.entities:
            known = ", ".join(sorted(self.db.entities)) or "none"
            raise KeyError(f"entity {entity!r} is not in this snapshot (entities: {known})")
        return entity

    def entity_table(self, entity: str) -> str:
        """The table of ``entity`` (the root's table for a subclass)."""
        return _pony.mapping_table(self.db, self._entity(entity))

    def attr_columns(self, entity: str, attr: str) -> tuple[str, ...]:
        """The columns of a non-collection attribute in its entity's table; ``()`` for a Set."""
        return _pony.mapping_columns(self.db, self._entity(entity), attr)

    def link_table(self, entity: str, attr: str) -> str | None:
        """The many-to-many link table of a Set whose reverse is a Set, else None."""
        link = _pony.mapping_link(self.db, self._entity(entity), attr)
        return None if link is None else link[0]

    def link_columns(self, entity: str, attr: str) -> tuple[str, ...]:
        """That Set's columns in its link table, as Pony holds them (``()`` if it is not many-to-many).

        They are the columns Pony holds for the Set: ``Course.teachers`` -> ``("teacher",)``, the
        column that references the *other* side's entity.
        """
        link = _pony.mapping_link(self.db, self._entity(entity), attr)
        return () if link is None else link[1]

    def discriminator(self, entity: str) -> tuple[str, str, Any] | None:
        """(table, column, ``entity``'s value) when its hierarchy has a discriminator, else None."""
        return _pony.mapping_discriminator(self.db, self._entity(entity))


def build(snapshot: dict[str, Any], dialect: str, server_version: Any = None) -> Mapped:
    """The entities of ``snapshot`` declared in a fresh Database and mapped offline for ``dialect``.

    Cached by (snapshot hash, dialect, server version); callers must not change the returned Database.
    """
    if dialect not in _pony.DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}: expected one of {', '.join(_pony.DIALECTS)}")
    version = tuple(server_version) if isinstance(server_version, list) else server_version
    key = (snapshot_hash(snapshot), dialect, version)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    db = throwaway_database(_check(snapshot)["entities"])
    _pony.map_offline(db, dialect, version)
    mapped = Mapped(db, dialect)
    with _cache_lock:
        _cache[key] = mapped
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return mapped


def clear_cache() -> None:
    """Forget every cached build (tests that register types between builds)."""
    with _cache_lock:
        _cache.clear()


def bind_historical(
    snapshot: dict[str, Any],
    dialect: str,
    connection: Any,
    *,
    keys: KeyRing | None = None,
    on_disconnect: Callable[[], None] | None = None,
) -> Database:
    """The entities of ``snapshot`` in a fresh Database bound and mapped on a live DB-API ``connection``.

    The caller owns the connection's transaction: Pony's commit and rollback on it do nothing. Not cached
    (each one holds its connection). ``keys``: the application's key ring, for a model whose encrypted
    attributes are read or written (``ponykit.get_kit(app_db).keys``). ``on_disconnect``: run by
    ``db.disconnect()`` (closes a connection opened for these models alone).
    """
    db = throwaway_database(_check(snapshot)["entities"], keys)
    _pony.bind_to_connection(db, dialect, connection, on_disconnect)
    return db
