"""bulk_update and bulk_upsert batches: rows grouped by the attributes they set, encoded, checked, and
written by primary key (UPDATE) or by a conflict key (INSERT ... ON CONFLICT / ON DUPLICATE KEY UPDATE)
(private to ponykit.bulk)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import _pony
from .._sql import Dialect
from ..errors import ConfigurationError
from ._batch import (
    Part,
    Row,
    Savepoint,
    bulk_error,
    check_refused,
    chunks,
    encode_batch,
    flat,
    raise_row_error,
    row_lacks,
    unmask,
)
from ._collation import KeyCanon
from ._references import Written, check_references, raise_refused
from ._rows import RowPlan, Shape

__all__ = [
    "Upsert",
    "UpsertGroup",
    "check_settable",
    "encode_updates",
    "update_keys",
    "update_values",
    "write_updates",
]

# The attribute names a group of rows sets, the rows' encoded values (in their shape's order), and the
# rows' places in the batch.
UpdateGroup = tuple[tuple[str, ...], list[tuple[Any, ...]], list[int]]


def check_settable(plan: RowPlan, name: str, index: int | None, op: str) -> None:
    """Raise BulkWriteError unless attribute ``name`` can be set by ``op`` (row ``index``, None: the
    attribute is named in the call's ``fields``/``update``)."""
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
        raise bulk_error(plan, op, index, f"{where}attribute {name!r} {problem}", name)


# ---------------------------------------------------------------------------------------------------------
# UPDATE


def _update_names(plan: RowPlan, row: Row, fields: Sequence[str] | None, index: int) -> tuple[str, ...]:
    """The attributes row ``index`` sets (checked), besides its primary key."""
    if not isinstance(row, dict):
        raise plan.row_error(row, index, (), TypeError("not a dict"), "bulk_update")
    for name in plan.pk_names:
        if name not in row:
            raise row_lacks(
                plan,
                "bulk_update",
                index,
                name,
                f"primary-key attribute {name!r}; each row must hold the primary key of the row to update",
            )
    if fields is not None:
        for name in fields:
            if name not in row:
                raise row_lacks(plan, "bulk_update", index, name, f"attribute {name!r} named in fields")
        return tuple(fields)
    names = tuple(n for n in row if n not in plan.pk_names)
    for name in names:
        check_settable(plan, name, index, "bulk_update")
    if not names:
        raise bulk_error(plan, "bulk_update", index, f"row {index} has nothing to set besides the key")
    return names


def encode_updates(
    plan: RowPlan,
    dialect: Dialect,
    batch: list[Row],
    offset: int,
    fields: Sequence[str] | None,
    check_refs: bool = False,
) -> list[UpdateGroup]:
    """A batch (input rows from index ``offset``) encoded for UPDATE, grouped by the attributes the rows
    set; an invalid row, a value the driver refuses or (with ``check_refs``) a reference to a missing
    row raises BulkWriteError before anything is sent."""
    # a row's checked attribute names -> (the rows' places in the batch, the rows)
    groups: dict[tuple[str, ...], tuple[list[int], list[Row]]] = {}
    seen: dict[tuple[str, ...], tuple[str, ...]] = {}  # a row's keys -> checked attribute names
    for i, row in enumerate(batch):
        row_keys = tuple(row) if isinstance(row, dict) else ()
        names = seen.get(row_keys)
        if names is None:
            names = seen[row_keys] = _update_names(plan, row, fields, offset + i)
        where, part = groups.setdefault(names, ([], []))
        where.append(i)
        part.append(row)
    encoded: list[UpdateGroup] = []
    # SQLite binds the set values first, then the key; the others bind the key first.
    key_last = dialect.name == "sqlite"
    for names, (where, part) in groups.items():
        shape = plan.shape(names + plan.pk_names if key_last else plan.pk_names + names)
        rows = Part(plan, part, offset, "bulk_update", where)
        values = encode_batch(rows, shape)
        check_refused(rows, dialect.name, shape.names, values=values)
        encoded.append((names, values, where))
    if check_refs:
        check_references(dialect, [_written(plan, dialect, offset, g, "bulk_update") for g in encoded])
    return encoded


def _written(plan: RowPlan, dialect: Dialect, offset: int, group: UpdateGroup, op: str) -> Written:
    names, values, where = group
    shape = names + plan.pk_names if dialect.name == "sqlite" else plan.pk_names + names
    return Written(plan, op, offset, shape, list(zip(*values, strict=True)), where, plan.pk_names)


def write_updates(
    plan: RowPlan, dialect: Dialect, groups: list[UpdateGroup], offset: int, savepoint: Savepoint
) -> tuple[int, list[Any]]:
    """Run the UPDATEs of a batch's groups (input rows from index ``offset``); the number of rows matched
    and the keys of the rows given. A row the database refuses raises BulkWriteError naming it."""
    matched = 0
    for group in groups:
        names, values, _ = group
        failed: Exception | None = None
        try:
            matched += _update_group(plan, dialect, names, values)
        except Exception as exc:  # noqa: BLE001 - named below, outside the except block
            failed = exc
        if failed is not None:
            raise_refused(dialect, savepoint, _written(plan, dialect, offset, group, "bulk_update"), failed)
    return matched, update_keys(plan, dialect, groups)


def update_keys(plan: RowPlan, dialect: Dialect, groups: list[UpdateGroup]) -> list[Any]:
    """The primary keys of a batch's rows as bound (scalars, tuples for a composite key), group by group."""
    keys: list[Any] = []
    npk = len(plan.pk_columns)
    key_last = dialect.name == "sqlite"
    for _, values, _ in groups:
        if key_last:
            keys.extend(v[-1] if npk == 1 else v[-npk:] for v in values)
        else:
            keys.extend(v[0] if npk == 1 else v[:npk] for v in values)
    return keys


def update_values(
    plan: RowPlan, dialect: Dialect, groups: list[UpdateGroup]
) -> tuple[tuple[tuple[str, ...], list[tuple[Any, ...]]], ...]:
    """Per group: ``(set columns, rows)``, each row the key's values then the set values, as bound (for
    the extensions' ``Change.values``)."""
    found = []
    for names, values, _ in groups:
        columns = plan.columns_of(names)
        if dialect.name == "sqlite":  # bound set values first, key last: put the key first
            n = len(columns)
            values = [v[n:] + v[:n] for v in values]
        found.append((columns, values))
    return tuple(found)


def _update_group(
    plan: RowPlan, dialect: Dialect, names: tuple[str, ...], values: list[tuple[Any, ...]]
) -> int:
    db = dialect.db
    set_cols = plan.columns_of(names)
    pk_cols = plan.pk_columns
    exprs = [e for e in plan.exprs if e[0] not in set_cols]  # a value the row gives wins
    # A subclass of a single-table hierarchy updates only its own rows, as Pony's Entity[pk] finds only those.
    classes = plan.class_values
    class_filter = (plan.class_column, len(classes)) if plan.class_column else None
    if dialect.name == "sqlite":
        # executemany of a one-row UPDATE measured fastest on SQLite (a prepared statement in a C loop)
        sql = dialect.update_one(plan.table, set_cols, pk_cols, class_filter, exprs=exprs)
        if classes:
            values = [v + classes for v in values]
        cursor = _pony.execute_in_session(db, sql, values)  # rows are encoded set values first, key last
        return int(cursor.rowcount)
    types = _pony.column_sql_types(plan.entity) if dialect.name == "postgres" else {}
    per = max(1, (dialect.max_params - len(classes)) // (len(pk_cols) + len(set_cols)))
    count = 0
    for chunk in chunks(values, per):
        sql = dialect.update_many(plan.table, set_cols, pk_cols, len(chunk), types, class_filter, exprs=exprs)
        count += int(_pony.execute_in_session(db, sql, flat(chunk) + classes).rowcount)
    return count


# ---------------------------------------------------------------------------------------------------------
# UPSERT


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


@dataclass
class UpsertGroup:
    """Rows of one batch that one upsert statement shape writes."""

    names: tuple[str, ...]  # the attributes encoded, in column order
    given: frozenset[str]  # the attributes the rows give
    mask: int  # bit b set: the b-th attribute with an SQL default is None (left out of the statement)
    items: list[tuple[int, tuple[Any, ...]]]  # (the row's place in the batch, its encoded values)


class Upsert:
    """One bulk_upsert call: its conflict key and the attributes it updates; encodes and writes batches."""

    def __init__(
        self, plan: RowPlan, dialect: Dialect, conflict: str | Sequence[str], update: Sequence[str] | None
    ) -> None:
        self.plan = plan
        self.dialect = dialect
        self.key = _conflict_key(plan, conflict)
        if update is not None:
            for name in update:
                check_settable(plan, name, None, "bulk_upsert")
            if update:  # the attributes the entity's mixins set at every update are written too
                update = (*update, *(n for n in plan.extra_update_names if n not in update))
        self.update = update
        self.mask_names = tuple(n for n, a in plan.attrs.items() if a.has_sql_default)
        self.key_cols = plan.columns_of(self.key)
        # Conflict keys compare as the key columns do (MariaDB: case- and accent-insensitive collations).
        self.canon = KeyCanon(plan, dialect, self.key_cols)
        self.offset = 0  # input index of the first row of the batch being written
        self.batch_keys: list[tuple[Any, ...]] = []  # the conflict keys of the batch's rows, as bound
        # the attributes a row gives -> (the attributes written, their shape, whether its encoder also
        # returns a mask, the positions of the conflict key's values)
        self._shapes: dict[frozenset[str], tuple[tuple[str, ...], Shape, bool, list[int]]] = {}

    def _shape_of(self, given: frozenset[str]) -> tuple[tuple[str, ...], Shape, bool, list[int]]:
        found = self._shapes.get(given)
        if found is None:
            plan = self.plan
            names = plan.insert_names(plan.auto_pk is None or plan.auto_pk in given)
            masks = tuple(n for n in self.mask_names if n in names)
            columns = plan.columns_of(names)
            key_pos = [columns.index(c) for c in self.key_cols]
            found = self._shapes[given] = (names, plan.shape(names, masks), bool(masks), key_pos)
        return found

    def encode(self, batch: list[Row], offset: int, check_refs: bool = False) -> list[UpsertGroup]:
        """A batch (input rows from index ``offset``) encoded, grouped by shape; an invalid row, a value
        the driver refuses, two rows with one conflict key or (with ``check_refs``) a reference to a
        missing row raise BulkWriteError before anything is sent."""
        plan = self.plan
        self.offset = offset
        groups: dict[tuple[frozenset[str], int], UpsertGroup] = {}
        batch_keys: list[tuple[Any, ...]] = []
        for i, row in enumerate(batch):
            if not isinstance(row, dict):
                raise plan.row_error(row, offset + i, (), TypeError("not a dict"), "bulk_upsert")
            for name in self.key:
                if name not in row:
                    raise row_lacks(
                        plan,
                        "bulk_upsert",
                        offset + i,
                        name,
                        f"{name!r}, part of the conflict key {self.key}; every row must give the key it is "
                        "matched on",
                    )
            given = frozenset(row)
            names, shape, masked, key_pos = self._shape_of(given)
            try:
                one = shape.encode(row)
            except Exception:  # noqa: BLE001 - converters raise anything; the row is named below
                one = None
            if one is None:  # outside the except block: no __context__ quoting a value
                raise_row_error(Part(plan, [row], offset + i, "bulk_upsert"), shape)
            values, mask = one if masked else (one, 0)
            batch_keys.append(tuple(values[p] for p in key_pos))
            group = groups.get((given, mask))
            if group is None:
                group = groups[(given, mask)] = UpsertGroup(names, given, mask, [])
            group.items.append((i, values))
        for group in groups.values():
            part = Part(
                plan, [batch[i] for i, _ in group.items], offset, "bulk_upsert", [i for i, _ in group.items]
            )
            check_refused(part, self.dialect.name, group.names, values=[v for _, v in group.items])
        self._check_duplicate_keys(batch_keys, offset)
        self.batch_keys = batch_keys  # the extensions' Change of this batch names its rows by them
        if check_refs:
            check_references(self.dialect, [self._written(g) for g in groups.values()])
        return list(groups.values())

    def _written(self, group: UpsertGroup) -> Written:
        columns = list(zip(*(v for _, v in group.items), strict=True))
        positions = [i for i, _ in group.items]
        return Written(self.plan, "bulk_upsert", self.offset, group.names, columns, positions, self.key)

    def _check_duplicate_keys(self, keys: list[tuple[Any, ...]], offset: int) -> None:
        """Two rows of one batch whose conflict keys the database holds equal: BulkWriteError (the second
        would silently overwrite the first in one statement)."""
        canon = self.canon
        if canon.active:
            canon.prepare(keys)
            keys = [canon(k) for k in keys]
        seen: dict[tuple[Any, ...], int] = {}
        for i, k in enumerate(keys):
            first = seen.setdefault(k, i)
            if first != i:
                how = " (equal under the key columns' collation)" if canon.active else ""
                raise bulk_error(
                    self.plan,
                    "bulk_upsert",
                    offset + i,
                    f"rows {offset + first} and {offset + i} of one batch have the same conflict key "
                    f"{self.key}{how}; merge them before the call",
                    self.key[0],
                )

    def write(
        self, groups: list[UpsertGroup], batch_ids: list[Any] | None, savepoint: Savepoint
    ) -> tuple[int, int, int]:
        """Write a batch's groups; rows inserted, updated and skipped. With ``batch_ids`` (one place per
        row of the batch) the primary key of each row is put in its place. A row the database refuses
        raises BulkWriteError naming it."""
        inserted = updated = skipped = 0
        for group in groups:
            attrs = self.plan.attrs
            upd = [
                n
                for n in (self.update if self.update is not None else group.names)
                if n in group.given
                and n not in self.key
                and not attrs[n].is_pk
                and not attrs[n].is_discriminator
            ]
            failed: Exception | None = None
            try:
                i_count, u_count, s_count = self._write_group(group, upd, batch_ids)
            except Exception as exc:  # noqa: BLE001 - named below, outside the except block
                failed = exc
            if failed is not None:
                raise_refused(self.dialect, savepoint, self._written(group), failed)
            inserted += i_count
            updated += u_count
            skipped += s_count
        return inserted, updated, skipped

    def _write_group(
        self, group: UpsertGroup, upd: list[str], batch_ids: list[Any] | None
    ) -> tuple[int, int, int]:
        plan, dialect = self.plan, self.dialect
        db = dialect.db
        names = group.names
        values_list = [v for _, v in group.items]
        if group.mask:
            names, values_list = unmask(plan, names, group.mask, self.mask_names, values_list)
        columns = plan.columns_of(names)
        key_cols = self.key_cols
        key_pos = [columns.index(c) for c in key_cols]  # in the key's column order, as the SQL names them
        update_cols = plan.columns_of(upd)
        exprs = [e for e in plan.exprs if e[0] not in update_cols] if update_cols else []
        per = max(1, dialect.max_params // max(len(columns), 1))
        inserted = updated = skipped = 0
        for begin in range(0, len(values_list), per):
            chunk = values_list[begin : begin + per]
            keys = [tuple(v[i] for i in key_pos) for v in chunk]
            sql = dialect.upsert(plan.table, columns, len(chunk), key_cols, update_cols, exprs)
            if dialect.name == "postgres":
                # xmax is 0 for a row this statement inserted, the updating transaction's id otherwise.
                cursor = _pony.execute_in_session(db, sql + " RETURNING (xmax = 0)", flat(chunk))
                new = sum(1 for r in cursor.fetchall() if r[0])
                old = len(chunk) - new
            else:
                # Rows that already exist are counted first, in the same transaction.
                count_sql = dialect.count_keys(plan.table, key_cols, len(chunk))
                old = int(_pony.execute_in_session(db, count_sql, flat(keys)).fetchone()[0])
                _pony.execute_in_session(db, sql, flat(chunk))
                new = len(chunk) - old
            inserted += new
            if update_cols:
                updated += old
            else:
                skipped += old
            if batch_ids is not None:
                self._read_ids(keys, group.items[begin : begin + per], batch_ids)
        return inserted, updated, skipped

    def _read_ids(
        self, keys: list[tuple[Any, ...]], items: list[tuple[int, tuple[Any, ...]]], batch_ids: list[Any]
    ) -> None:
        """Put the primary key of each row written (found by its conflict key in ``keys``) at the row's
        place in the batch."""
        plan, dialect, canon, key_cols = self.plan, self.dialect, self.canon, self.key_cols
        select = dialect.select_by_keys(plan.table, (*key_cols, *plan.pk_columns), key_cols, len(keys))
        stored = [tuple(r) for r in _pony.execute_in_session(dialect.db, select, flat(keys)).fetchall()]
        nk = len(key_cols)
        if canon.active:  # the stored key may differ from the row's ('Ann' found for 'ann')
            canon.prepare([r[:nk] for r in stored])
        found = {}
        for r in stored:
            pk = r[nk:]
            found[canon(r[:nk])] = pk[0] if len(pk) == 1 else pk
        for (index, _), k in zip(items, keys, strict=True):
            batch_ids[index] = found.get(canon(k))
