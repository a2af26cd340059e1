"""The statements behind ponykit.bulk: batching, encoding, execution, session upkeep (private)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn

from .. import _pony
from .._sql import Dialect, dialect_of
from ..errors import BulkWriteError, ConfigurationError, OptionError
from ..transactions import record_writes
from ._check import first_refusal
from ._rows import RowPlan, plan_for

__all__: list[str] = []  # private module: ponykit.bulk imports names explicitly

Progress = Callable[[int, "int | None"], Any]
Row = dict[str, Any]

DEFAULT_BATCH_SIZE = 10_000


# ---------------------------------------------------------------------------------------------------------
# Shared machinery


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    it = iter(rows)
    while True:
        batch = list(itertools.islice(it, size))
        if not batch:
            return
        yield batch


def _start(entity: Any, batch_size: int | None, op: str) -> tuple[RowPlan, Dialect, int]:
    plan = plan_for(entity)
    db = _pony.database_of(entity)
    if not _pony.in_db_session():
        raise ConfigurationError(f"{op}({plan.name}) must run inside a db_session (it joins its transaction)")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise OptionError(
            f"{op}({plan.name}): batch_size must be a positive number of rows, got {batch_size!r}"
        )
    _pony.flush_session(db)  # Pony's autoflush: pending ORM changes go first, as before any raw SQL
    return plan, dialect_of(db), batch_size or DEFAULT_BATCH_SIZE


def _total(rows: Iterable[Any]) -> int | None:
    try:
        return len(rows)  # type: ignore[arg-type]
    except TypeError:
        return None


def _chunks(items: Sequence[Any], per_statement: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), per_statement):
        yield items[start : start + per_statement]


def _flat(rows: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(itertools.chain.from_iterable(rows))


def _encode_batch(
    plan: RowPlan,
    batch: list[Row],
    offset: int,
    names: tuple[str, ...],
    encode: Any,
    op: str,
    positions: Sequence[int] | None = None,
) -> list[Any]:
    """Encode every row of a batch (all or none): a failing row raises BulkWriteError naming it.

    ``positions`` are the rows' places in the caller's batch when ``batch`` is a part of it.
    """
    try:
        return [encode(row) for row in batch]
    except Exception:  # noqa: BLE001, S110 - converters raise anything; the loop below names the row
        pass
    # Outside the except block: the BulkWriteError must not carry the converter's error (which may
    # quote a sensitive value) as its __context__.
    return _raise_row_error(plan, batch, offset, names, encode, op, positions)


def _failure(fn: Callable[[Any], Any], arg: Any) -> Exception | None:
    """The exception ``fn(arg)`` raises, or None."""
    try:
        fn(arg)
    except Exception as exc:  # noqa: BLE001 - converters raise anything
        return exc
    return None


def raise_masked(plan: RowPlan, error: BulkWriteError, cause: BaseException | None) -> NoReturn:
    """Raise ``error`` with ``cause`` chained, unless the entity has sensitive attributes: the cause's
    text (Pony's messages quote values) must then not travel with it. Call outside ``except`` blocks,
    where Python would also chain the exception being handled as ``__context__``."""
    if cause is None or plan.any_sensitive():
        raise error from None
    raise error from cause


def _raise_row_error(
    plan: RowPlan,
    batch: list[Row],
    offset: int,
    names: tuple[str, ...],
    encode: Any,
    op: str,
    positions: Sequence[int] | None,
) -> NoReturn:
    """Encode the rows of a batch that failed one by one, and raise the BulkWriteError of the first
    that fails."""
    for index, row in enumerate(batch):
        exc = _failure(encode, row)
        if exc is not None:
            where = offset + (positions[index] if positions is not None else index)
            raise_masked(plan, plan.row_error(row, where, names, exc, op), exc)
    # Internal invariant (a converter that fails once and then passes): not a user error.
    raise AssertionError("a row failed to encode once and then succeeded")


def _check_refused(
    plan: RowPlan,
    dialect: str,
    names: tuple[str, ...],
    columns: Sequence[Sequence[Any]] | None,
    rows: Sequence[Any],
    offset: int,
    op: str,
    positions: Sequence[int] | None = None,
    values: Sequence[tuple[Any, ...]] | None = None,
) -> None:
    """Raise BulkWriteError for the first encoded value the driver would refuse (see bulk._check),
    before any statement of the batch runs. The values are given as ``columns`` (one sequence per
    bound column) or as row tuples ``values``; ``rows`` are the input rows in the same order, at
    ``positions`` of the caller's batch (None: in order) starting at input index ``offset``."""
    checks = plan.column_checks(names, dialect)
    if not any(checks):
        return
    found = first_refusal(checks, columns, values)
    if found is None:
        return
    row, column, expected = found
    name = _positions(plan, names)[column]
    source = rows[row]
    value = source.get(name, _pony.DEFAULT) if isinstance(source, dict) else source
    where = offset + (positions[row] if positions is not None else row)
    raise_masked(plan, plan.value_error(name, value, ValueError(expected), where, op), None)


def _after_write(
    plan: RowPlan,
    db: Any,
    keys: Iterable[Any] | None,
    relations: Iterable[str],
    refresh: list[Any] = (),  # type: ignore[assignment]
    refresh_attrs: frozenset[str] | None = None,
) -> None:
    """Session upkeep after one batch: reverse sides first (so a re-read cannot meet a stale fully
    loaded collection), then the loaded objects written, then the query cache and the commit event."""
    written = frozenset(relations) & plan.relations
    if written:
        _pony.reset_reverse_of(db, plan.entity, written)
    if refresh:
        _pony.refresh_objects(db, refresh, refresh_attrs)
    _pony.query_results_clear(db)
    record_writes(db, plan.entity, keys if plan.pk_plain else None)


def _pk_of(plan: RowPlan, values: tuple[Any, ...], positions: Sequence[int]) -> Any:
    if len(positions) == 1:
        return values[positions[0]]
    return tuple(values[i] for i in positions)


def _cached_by_pk(plan: RowPlan, db: Any) -> dict[Any, Any]:
    found: dict[Any, Any] = {}
    for obj in _pony.cached_objects(db, plan.entity):
        # Loaded keys were validated by Pony already: they encode without error.
        parts = [plan.encoders[n](_pony.loaded_value_by_name(obj, n)) for n in plan.pk_names]
        flat: list[Any] = []
        for name, part in zip(plan.pk_names, parts, strict=True):
            flat.extend(part if len(plan.attrs[name].columns) > 1 else (part,))
        found[flat[0] if len(flat) == 1 else tuple(flat)] = obj
    return found


def _unmask(
    plan: RowPlan,
    names: tuple[str, ...],
    mask: int,
    mask_names: tuple[str, ...],
    values_list: list[tuple[Any, ...]],
) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """Leave out the columns whose bit is set in ``mask`` (None values Pony leaves to an SQL DEFAULT)."""
    masked = [n for b, n in enumerate(n for n in mask_names if n in names) if mask >> b & 1]
    keep = [i for i, c in enumerate(_positions(plan, names)) if c not in masked]
    names = tuple(n for n in names if n not in masked)
    return names, [tuple(v[i] for i in keep) for v in values_list]


def _positions(plan: RowPlan, names: tuple[str, ...]) -> list[str]:
    """For each parameter position, the attribute it belongs to."""
    return [n for n in names for _ in plan.attrs[n].columns]


def _check_settable(plan: RowPlan, name: str, index: int | None, op: str) -> None:
    column = plan.attrs.get(name)  # the door's BulkAttr view
    problem = None
    if column is None:
        unknown = _pony.find_attribute(plan.entity, name) is None
        if unknown or name in plan.collections or name in plan.no_columns:
            raise plan.unknown_error(name, index, op)
    elif column.is_pk:
        problem = "is part of the primary key, which identifies the row and cannot be changed"
    elif column.is_discriminator:
        problem = "is the discriminator of the class hierarchy and cannot be changed"
    if problem:
        where = f"row {index}: " if index is not None else ""
        raise BulkWriteError(
            f"{op}({plan.name}): {where}attribute {name!r} {problem}",
            row_index=index,
            entity=plan.name,
            attribute=name,
        )


def _update_names(plan: RowPlan, row: Row, fields: Sequence[str] | None, index: int) -> tuple[str, ...]:
    if not isinstance(row, dict):
        raise plan.row_error(row, index, (), TypeError("not a dict"), "bulk_update")
    for name in plan.pk_names:
        if name not in row:
            raise BulkWriteError(
                f"bulk_update({plan.name}): row {index} lacks primary-key attribute {name!r}; each row "
                "must hold the primary key of the row to update",
                row_index=index,
                entity=plan.name,
                attribute=name,
            )
    if fields is not None:
        for name in fields:
            if name not in row:
                raise BulkWriteError(
                    f"bulk_update({plan.name}): row {index} lacks attribute {name!r} named in fields",
                    row_index=index,
                    entity=plan.name,
                    attribute=name,
                )
        return tuple(fields)
    names = tuple(n for n in row if n not in plan.pk_names)
    for name in names:
        _check_settable(plan, name, index, "bulk_update")
    if not names:
        raise BulkWriteError(
            f"bulk_update({plan.name}): row {index} has nothing to set besides the key",
            row_index=index,
            entity=plan.name,
        )
    return names


def _update_group(
    plan: RowPlan, dialect: Dialect, names: tuple[str, ...], values: list[tuple[Any, ...]]
) -> int:
    db = dialect.db
    set_cols = plan.columns_of(names)
    pk_cols = plan.pk_columns
    # A subclass of a single-table hierarchy updates only its own rows, as Pony's Entity[pk] finds only those.
    classes = plan.class_values
    class_filter = (plan.class_column, len(classes)) if plan.class_column else None
    if dialect.name == "sqlite":
        # executemany of a one-row UPDATE measured fastest on SQLite (a prepared statement in a C loop)
        sql = dialect.update_one(plan.table, set_cols, pk_cols, class_filter)
        if classes:
            values = [v + classes for v in values]
        cursor = _pony.execute_in_session(db, sql, values)  # rows are encoded set values first, key last
        return int(cursor.rowcount)
    types = _pony.column_sql_types(plan.entity) if dialect.name == "postgres" else {}
    per = max(1, (dialect.max_params - len(classes)) // (len(pk_cols) + len(set_cols)))
    count = 0
    for chunk in _chunks(values, per):
        sql = dialect.update_many(plan.table, set_cols, pk_cols, len(chunk), types, class_filter)
        count += int(_pony.execute_in_session(db, sql, _flat(chunk) + classes).rowcount)
    return count


def _conflict_key(plan: RowPlan, conflict: str | Sequence[str]) -> tuple[str, ...]:
    names = (conflict,) if isinstance(conflict, str) else tuple(conflict)
    declared = [plan.pk_names, *plan.keys]
    for candidate in declared:
        if set(candidate) == set(names):
            return tuple(candidate)
    shown = "; ".join(", ".join(k) for k in dict.fromkeys(declared))
    raise ConfigurationError(
        f"bulk_upsert({plan.name}): conflict={names!r} is not a unique key of {plan.name}. Declared keys: "
        f"{shown}. Name one of them, or declare the key (unique=True or composite_key(...)) on the entity"
    )


def _upsert_group(
    plan: RowPlan,
    dialect: Dialect,
    names: tuple[str, ...],
    mask: int,
    mask_names: tuple[str, ...],
    key: tuple[str, ...],
    upd: list[str],
    items: list[tuple[int, tuple[Any, ...]]],
    batch_ids: list[Any] | None,
    canon: Any,
) -> tuple[int, int, int]:
    db = dialect.db
    values_list = [v for _, v in items]
    if mask:
        names, values_list = _unmask(plan, names, mask, mask_names, values_list)
    columns = plan.columns_of(names)
    key_cols = plan.columns_of(key)
    key_pos = [columns.index(c) for c in key_cols]  # in the key's column order, as the SQL names them
    update_cols = plan.columns_of(upd)
    per = max(1, dialect.max_params // max(len(columns), 1))
    inserted = updated = skipped = 0
    for start in range(0, len(values_list), per):
        chunk = values_list[start : start + per]
        keys = [tuple(v[i] for i in key_pos) for v in chunk]
        sql = dialect.upsert(plan.table, columns, len(chunk), key_cols, update_cols)
        if dialect.name == "postgres":
            # xmax is 0 for a row this statement inserted, the updating transaction's id otherwise.
            cursor = _pony.execute_in_session(db, sql + " RETURNING (xmax = 0)", _flat(chunk))
            flags = [r[0] for r in cursor.fetchall()]
            new = sum(1 for f in flags if f)
            old = len(chunk) - new
        else:
            # Rows that already exist are counted first, in the same transaction.
            count_sql = dialect.count_keys(plan.table, key_cols, len(chunk))
            old = int(_pony.execute_in_session(db, count_sql, _flat(keys)).fetchone()[0])
            _pony.execute_in_session(db, sql, _flat(chunk))
            new = len(chunk) - old
        inserted += new
        if update_cols:
            updated += old
        else:
            skipped += old
        if batch_ids is not None:
            select = (
                f"SELECT {', '.join(dialect.q(c) for c in (*key_cols, *plan.pk_columns))} "
                f"FROM {dialect.q(plan.table)} WHERE {dialect.key_in(key_cols, len(chunk))}"
            )
            found = {}
            nk = len(key_cols)
            stored = [tuple(r) for r in _pony.execute_in_session(db, select, _flat(keys)).fetchall()]
            if canon.active:  # the stored key may differ from the row's ('Ann' found for 'ann')
                canon.prepare([r[:nk] for r in stored])
            for r in stored:
                pk = r[nk:]
                found[canon(r[:nk])] = pk[0] if len(pk) == 1 else pk
            for (index, _), k in zip(items[start : start + per], keys, strict=True):
                batch_ids[index] = found.get(canon(k))
    return inserted, updated, skipped


def _encode_pk(plan: RowPlan, value: Any, index: int) -> Any:
    if _pony.is_entity_instance(value):
        if not isinstance(value, plan.entity):
            raise BulkWriteError(
                f"bulk_delete({plan.name}): item {index} is a {type(value).__name__} object",
                row_index=index,
                entity=plan.name,
            )
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
    flat: list[Any] = []
    for name, part in zip(plan.pk_names, parts, strict=True):
        failed: Exception | None = None
        try:
            encoded = plan.encoders[name](part)
        except Exception as exc:  # noqa: BLE001 - converters raise anything
            failed = exc
        if failed is not None:  # raised outside the except block: no __context__ quoting the value
            raise_masked(plan, plan.value_error(name, part, failed, index, "bulk_delete"), failed)
        flat.extend(encoded if len(plan.attrs[name].columns) > 1 else (encoded,))
    return flat[0] if len(flat) == 1 else tuple(flat)


# ---------------------------------------------------------------------------------------------------------
# All or nothing per call


class _Savepoint:
    """The savepoint of one bulk call: taken before the call's first write, released when it ends, and
    rolled back to when it fails, so that a caller who catches the error and commits never commits part
    of the call (a statement refused after earlier ones of the call ran, an invalid row of a later
    batch, an error in ``progress``)."""

    _numbers = itertools.count()

    def __init__(self, db: Any) -> None:
        self.db = db
        self.name: str | None = None
        # Loaded objects re-read after a write of the call: re-read again if the call is undone.
        self.refreshed: list[tuple[list[Any], frozenset[str] | None]] = []

    def begin(self) -> None:
        """Take the savepoint (once, before the call's first write statement)."""
        if self.name is None:
            name = f"ponykit_bulk_{next(self._numbers)}"  # unique: a progress callback may nest a call
            _pony.bookkeeping_in_session(self.db, f"SAVEPOINT {name}")
            self.name = name

    def release(self) -> None:
        if self.name is not None:
            _pony.bookkeeping_in_session(self.db, f"RELEASE SAVEPOINT {self.name}")

    def undo(self) -> None:
        """Roll the call's writes back (best effort: the caller re-raises the call's own error)."""
        if self.name is None:
            return
        try:
            _pony.bookkeeping_in_session(self.db, f"ROLLBACK TO SAVEPOINT {self.name}")
            _pony.bookkeeping_in_session(self.db, f"RELEASE SAVEPOINT {self.name}")
        except Exception:  # noqa: BLE001 - a lost connection: nothing of the transaction can commit
            return
        _pony.query_results_clear(self.db)
        for objects, attrs in self.refreshed:
            try:
                _pony.refresh_objects(self.db, objects, attrs)
            except Exception:  # noqa: BLE001 - never show values the database no longer holds
                _pony.forget_objects(self.db, objects)


@contextlib.contextmanager
def _all_or_nothing(db: Any) -> Iterator[_Savepoint]:
    """Run a bulk call under a :class:`_Savepoint`: its writes are undone if it raises."""
    savepoint = _Savepoint(db)
    try:
        yield savepoint
    except BaseException:
        savepoint.undo()
        raise
    savepoint.release()
