"""What every bulk operation shares: batches, encoding a part of a batch (or naming the row that fails),
the check of values the driver refuses, the savepoint of a call, and the session upkeep after a batch
(private to ponykit.bulk)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from .. import _pony
from .._sql import Dialect, dialect_of
from ..errors import BulkWriteError, ConfigurationError, OptionError
from ..transactions import record_writes
from ..transactions._state import tx_state
from ._check import first_refusal
from ._rows import RowPlan, Shape, plan_for

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Part",
    "Progress",
    "Row",
    "Savepoint",
    "after_write",
    "all_or_nothing",
    "batches",
    "bulk_error",
    "cached_by_pk",
    "check_refused",
    "chunks",
    "column_attrs",
    "encode_batch",
    "flat",
    "raise_masked",
    "raise_row_error",
    "row_lacks",
    "start",
    "total_of",
    "unmask",
]

Progress = Callable[[int, "int | None"], Any]
Row = dict[str, Any]

DEFAULT_BATCH_SIZE = 10_000


# ---------------------------------------------------------------------------------------------------------
# A call and its batches


def start(entity: Any, batch_size: int | None, op: str) -> tuple[RowPlan, Dialect, int]:
    """The plan, dialect and batch size of a bulk call; checks that it runs in a db_session and flushes
    the session's pending changes first."""
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


def total_of(rows: Iterable[Any]) -> int | None:
    """The number of rows, or None for an iterator (the ``total`` of a progress call)."""
    try:
        return len(rows)  # type: ignore[arg-type]
    except TypeError:
        return None


def batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """Lists of up to ``size`` rows: memory stays bounded for a generator of millions."""
    it = iter(rows)
    while True:
        batch = list(itertools.islice(it, size))
        if not batch:
            return
        yield batch


def chunks(items: Sequence[Any], per_statement: int) -> Iterator[Sequence[Any]]:
    """Slices of ``items``, ``per_statement`` long (the last may be shorter)."""
    for begin in range(0, len(items), per_statement):
        yield items[begin : begin + per_statement]


def flat(rows: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The values of row tuples in one tuple, row after row (the parameters of one statement)."""
    return tuple(itertools.chain.from_iterable(rows))


def column_attrs(plan: RowPlan, names: tuple[str, ...]) -> list[str]:
    """For each parameter position, the attribute it belongs to."""
    return [n for n in names for _ in plan.attrs[n].columns]


def unmask(
    plan: RowPlan,
    names: tuple[str, ...],
    mask: int,
    mask_names: tuple[str, ...],
    values_list: list[tuple[Any, ...]],
) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """Leave out the columns whose bit is set in ``mask`` (None values Pony leaves to an SQL DEFAULT)."""
    masked = [n for b, n in enumerate(n for n in mask_names if n in names) if mask >> b & 1]
    keep = [i for i, c in enumerate(column_attrs(plan, names)) if c not in masked]
    names = tuple(n for n in names if n not in masked)
    return names, [tuple(v[i] for i in keep) for v in values_list]


# ---------------------------------------------------------------------------------------------------------
# Encoding, and naming the row that fails


@dataclass(frozen=True, slots=True)
class Part:
    """Rows of one batch handled together, and where they are in the caller's input: what an error
    about one of them needs to name it."""

    plan: RowPlan
    rows: Sequence[Any]
    offset: int  # input index of the first row of the caller's batch
    op: str  # the public function, for messages: "bulk_insert", ...
    positions: Sequence[int] | None = None  # the rows' places in the caller's batch; None: in order

    def index(self, i: int) -> int:
        """The input index of ``rows[i]``."""
        return self.offset + (self.positions[i] if self.positions is not None else i)


def encode_batch(part: Part, shape: Shape) -> list[Any]:
    """Encode every row of ``part`` with ``shape`` (all or none): a failing row raises BulkWriteError
    naming it."""
    try:
        return [shape.encode(row) for row in part.rows]
    except Exception:  # noqa: BLE001, S110 - converters raise anything; the loop below names the row
        pass
    # Outside the except block: the BulkWriteError must not carry the converter's error (which may
    # quote a sensitive value) as its __context__.
    return raise_row_error(part, shape)


def raise_row_error(part: Part, shape: Shape) -> NoReturn:
    """Encode the rows of a part that failed one by one, and raise the BulkWriteError of the first
    that fails."""
    for i, row in enumerate(part.rows):
        exc = _failure(shape.encode, row)
        if exc is not None:
            error = part.plan.row_error(row, part.index(i), shape.names, exc, part.op)
            raise_masked(part.plan, error, exc)
    # Internal invariant (a converter that fails once and then passes): not a user error.
    raise AssertionError("a row failed to encode once and then succeeded")


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


def check_refused(
    part: Part,
    dialect: str,
    names: tuple[str, ...],
    *,
    columns: Sequence[Sequence[Any]] | None = None,
    values: Sequence[tuple[Any, ...]] | None = None,
) -> None:
    """Raise BulkWriteError for the first encoded value the driver would refuse (see bulk._check),
    before any statement of the batch runs. The values of ``part``'s rows are given as ``columns``
    (one sequence per bound column) or as row tuples ``values``, in the order of ``part.rows``."""
    plan = part.plan
    checks = plan.column_checks(names, dialect)
    if not any(checks):
        return
    found = first_refusal(checks, columns, values)
    if found is None:
        return
    row, column, expected = found
    name = column_attrs(plan, names)[column]
    source = part.rows[row]
    value = source.get(name, _pony.DEFAULT) if isinstance(source, dict) else source
    error = plan.value_error(name, value, ValueError(expected), part.index(row), part.op)
    raise_masked(plan, error, None)


def bulk_error(
    plan: RowPlan, op: str, index: int | None, text: str, attribute: str | None = None
) -> BulkWriteError:
    """The BulkWriteError ``"{op}({Entity}): {text}"`` about input row ``index`` (and ``attribute``)."""
    return BulkWriteError(
        f"{op}({plan.name}): {text}", row_index=index, entity=plan.name, attribute=attribute
    )


def row_lacks(plan: RowPlan, op: str, index: int, name: str, what: str) -> BulkWriteError:
    """The BulkWriteError of input row ``index`` that lacks attribute ``name``: ``"row N lacks {what}"``."""
    return bulk_error(plan, op, index, f"row {index} lacks {what}", name)


# ---------------------------------------------------------------------------------------------------------
# Session upkeep


def after_write(
    plan: RowPlan,
    db: Any,
    *,
    keys: Iterable[Any] | None,
    relations: Iterable[str] = (),
    refresh: Sequence[Any] = (),
    refresh_attrs: frozenset[str] | None = None,
) -> None:
    """Session upkeep after one batch: reverse sides of the written ``relations`` first (so a re-read
    cannot meet a stale fully loaded collection), then the loaded objects written (``refresh``: their
    ``refresh_attrs``, None: all), then the query cache and the commit event, which names ``keys`` (None:
    keys unknown)."""
    written = frozenset(relations) & plan.relations
    if written:
        _pony.reset_reverse_of(db, plan.entity, written)
    if refresh:
        _pony.refresh_objects(db, refresh if isinstance(refresh, list) else list(refresh), refresh_attrs)
    _pony.query_results_clear(db)
    record_writes(db, plan.entity, keys if plan.pk_plain else None)


def cached_by_pk(plan: RowPlan, db: Any) -> dict[Any, Any]:
    """The session's loaded objects of the entity by their encoded primary key (as the rows bind it)."""
    found: dict[Any, Any] = {}
    for obj in _pony.cached_objects(db, plan.entity):
        # Loaded keys were validated by Pony already: they encode without error.
        parts = [plan.encoders[n](_pony.loaded_value_by_name(obj, n)) for n in plan.pk_names]
        values: list[Any] = []
        for name, part in zip(plan.pk_names, parts, strict=True):
            values.extend(part if len(plan.attrs[name].columns) > 1 else (part,))
        found[values[0] if len(values) == 1 else tuple(values)] = obj
    return found


# ---------------------------------------------------------------------------------------------------------
# All or nothing per call


class Savepoint:
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

    def rollback(self) -> None:
        """Roll the call's writes back and keep the savepoint (a failed statement is being looked into:
        PostgreSQL runs nothing else in the transaction until then)."""
        if self.name is not None:
            _pony.bookkeeping_in_session(self.db, f"ROLLBACK TO SAVEPOINT {self.name}")

    def release(self) -> None:
        """Release the savepoint (the call succeeded)."""
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
def all_or_nothing(db: Any) -> Iterator[Savepoint]:
    """Run a bulk call under a :class:`Savepoint`: its writes are undone if it raises."""
    savepoint = Savepoint(db)
    state = tx_state(_pony.require_session_cache(db), create=True)
    mark = len(state.journal) if state is not None else 0
    try:
        yield savepoint
    except BaseException:
        savepoint.undo()
        if state is not None:
            del state.journal[mark:]  # the audit entries of the undone call's batches
        raise
    savepoint.release()
