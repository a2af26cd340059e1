"""What a value must look like to be accepted by an attribute: limits read from Pony's converters.

The test factories and hypothesis strategies (``ponykit.testing``) build values that Pony and the
database accept; they need the limits Pony enforces (``min``/``max``, ``size``/``unsigned``, ``max_len``,
Decimal precision and scale) and the entity's unique keys. Pony keeps these on its converters and on
private entity fields, so they are read here, once per attribute, into a frozen :class:`ValueLimits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._typing import Attribute, Entity

__all__ = ["ValueLimits", "unique_keys", "value_limits"]


@dataclass(frozen=True)
class ValueLimits:
    """The limits Pony enforces on an attribute's values (None where there is no limit).

    ``min``/``max`` are the declared bounds, narrowed for ``int`` by the column's size (``size=``,
    ``unsigned=``; 32-bit signed when neither is given). ``max_len`` is the longest ``str`` Pony accepts.
    ``precision``/``scale`` are those of a Decimal column.
    """

    min: Any = None
    max: Any = None
    max_len: int | None = None
    precision: int | None = None
    scale: int | None = None


def value_limits(attr: Attribute) -> ValueLimits:
    """The limits of a mapped attribute's values (an unmapped or relation attribute has none)."""
    converters = attr.converters
    if not converters or attr.reverse is not None:
        return ValueLimits()
    converter = converters[0]
    if attr.py_type is int:
        # Pony's IntConverter stores ``min or lowest``, which loses ``min=0``: the declared options first,
        # narrowed to the column's own range (Pony checks both; 32-bit signed unless size=/unsigned=).
        size = getattr(converter, "size", None) or 32
        unsigned = bool(getattr(converter, "unsigned", False))
        lowest = 0 if unsigned else -(2 ** (size - 1))
        highest = 2**size - 1 if unsigned else 2 ** (size - 1) - 1
        declared_low, declared_high = attr.kwargs.get("min"), attr.kwargs.get("max")
        low = lowest if declared_low is None else max(declared_low, lowest)
        high = highest if declared_high is None else min(declared_high, highest)
    else:
        # float and Decimal converters keep the declared bounds, converted to their type.
        low, high = getattr(converter, "min_val", None), getattr(converter, "max_val", None)
    precision = getattr(converter, "precision", None)
    scale = getattr(converter, "scale", None)
    max_len = getattr(converter, "max_len", None)
    return ValueLimits(
        min=low,
        max=high,
        max_len=max_len if isinstance(max_len, int) else None,
        precision=precision if isinstance(precision, int) and isinstance(scale, int) else None,
        scale=scale if isinstance(precision, int) and isinstance(scale, int) else None,
    )


def unique_keys(entity: Entity) -> tuple[tuple[Attribute, ...], ...]:
    """The unique keys of ``entity`` other than its primary key: ``unique=True`` attributes (one-attribute
    keys) and ``composite_key(...)`` declarations, inherited ones included."""
    return tuple(tuple(key) for key in entity._keys_)
