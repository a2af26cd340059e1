"""bulk_delete: primary keys encoded as the rows bind them, and deleted chunk by chunk with the link-table
rows of many-to-many collections (private to ponykit.bulk)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .. import _pony
from .._sql import Dialect
from ..errors import BulkWriteError
from ._batch import Savepoint, bulk_error, chunks, flat, raise_masked
from ._rows import RowPlan

__all__ = ["delete_keys", "encode_pk", "encode_pks"]


def encode_pk(plan: RowPlan, value: Any, index: int) -> Any:
    """The primary key of item ``index`` (a key, a tuple for a composite key, or an object) as the
    statements bind it: one value, or a tuple of column values."""
    if _pony.is_entity_instance(value):
        if not isinstance(value, plan.entity):
            raise bulk_error(plan, "bulk_delete", index, f"item {index} is a {type(value).__name__} object")
        value = _pony.primary_key(value)
    parts = value if len(plan.pk_names) > 1 else (value,)
    if len(plan.pk_names) > 1 and (not isinstance(value, tuple) or len(value) != len(plan.pk_names)):
        # The shape, never the value: a key part may be sensitive.
        given = f"a tuple of {len(value)} values" if isinstance(value, tuple) else f"a {type(value).__name__}"
        raise BulkWriteError(
            f"bulk_delete({plan.name}): item {index} must be a tuple of {len(plan.pk_names)} values "
            f"({', '.join(plan.pk_names)}), got {given}; pass each key as a tuple in that order, or "
            "the object",
            row_index=index,
            entity=plan.name,
        )
    values: list[Any] = []
    for name, part in zip(plan.pk_names, parts, strict=True):
        failed: Exception | None = None
        try:
            encoded = plan.encoders[name](part)
        except Exception as exc:  # noqa: BLE001 - converters raise anything
            failed = exc
        if failed is not None:  # raised outside the except block: no __context__ quoting the value
            raise_masked(plan, plan.value_error(name, part, failed, index, "bulk_delete"), failed)
        values.extend(encoded if len(plan.attrs[name].columns) > 1 else (encoded,))
    return values[0] if len(values) == 1 else tuple(values)


def encode_pks(plan: RowPlan, values: Iterable[Any]) -> list[Any]:
    """The primary keys of ``values`` as the statements bind them (see :func:`encode_pk`); a key that
    does not encode raises BulkWriteError naming its position."""
    items = list(values)
    if len(plan.pk_columns) == 1:
        # The common case in one comprehension (a third of a 10,000-parent cascade's time went to the
        # per-item path); objects, and any failure, take the per-item path, which names the item.
        base = _pony.entity_base()
        if not any(isinstance(v, base) for v in items):
            encode = plan.encoders[plan.pk_names[0]]
            try:
                return [encode(v) for v in items]
            except Exception:  # noqa: BLE001, S110 - converters raise anything; the loop below names it
                pass
    return [encode_pk(plan, value, i) for i, value in enumerate(items)]


def delete_keys(plan: RowPlan, dialect: Dialect, keys: Sequence[Any], size: int, savepoint: Savepoint) -> int:
    """Delete the rows of encoded primary ``keys`` (and their link-table rows), at most ``size`` keys
    per statement; the number of rows deleted."""
    db = dialect.db
    links = _pony.link_tables_of(plan.entity)
    npk = len(plan.pk_columns)
    # A subclass of a single-table hierarchy deletes only its own rows, as Pony's Entity[pk] finds only
    # those: a key of a row of the parent or a sibling class is left alone (and not counted).
    classes = plan.class_values
    class_filter = (plan.class_column, len(classes)) if plan.class_column else None
    per = max(1, min(size, (dialect.max_params - len(classes)) // npk))
    deleted = 0
    for chunk in chunks(keys, per):
        savepoint.begin()
        args = (tuple(chunk) if npk == 1 else flat(chunk)) + classes
        for link in links:
            sql = dialect.delete_links(
                link.table, link.columns, plan.table, plan.pk_columns, len(chunk), class_filter
            )
            _pony.execute_in_session(db, sql, args)
        sql = dialect.delete_keys(plan.table, plan.pk_columns, len(chunk), class_filter)
        deleted += int(_pony.execute_in_session(db, sql, args).rowcount)
    return deleted
