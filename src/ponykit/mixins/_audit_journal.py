"""App mode's journal: the changes of a transaction, folded into one record per row and written just
before COMMIT, in the same transaction.

Each write of an audited row (a flushed object, a batch of a bulk call) adds an :class:`Event` to the
transaction's journal (``TxState.journal`` in ``ponykit.transactions``). Rolling back the transaction,
a savepoint or a failed bulk call drops the events of what was undone. Just before COMMIT the events are
folded per row, comparing the row at the start of the transaction with the row at its end:

=====================  ======================  =============================================
at start               at end                  record
=====================  ======================  =============================================
absent                 present                 insert: every attribute ``[None, new]``
present                absent                  delete: every attribute ``[old, None]``
present                present                 update: attributes that differ ``[first old, last new]``
absent                 absent                  none (inserted then deleted in the transaction)
present, same values   present, same values    none (a write that changed nothing: no phantom)
=====================  ======================  =============================================

and written into the history table with one ``COPY`` (PostgreSQL) or a few multi-row INSERTs. A failure
there fails the commit: the transaction rolls back with its records.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from .. import _pony
from .._sql import dialect_of
from ..bulk._copy import copy_text
from ..errors import ConfigurationError
from ..security import current_principal, current_rls_settings
from ..transactions import record_writes
from ..transactions._state import TxState, tx_state

__all__ = ["Block", "Event", "audit_actor", "current_actor", "journal_events"]

_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar("ponykit_audit_actor", default=None)


@contextlib.contextmanager
def audit_actor(actor: str | None) -> Iterator[None]:
    """Record ``actor`` (a user name or id, as text) as the author of the changes made in the block.

    ``with pk.mixins.audit_actor("alice"): ...`` (a contextvar: per thread and per asyncio task; blocks
    nest). App mode takes the actor of each change when it is made; trigger mode reads the
    transaction's ``app.actor`` setting instead (see ``docs/mixins.md``).
    """
    token = _actor.set(None if actor is None else str(actor))
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> str | None:
    """Who is making the changes: the innermost :func:`audit_actor` block's actor; else the ``id`` of the
    principal acting (:func:`ponykit.security.acting_as`, a web integration's current user); else the
    ``app.actor`` setting of the current :func:`ponykit.rls_context` (the one trigger mode reads); else
    None."""
    actor = _actor.get()
    if actor is not None:
        return actor
    principal = current_principal()
    ident = getattr(principal, "id", None) if principal is not None else None
    if ident is not None:
        return str(ident)
    return current_rls_settings().get("app.actor")


@dataclass(slots=True)
class Event:
    """One write of one audited row: values as JSON forms (sensitive ones already masked)."""

    history: Any  # the history entity the record goes to
    entity: str
    key: str
    op: str  # insert, update, delete
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    secret: frozenset[str]  # sensitive attributes this write changed
    actor: str | None
    # An update may give its record's changes {name: [old, new]} instead of before/after (bulk_update's
    # hot path): a row written once needs nothing else.
    changes: dict[str, list[Any]] | None = None

    def old(self) -> dict[str, Any]:
        if self.changes is not None:
            return {name: pair[0] for name, pair in self.changes.items()}
        return self.before or {}

    def new(self) -> dict[str, Any]:
        if self.changes is not None:
            return {name: pair[1] for name, pair in self.changes.items()}
        return self.after or {}


@dataclass(slots=True)
class Block:
    """The update events of one bulk batch, compactly: row ``keys[i]`` changed as the UTF-8 JSON
    ``changes[i]`` says (``{name: [old, new]}``, no sensitive attribute). A row written once in the
    transaction (the common case) becomes its record as is; a row written again is folded with its
    other events, as :class:`Event` objects made then."""

    history: Any
    entity: str
    actor: str | None
    keys: list[str]
    changes: list[bytes]  # orjson's output, kept as bytes: COPY takes them as they are

    def events(self) -> list[Event]:
        """The block as one :class:`Event` per row (to be folded with other writes of its rows)."""
        history, entity, actor, loads = self.history, self.entity, self.actor, orjson.loads
        return [
            Event(history, entity, key, "update", None, None, _NO_SECRET, actor, loads(text))
            for key, text in zip(self.keys, self.changes, strict=True)
        ]


_NO_SECRET: frozenset[str] = frozenset()


@dataclass(slots=True)
class _Row:
    event: Event
    existed: bool
    start: dict[str, Any]
    end: dict[str, Any] | None
    secret: set[str] = field(default_factory=set)


def journal_events(db: Any, events: Sequence[Event | Block]) -> None:
    """Add ``events`` to the journal of the current transaction on ``db`` (written before its COMMIT)."""
    if not events:
        return
    if not _pony.is_provider_method_wrapped(db, "commit"):
        # Without attach() no commit step would write the records: fail closed, before the change is kept
        names = sorted({e.entity for e in events})
        raise ConfigurationError(
            f"ponykit: {', '.join(names)} is Audited but its Database was not attached, so no history "
            "record could be written with this change; call ponykit.attach(db) before "
            "db.generate_mapping(...)"
        )
    state = tx_state(_pony.require_session_cache(db), create=True)
    assert state is not None  # a cache was given
    state.journal.extend(events)
    if _write_records not in state.before_commit:
        state.before_commit.append(_write_records)


def _fold(events: list[Event]) -> list[_Row | Event]:
    """One entry per row: the event itself for a row written once (the common case of a bulk call,
    with nothing to fold), a folded :class:`_Row` for a row written more than once."""
    count: dict[tuple[Any, str, str], int] = {}
    for e in events:
        k = (e.history, e.entity, e.key)
        count[k] = count.get(k, 0) + 1
    if len(count) == len(events):
        return list(events)
    rows: dict[tuple[Any, str, str], _Row] = {}
    for e in events:
        k = (e.history, e.entity, e.key)
        row = rows.get(k)
        if row is None:
            end = None if e.op == "delete" else dict(e.new())
            rows[k] = _Row(e, e.op != "insert", dict(e.old()), end, set(e.secret))
            continue
        row.event = e  # the latest actor
        for name, value in e.old().items():
            row.start.setdefault(name, value)  # first old
        if e.op == "delete":
            row.end = None
        elif e.op == "insert" or row.end is None:
            row.end = dict(e.new())
        else:
            row.end.update(e.new())  # last new
        row.secret.update(e.secret)
    return list(rows.values())


def _changes(row: _Row | Event) -> tuple[str, dict[str, list[Any]]] | None:
    if isinstance(row, Event):
        if row.changes is not None:
            return row.op, row.changes
        if row.op == "insert":
            return "insert", {
                name: [None, value] for name, value in (row.after or {}).items() if value is not None
            }
        if row.op == "delete":
            return "delete", {
                name: [value, None] for name, value in (row.before or {}).items() if value is not None
            }
        before = row.before or {}
        return "update", {name: [before.get(name), value] for name, value in (row.after or {}).items()}
    if not row.existed:
        if row.end is None:
            return None
        # An insert lists the attributes it set, a delete those the row held: not the NULL ones
        return "insert", {name: [None, value] for name, value in row.end.items() if value is not None}
    if row.end is None:
        return "delete", {name: [value, None] for name, value in row.start.items() if value is not None}
    # A sensitive value is masked: two masks may hide a change, so a written one counts as changed;
    # NULL at both ends is known to be no change (set and cleared again in the transaction).
    changes = {
        name: [row.start.get(name), value]
        for name, value in row.end.items()
        if row.start.get(name) != value or (name in row.secret and value is not None)
    }
    return ("update", changes) if changes else None


def _transaction_name(db: Any) -> str:
    """PostgreSQL: the server's transaction id (what trigger mode records); elsewhere a random name."""
    if _pony.dialect(db) == "postgres":
        cursor = _pony.execute_in_session(db, "SELECT txid_current()", None)
        return str(cursor.fetchone()[0])
    return uuid.uuid4().hex


# COPY's column order: what every record of a block shares first, so a block's lines are one prefix
# and its (key, changes) pairs (see _copy_text).
_COLUMNS = ("actor", "at", "tx", "entity", "op", "key", "changes")


def _rewritten(entries: list[Event | Block]) -> bool:
    """True when some row has more than one entry (an event or a block's line): it must be folded."""
    seen: dict[tuple[Any, str], set[str]] = {}
    for e in entries:
        keys = e.keys if isinstance(e, Block) else (e.key,)
        known = seen.setdefault((e.history, e.entity), set())
        size = len(known)
        known.update(keys)
        if len(known) - size != len(keys):
            return True
    return False


def _write_records(state: TxState) -> None:
    """The before-commit step: fold the journal and insert the records (one COPY or a few multi-row
    INSERTs per Database, written directly: every value is text made here, but the time)."""
    entries = [e for e in state.journal if isinstance(e, (Event, Block))]
    if not entries:
        return
    blocks = [e for e in entries if isinstance(e, Block)]
    if blocks and _rewritten(entries):
        # Rows written more than once: every write as an Event, in journal order, folded below
        entries = [x for e in entries for x in (e.events() if isinstance(e, Block) else (e,))]
        blocks = []
    events = [e for e in entries if isinstance(e, Event)]
    by_history: dict[Any, tuple[list[list[Any]], list[Block]]] = {}
    commit_actor = current_actor()
    dumps = orjson.dumps
    for row in _fold(events):
        result = _changes(row)
        if result is None:
            continue
        op, changes = result
        event = row if isinstance(row, Event) else row.event
        actor = event.actor if event.actor is not None else commit_actor
        by_history.setdefault(event.history, ([], []))[0].append(
            [actor, event.entity, op, event.key, dumps(changes).decode()]
        )
    for block in blocks:
        if block.actor is None and commit_actor is not None:
            block = Block(block.history, block.entity, commit_actor, block.keys, block.changes)
        by_history.setdefault(block.history, ([], []))[1].append(block)
    for history, (records, chunks) in by_history.items():
        _insert(history, records, chunks)


def _copy_text(records: list[list[Any]], blocks: list[Block], at: str, tx: str) -> bytes:
    """COPY text of the records and blocks: entity, key, op and changes are JSON or identifiers (no raw
    tab, newline or NUL: JSON escapes them), so only their backslashes need doubling; the actor is any
    text. A block is one join of its (key, changes) pairs, each line prefixed by what they share."""
    parts = []
    actors: dict[Any, str] = {None: "\\N"}

    def who(actor: str | None) -> str:
        text = actors.get(actor)
        if text is None:
            text = actors[actor] = copy_text([[actor]]).rstrip("\n")
        return text

    for actor, entity, op, key, changes in records:
        line = f"{key}\t{changes}"
        if "\\" in line:
            line = line.replace("\\", "\\\\")
        parts.append(f"{who(actor)}\t{at}\t{tx}\t{entity}\t{op}\t{line}\n")
    data = [("".join(parts)).encode()]
    for block in blocks:
        if not block.keys:
            continue
        # bytes, not str: one non-BMP character would make a str of the whole body 4 bytes a character
        keys = "\n".join(block.keys).encode().split(b"\n")
        body = b"\n".join(map(b"\t".join, zip(keys, block.changes, strict=True)))
        if b"\\" in body:
            body = body.replace(b"\\", b"\\\\")
        head = f"{who(block.actor)}\t{at}\t{tx}\t{block.entity}\tupdate\t".encode()
        data.append(head + body.replace(b"\n", b"\n" + head) + b"\n")
    return b"".join(data)


def _insert(history: Any, records: list[list[Any]], blocks: list[Block]) -> None:
    db = _pony.database_of(history)
    at = _pony.column_value(_pony.entity_attribute(history, "at"), datetime.now(timezone.utc))
    tx = _transaction_name(db)
    dialect = dialect_of(db)
    table = _pony.entity_info(history).table
    if dialect.name == "postgres":
        text = _copy_text(records, blocks, copy_text([[at]]).rstrip("\n"), tx)
        sql = dialect.copy_from_stdin(table, _COLUMNS)
        _pony.copy_in_session(db, sql, io.BytesIO(text))
    else:
        for block in blocks:
            records.extend(
                [block.actor, block.entity, "update", key, text.decode()]
                for key, text in zip(block.keys, block.changes, strict=True)
            )
        per = max(1, dialect.max_params // len(_COLUMNS))
        for start in range(0, len(records), per):
            chunk = records[start : start + per]
            arguments = tuple(v for r in chunk for v in (r[0], at, tx, *r[1:]))
            _pony.execute_in_session(db, dialect.insert(table, _COLUMNS, len(chunk)), arguments)
    _pony.query_results_clear(db)
    record_writes(db, history, None)
