"""What the audit trail (``ponykit.mixins.Audited``) reads of Pony objects and raw rows.

An object's column values as last read from the database (before a flush writes it) and as it holds
them now, by attribute name, with a reference given as the flat tuple of the related object's primary
key; and how to decode one raw column value read by a ponykit statement, as Pony would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._typing import Attribute

__all__ = ["audited_attributes", "column_decoder", "current_values", "stored_values"]

_MISSING = object()


def audited_attributes(entity: Any) -> tuple[Attribute, ...]:
    """The attributes of ``entity`` stored in its own columns (no collection, no column-less reverse
    side of a one-to-one, no primary-key part, no discriminator), in declaration order."""
    return tuple(
        a
        for a in entity._attrs_
        if not a.is_collection and a.columns and a.pk_offset is None and not a.is_discriminator
    )


def _plain(value: Any) -> Any:
    # A reference is given as the related object's flat primary key (the columns that store it).
    if value is not None and hasattr(value, "_get_raw_pkval_"):
        return tuple(value._get_raw_pkval_())
    return value


def stored_values(obj: Any, attrs: tuple[Attribute, ...]) -> dict[str, Any]:
    """The values of ``attrs`` that ``obj`` last read from (or wrote to) the database, by name; an
    attribute it has not read (a lazy one) is left out."""
    dbvals = obj._dbvals_
    found: dict[str, Any] = {}
    for attr in attrs:
        value = dbvals.get(attr, _MISSING)
        if value is _MISSING:
            continue
        if value is not None and attr.reverse is None and len(attr.converters) == 1:
            # Pony keeps the stored form (a custom type's naive UTC datetime, a ciphertext): compare the
            # value the object held, as current_values gives it. No object: nothing to track or report.
            value = attr.converters[0].dbval2val(value, None)
        found[attr.name] = _plain(value)
    return found


def current_values(obj: Any, attrs: tuple[Attribute, ...]) -> dict[str, Any]:
    """The values of ``attrs`` that ``obj`` holds now (what a flush writes), by name; an attribute it
    has neither read nor set is left out."""
    vals = obj._vals_
    found: dict[str, Any] = {}
    for attr in attrs:
        value = vals.get(attr, _MISSING)
        if value is not _MISSING:
            found[attr.name] = _plain(value)
    return found


def column_decoder(attr: Attribute, index: int = 0) -> Callable[[Any], Any]:
    """A function from the raw value of column ``index`` of ``attr`` (as the driver returns it) to the
    Python value Pony would give (for a reference: the value of that part of the related key)."""
    converter = attr.converters[index]
    sql2py, dbval2val = converter.sql2py, converter.dbval2val

    def decode(raw: Any) -> Any:
        return None if raw is None else dbval2val(sql2py(raw), None)

    return decode
