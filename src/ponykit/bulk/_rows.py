"""Turning bulk input rows into bound parameter tuples, the way Pony would (private to ponykit.bulk).

A :class:`RowPlan` is built once per entity. For each shape of input row it compiles a small encoder
function (the attribute encoders of :func:`ponykit._pony.bulk_value_encoder` inlined in one tuple
expression), because the per-row loop is where the time of a bulk write goes. When an encoder raises,
the row is encoded again attribute by attribute to name the attribute in a :class:`BulkWriteError`.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _pony
from .._codegen import build_function
from .._kit import find_kit
from ..errors import BulkWriteError, FieldError, OptionError
from ..security.sensitive import is_sensitive
from ._check import ColumnCheck, column_checks
from ._extensions import extensions_of

__all__ = ["RowPlan", "plan_for"]

RowEncoder = Callable[[Any], tuple[Any, ...]]
ColumnsEncoder = Callable[[list[Any]], list[list[Any]]]

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60


# The argument of each operation that names attributes to write (for errors about a name in it).
_NAMES_ARG = {"bulk_update": "fields=", "bulk_upsert": "update="}


class UnknownAttribute(Exception):
    """Raised inside a compiled encoder when a row holds a key that is not an attribute."""


@dataclass
class Shape:
    """The columns a group of rows writes, and the compiled encoder of such rows."""

    names: tuple[str, ...]  # attributes, in the order their columns appear in the parameters
    columns: tuple[str, ...]
    encode: RowEncoder
    # A batch of rows to one list of values per column (shapes without a mask); raises as ``encode``.
    encode_columns: ColumnsEncoder | None = None


@dataclass(frozen=True)
class EncoderPlan:
    """The steps of the encoders of one shape of row: what :meth:`RowPlan._encoder_plan` decided to emit.

    ``steps`` holds, per attribute, the statements that bind ``v<i>`` to its encoded value (one column's
    value, or a tuple of a composite key's); ``parts`` the expressions of the bound values in column
    order; ``mask`` the expression of the None mask, or None when the shape has no mask; ``setup`` the
    statements run once per call, before the rows (a relation's session cache).
    """

    namespace: dict[str, Any]
    steps: tuple[tuple[str, ...], ...]
    parts: tuple[str, ...]
    mask: str | None
    setup: tuple[str, ...] = ()

    def _body(self) -> list[str]:
        # The key check first: one set operation per row instead of one per key.
        return [
            "if not known.issuperset(row):",
            "    raise Unknown",
            *(line for step in self.steps for line in step),
        ]

    def encode_lines(self) -> list[str]:
        """``encode(row)``: the parameter tuple of one row (and its None mask, with a mask)."""
        parts = self.parts
        values = f"({', '.join(parts)}{',' if len(parts) == 1 else ''})"
        returned = f"{values}, {self.mask}" if self.mask else values
        body = [*self.setup, *self._body()]
        return ["def encode(row):", *_indent(body, 1), f"    return {returned}"]

    def columns_lines(self) -> list[str]:
        """``encode_columns(rows)``: the same steps over a batch, one list of values per column.

        No call and no tuple per row (allocating a tuple per row also makes the garbage collector run often).
        """
        columns = range(len(self.parts))
        return [
            "def encode_columns(rows):",
            *_indent(self.setup, 1),
            *(f"    c{k} = []; p{k} = c{k}.append" for k in columns),
            "    for row in rows:",
            *_indent(self._body(), 2),
            *(f"        p{k}({part})" for k, part in enumerate(self.parts)),
            f"    return [{', '.join(f'c{k}' for k in columns)}]",
        ]


def _indent(lines: Iterable[str], levels: int) -> list[str]:
    return ["    " * levels + line for line in lines]


class RowPlan:
    """Everything about one entity that bulk writes need, computed once."""

    def __init__(self, entity: Any) -> None:
        self.entity = entity
        self.name: str = entity.__name__
        info = _pony.entity_info(entity)
        self.table = info.table
        self.attrs = {a.name: a for a in _pony.bulk_attrs(entity)}
        self.pk_names: tuple[str, ...] = info.pk_attrs
        self.pk_columns: tuple[str, ...] = info.pk_columns
        self.keys = info.keys
        self.collections = _pony.collection_attr_names(entity)
        self.no_columns = _pony.attr_names_without_columns(entity)
        self.known = frozenset(self.attrs)
        self.encoders: dict[str, Callable[[Any], Any]] = {
            name: _pony.bulk_value_encoder(entity, a.attr) for name, a in self.attrs.items()
        }
        self.auto_pk = next((a.name for a in self.attrs.values() if a.is_auto_pk), None)
        self.discriminator = next((a.name for a in self.attrs.values() if a.is_discriminator), None)
        self.relations = frozenset(a.name for a in self.attrs.values() if a.is_relation)
        self.pk_plain = _pony.pk_is_plain(entity)
        # A subclass of a single-table hierarchy: its discriminator column and the bound values of its
        # class and subclasses (Pony's own filter); statements by key touch only those rows.
        class_filter = _pony.discriminator_filter(entity)
        self.class_column: str | None = class_filter[0] if class_filter else None
        self.class_values: tuple[Any, ...] = class_filter[1] if class_filter else ()
        kit = find_kit(_pony.database_of(entity))
        # The Database's ponykit value types: the encoders inline ponykit's query-parameter wrapper.
        self.param_encoders = kit.param_encoders if kit is not None else None
        self._compiled: dict[
            tuple[tuple[str, ...], tuple[str, ...]], tuple[RowEncoder, ColumnsEncoder | None]
        ] = {}
        # PostgreSQL: (the table takes COPY like INSERT, it has user triggers, the key's sequence or
        # None); asked at the first insert.
        self.copy_target: tuple[bool, bool, str | None] | None = None
        self._checks: dict[tuple[tuple[str, ...], str], list[ColumnCheck | None]] = {}
        # MariaDB/MySQL: (charset, collation) of each text column, asked at the first upsert.
        self.collations: dict[str, tuple[str, str]] | None = None
        # bulk_link's plans of this entity's many-to-many collections, by label (see bulk._links).
        self.link_plans: dict[str, Any] = {}
        # What the entity's mixins add to bulk writes (see bulk._extensions), and the SET clauses they
        # have the database compute at every update: (column, template).
        self.extensions = extensions_of(entity)
        self.exprs: tuple[tuple[str, str], ...] = tuple(
            (column, template)
            for extension in self.extensions
            for name, template in extension.set_exprs(entity).items()
            for column in self.attrs[name].columns
        )
        # the attributes those SET clauses change: loaded objects are refreshed for them too
        self.expr_names: frozenset[str] = frozenset(
            name for extension in self.extensions for name in extension.set_exprs(entity)
        )
        self.extra_update_names: tuple[str, ...] = tuple(
            dict.fromkeys(n for extension in self.extensions for n in extension.update_names(entity))
        )

    # -- shapes -------------------------------------------------------------------------------------

    def insert_names(self, with_pk: bool) -> tuple[str, ...]:
        """The attributes an INSERT writes, in column order (the auto pk only when given)."""
        return tuple(n for n in self.attrs if with_pk or n != self.auto_pk)

    def columns_of(self, names: Iterable[str]) -> tuple[str, ...]:
        """The columns of the named attributes, in order."""
        return tuple(c for n in names for c in self.attrs[n].columns)

    def shape(self, names: tuple[str, ...], mask_names: tuple[str, ...] = ()) -> Shape:
        """A :class:`Shape` writing ``names``.

        Its encoder returns the parameter tuple of a row; with ``mask_names`` it returns
        ``(values, mask)`` where bit ``b`` of the mask says that ``mask_names[b]`` is None.
        """
        key = (names, mask_names)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile(names, mask_names)
        return Shape(names, self.columns_of(names), *compiled)

    def _compile(
        self, names: tuple[str, ...], mask_names: tuple[str, ...]
    ) -> tuple[RowEncoder, ColumnsEncoder | None]:
        plan = self._encoder_plan(names, mask_names)
        encode = build_function(
            "encode", plan.encode_lines(), plan.namespace, label=f"bulk.encode_row {self.name}"
        )
        if mask_names:
            return encode, None
        encode_columns = build_function(
            "encode_columns", plan.columns_lines(), plan.namespace, label=f"bulk.encode_columns {self.name}"
        )
        return encode, encode_columns

    def _encoder_plan(self, names: tuple[str, ...], mask_names: tuple[str, ...]) -> EncoderPlan:
        """What the encoders of rows writing ``names`` compute, before any line of them is written."""
        namespace: dict[str, Any] = {
            "D": _pony.DEFAULT,
            "known": self.known,
            "Unknown": UnknownAttribute,
        }
        steps = []
        setup: list[str] = []
        parts: list[str] = []
        for i, name in enumerate(names):
            attr = self.attrs[name].attr
            code, names_env = _pony.bulk_encoder_source(
                self.entity, attr, f"v{i}", f"a{i}_", self.param_encoders
            )
            namespace.update(names_env)
            setup_lines, setup_env = _pony.bulk_encoder_setup(self.entity, attr, f"a{i}_")
            setup.extend(setup_lines)
            namespace.update(setup_env)
            steps.append((f"v{i} = row.get({name!r}, D)", *code))
            width = len(self.attrs[name].columns)
            parts.extend([f"v{i}[{k}]" for k in range(width)] if width > 1 else [f"v{i}"])
        mask = " | ".join(f"((v{names.index(n)} is None) << {b})" for b, n in enumerate(mask_names))
        return EncoderPlan(namespace, tuple(steps), tuple(parts), mask or None, tuple(setup))

    def column_checks(self, names: tuple[str, ...], dialect: str) -> list[ColumnCheck | None]:
        """For each bound column of ``names``, the check of values the driver refuses (or None)."""
        key = (names, dialect)
        checks = self._checks.get(key)
        if checks is None:
            kinds = [self.attrs[n].value_kind for n in names for _ in self.attrs[n].columns]
            checks = self._checks[key] = column_checks(kinds, dialect)
        return checks

    def is_sensitive(self, name: str) -> bool:
        """True if values of attribute ``name`` must never be shown: by its type, or declared with
        ``sensitive()`` / ``__sensitive__`` (asked each time: a declaration may come after the plan)."""
        attr = self.attrs.get(name)
        return attr is not None and (attr.sensitive or is_sensitive(attr.attr))

    def any_sensitive(self) -> bool:
        """True if any attribute of the entity is sensitive."""
        return any(self.is_sensitive(n) for n in self.attrs)

    # -- errors ---------------------------------------------------------------------------------------

    def row_error(
        self, row: Any, index: int, names: Sequence[str], exc: BaseException, op: str
    ) -> BulkWriteError:
        """The :class:`BulkWriteError` for row ``index`` whose encoding raised ``exc``."""
        where = f"{op}({self.name}): row {index}"
        if not hasattr(row, "get") or not hasattr(row, "keys"):
            return BulkWriteError(
                f"{where} must be a dict of attribute values, got {type(row).__name__}",
                row_index=index,
                entity=self.name,
            )
        for key in row:
            if key not in self.known:
                return self.unknown_error(key, index, op)
        for name in names:
            value = row.get(name, _pony.DEFAULT)
            try:
                self.encoders[name](value)
            except Exception as attr_exc:  # noqa: BLE001 - converters raise what they like
                return self.value_error(name, value, attr_exc, index, op)
        # No attribute alone fails: Pony's text may still quote a value, so not when one is sensitive.
        detail = "details hidden: the entity has sensitive attributes" if self.any_sensitive() else exc
        return BulkWriteError(f"{where} could not be encoded: {detail}", row_index=index, entity=self.name)

    def value_error(self, name: str, value: Any, exc: BaseException, index: int, op: str) -> BulkWriteError:
        """A :class:`BulkWriteError` for an invalid value of attribute ``name`` in row ``index``."""
        sensitive = self.is_sensitive(name)
        if value is _pony.DEFAULT:
            given = "nothing (the attribute is missing from the row)"
        elif sensitive:
            given = f"a value of type {type(value).__name__} (hidden: the attribute is sensitive)"
        else:
            given = f"{_repr.repr(value)} ({type(value).__name__})"
        expected = "a valid value (details hidden: the attribute is sensitive)" if sensitive else str(exc)
        message = (
            f"{op}({self.name}): row {index}, attribute {name!r} is invalid, nothing of this call was "
            f"written. Expected: {expected}. Given: {given}. Fix the row or drop it from the input."
        )
        return BulkWriteError(
            message,
            row_index=index,
            entity=self.name,
            attribute=name,
            errors=[
                FieldError(
                    (index, name),
                    f"expected: {expected}; given: {given}",
                    type="missing" if value is _pony.DEFAULT else "value_error",
                )
            ],
        )

    def unknown_error(self, key: Any, index: int | None, op: str) -> BulkWriteError:
        """A :class:`BulkWriteError` for a row key (``index`` given) or a name in ``fields=``/``update=``
        (``index`` None) that bulk writes cannot take."""
        if key in self.collections:
            why = "is a collection (Set); write many-to-many links with bulk_link/bulk_unlink"
        elif key in self.no_columns:
            why = "has no column in this table (it is the other side of a one-to-one relation)"
        else:
            why = f"is not an attribute of {self.name}; its attributes are {', '.join(sorted(self.known))}"
        where = f"row {index} has key" if index is not None else f"{_NAMES_ARG.get(op, 'the call')} names"
        fix = "fix the key or drop it from the row" if index is not None else "fix the name or drop it"
        return BulkWriteError(
            f"{op}({self.name}): {where} {key!r}, which {why}; {fix}",
            row_index=index,
            entity=self.name,
            attribute=str(key),
        )


_PLAN_ATTR = "_ponykit_bulk_plan_"


def plan_for(entity: Any) -> RowPlan:
    """The cached :class:`RowPlan` of a mapped entity.

    Kept on the entity class itself (not in a module-level weak mapping, whose values would keep their
    keys alive): a Database and its entities stay collectable once the application drops them.
    """
    plan: RowPlan | None = vars(entity).get(_PLAN_ATTR) if isinstance(entity, type) else None
    if plan is None:
        if not _pony.is_entity_class(entity):
            given = entity.__name__ if isinstance(entity, type) else f"a {type(entity).__name__}"  # no values
            raise OptionError(
                f"bulk operations take a Pony entity class (a db.Entity subclass such as User), got "
                f"{given}; pass the class first: bulk_insert(User, rows)"
            )
        plan = RowPlan(entity)
        setattr(entity, _PLAN_ATTR, plan)
    return plan
