"""The snapshot: the declared entities of a Database as canonical JSON (format 1).

``snapshot(db)`` reads the entities through the door (``_pony.entity_specs``). Pony fills in some
options while it maps (default column and table names, ``cascade_delete``, ``nullable`` of optional
non-string attributes), so the canonical form is read from a *mapped* Database: a mapped ``db`` is read
as it is; an unmapped one is declared again in a throwaway Database, mapped offline on its own dialect
(SQLite when unbound) and read from there, so ``db`` itself is never bound nor mapped by a snapshot.

:func:`throwaway_database` is that throwaway Database, with ponykit's attribute types installed before
Pony maps it so that registered types (Enum, AwareDatetime, encrypted types ...) map to the DDL the
application's attached Database gets; ``_models.build`` uses it too.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from pony.orm import Database

from .. import _kit, _pony, types
from ..errors import MigrationError
from ..security import KeyRing

__all__ = [
    "FORMAT",
    "dumps",
    "empty_snapshot",
    "install_types",
    "load_snapshot",
    "snapshot",
    "snapshot_hash",
    "throwaway_database",
]

#: The snapshot format this version writes and reads.
FORMAT = 1

_ENTITY_KEYS = (
    "attrs",
    "bases",
    "composite_indexes",
    "composite_keys",
    "discriminator",
    "primary_key",
    "table",
)
_ATTR_KEYS = ("args", "kind", "name", "options", "type")


def empty_snapshot() -> dict[str, Any]:
    """The snapshot of a model with no entities (the state before the first migration)."""
    return {"format": FORMAT, "entities": {}}


def dumps(snap: dict[str, Any]) -> str:
    """The canonical text of a snapshot: sorted keys, two-space indent, UTF-8 kept, one final newline."""
    return json.dumps(snap, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def snapshot_hash(snap: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` of the compact canonical JSON of ``snap`` (equal snapshots, equal hashes)."""
    text = json.dumps(snap, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _problem(where: str, expected: str, given: Any) -> MigrationError:
    return MigrationError(
        f"invalid snapshot: {where}: expected {expected}, got {given!r}; regenerate schema.lock.json "
        "(python -m ponykit migrate make) or fix the file by hand"
    )


def _check(snap: Any) -> dict[str, Any]:
    if not isinstance(snap, dict):
        raise _problem("the document", "a JSON object", type(snap).__name__)
    if snap.get("format") != FORMAT:
        raise _problem("'format'", f"{FORMAT} (this ponykit reads format {FORMAT} only)", snap.get("format"))
    entities = snap.get("entities")
    if not isinstance(entities, dict):
        raise _problem("'entities'", "an object of entity specs by name", entities)
    for name, spec in entities.items():
        if not isinstance(spec, dict) or sorted(spec) != sorted(_ENTITY_KEYS):
            raise _problem(f"entity {name!r}", f"an object with the keys {', '.join(_ENTITY_KEYS)}", spec)
        for attr in spec["attrs"]:
            if not isinstance(attr, dict) or sorted(attr) != sorted(_ATTR_KEYS):
                raise _problem(f"an attribute of entity {name!r}", f"keys {', '.join(_ATTR_KEYS)}", attr)
    return snap


def load_snapshot(text: str) -> dict[str, Any]:
    """The snapshot in ``text`` (as :func:`dumps` writes it), checked: MigrationError if it is not one."""
    try:
        snap = json.loads(text)
    except ValueError as exc:
        raise MigrationError(f"invalid snapshot: not JSON ({exc}); regenerate schema.lock.json") from None
    return _check(snap)


def install_types(db: Database, keys: KeyRing | None = None) -> None:
    """Install ponykit's attribute types on a bound, unmapped throwaway ``db``: what changes its mapping.

    That is ``types.install`` (the converters of registered types, Enum and encrypted types, the encrypted
    types' lookup index renderer) on a Kit of its own. The Kit is hung on ``db`` (the encrypted converter
    looks it up) but ``db`` does not count as attached: ``on_commit()`` never picks it, and no commit hook,
    cache or listener is installed. Encrypted attributes need a key ring to be declared: without ``keys``
    a random one is used, fine for DDL; a Database whose encrypted values are read or written (a
    historical model in ``RunPython``) needs the application's ``keys``.
    """
    if _kit.find_kit(db) is not None:
        return
    kit = _kit.Kit(db)
    kit.keys = keys if keys is not None else KeyRing({"ddl-only": os.urandom(32)})
    _kit.register(kit)
    _kit.forget(db)
    types.install(kit)


class _ThrowawayDatabase(Database):  # type: ignore[misc]
    """A Database whose ponykit types are installed right before Pony maps it (after the bind)."""

    ponykit_keys: KeyRing | None = None

    def generate_mapping(self, *args: Any, **kwargs: Any) -> Any:
        install_types(self, self.ponykit_keys)
        return super().generate_mapping(*args, **kwargs)


def throwaway_database(entities: dict[str, Any], keys: KeyRing | None = None) -> Database:
    """A fresh, unbound Database with ``entities`` (snapshot specs) declared on it.

    Bind and map it with ``_pony.map_offline`` or ``_pony.bind_to_connection``: ponykit's types are
    installed just before the mapping (``keys``: see :func:`install_types`).
    """
    db = _ThrowawayDatabase()
    db.ponykit_keys = keys
    _pony.declare_entities(db, entities)
    return db


def snapshot(db: Database) -> dict[str, Any]:
    """The snapshot of ``db``'s entities (mapped or not; ``db`` is left as it is).

    Deterministic: the same model gives an equal dict, and :func:`dumps` the same bytes.
    """
    if _pony.is_mapped(db):
        return {"format": FORMAT, "entities": _pony.entity_specs(db)}
    dialect = _pony.dialect(db) if _pony.is_bound(db) else "sqlite"
    copy_db = throwaway_database(_pony.entity_specs(db))
    _pony.map_offline(copy_db, dialect)
    return {"format": FORMAT, "entities": _pony.entity_specs(copy_db)}
