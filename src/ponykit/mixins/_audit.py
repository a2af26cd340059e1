"""``Audited``: one history record per changed row per transaction, in app mode or trigger mode.

App mode (the default, every backend): Pony's flush hooks and ponykit's bulk extension report each
write of a row to the transaction's journal (``_audit_journal``), which becomes one record per row
just before COMMIT, in the same transaction. Trigger mode (PostgreSQL): generated triggers write the
same records (``_audit_triggers``), so raw SQL is covered too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pony.orm import select

from .. import _pony
from .._sql import dialect_of
from ..bulk._extensions import BulkExtension, Change, register_extension
from ..errors import ConfigurationError
from ._audit_diff import differ
from ._audit_journal import Block, Event, current_actor, journal_events
from ._audit_plan import MASK, AuditField, AuditPlan, Layout, audit_plan
from ._audit_store import AuditRecord, declare_history, to_record
from ._base import EntityMixin

__all__ = ["AUDIT_MODES", "Audited"]

AUDIT_MODES = ("app", "trigger")


class Audited(EntityMixin):
    """An audit history of every change of the entity's rows: ``class Order(db.Entity, Audited)``.

    One record per changed row per transaction (who, when, operation, changed attributes old -> new,
    transaction id), in the table ``ponykit_audit`` that ponykit declares on the Database. ``audit_mode
    = "app"`` (default) writes the records in the transaction itself, just before COMMIT, for ORM
    writes and ponykit's bulk writes; ``audit_mode = "trigger"`` leaves it to PostgreSQL triggers
    installed by :func:`~ponykit.mixins.install_audit_triggers` (raw SQL is covered too). Sensitive and
    encrypted attributes are recorded as changed, never their values (``"***"``). See docs/mixins.md.
    """

    #: "app" (hooks, every backend) or "trigger" (PostgreSQL triggers).
    audit_mode: ClassVar[str] = "app"
    _ponykit_options_: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _ponykit_attributes_(cls, entity: Any) -> dict[str, Any]:
        return {}  # the history lives in its own table: no attribute on the entity

    @classmethod
    def _ponykit_setup_(cls, entity: Any) -> None:
        mode = entity.__dict__.get("audit_mode", getattr(entity, "audit_mode", "app"))
        if mode not in AUDIT_MODES:
            raise ConfigurationError(
                f"{entity.__name__}.audit_mode is {mode!r}; expected one of {', '.join(AUDIT_MODES)}: "
                '"app" (every backend, ORM and ponykit bulk writes) or "trigger" (PostgreSQL triggers)'
            )
        declare_history(_pony.database_of(entity))
        if mode == "app":
            _pony.add_save_hook(entity, "before", _before_save)
            _pony.add_save_hook(entity, "after", _after_save)
            register_extension(entity, _EXTENSION)

    def history(self) -> list[AuditRecord]:
        """The committed history records of this object's row, oldest first (records of the current
        transaction appear once it commits, in app mode)."""
        entity = type(self)
        plan = audit_plan(entity)
        history = declare_history(_pony.database_of(entity))
        key = plan.key_of_values(_pony.raw_primary_key(self))
        name = plan.name
        rows = select(h for h in history if h.entity == name and h.key == key)
        return [to_record(plan, r) for r in sorted(rows, key=lambda r: r.id)]


def _mode(entity: Any) -> str:
    return str(getattr(entity, "audit_mode", "app"))


# ---------------------------------------------------------------------------------------------------------
# ORM writes: a before hook keeps the row's stored values, the after hook reports the write


class _Pending(threading.local):
    def __init__(self) -> None:
        # id(obj) -> (obj, key text, stored values): from the before hook to the after hook of a flush
        self.before: dict[int, tuple[Any, str, dict[str, Any]]] = {}


_pending = _Pending()


def _history_of(entity: Any) -> Any:
    return declare_history(_pony.database_of(entity))


def _before_save(obj: Any, op: str) -> None:
    plan = audit_plan(type(obj))
    if op == "insert":
        return  # the key may be generated: known after the INSERT
    key = plan.key_of_values(_pony.raw_primary_key(obj))
    _pending.before[id(obj)] = (obj, key, _pony.stored_values(obj, plan.attrs))


def _after_save(obj: Any, op: str) -> None:
    entity = type(obj)
    plan = audit_plan(entity)
    stashed = _pending.before.pop(id(obj), None)
    if stashed is not None and stashed[0] is not obj:
        stashed = None
    event: Event | None
    if op == "insert":
        key = plan.key_of_values(_pony.raw_primary_key(obj))
        after, secret = _jsons(plan, _pony.current_values(obj, plan.attrs))
        event = Event(_history_of(entity), plan.name, key, "insert", None, after, secret, current_actor())
    elif stashed is None:
        return  # no before hook ran for it (cannot happen with Pony 0.7.20's flush)
    elif op == "delete":
        before, secret = _jsons(plan, stashed[2])
        history = _history_of(entity)
        event = Event(history, plan.name, stashed[1], "delete", before, None, secret, current_actor())
    else:
        event = _update_event(plan, entity, stashed[1], stashed[2], _pony.current_values(obj, plan.attrs))
    if event is None:
        return
    journal_events(_pony.database_of(entity), [event])


def _jsons(plan: AuditPlan, values: dict[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """JSON forms of a whole row's values; its non-null sensitive attributes are masked and reported."""
    out: dict[str, Any] = {}
    secret: set[str] = set()
    for f in plan.fields:
        if f.name in values:
            value = values[f.name]
            if f.sensitive and value is not None:
                out[f.name] = MASK
                secret.add(f.name)
            else:
                out[f.name] = None if f.sensitive else f.json_of(value)
    return out, frozenset(secret)


def _update_event(
    plan: AuditPlan, entity: Any, key: str, old: dict[str, Any], new: dict[str, Any]
) -> Event | None:
    diff = _Diff()
    for f in plan.fields:
        if f.name not in new:
            continue
        value = new[f.name]
        previous = old.get(f.name)
        if previous == value and (f.name in old or value is None):
            continue
        diff.note(f, previous, value, f.json_of, _is_null)
    return diff.event(_history_of(entity), plan.name, key, current_actor())


def _is_null(value: Any) -> bool:
    return value is None


def _all_null(values: tuple[Any, ...]) -> bool:
    return all(v is None for v in values)


class _Diff:
    """The changed attributes of one updated row, as an update event's before/after (the ORM's and the
    bulk reads' common tail: sensitive attributes masked, equal JSON forms are no change)."""

    __slots__ = ("after", "before", "secret")

    def __init__(self) -> None:
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}
        self.secret: set[str] = set()

    def note(
        self, f: AuditField, old: Any, new: Any, dump: Callable[[Any], Any], is_null: Callable[[Any], bool]
    ) -> None:
        """Attribute ``f`` went from ``old`` to ``new`` (values that differ; ``dump`` gives JSON forms)."""
        if f.sensitive:
            self.before[f.name] = None if is_null(old) else MASK
            self.after[f.name] = None if is_null(new) else MASK
            self.secret.add(f.name)
            return
        old_json, new_json = dump(old), dump(new)
        if old_json != new_json:
            self.before[f.name] = old_json
            self.after[f.name] = new_json

    def event(self, history: Any, name: str, key: str, actor: str | None) -> Event | None:
        """The update event (None: nothing recorded changed, no phantom record)."""
        if not self.after:
            return None
        return Event(history, name, key, "update", self.before, self.after, frozenset(self.secret), actor)


# ---------------------------------------------------------------------------------------------------------
# Bulk writes: one SELECT of the rows before a batch's statements and one after, per batch


class _AuditExtension(BulkExtension):
    """Reads the rows a bulk batch writes: before its statements (only the set columns for an update)
    and, unless ``bulk_update`` said what it sets, after them."""

    wants_keys = True  # bulk_insert asks for generated keys: the inserted rows are read back by key

    def before_change(self, change: Change) -> Any:
        if _mode(change.entity) != "app" or change.op == "insert" or not change.keys:
            return None
        plan = audit_plan(change.entity)
        columns = None
        if change.op == "update" and change.values:
            columns = frozenset(c for cols, _ in change.values for c in cols) | frozenset(change.computed)
        layout = plan.layout(columns)
        whole = _diffs_bound(change)  # the generated diff reads whole rows (key first): no slice per row
        return layout, _read_rows(change.entity, layout, change.columns, change.keys, whole), whole

    def after_change(self, change: Change, token: Any) -> None:
        entity = change.entity
        if _mode(entity) != "app" or not change.keys:
            return
        plan = audit_plan(entity)
        history = _history_of(entity)
        actor = current_actor()
        events: Sequence[Event | Block]
        if token is not None and token[2]:
            shift = len(plan.key_columns)
            events = _update_events(plan, history, actor, change, token[0], token[1], shift)
        else:
            events = _read_events(plan, history, actor, change, token)
        journal_events(_pony.database_of(entity), events)


def _diffs_bound(change: Change) -> bool:
    """Whether the batch's records come from its old rows and the values it bound (no read after)."""
    return change.op == "update" and bool(change.values) and not change.computed


_EXTENSION = _AuditExtension()


def _read_events(plan: AuditPlan, history: Any, actor: str | None, change: Change, token: Any) -> list[Event]:
    """The events of a batch from the rows read before it (``token``) and after it."""
    layout = token[0] if token is not None else plan.layout()
    old: dict[str, tuple[Any, ...]] = token[1] if token is not None else {}
    full = plan.layout()
    new = (
        {} if change.op == "delete" else _read_rows(change.entity, layout, change.columns, change.keys or [])
    )
    events: list[Event] = []
    for key, row in new.items():
        previous = old.get(key)
        if previous is None:
            after, secret = _raw_jsons(layout, row)
            events.append(Event(history, plan.name, key, "insert", None, after, secret, actor))
        else:
            event = _raw_update(layout, plan.name, history, key, previous, row, actor)
            if event is not None:
                events.append(event)
    if change.op == "delete":
        for key, row in old.items():
            before, secret = _raw_jsons(full, row)
            events.append(Event(history, plan.name, key, "delete", before, None, secret, actor))
    return events


def _update_events(
    plan: AuditPlan,
    history: Any,
    actor: str | None,
    change: Change,
    before: Layout,
    old: dict[str, tuple[Any, ...]],
    shift: int = 0,
) -> list[Event | Block]:
    """A bulk_update batch's events from the rows read before it (``before``'s columns from index
    ``shift`` of each) and the values it bound (no read)."""
    events: list[Event | Block] = []
    nkey = len(plan.key_columns)
    key_of_raw = plan.key_of_raw
    for columns, rows in change.values:
        layout = plan.layout(frozenset(columns))
        if not layout.fields:
            continue
        if any(len(f.columns) != 1 or f.sensitive for f in layout.fields):
            new_at = [nkey + columns.index(c) for c in layout.columns]
            old_at = [shift + before.columns.index(c) for c in layout.columns]
            for values in rows:
                key = key_of_raw(values[:nkey])
                previous = old.get(key)
                if previous is None:
                    continue  # no such row: bulk_update skipped it
                a = tuple([previous[i] for i in old_at])
                b = tuple([values[i] for i in new_at])
                event = _raw_update(layout, plan.name, history, key, a, b, actor)
                if event is not None:
                    events.append(event)
            continue
        # The common case, one plain column per attribute: a loop generated for these columns
        diff = differ(plan, before, columns, layout, shift)
        keys, texts = diff(rows, old, key_of_raw)
        if keys:
            events.append(Block(history, plan.name, actor, keys, texts))
    return events


def _read_rows(
    entity: Any, layout: Layout, columns: Sequence[str], keys: list[tuple[Any, ...]], whole: bool = False
) -> dict[str, tuple[Any, ...]]:
    """Key text -> the raw ``layout`` columns of the rows with one of ``keys`` in ``columns`` (with
    ``whole``: the rows as read, the key's columns first)."""
    plan = audit_plan(entity)
    db = _pony.database_of(entity)
    dialect = dialect_of(db)
    select_cols = plan.key_columns + layout.columns
    nkey = len(plan.key_columns)
    found: dict[str, tuple[Any, ...]] = {}
    statements: list[tuple[str, tuple[Any, ...]]] = []
    if (
        dialect.name == "postgres"
        and len(columns) == 1
        and all(type(k[0]) is int for k in keys)
        and min(keys)[0] >= -(2**63)
        and max(keys)[0] < 2**63  # each a bigint
    ):
        # One array parameter: PostgreSQL plans `= ANY($1)` once, where 10,000 placeholders take long.
        # Given as one array literal: psycopg2 would send ARRAY[1, 2, ...], 10,000 constants to parse.
        cols = ", ".join(dialect.q(c) for c in select_cols)
        where = f"{dialect.q(columns[0])} = ANY({dialect.placeholder}::bigint[])"
        literal = "{" + ",".join([str(k[0]) for k in keys]) + "}"
        statements.append((f"SELECT {cols} FROM {dialect.q(plan.table)} WHERE {where}", (literal,)))
    else:
        per = max(1, min(len(keys), dialect.max_params // max(1, len(columns))))
        for start in range(0, len(keys), per):
            chunk = keys[start : start + per]
            sql = dialect.select_by_keys(plan.table, select_cols, columns, len(chunk))
            statements.append((sql, tuple(v for k in chunk for v in k)))  # a tuple, not executemany's list
    key_of_raw = plan.key_of_raw
    for sql, arguments in statements:
        cursor = _pony.execute_in_session(db, sql, arguments)
        rows = cursor.fetchall()
        if plan.int_key and nkey == 1 and all(type(raw[0]) is int for raw in rows):
            if whole:
                found.update({str(raw[0]): tuple(raw) for raw in rows})  # the key text of an integer key
            else:
                found.update({str(raw[0]): raw[1:] for raw in rows})
            continue
        for raw in rows:
            found[key_of_raw(raw[:nkey])] = tuple(raw) if whole else tuple(raw[nkey:])
    return found


def _raw_jsons(layout: Layout, raw: tuple[Any, ...]) -> tuple[dict[str, Any], frozenset[str]]:
    out: dict[str, Any] = {}
    secret: set[str] = set()
    for f, (i, j) in zip(layout.fields, layout.spans, strict=True):
        part = raw[i:j]
        if f.sensitive:
            present = any(v is not None for v in part)
            out[f.name] = MASK if present else None
            if present:
                secret.add(f.name)
        else:
            out[f.name] = f.json_of_raw(part)
    return out, frozenset(secret)


def _raw_update(
    layout: Layout,
    name: str,
    history: Any,
    key: str,
    old: tuple[Any, ...],
    new: tuple[Any, ...],
    actor: str | None,
) -> Event | None:
    if old == new:
        return None  # the batch changed nothing of this row: no phantom record
    diff = _Diff()
    for f, (i, j) in zip(layout.fields, layout.spans, strict=True):
        if j - i == 1:
            x, y = old[i], new[i]
            if x == y and type(x) is type(y):
                continue
            a: tuple[Any, ...] = (x,)
            b: tuple[Any, ...] = (y,)
        else:
            a, b = old[i:j], new[i:j]
            if a == b:
                continue
        diff.note(f, a, b, f.json_of_raw, _all_null)
    return diff.event(history, name, key, actor)
