"""bulk_insert's batches: encoding them in groups of one shape, and writing each group with COPY
(PostgreSQL, see ``_copy``) or INSERT (private).

A batch is encoded column by column (one list of bound values per column), which the COPY renderer
reads as it is and the INSERT statements flatten chunk by chunk, so no tuple is made per row.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import _pony
from .._sql import Dialect
from ..errors import ConfigurationError
from ._batch import (
    Part,
    Row,
    Savepoint,
    check_refused,
    column_attrs,
    encode_batch,
    raise_masked,
    raise_row_error,
    unmask,
)
from ._copy import CopyUnsupported, NulInText, copy_allowed, copy_rows, copy_text
from ._references import Written, check_references, raise_refused
from ._rows import RowPlan

__all__ = [
    "InsertGroup",
    "check_returning",
    "insert_batch",
    "insert_group",
    "insert_groups",
    "keys_of",
    "run_hooks",
]


@dataclass
class InsertGroup:
    """Rows of one batch that one INSERT (or COPY) shape writes."""

    with_pk: bool  # the rows give the auto primary key
    names: tuple[str, ...]  # attributes written, in column order (columns Pony leaves out removed)
    positions: list[int] | None  # the rows' places in the batch; None: every row, in order
    columns: list[list[Any]]  # bound values, one list per column
    count: int  # rows
    sent: int = 0  # rows before this one were written by INSERT statements that succeeded

    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[Any, ...]]:
        """The bound values of rows ``start`` to ``stop``, one tuple per row."""
        if not self.columns:
            return iter([()] * ((self.count if stop is None else stop) - start))
        return zip(*(c[start:stop] for c in self.columns), strict=True)

    def flat(self, start: int, stop: int) -> tuple[Any, ...]:
        """The bound values of rows ``start`` to ``stop`` in one tuple, row after row."""
        return tuple(itertools.chain.from_iterable(self.rows(start, stop)))


def check_returning(plan: RowPlan, dialect: Dialect) -> None:
    """Raise ConfigurationError if the server cannot give the keys of inserted rows (``return_ids``)."""
    db = dialect.db
    if not _pony.supports_insert_returning(db):
        version = ".".join(map(str, _pony.server_version(db))) or "unknown"
        raise ConfigurationError(
            f"bulk_insert({plan.name}, return_ids=True) needs INSERT ... RETURNING, which this "
            f"{_pony.dialect(db)} server (version {version}) lacks: it takes PostgreSQL, SQLite >= 3.35 "
            "or MariaDB >= 10.5. Insert without return_ids and read the keys back by a unique key."
        )


def run_hooks(plan: RowPlan, batch: list[Row], offset: int) -> list[Row]:
    """Each row through a transient object and its ``before_insert`` hook; the values it ends with.

    A row Pony refuses raises BulkWriteError naming it (values of sensitive attributes masked, and
    Pony's error not chained), as without hooks; an error of the hook itself propagates unchanged.
    """
    result = []
    for index, row in enumerate(batch):
        failed: Exception | None = None
        try:
            result.append(_pony.run_before_insert(plan.entity, row))
        except Exception as exc:  # noqa: BLE001 - Pony raises TypeError/ValueError, the hook anything
            failed = exc
        if failed is not None:  # outside the except block: no __context__ quoting the value
            error = plan.row_error(row, offset + index, tuple(plan.attrs), failed, "bulk_insert")
            if error.attribute is None and isinstance(row, dict):
                raise failed  # every value is valid: the hook's own error
            raise_masked(plan, error, failed)
    return result


def insert_batch(
    plan: RowPlan,
    dialect: Dialect,
    batch: list[Row],
    offset: int,
    return_ids: bool,
    savepoint: Savepoint,
    check_refs: bool = False,
) -> list[Any]:
    """Write one batch (input rows from index ``offset``); the primary keys written: in row order with
    ``return_ids``, else those the rows give (none for generated keys).

    Every row is encoded and checked (with ``check_refs``, its references too) before the savepoint is
    taken and anything is sent. A row the database refuses raises BulkWriteError naming it.
    """
    mask_names = tuple(n for n, a in plan.attrs.items() if a.has_sql_default)
    groups = insert_groups(plan, batch, offset, mask_names)
    for group in groups:  # values the driver would refuse: before anything of the batch is sent
        rows = batch if group.positions is None else [batch[p] for p in group.positions]
        part = Part(plan, rows, offset, "bulk_insert", group.positions)
        check_refused(part, dialect.name, group.names, columns=group.columns)
    if check_refs:
        check_references(dialect, [_written(plan, offset, group) for group in groups])
    # PostgreSQL: COPY, the fastest way in, where it stores exactly what INSERT would.
    if copy_allowed(plan, dialect, return_ids):
        prepared = _prepare_copy(plan, dialect, groups, batch, offset, return_ids)
    else:
        prepared = [(group, None) for group in groups]
    savepoint.begin()
    keys: list[Any] = [None] * len(batch) if return_ids else []
    for group, text in prepared:
        failed: Exception | None = None
        try:
            if text is not None:
                copy_rows(plan, dialect, group.names, text, group.count)
                got = keys_of(plan, group) if group.with_pk else []
            else:
                got = insert_group(plan, dialect, group, return_ids)
        except Exception as exc:  # noqa: BLE001 - named below, outside the except block
            failed = exc
        if failed is not None:
            raise_refused(dialect, savepoint, _written(plan, offset, group), failed)
        if not return_ids:
            keys.extend(got)
        elif group.positions is None:
            keys = got
        else:
            for position, key in zip(group.positions, got, strict=True):
                keys[position] = key
    return keys


def _written(plan: RowPlan, offset: int, group: InsertGroup) -> Written:
    return Written(plan, "bulk_insert", offset, group.names, group.columns, group.positions, sent=group.sent)


def _split_by_pk(plan: RowPlan, batch: list[Row]) -> Iterator[tuple[bool, list[int] | None, list[Row]]]:
    """``(with_pk, positions, rows)``: the rows that give the auto primary key and those that do not.

    ``positions`` are the rows' places in ``batch`` (None: the part is the whole batch, in order).
    """
    auto = plan.auto_pk
    if auto is None:
        yield True, None, batch
        return
    flags = [isinstance(r, dict) and r.get(auto) is not None for r in batch]
    if not any(flags):
        yield False, None, batch
    elif all(flags):
        yield True, None, batch
    else:  # rare: some rows give the id; order between the two groups follows the input within each
        for want in (True, False):
            positions = [i for i, flag in enumerate(flags) if flag is want]
            yield want, positions, [batch[i] for i in positions]


def insert_groups(
    plan: RowPlan, batch: list[Row], offset: int, mask_names: tuple[str, ...]
) -> list[InsertGroup]:
    """Encode a batch for INSERT, grouped by shape: with or without the auto key, and by which
    columns with an SQL default are None (Pony leaves those out of its INSERT, so the default applies).

    An invalid row raises BulkWriteError naming its index in the caller's input (``offset`` + its
    place in the batch) before anything of the batch is written.
    """
    groups: list[InsertGroup] = []
    for with_pk, positions, part in _split_by_pk(plan, batch):
        names = plan.insert_names(with_pk)
        masks = tuple(n for n in mask_names if n in names)
        shape = plan.shape(names, masks)
        if shape.encode_columns is not None:
            try:
                columns = shape.encode_columns(part)
            except Exception:  # noqa: BLE001 - converters raise anything; the row encoder names the row
                columns = None
            if columns is None:  # named outside the except block: no __context__ quoting a value
                raise_row_error(Part(plan, part, offset, "bulk_insert", positions), shape)
            groups.append(InsertGroup(with_pk, names, positions, columns, len(part)))
            continue
        encoded = encode_batch(Part(plan, part, offset, "bulk_insert", positions), shape)
        by_mask: dict[int, tuple[list[int], list[tuple[Any, ...]]]] = {}
        for index, (values, mask) in enumerate(encoded):
            where, rows = by_mask.setdefault(mask, ([], []))
            where.append(positions[index] if positions is not None else index)
            rows.append(values)
        for mask, (where, rows) in by_mask.items():
            kept, rows = unmask(plan, names, mask, mask_names, rows) if mask else (names, rows)
            columns = [list(c) for c in zip(*rows, strict=True)] if kept else []
            groups.append(InsertGroup(with_pk, kept, where, columns, len(rows)))
    return groups


def keys_of(plan: RowPlan, group: InsertGroup) -> list[Any]:
    """The primary keys of a group's rows, from their bound values (rows that give them)."""
    columns = plan.columns_of(group.names)
    pk = [group.columns[columns.index(c)] for c in plan.pk_columns]
    return list(pk[0]) if len(pk) == 1 else list(zip(*pk, strict=True))


def insert_group(plan: RowPlan, dialect: Dialect, group: InsertGroup, return_ids: bool) -> list[Any]:
    """Insert a group's rows with INSERT; the primary keys written (in row order when known)."""
    db = dialect.db
    columns = plan.columns_of(group.names)
    n = group.count
    per = max(1, dialect.max_params // max(len(columns), 1))
    if not columns and dialect.name != "mysql":
        per = 1  # INSERT ... DEFAULT VALUES writes one row
    if not return_ids:
        if dialect.name in ("postgres", "sqlite") and columns:
            # Measured: multi-row VALUES beats executemany on SQLite (~1.6x) and on PostgreSQL (one
            # round trip per row there); PyMySQL already rewrites executemany into multi-row INSERTs.
            for start in range(0, n, per):
                stop = min(start + per, n)
                sql = dialect.insert(plan.table, columns, stop - start)
                group.sent = start
                _pony.execute_in_session(db, sql, group.flat(start, stop))
        elif columns:
            _pony.execute_in_session(db, dialect.insert(plan.table, columns, 1), list(group.rows()))
        else:
            for _ in range(n):
                _pony.execute_in_session(db, dialect.insert(plan.table, columns, 1), ())
        return keys_of(plan, group) if group.with_pk else []
    keys: list[Any] = []
    for start in range(0, n, per):
        stop = min(start + per, n)
        sql = dialect.insert(plan.table, columns, stop - start) + dialect.returning(plan.pk_columns)
        group.sent = start
        cursor = _pony.execute_in_session(db, sql, group.flat(start, stop))
        got = [r[0] if len(r) == 1 else tuple(r) for r in cursor.fetchall()]
        if len(got) != stop - start:  # the database broke RETURNING's contract: not a user error
            raise RuntimeError(
                f"bulk_insert({plan.name}): RETURNING gave {len(got)} keys for {stop - start} rows"
            )
        if not group.with_pk and any(b <= a for a, b in itertools.pairwise(got)):
            # Generated ids are handed out in row order; anything else means RETURNING order is not
            # (the database's contract, not a user error).
            raise RuntimeError(f"bulk_insert({plan.name}): RETURNING did not give ids in row order")
        keys.extend(got)
    return keys


def _prepare_copy(
    plan: RowPlan,
    dialect: Dialect,
    groups: list[InsertGroup],
    batch: list[Row],
    offset: int,
    return_ids: bool,
) -> list[tuple[InsertGroup, str | None]]:
    """Each group of a batch with its COPY text, or None where INSERT must write it.

    Every group is rendered before anything is sent, so a row with NUL in its text stops the batch
    before any of it is written (BulkWriteError naming the row and attribute). With ``return_ids``,
    a group of rows without their key gets keys from the key's sequence first (see copy_allowed).
    """
    prepared: list[tuple[InsertGroup, str | None]] = []
    for group in groups:
        if return_ids and not group.with_pk:
            group = _with_sequence_keys(plan, dialect, group)
        if not group.names:
            prepared.append((group, None))  # no columns to copy: INSERT ... DEFAULT VALUES
            continue
        try:
            prepared.append((group, copy_text(group.columns)))
        except CopyUnsupported:
            prepared.append((group, None))
        except NulInText as exc:
            position = group.positions[exc.row] if group.positions is not None else exc.row
            name = column_attrs(plan, group.names)[exc.column]
            row = batch[position]
            raise plan.value_error(name, row.get(name), exc, offset + position, "bulk_insert") from None
    return prepared


def _with_sequence_keys(plan: RowPlan, dialect: Dialect, group: InsertGroup) -> InsertGroup:
    assert plan.auto_pk is not None
    assert plan.copy_target is not None
    sequence = plan.copy_target[2]
    cursor = _pony.execute_in_session(dialect.db, dialect.next_values_sql(), (sequence, group.count))
    # Ascending, as the column default would hand them out row after row.
    keys = sorted(cursor.fetchone()[0])
    names = tuple(n for n in plan.attrs if n in group.names or n == plan.auto_pk)
    columns = list(group.columns)
    columns.insert(plan.columns_of(names).index(plan.pk_columns[0]), keys)
    return InsertGroup(True, names, group.positions, columns, group.count)
