"""``Audited``: one history record per changed row per transaction, in app mode or trigger mode.

App mode (the default, every backend): Pony's flush hooks and ponykit's bulk extension report each
write of a row to the transaction's journal (``_audit_journal``), which becomes one record per row
just before COMMIT, in the same transaction. Trigger mode (PostgreSQL): generated triggers write the
same records (``_audit_triggers``), so raw SQL is covered too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, ClassVar

import orjson
from pony.orm import select

from .. import _pony
from .._codegen import build_function
from .._sql import dialect_of
from ..bulk._extensions import BulkExtension, Change, register_extension
from ..errors import ConfigurationError
from ._audit_journal import Block, Event, current_actor, journal_events
from ._audit_plan import MASK, AuditPlan, Layout, audit_plan, same_value
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
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    secret: set[str] = set()
    for f in plan.fields:
        if f.name not in new:
            continue
        value = new[f.name]
        previous = old.get(f.name)
        if previous == value and (f.name in old or value is None):
            continue
        if f.sensitive:
            before[f.name] = None if previous is None else MASK
            after[f.name] = None if value is None else MASK
            secret.add(f.name)
            continue
        old_json, new_json = f.json_of(previous), f.json_of(value)
        if old_json != new_json:
            before[f.name] = old_json
            after[f.name] = new_json
    if not after:
        return None
    return Event(
        _history_of(entity), plan.name, key, "update", before, after, frozenset(secret), current_actor()
    )


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
        return layout, _read_rows(change.entity, layout, change.columns, change.keys)

    def after_change(self, change: Change, token: Any) -> None:
        entity = change.entity
        if _mode(entity) != "app" or not change.keys:
            return
        plan = audit_plan(entity)
        history = _history_of(entity)
        actor = current_actor()
        events: Sequence[Event | Block]
        if change.op == "update" and change.values and not change.computed and token is not None:
            events = _update_events(plan, history, actor, change, token[0], token[1])
        else:
            events = _read_events(plan, history, actor, change, token)
        journal_events(_pony.database_of(entity), events)


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
) -> list[Event | Block]:
    """A bulk_update batch's events from the rows read before it and the values it bound (no read)."""
    events: list[Event | Block] = []
    nkey = len(plan.key_columns)
    key_of_raw = plan.key_of_raw
    for columns, rows in change.values:
        layout = plan.layout(frozenset(columns))
        if not layout.fields:
            continue
        if any(len(f.columns) != 1 or f.sensitive for f in layout.fields):
            new_at = [nkey + columns.index(c) for c in layout.columns]
            old_at = [before.columns.index(c) for c in layout.columns]
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
        diff = _differ(plan, before, columns, layout)
        keys, texts = diff(rows, old, key_of_raw)
        if keys:
            events.append(Block(history, plan.name, actor, keys, texts))
    return events


def _differ(plan: AuditPlan, before: Layout, columns: tuple[str, ...], layout: Layout) -> Any:
    """The generated diff of bulk_update rows setting ``columns`` (one plain column per attribute of
    ``layout``) against the rows read before (in ``before``'s columns): ``diff(rows, old, key_of_raw)
    -> (keys, changes as UTF-8 JSON)`` of the rows that changed, as ``_raw_update`` would find them."""
    cache_key = (before.columns, columns, layout.columns)
    found = plan.differs.get(cache_key)
    if found is not None:
        return found
    nkey = len(plan.key_columns)
    namespace: dict[str, Any] = {"_dumps": orjson.dumps}
    if plan.int_key and nkey == 1:
        key_line = "key = str(first) if type(first) is int else key_of_raw(values[:1])"
    else:
        key_line = f"key = key_of_raw(values[:{nkey}])"
    lines = [
        "def diff(rows, old, key_of_raw):",
        "    keys = []",
        "    texts = []",
        "    get = old.get",
        "    for values in rows:",
        "        first = values[0]",
        f"        {key_line}",
        "        previous = get(key)",
        "        if previous is None:",
        "            continue  # no such row: bulk_update skipped it",
    ]
    new_at = [nkey + columns.index(f.columns[0]) for f in layout.fields]
    old_at = [before.columns.index(f.columns[0]) for f in layout.fields]
    if (
        old_at == list(range(len(before.columns)))
        and new_at == list(range(nkey, nkey + len(columns)))
        and all(_exact(f) for f in layout.fields)
    ):
        # Equal tuples mean equal JSON forms for these types: a row written with its own values is skipped
        lines += [f"        if previous == values[{nkey}:]:", "            continue"]
    lines.append("        changes = {}")
    for n, (f, i, j) in enumerate(zip(layout.fields, old_at, new_at, strict=True)):
        conv = _raw_json(f)
        lines += [
            f"        x = previous[{i}]",
            f"        y = values[{j}]",
            "        if x != y or type(x) is not type(y):",
        ]
        point = _decimal_point(f)
        if conv is not None and point is not None:
            # A Decimal at the column's scale is its own text (as the field's fast dumper finds), inline
            namespace[f"_conv{n}"] = conv
            namespace["_Decimal"] = Decimal
            for v in ("x", "y"):
                lines += [
                    f"            if {v} is not None:",
                    f"                {v} = t if type({v}) is _Decimal and "
                    f"(t := str({v}))[{point}:{point + 1}] == '.' else _conv{n}({v})",
                ]
        elif conv is not None:
            namespace[f"_conv{n}"] = conv
            lines += [
                "            if x is not None:",
                f"                x = _conv{n}(x)",
                "            if y is not None:",
                f"                y = _conv{n}(y)",
            ]
        namespace[f"_name{n}"] = f.name
        lines += ["            if x != y:", f"                changes[_name{n}] = [x, y]"]
    lines += [
        "        if changes:",
        "            keys.append(key)",
        "            texts.append(_dumps(changes))",
        "    return keys, texts",
    ]
    found = build_function("diff", lines, namespace, label=f"audit.diff {plan.name}")
    plan.differs[cache_key] = found
    return found


def _decimal_point(f: Any) -> int | None:
    """Where ``str()`` puts the point of a Decimal of ``f`` at its column's scale (None: no shortcut)."""
    if _pony.attr_type(f.attr) is not Decimal or f.fast is None or f.fast is same_value:
        return None
    quantum = _pony.decimal_quantum(f.attr)
    exponent = quantum.as_tuple().exponent if quantum is not None else None
    if isinstance(exponent, int) and -3 <= exponent <= -1:
        return exponent - 1  # scientific notation puts at least four characters after a point
    return None


def _exact(f: Any) -> bool:
    """Whether equal raw values of ``f`` (old as read, new as bound) always have equal JSON forms."""
    py_type = _pony.attr_type(f.attr)
    if py_type is Decimal:  # at the column's scale: equal Decimals have one text
        return f.fast is not None and f.fast is not same_value
    return f.fast is not None and py_type in (int, str)


def _raw_json(f: Any) -> Callable[[Any], Any] | None:
    """A non-null raw value -> its JSON form (None: the raw value is its JSON form)."""
    if f.fast is not None:
        return None if f.fast is same_value else f.fast
    return lambda v: f.json_of_raw((v,))


def _read_rows(
    entity: Any, layout: Layout, columns: Sequence[str], keys: list[tuple[Any, ...]]
) -> dict[str, tuple[Any, ...]]:
    """Key text -> the raw ``layout`` columns of the rows with one of ``keys`` in ``columns``."""
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
            found.update({str(raw[0]): raw[1:] for raw in rows})  # the key text of an integer key
            continue
        for raw in rows:
            found[key_of_raw(raw[:nkey])] = tuple(raw[nkey:])
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
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    secret: set[str] = set()
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
        if f.sensitive:
            before[f.name] = MASK if any(v is not None for v in a) else None
            after[f.name] = MASK if any(v is not None for v in b) else None
            secret.add(f.name)
            continue
        old_json, new_json = f.json_of_raw(a), f.json_of_raw(b)
        if old_json != new_json:
            before[f.name] = old_json
            after[f.name] = new_json
    if not after:
        return None
    return Event(history, name, key, "update", before, after, frozenset(secret), actor)
