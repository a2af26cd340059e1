"""References checked before a batch is written, and rows the database refused named by their input index
(private to ponykit.bulk).

``check_references=True``: before anything of a batch is written, the keys its rows give for each to-one
relation are looked up in the table referred to, one ``SELECT key FROM parent WHERE key IN (...)`` per
relation and batch (cut to the parameter limit); a key not found raises BulkWriteError naming the first
such row (its index in the caller's input), the attribute and the entity referred to.

Without it the database's foreign key refuses the statement. That error, and every other one a write
statement raises for a row (a duplicate key, a value the column refuses), is mapped back to the input row
(:func:`raise_refused`): PostgreSQL's COPY names the line it was reading (its error context ``COPY t,
line N, column c``), which is the row's place in the group written; otherwise, once the call's savepoint
is rolled back to (PostgreSQL refuses every statement of a failed transaction until then), a missing
reference is found with the query above and a duplicate key by comparing the rows' keys with each other
and with the table (on SQLite, which undoes the failed statement alone, before the rollback: the rows
the call wrote earlier are still there to compare with). When no row can be found the error names the
rows of the statement that failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from .. import _pony
from .._sql import Dialect
from ..errors import BulkWriteError
from ._batch import Savepoint, chunks, column_attrs, flat
from ._collation import KeyCanon
from ._rows import RowPlan, plan_for

__all__ = ["Written", "check_references", "existing_keys", "raise_refused"]


@dataclass(frozen=True)
class Written:
    """Encoded rows of one batch written together (one statement shape), and where they are in the
    caller's input: what naming one of them needs."""

    plan: RowPlan
    op: str  # the public function, for messages
    offset: int  # input index of the batch's first row
    names: tuple[str, ...]  # attributes written, in column order
    columns: Sequence[Sequence[Any]]  # bound values, one sequence per column
    positions: Sequence[int] | None  # the rows' places in the batch; None: every row, in order
    # The attributes naming the table row each row writes (bulk_update: the primary key; bulk_upsert: the
    # conflict key); None for inserted rows.
    identity: tuple[str, ...] | None = None
    # The rows before row ``sent`` were written by statements that succeeded (bulk_insert's INSERT chunks).
    sent: int = 0

    @property
    def count(self) -> int:
        """The number of rows."""
        return len(self.columns[0]) if self.columns else 0

    def index(self, i: int) -> int:
        """The input index of row ``i``."""
        return self.offset + (self.positions[i] if self.positions is not None else i)

    def keys(self, attrs: Sequence[str]) -> list[tuple[Any, ...]]:
        """Per row, the bound values of the columns of ``attrs``."""
        at = column_attrs(self.plan, self.names)
        picked = [self.columns[k] for name in attrs for k, a in enumerate(at) if a == name]
        return list(zip(*picked, strict=True)) if picked else [()] * self.count


def _relation_keys(part: Written) -> Iterator[tuple[str, list[tuple[Any, ...] | None]]]:
    """Per relation attribute written, the key each row refers to (None: no reference)."""
    for name in part.names:
        if name in part.plan.relations:
            keys = part.keys([name])
            yield name, [None if all(v is None for v in k) else k for k in keys]


def existing_keys(dialect: Dialect, target: RowPlan, keys: set[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    """The keys (of ``target``'s primary key) that rows of its table hold, as the database compares them."""
    cols = target.pk_columns
    canon = KeyCanon(target, dialect, cols)
    ordered = list(keys)
    found: set[tuple[Any, ...]] = set()
    for chunk in chunks(ordered, max(1, dialect.max_params // len(cols))):
        sql = dialect.select_by_keys(target.table, cols, cols, len(chunk))
        found.update(tuple(r) for r in _pony.execute_in_session(dialect.db, sql, flat(chunk)).fetchall())
    if canon.active:  # MariaDB: 'ann' refers to the row 'Ann' under a case-insensitive collation
        canon.prepare([*ordered, *found])
        stored = {canon(k) for k in found}
        return {k for k in ordered if canon(k) in stored}
    if len(found) >= len(ordered):
        return set(ordered)  # every key has its row, whatever type the driver reads the key back as
    return found


def _first_missing(dialect: Dialect, parts: Sequence[Written]) -> tuple[Written, int, str, Any] | None:
    """``(part, row, attribute, key)`` of the first row (in input order) referring to a missing row."""
    by_name: dict[str, list[tuple[Written, int, tuple[Any, ...]]]] = {}
    for part in parts:
        for name, keys in _relation_keys(part):
            by_name.setdefault(name, []).extend((part, i, k) for i, k in enumerate(keys) if k is not None)
    best: tuple[Written, int, str, Any] | None = None
    for name, refs in by_name.items():
        if not refs:
            continue
        plan = refs[0][0].plan
        target = plan_for(_pony.reference_of(plan.attrs[name].attr).entity)
        found = existing_keys(dialect, target, {k for _, _, k in refs})
        if target.table == plan.table:  # a reference to a row of the same batch
            found |= {k for part in parts for k in part.keys(plan.pk_names)}
        for part, i, key in sorted(refs, key=lambda r: r[0].index(r[1])):
            if key not in found:
                if best is None or part.index(i) < best[0].index(best[1]):
                    best = (part, i, name, key[0] if len(key) == 1 else key)
                break
    return best


def _missing_error(part: Written, i: int, name: str, key: Any, refused: bool) -> BulkWriteError:
    plan = part.plan
    ref = _pony.reference_of(plan.attrs[name].attr)
    target = plan_for(ref.entity)
    hidden = plan.is_sensitive(name) or any(target.is_sensitive(n) for n in ref.pk_attrs)
    given = "a key (hidden: it is sensitive)" if hidden else f"{key!r}"
    how = "the database's foreign key refused the row" if refused else "check_references=True looked it up"
    index = part.index(i)
    return BulkWriteError(
        f"{part.op}({plan.name}): row {index}, attribute {name!r} refers to {_article(ref.name)} that does "
        f"not exist ({how}); nothing of this call was written. Expected: the key of an existing {ref.name} "
        f"(or the object). Given: {given}. Insert the {ref.name} first, or fix or drop the row.",
        row_index=index,
        entity=plan.name,
        attribute=name,
    )


def _article(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def check_references(dialect: Dialect, parts: Sequence[Written]) -> None:
    """Raise BulkWriteError for the first row of a batch (its ``parts``) whose relation key has no row in
    the table referred to; one query per relation written (cut to the parameter limit)."""
    found = _first_missing(dialect, parts)
    if found is not None:
        raise _missing_error(*found, refused=False)


# ---------------------------------------------------------------------------------------------------------
# A statement the database refused


def raise_refused(dialect: Dialect, savepoint: Savepoint, part: Written, exc: BaseException) -> NoReturn:
    """Raise the BulkWriteError naming the input row (and attribute) that made a write statement of
    ``part`` fail with ``exc``, chained as its ``__cause__`` (not when the entity has sensitive values);
    ``exc`` itself when it is not a database's refusal of a row (a lost connection ...).

    Call outside ``except`` blocks: the call's savepoint is rolled back to first (when no COPY line
    names the row), and the rows are looked for in the database.
    """
    failure = _pony.driver_failure(exc)
    if failure is None:
        raise exc
    plan = part.plan
    error: BulkWriteError | None = None
    with contextlib.suppress(Exception):  # the search failed too (a lost connection): name the rows
        error = _named(dialect, savepoint, part, failure, exc)
    if error is None:
        first, last = part.index(0), part.index(part.count - 1) if part.count else part.offset
        error = BulkWriteError(
            f"{part.op}({plan.name}): the database refused a row among input rows {first} to {last} "
            f"({_WHAT[failure.kind]}){_detail(part, exc)}; nothing of this call was written. The row could "
            f"not be told apart{_WHY_UNFOUND.get(failure.kind, '')}: fix or drop it, or call with a smaller "
            "batch_size to narrow the range.",
            row_index=None,
            entity=plan.name,
            attribute=_column_attr(part, failure.column),
        )
    if _hides_values(part):
        raise error from None
    raise error from exc


def _named(
    dialect: Dialect, savepoint: Savepoint, part: Written, failure: _pony.DriverFailure, exc: BaseException
) -> BulkWriteError | None:
    """The error naming the row ``failure`` is about, or None when it cannot be found."""
    if failure.line is not None and 0 < failure.line <= part.count:
        i = failure.line - 1
        name = _column_attr(part, failure.column)
        if name is None and failure.kind == "unique":
            found = _duplicate(part, [i], None)
            name = found[1] if found is not None else None
        return _row_error(part, i, name, failure.kind, exc)
    if failure.kind == "unique" and dialect.name == "sqlite" and part.op == "bulk_insert":
        # SQLite undid the failed INSERT alone: the rows the call wrote before it are in the table,
        # so a duplicate of one of them is found too, among the rows not written.
        found = _duplicate(part, range(part.sent, part.count), dialect)
        if found is not None:
            return _row_error(part, found[0], found[1], "unique", exc)
    savepoint.rollback()
    if failure.kind == "foreign_key":
        missing = _first_missing(dialect, [part])
        return _missing_error(*missing, refused=True) if missing is not None else None
    if failure.kind == "unique":
        found = _duplicate(part, range(part.count), dialect)
        return _row_error(part, found[0], found[1], "unique", exc) if found is not None else None
    return None


_WHY_UNFOUND = {"unique": " (a duplicate may repeat a row that an earlier batch of this call wrote)"}

_WHAT = {
    "foreign_key": "a reference to a missing row",
    "unique": "a duplicate key: another row of the input or of the table holds it",
    "data": "a value the column cannot hold",
    "other": "a constraint of the table",
}


def _hides_values(part: Written) -> bool:
    """True if the driver's message may quote a sensitive value: one of the entity's, or a sensitive key
    of an entity its relations written refer to."""
    plan = part.plan
    if plan.any_sensitive():
        return True
    for name in part.names:
        if name in plan.relations:
            ref = _pony.reference_of(plan.attrs[name].attr)
            if any(plan_for(ref.entity).is_sensitive(n) for n in ref.pk_attrs):
                return True
    return False


def _detail(part: Written, exc: BaseException) -> str:
    """The driver's message (first line), unless it may quote a sensitive value."""
    if _hides_values(part):
        return ""
    text = str(_pony.driver_error(exc)).strip().splitlines()
    return f": {text[0]}" if text else ""


def _column_attr(part: Written, column: str | None) -> str | None:
    if column is None:
        return None
    columns = part.plan.columns_of(part.names)
    at = column_attrs(part.plan, part.names)
    return next((a for c, a in zip(columns, at, strict=True) if c == column), None)


def _row_error(part: Written, i: int, name: str | None, kind: str, exc: BaseException) -> BulkWriteError:
    plan = part.plan
    index = part.index(i)
    where = f"row {index}, attribute {name!r}" if name else f"row {index}"
    given = ""
    if name is not None and not _hides_values(part):
        value = part.keys([name])[i]
        given = f" Given: {(value[0] if len(value) == 1 else value)!r}."
    return BulkWriteError(
        f"{part.op}({plan.name}): {where}: the database refused the row ({_WHAT[kind]}){_detail(part, exc)}; "
        f"nothing of this call was written.{given} Fix the row or drop it from the input.",
        row_index=index,
        entity=plan.name,
        attribute=name,
    )


def _duplicate(part: Written, rows: Sequence[int], dialect: Dialect | None) -> tuple[int, str] | None:
    """``(row, attribute)`` of the first of ``rows`` whose unique key (the primary key or a declared unique
    key, other than the one naming the row written) repeats an earlier row's of ``part``, or with
    ``dialect`` one held by another row of the table; None when none does (or the key is not written)."""
    plan = part.plan
    identity = set(part.identity or ())
    candidates = [k for k in (plan.pk_names, *plan.keys) if set(k) != identity]
    best: tuple[int, str] | None = None
    for key in candidates:
        if not set(key) <= set(part.names):
            continue
        raw = part.keys(key)
        canon = KeyCanon(plan, dialect, plan.columns_of(key)) if dialect is not None else None
        same = _same(canon, raw)
        seen: set[tuple[Any, ...]] = set()
        first = None
        for i, value in enumerate(raw):
            if any(v is None for v in value):  # NULLs never collide in a unique index
                continue
            if same(value) in seen and i in rows:
                first = i
                break
            seen.add(same(value))
        if first is None and dialect is not None:
            first = _taken(dialect, part, key, raw, canon, rows)
        if first is not None and (best is None or first < best[0]):
            best = (first, key[0])
    return best


def _same(canon: KeyCanon | None, keys: Sequence[tuple[Any, ...]]) -> Any:
    """A function giving equal values for keys the database holds equal (MariaDB's collations)."""
    if canon is None or not canon.active:
        return lambda k: k
    canon.prepare(keys)
    return canon


def _taken(
    dialect: Dialect,
    part: Written,
    key: tuple[str, ...],
    raw: list[tuple[Any, ...]],
    canon: KeyCanon | None,
    rows: Sequence[int],
) -> int | None:
    """The first of ``rows`` whose ``key`` another row of the table holds (none of ``rows`` is in it)."""
    plan = part.plan
    cols = plan.columns_of(key)
    n = len(cols)
    own = part.keys(part.identity) if part.identity else None
    ident_cols = plan.columns_of(part.identity) if part.identity else plan.pk_columns
    distinct = list({raw[i] for i in rows if not any(x is None for x in raw[i])})
    found: list[tuple[Any, ...]] = []
    for chunk in chunks(distinct, max(1, dialect.max_params // n)):
        sql = dialect.select_by_keys(plan.table, (*cols, *ident_cols), cols, len(chunk))
        found.extend(tuple(r) for r in _pony.execute_in_session(dialect.db, sql, flat(chunk)).fetchall())
    same = _same(canon, [*raw, *(r[:n] for r in found)])
    holders: dict[Any, set[tuple[Any, ...]]] = {}
    for r in found:
        holders.setdefault(same(r[:n]), set()).add(r[n:])
    for i in rows:
        pks = holders.get(same(raw[i]))
        if pks and (own is None or pks - {own[i]}):
            return i
    return None
