"""``Versioned``: an integer ``version`` counted up by every change, ``obj.etag``, expected versions.

Where the version changes:

* ``Entity(...)``: 1 (the attribute's default);
* a flush that updates the object: ``stored + 1``. The hook reads the version, so Pony's optimistic
  check puts ``AND version = <stored>`` in the UPDATE's WHERE: a concurrent change raises Pony's
  ``OptimisticCheckError``, as before;
* ``bulk_update`` and the update of ``bulk_upsert``: ``version = version + 1`` computed by the database
  in the same statement.

An expected version: ``obj.expect_version(v)`` (an int or an ETag), or a new value assigned to
``obj.version`` before the flush, or ``version`` in a ``bulk_update`` / ``bulk_upsert`` row, must equal
the stored version, else :class:`~ponykit.errors.VersionConflict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from pony.orm import Required, select

from .. import _pony
from ..bulk._extensions import BulkExtension, register_extension
from ..errors import BulkWriteError, VersionConflict
from ._base import EntityMixin
from ._timestamps import option

__all__ = ["Versioned", "etag_of", "version_name"]

_CHUNK = 500  # keys per version read: under every backend's parameter limit


class Versioned(EntityMixin):
    """``version`` (``Required(int)``, 1 for a new row) counted up by every update, ORM or bulk.

    ``obj.etag`` is a strong HTTP ETag (``'"Order:42:3"'``: entity, primary key, version), the same in
    every process. ``obj.expect_version(v)`` raises :class:`~ponykit.errors.VersionConflict` unless the
    object's version is ``v`` (an int, or an ETag from an ``If-Match`` header); assigning
    ``obj.version = v`` does the same check at the flush. Rename the attribute with
    ``version_name = "revision"`` in the class body.
    """

    _ponykit_options_: ClassVar[tuple[str, ...]] = ("version_name",)

    @classmethod
    def _ponykit_attributes_(cls, entity: Any) -> dict[str, Any]:
        return {option(entity, "version_name", "version"): Required(int, default=1, min=1)}

    @classmethod
    def _ponykit_setup_(cls, entity: Any) -> None:
        name = option(entity, "version_name", "version")
        entity._ponykit_version_ = name
        _pony.add_save_hook(entity, "before", _bump_hook(name))
        register_extension(entity, VersionExtension(name))

    @property
    def etag(self) -> str:
        """A strong ETag of this version of the object: ``'"Order:42:3"'`` (quotes included)."""
        return etag_of(self)

    def expect_version(self, expected: int | str) -> None:
        """Raise :class:`~ponykit.errors.VersionConflict` unless the object is at version ``expected``
        (an int, or an ETag as :attr:`etag` gives, ``W/`` prefix allowed). The check is repeated by the
        database at the flush (``AND version = ...`` in the UPDATE), so a change made by someone else in
        between raises Pony's ``OptimisticCheckError``."""
        name = version_name(type(self))
        current = getattr(self, name)  # read: Pony's UPDATE then checks the stored version too
        if isinstance(expected, str):
            tag = expected.strip()
            tag = tag[2:] if tag.startswith("W/") else tag
            if tag == etag_of(self):
                return
            given = _version_in(tag, etag_of(self))
            raise VersionConflict(
                f"{type(self).__name__} {_key_text(self)}: the ETag given "
                + ("names another object" if given is None else f"is of version {given}")
                + f" and the object is at version {current}; read the object again and retry",
                entity=type(self).__name__,
                expected=given,
                actual=current,
            )
        if isinstance(expected, bool) or not isinstance(expected, int):
            raise BulkWriteError(  # a ValidationError (ValueError) naming what was given
                f"{type(self).__name__}.expect_version(): expected an int version or an ETag str, got "
                f"{type(expected).__name__}",
                entity=type(self).__name__,
                attribute=name,
            )
        if expected != current:
            raise VersionConflict(
                f"{type(self).__name__} {_key_text(self)}: expected version {expected}, the object is at "
                f"version {current}; read the object again and retry",
                entity=type(self).__name__,
                expected=expected,
                actual=current,
            )


def version_name(entity: Any) -> str:
    """The name of the version attribute of a Versioned entity."""
    name: str = entity._ponykit_version_
    return name


def etag_of(obj: Any) -> str:
    """``'"Entity:key:version"'``: the key's parts percent-encoded and joined by ``,``."""
    version = getattr(obj, version_name(type(obj)))
    return f'"{type(obj).__name__}:{_key_part(obj)}:{version}"'


def _key_part(obj: Any) -> str:
    return ",".join(quote(str(v), safe="") for v in _pony.raw_primary_key(obj))


def _key_text(obj: Any) -> str:
    return "with primary key " + _key_part(obj)


def _version_in(tag: str, own: str) -> int | None:
    """The version of an ETag of the same object as ``own``, else None."""
    prefix = own.rsplit(":", 1)[0] + ":"
    if tag.startswith(prefix) and tag.endswith('"') and tag[len(prefix) : -1].isdigit():
        return int(tag[len(prefix) : -1])
    return None


def _bump_hook(name: str) -> _pony.SaveHook:
    def bump(obj: Any, op: str) -> None:
        if op != "update":
            return
        stored = _pony.stored_value(obj, name)
        current = getattr(obj, name)  # read: Pony's UPDATE puts "AND version = <stored>" in its WHERE
        if current != stored:  # the code assigned an expected version
            raise VersionConflict(
                f"{type(obj).__name__} {_key_text(obj)}: {name} was set to {current} (an expected "
                f"version), but the object is at version {stored}; read the object again and retry, and "
                f"do not assign {name} otherwise (ponykit counts it up)",
                entity=type(obj).__name__,
                expected=current,
                actual=stored,
            )
        setattr(obj, name, stored + 1)

    return bump


class VersionExtension(BulkExtension):
    """``version = version + 1`` in every bulk UPDATE; a row's ``version`` is an expected version."""

    def __init__(self, name: str) -> None:
        self.name = name

    def set_exprs(self, entity: Any) -> dict[str, str]:
        """The database counts the version up in the UPDATE itself."""
        return {self.name: "{col} + 1"}

    def prepare_update(self, entity: Any, batch: list[Any]) -> list[Any]:
        """Rows that give ``version`` (an expected version): checked against the stored versions, read
        under a row lock on the server backends; any mismatch raises VersionConflict, else each such row
        sets ``version`` to ``expected + 1``."""
        name = self.name
        given = [i for i, r in enumerate(batch) if type(r) is dict and name in r]
        if not given:
            return batch
        info = _pony.entity_info(entity)
        pk_names = info.pk_attrs
        keys = []
        for i in given:
            row = batch[i]
            expected = row[name]
            if isinstance(expected, bool) or not isinstance(expected, int):
                raise BulkWriteError(
                    f"bulk write of {entity.__name__}: the row at position {i} of its batch gives {name} "
                    f"(an expected version) as a {type(expected).__name__}; give an int, or leave {name} "
                    "out to update the row whatever its version",
                    entity=entity.__name__,
                    attribute=name,
                )
            missing = [p for p in pk_names if p not in row]
            if missing:
                raise BulkWriteError(
                    f"bulk write of {entity.__name__}: the row at position {i} of its batch gives {name} "
                    f"(an expected version) but not the primary key ({', '.join(missing)}); an expected "
                    f"version needs the key of the row it is checked against, or leave {name} out",
                    entity=entity.__name__,
                    attribute=name,
                )
            keys.append(tuple(row[p] for p in pk_names))
        stored = _stored_versions(entity, pk_names, name, keys)
        conflicts = [
            (i, batch[i][name], stored.get(k))
            for i, k in zip(given, keys, strict=True)
            if stored.get(k) != batch[i][name]
        ]
        if conflicts:
            first = conflicts[0]
            shown = "; ".join(
                f"position {i}: expected {e}, stored {'no row' if s is None else s}"
                for i, e, s in conflicts[:5]
            )
            more = f" (and {len(conflicts) - 5} more)" if len(conflicts) > 5 else ""
            raise VersionConflict(
                f"bulk write of {entity.__name__}: {len(conflicts)} row(s) of the batch expected a version "
                f"that is not the stored one ({shown}{more}); nothing of the call was written. Read the rows "
                f"again and retry, or leave {name} out of the rows to update them whatever their version",
                entity=entity.__name__,
                expected=first[1],
                actual=first[2],
                rows=[i for i, _, _ in conflicts],
            )
        out = list(batch)
        for i in given:
            out[i] = {**batch[i], name: batch[i][name] + 1}
        return out


def _stored_versions(
    entity: Any, pk_names: Sequence[str], name: str, keys: list[tuple[Any, ...]]
) -> dict[tuple[Any, ...], int]:
    """The stored version of each key's row (missing rows absent), read with FOR UPDATE."""
    db = _pony.database_of(entity)
    lock = _pony.dialect(db) != "sqlite"  # SQLite locks the whole database for the writer anyway
    found: dict[tuple[Any, ...], int] = {}
    simple = (
        len(pk_names) == 1 and _pony.attr_info(_pony.entity_attribute(entity, pk_names[0])).kind == "value"
    )
    if simple:
        pk = pk_names[0]
        values = list(dict.fromkeys(k[0] for k in keys))
        for start in range(0, len(values), _CHUNK):
            chunk = values[start : start + _CHUNK]
            query = select((getattr(e, pk), getattr(e, name)) for e in entity if getattr(e, pk) in chunk)
            for key, version in query.for_update() if lock else query:
                found[(key,)] = version
        return found
    for key in dict.fromkeys(keys):  # a composite or reference key: one locked read per row
        # The stored value, not an object: an object loaded in the session may show an older version.
        query = select(getattr(e, name) for e in entity)
        for part, value in zip(pk_names, key, strict=True):
            query = query.where(lambda e: getattr(e, part) == value)  # noqa: B023 - read by .where() now
        version = (query.for_update() if lock else query).first()
        if version is not None:
            found[key] = version
    return found
