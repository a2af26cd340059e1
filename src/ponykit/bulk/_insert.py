"""bulk_insert's batches: encoding them in groups of one shape, and writing a group with INSERT (private).

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
from ._batch import Row, _encode_batch, _raise_row_error, _unmask
from ._rows import RowPlan

__all__ = ["InsertGroup", "insert_group", "insert_groups", "keys_of"]


@dataclass
class InsertGroup:
    """Rows of one batch that one INSERT (or COPY) shape writes."""

    with_pk: bool  # the rows give the auto primary key
    names: tuple[str, ...]  # attributes written, in column order (columns Pony leaves out removed)
    positions: list[int] | None  # the rows' places in the batch; None: every row, in order
    columns: list[list[Any]]  # bound values, one list per column
    count: int  # rows

    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[Any, ...]]:
        """The bound values of rows ``start`` to ``stop``, one tuple per row."""
        if not self.columns:
            return iter([()] * ((self.count if stop is None else stop) - start))
        return zip(*(c[start:stop] for c in self.columns), strict=True)

    def flat(self, start: int, stop: int) -> tuple[Any, ...]:
        """The bound values of rows ``start`` to ``stop`` in one tuple, row after row."""
        return tuple(itertools.chain.from_iterable(self.rows(start, stop)))


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
                _raise_row_error(plan, part, offset, names, shape.encode, "bulk_insert", positions)
            groups.append(InsertGroup(with_pk, names, positions, columns, len(part)))
            continue
        encoded = _encode_batch(plan, part, offset, names, shape.encode, "bulk_insert", positions)
        by_mask: dict[int, tuple[list[int], list[tuple[Any, ...]]]] = {}
        for index, (values, mask) in enumerate(encoded):
            where, rows = by_mask.setdefault(mask, ([], []))
            where.append(positions[index] if positions is not None else index)
            rows.append(values)
        for mask, (where, rows) in by_mask.items():
            kept, rows = _unmask(plan, names, mask, mask_names, rows) if mask else (names, rows)
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
