"""The audit plan of one entity: which attributes the history records, and their JSON forms.

One plan per audited entity class, made when its first change is recorded (the entity is mapped by
then). Every path turns values into the same JSON forms, so records made by the ORM hooks, by the bulk
extension and by the database triggers compare equal: a value is dumped by ponykit's serializer
(``ponykit.serialization``: a Decimal as exact text, a datetime as ISO 8601, an enum as its value ...),
a reference as the related row's key (a list for a composite key), and the key of a row as the JSON text
PostgreSQL's ``jsonb`` prints (``1``, ``"a"``, ``[1, 2]``), which is what the triggers write.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from .. import _pony
from ..security.sensitive import is_sensitive
from ..security.sensitive import on_change as on_sensitivity_change
from ..serialization._codec import raw_dumper, value_dumper, value_loader

__all__ = ["MASK", "AuditField", "AuditPlan", "Layout", "audit_plan", "key_text", "same_value"]

#: What a record holds instead of a value of a sensitive or encrypted attribute.
MASK = "***"

Dump = Callable[[Any], Any]


def _nullable(dump: Dump) -> Dump:
    return lambda v: None if v is None else dump(v)


@dataclass(frozen=True)
class AuditField:
    """One recorded attribute: its columns, and how a raw column value / a Python value becomes JSON."""

    name: str
    attr: Any
    columns: tuple[str, ...]
    decoders: tuple[Callable[[Any], Any], ...]  # raw column value -> Python value (of that key part)
    dumpers: tuple[Dump, ...]  # Python value (of that part) -> JSON form
    loaders: tuple[Dump, ...]  # JSON form -> Python value (for history())
    sensitive: bool
    # A one-column value of a hot type: raw column value -> JSON form without Pony's decoding steps
    # (the serializer's query fast path), for bulk batches of 10,000s of rows.
    fast: Dump | None = None

    def json_of(self, value: Any) -> Any:
        """The JSON form of the attribute's Python value (a reference: its flat key tuple)."""
        if value is None:
            return None
        if len(self.dumpers) == 1:
            part = value[0] if isinstance(value, tuple) else value
            return self.dumpers[0](part)
        return [dump(v) for dump, v in zip(self.dumpers, value, strict=True)]

    def json_of_raw(self, raw: Sequence[Any]) -> Any:
        """The JSON form of the attribute's raw column values (as the driver returns them)."""
        if len(self.decoders) == 1:
            value = raw[0]
            if value is None:
                return None
            if self.fast is not None:
                return self.fast(value)
            return self.dumpers[0](self.decoders[0](value))
        if all(v is None for v in raw):
            return None
        return [d(dec(v)) for d, dec, v in zip(self.dumpers, self.decoders, raw, strict=True)]

    def load(self, value: Any) -> Any:
        """The Python value of a recorded JSON form (the form itself when it does not load)."""
        if value is None or (self.sensitive and value == MASK):
            return value
        try:
            if len(self.loaders) == 1:
                return self.loaders[0](value)
            return tuple(load(v) for load, v in zip(self.loaders, value, strict=True))
        except Exception:  # noqa: BLE001 - a record written by another version: show what it holds
            return value


@dataclass(frozen=True)
class Layout:
    """Some recorded attributes and their columns in a row tuple: ``fields[i]`` is ``row[spans[i]]``."""

    fields: tuple[AuditField, ...]
    columns: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]


def _layout(fields: Sequence[AuditField]) -> Layout:
    spans: list[tuple[int, int]] = []
    columns: list[str] = []
    for f in fields:
        spans.append((len(columns), len(columns) + len(f.columns)))
        columns.extend(f.columns)
    return Layout(tuple(fields), tuple(columns), tuple(spans))


@dataclass(frozen=True)
class AuditPlan:
    """The recorded attributes of one entity and how its rows are found."""

    name: str  # the root entity's name: the ``entity`` of every record of the table
    table: str | tuple[str, ...]
    key_columns: tuple[str, ...]
    key_fields: tuple[AuditField, ...]  # one per key column (its leaf attribute)
    fields: tuple[AuditField, ...]
    attrs: tuple[Any, ...]  # the Pony attributes of ``fields`` (for the door's value readers)

    int_key: bool = False  # one integer key column: its key text is str(value)
    layouts: dict[frozenset[str] | None, Layout] = field(default_factory=dict, compare=False, repr=False)
    # (read columns, set columns, layout columns, (shift,)) -> bulk_update's generated diff
    # (see _audit_diff.differ)
    differs: dict[tuple[Any, ...], Any] = field(default_factory=dict, compare=False, repr=False)

    def layout(self, columns: frozenset[str] | None = None) -> Layout:
        """The recorded attributes whose columns are all among ``columns`` (None: every one)."""
        found = self.layouts.get(columns)
        if found is None:
            chosen = [f for f in self.fields if columns is None or all(c in columns for c in f.columns)]
            found = self.layouts[columns] = _layout(chosen)
        return found

    def key_of_values(self, parts: Sequence[Any]) -> str:
        """The key text of a row from the Python values of its key columns."""
        return key_text([f.dumpers[0](v) for f, v in zip(self.key_fields, parts, strict=True)])

    def key_of_raw(self, raw: Sequence[Any]) -> str:
        """The key text of a row from the raw values of its key columns."""
        if self.int_key and type(raw[0]) is int:
            return str(raw[0])
        return key_text([f.dumpers[0](f.decoders[0](v)) for f, v in zip(self.key_fields, raw, strict=True)])

    def load_key(self, text: str) -> Any:
        """The primary key (a scalar, or a tuple) of a record's key text."""
        parsed = orjson.loads(text)
        parts = parsed if len(self.key_fields) > 1 else [parsed]
        loaded = tuple(f.load(v) for f, v in zip(self.key_fields, parts, strict=True))
        return loaded[0] if len(loaded) == 1 else loaded


def key_text(parts: Sequence[Any]) -> str:
    """``1``, ``"a"`` or ``[1, 2]``: a row key as PostgreSQL's jsonb prints it (the triggers' form)."""
    if len(parts) == 1:
        return orjson.dumps(parts[0]).decode()
    return "[" + ", ".join(orjson.dumps(p).decode() for p in parts) + "]"


def _field(attr: Any) -> AuditField:
    info = _pony.attr_info(attr)
    leaves = _pony.raw_pk_leaf_attributes(info.py_type) if info.kind == "one" else (attr,)
    fast = None
    if info.kind == "value" and len(info.columns) == 1 and info.py_type in _FAST_TYPES:
        found = raw_dumper(attr, info.converters[0], value_dumper(attr))
        fast = same_value if found is None else found
        quantum = _pony.decimal_quantum(attr) if info.py_type is Decimal else None
        if found is not None and quantum is not None:
            fast = _scaled_decimal(quantum, found)
    return AuditField(
        name=info.name,
        attr=attr,
        columns=info.columns,
        decoders=tuple(_pony.column_decoder(attr, i) for i in range(len(info.columns))),
        dumpers=tuple(_nullable(value_dumper(leaf)) for leaf in leaves),
        loaders=tuple(value_loader(leaf) for leaf in leaves),
        sensitive=is_sensitive(attr),
        fast=fast,
    )


# Types whose raw values the serializer's raw dumper turns into exactly the JSON form of the decoded
# value (datetimes are left out: their fast form is a datetime object, not the ISO text).
_FAST_TYPES = (int, str, bool, float, Decimal)


def same_value(value: Any) -> Any:
    """The value itself (a raw value that is already its JSON form)."""
    return value


def _scaled_decimal(quantum: Decimal, general: Dump) -> Dump:
    # PostgreSQL and MariaDB hand back a Decimal of the column's scale: its text is the JSON form already
    exponent = quantum.as_tuple().exponent
    if isinstance(exponent, int) and -3 <= exponent <= -1:
        # str() puts its point at this index exactly when the value is at the column's scale (scientific
        # notation puts at least four characters after a point): one str() instead of as_tuple() + str()
        point = exponent - 1

        def dump_text(value: Any) -> Any:
            if type(value) is Decimal:
                text = str(value)
                if text[point : point + 1] == ".":
                    return text
            return general(value)

        return dump_text

    def dump(value: Any) -> Any:
        if type(value) is Decimal and value.as_tuple().exponent == exponent:
            return str(value)
        return general(value)

    return dump


def _key_fields(entity: Any) -> tuple[AuditField, ...]:
    leaves = _pony.raw_pk_leaf_attributes(entity)
    found: list[AuditField] = []
    position = 0
    for attr in _pony.entity_pk_attributes(entity):
        columns = _pony.attr_info(attr).columns
        for i, column in enumerate(columns):
            leaf = leaves[position]
            position += 1
            found.append(
                AuditField(
                    name=_pony.attr_info(leaf).name,
                    attr=leaf,
                    columns=(column,),
                    decoders=(_pony.column_decoder(attr, i),),
                    dumpers=(_nullable(value_dumper(leaf)),),
                    loaders=(value_loader(leaf),),
                    sensitive=False,
                )
            )
    return tuple(found)


_plans: weakref.WeakKeyDictionary[Any, AuditPlan] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _forget_plans() -> None:
    with _lock:
        _plans.clear()


# A plan made before ``sensitive(User.pin)`` must not go on recording pin's values: rebuild them all.
on_sensitivity_change(_forget_plans)


def audit_plan(entity: Any) -> AuditPlan:
    """The plan of a mapped entity class (made once, then cached per class)."""
    plan = _plans.get(entity)
    if plan is not None:
        return plan
    info = _pony.entity_info(entity)
    attrs = _pony.audited_attributes(entity)
    plan = AuditPlan(
        name=_pony.root_entity_name(entity),
        table=info.table,
        key_columns=info.pk_columns,
        key_fields=_key_fields(entity),
        fields=tuple(_field(a) for a in attrs),
        attrs=attrs,
        int_key=len(info.pk_columns) == 1 and _pony.attr_type(_pony.raw_pk_leaf_attributes(entity)[0]) is int,
    )
    with _lock:
        _plans[entity] = plan
    return plan
