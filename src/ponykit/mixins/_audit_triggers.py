"""Trigger mode of ``Audited`` (PostgreSQL): generated triggers write the history records.

Per audited table, one plpgsql function and three statement-level triggers (``AFTER INSERT``,
``AFTER UPDATE``, ``AFTER DELETE``) with transition tables (``REFERENCING OLD TABLE / NEW TABLE``): a
statement that writes 10,000 rows runs the function once, which writes their records with one
``INSERT ... SELECT``. Every write is covered, Pony's, ponykit's bulk writes and raw SQL alike. Records
have the shape app mode writes (``_audit_journal``); a row written again later in the same
transaction folds into its record (``ponykit_audit_fold``: first old, last new; inserted then deleted:
no record), keyed by the server's transaction id (``txid_current()``). The actor is the transaction's
``app.actor`` setting (``SELECT set_config('app.actor', 'alice', true)``, or ``rls_context(actor=...)``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from pony.orm import db_session

from .. import _pony
from .._sql import dialect_of
from ..errors import UnsupportedDatabase
from ._audit_plan import MASK, AuditField, AuditPlan, audit_plan
from ._audit_store import declare_history, is_history_entity

__all__ = ["audit_trigger_sql", "install_audit_triggers"]

_FOLD = """CREATE OR REPLACE FUNCTION ponykit_audit_fold(op1 text, c1 jsonb, op2 text, c2 jsonb,
    OUT op text, OUT changes jsonb) LANGUAGE plpgsql IMMUTABLE AS $pk$
-- One record per row per transaction: the record so far (op1, c1) followed by a new write (op2, c2).
-- op NULL: no record (inserted then deleted, or changed back to what it was).
DECLARE mask CONSTANT jsonb := '"***"';
BEGIN
  IF op1 = 'insert' AND op2 = 'delete' THEN
    RETURN;
  ELSIF op1 = 'insert' THEN
    op := 'insert';
    SELECT jsonb_object_agg(k, v) INTO changes FROM (
      SELECT k, CASE WHEN c2 ? k THEN jsonb_build_array(NULL, c2->k->1) ELSE c1->k END AS v
      FROM (SELECT jsonb_object_keys(c1) UNION SELECT jsonb_object_keys(c2)) AS ks(k)) x
    WHERE v->1 <> 'null'::jsonb;
  ELSIF op2 = 'delete' THEN
    op := 'delete';
    SELECT jsonb_object_agg(k, jsonb_build_array(COALESCE(c1->k->0, c2->k->0), NULL)) INTO changes
    FROM (SELECT jsonb_object_keys(c1) UNION SELECT jsonb_object_keys(c2)) AS ks(k)
    WHERE COALESCE(c1->k->0, c2->k->0) <> 'null'::jsonb;
  ELSE
    -- update then update, or deleted then inserted again: first old -> last new
    op := 'update';
    SELECT jsonb_object_agg(k, jsonb_build_array(o, n)) INTO changes FROM (
      SELECT k,
        CASE WHEN op1 = 'delete' THEN COALESCE(c1->k->0, 'null') ELSE COALESCE(c1->k->0, c2->k->0) END AS o,
        CASE WHEN c2 ? k THEN c2->k->1 ELSE CASE WHEN op1 = 'delete' THEN 'null' ELSE c1->k->1 END END AS n
      FROM (SELECT jsonb_object_keys(c1) UNION SELECT jsonb_object_keys(c2)) AS ks(k)) x
    WHERE o IS DISTINCT FROM n OR o = mask OR n = mask;
  END IF;
  changes := COALESCE(changes, '{}'::jsonb);
  IF op = 'update' AND changes = '{}'::jsonb THEN
    op := NULL;
  END IF;
END
$pk$"""


def _col(alias: str, column: str, q: Any) -> str:
    return f"{alias}.{q(column)}"


def _value(field: AuditField, alias: str, q: Any) -> str:
    """The JSON form of ``field`` of the transition-table row ``alias`` (as app mode's serializer)."""
    cols = [_col(alias, c, q) for c in field.columns]
    null_test = " AND ".join(f"{c} IS NULL" for c in cols)
    if field.sensitive:
        return f"(CASE WHEN {null_test} THEN 'null'::jsonb ELSE '\"{MASK}\"'::jsonb END)"
    parts = [_part(field, i, c) for i, c in enumerate(cols)]
    if len(parts) == 1:
        return f"COALESCE({parts[0]}, 'null'::jsonb)"
    return f"(CASE WHEN {null_test} THEN 'null'::jsonb ELSE jsonb_build_array({', '.join(parts)}) END)"


def _part(field: AuditField, index: int, col: str) -> str:
    py_type = _pony.attr_type(field.attr)
    if _pony.attr_info(field.attr).kind == "one":
        py_type = None  # a key part: as stored
    if py_type is Decimal:
        return f"to_jsonb({col}::text)"
    if py_type is bytes:
        return f"to_jsonb(translate(encode({col}, 'base64'), E'\\n', ''))"
    return f"to_jsonb({col})"


def _key(plan: AuditPlan, alias: str, q: Any) -> str:
    cols = [_col(alias, c, q) for c in plan.key_columns]
    if len(cols) == 1:
        if plan.int_key:
            return f"{cols[0]}::text"  # an integer's JSON text is its text: no JSON value built
        return f"to_json({cols[0]})::text"
    return f"jsonb_build_array({', '.join(cols)})::text"


def _objects(pairs: Sequence[tuple[str, str]]) -> str:
    """``jsonb_build_object`` of (name, jsonb expression) pairs, in calls of at most 50 pairs."""
    if not pairs:
        return "'{}'::jsonb"
    calls = []
    for i in range(0, len(pairs), 50):
        args = ", ".join(f"'{name}', {expr}" for name, expr in pairs[i : i + 50])
        calls.append(f"jsonb_build_object({args})")
    return " || ".join(calls)


# One object per row, its fields SQL NULL where there is nothing to record, and jsonb_strip_nulls to
# drop those: measured 5x faster than concatenating one object per attribute. (strip_nulls keeps the
# JSON nulls inside the [old, new] arrays: it removes object fields only.)


def _whole(plan: AuditPlan, alias: str, q: Any, new: bool) -> str:
    """Every non-null attribute of a row: ``[null, value]`` (inserted) or ``[value, null]`` (deleted)."""
    pairs = []
    for f in plan.fields:
        null_test = " AND ".join(f"{_col(alias, c, q)} IS NULL" for c in f.columns)
        value = _value(f, alias, q)
        pair = f"jsonb_build_array(NULL, {value})" if new else f"jsonb_build_array({value}, NULL)"
        pairs.append((f.name, f"CASE WHEN {null_test} THEN NULL ELSE {pair} END"))
    return f"jsonb_strip_nulls({_objects(pairs)})"


def _text_value(field: AuditField, alias: str, q: Any) -> str:
    """:func:`_value` as JSON text (``json``, not ``jsonb``: no binary form built to be printed)."""
    cols = [_col(alias, c, q) for c in field.columns]
    null_test = " AND ".join(f"{c} IS NULL" for c in cols)
    if field.sensitive:
        return f"(CASE WHEN {null_test} THEN 'null' ELSE '\"{MASK}\"' END)"
    if len(cols) == 1:
        return f"COALESCE({_text_part(field, cols[0])}, 'null')"
    parts = [_part(field, i, c).replace("to_jsonb(", "to_json(", 1) for i, c in enumerate(cols)]
    return f"(CASE WHEN {null_test} THEN 'null' ELSE json_build_array({', '.join(parts)})::text END)"


def _text_part(field: AuditField, col: str) -> str:
    """The JSON text of a one-column value (NULL for NULL): printed directly for the types whose text is
    their JSON form, which saves building a JSON value per row (measured 25% of the diff's time)."""
    if _pony.attr_info(field.attr).kind == "value":
        py_type = _pony.attr_type(field.attr)
        if py_type is int or py_type is bool:  # 42, true: the column's text
            return f"{col}::text"
        if py_type is Decimal:  # a number's text has no character to escape
            return f"'\"' || {col}::text || '\"'"
    return f"{_part(field, 0, col).replace('to_jsonb(', 'to_json(', 1)}::text"


def _diff_text(plan: AuditPlan, q: Any) -> str:
    """The changes of an updated row as JSON text ``{"name": [old, new], ...}``: only the attributes that
    differ are printed (measured 2x faster than building a jsonb object to strip and print)."""
    pairs = []
    for f in plan.fields:
        old = ", ".join(_col("o", c, q) for c in f.columns)
        new = ", ".join(_col("n", c, q) for c in f.columns)
        pair = f"'\"{f.name}\":[' || {_text_value(f, 'o', q)} || ',' || {_text_value(f, 'n', q)} || ']'"
        pairs.append(f"CASE WHEN ({old}) IS DISTINCT FROM ({new}) THEN {pair} END")
    calls = [f"concat_ws(',', {', '.join(pairs[i : i + 50])})" for i in range(0, len(pairs), 50)]
    if len(calls) == 1:
        return f"'{{' || {calls[0]} || '}}'"
    return f"'{{' || concat_ws(',', {', '.join(calls)}) || '}}'"


def _function_name(table: str | tuple[str, ...]) -> str:
    base = _pony.table_key(table)
    name = f"ponykit_audit_{base}"
    if len(name) > 60:  # PostgreSQL cuts names at 63 bytes: keep them distinct
        name = name[:50] + "_" + hashlib.sha1(base.encode()).hexdigest()[:8]  # noqa: S324 - a name, not security
    return name


def _marker(history_table: str, entity: str) -> str:
    """The name of the transaction-local setting that says the current transaction wrote records of
    ``entity`` into ``history_table`` (set by every trigger function that writes them)."""
    digest = hashlib.sha1(f"{history_table}\0{entity}".encode()).hexdigest()[:16]  # noqa: S324 - a name
    return f"ponykit.audit_{digest}"


def _entity_sql(plan: AuditPlan, history_table: str, q: Any) -> list[str]:
    fn = _function_name(plan.table)
    table = q(plan.table)
    keys_equal = " AND ".join(f"o.{q(c)} = n.{q(c)}" for c in plan.key_columns)
    key_o, key_n = _key(plan, "o", q), _key(plan, "n", q)
    first_n = _col("n", plan.key_columns[0], q)
    first_o = _col("o", plan.key_columns[0], q)
    update_fresh = (
        f"SELECT COALESCE({key_n}, {key_o}) AS key, "
        f"CASE WHEN {first_o} IS NULL THEN 'insert' WHEN {first_n} IS NULL THEN 'delete' "
        "ELSE 'update' END AS op, "
        f"CASE WHEN {first_o} IS NULL THEN ({_whole(plan, 'n', q, True)})::text "
        f"WHEN {first_n} IS NULL THEN ({_whole(plan, 'o', q, False)})::text ELSE {_diff_text(plan, q)} "
        "END AS changes "
        f"FROM pk_old o FULL JOIN pk_new n ON {keys_equal}"
    )
    inserted, deleted = _whole(plan, "n", q, True), _whole(plan, "o", q, False)
    insert_fresh = f"SELECT {key_n} AS key, 'insert' AS op, {inserted} AS changes FROM pk_new n"
    delete_fresh = f"SELECT {key_o} AS key, 'delete' AS op, {deleted} AS changes FROM pk_old o"
    entity = plan.name.replace("'", "''")

    marker = _marker(history_table, plan.name)
    changed = "f.op <> 'update' OR f.changes::text <> '{}'"
    insert = (
        f'INSERT INTO {history_table} ("entity", "key", "op", "changes", "actor", "at", "tx")\n'
        f"    SELECT '{entity}', f.key, f.op, f.changes::text, v_actor, now() AT TIME ZONE 'UTC', v_tx"
    )

    def write(fresh: str) -> str:
        # The first statement of a transaction that writes this entity's records finds none of them
        # (the marker, a transaction-local setting, says whether one did): no record to fold into, so
        # the fresh records are inserted as they are, without probing the history table per row. OFFSET 0
        # keeps the subquery whole: pulled up, its changes would be computed twice (filter and insert).
        return f"""IF current_setting('{marker}', true) IS DISTINCT FROM v_tx THEN
      PERFORM set_config('{marker}', v_tx, true);
      {insert} FROM ({fresh} OFFSET 0) f
      WHERE {changed};
    ELSE
    WITH fresh AS ({fresh}),
      prior AS (
        SELECT a.id, a.key, r.op, r.changes FROM {history_table} a JOIN fresh f
          ON a.tx = v_tx AND a.entity = '{entity}' AND a.key = f.key,
          LATERAL ponykit_audit_fold(a.op, a.changes::jsonb, f.op, f.changes::jsonb) r),
      kept AS (
        UPDATE {history_table} a SET op = p.op, changes = p.changes::text, actor = COALESCE(v_actor, a.actor)
        FROM prior p WHERE a.id = p.id AND p.op IS NOT NULL RETURNING a.id),
      gone AS (DELETE FROM {history_table} a USING prior p WHERE a.id = p.id AND p.op IS NULL RETURNING a.id)
    {insert} FROM fresh f
    WHERE NOT EXISTS (SELECT 1 FROM prior p WHERE p.key = f.key)
      AND ({changed});
    END IF;"""

    # jit off: the planner cannot know a transition table's size and guesses 1000s of rows per side of
    # the join, which makes it JIT-compile the statement (seconds) to write a few records.
    function = f"""CREATE OR REPLACE FUNCTION {q(fn)}() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $pk$
-- Generated by ponykit (ponykit.mixins.Audited, trigger mode) for {plan.name}: do not edit.
DECLARE
  v_tx text := txid_current()::text;
  v_actor text := NULLIF(current_setting('app.actor', true), '');
BEGIN
  IF TG_OP = 'INSERT' THEN
    {write(insert_fresh)}
  ELSIF TG_OP = 'UPDATE' THEN
    {write(update_fresh)}
  ELSE
    {write(delete_fresh)}
  END IF;
  RETURN NULL;
END
$pk$"""
    statements = [function]
    for suffix, event, refs in (
        ("ins", "INSERT", "NEW TABLE AS pk_new"),
        ("upd", "UPDATE", "OLD TABLE AS pk_old NEW TABLE AS pk_new"),
        ("del", "DELETE", "OLD TABLE AS pk_old"),
    ):
        trigger = q(f"ponykit_audit_{suffix}")
        statements.append(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        statements.append(
            f"CREATE TRIGGER {trigger} AFTER {event} ON {table} REFERENCING {refs} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {q(fn)}()"
        )
    return statements


def _trigger_entities(db: Any) -> list[Any]:
    from ._audit import Audited  # the mixin module imports this one's callers: import when needed

    found: dict[str, Any] = {}
    for entity in _pony.entities_of(db).values():
        if (
            isinstance(entity, type)
            and issubclass(entity, Audited)
            and getattr(entity, "audit_mode", "app") == "trigger"
            and not is_history_entity(entity)
        ):
            root = _pony.root_entity(entity)
            found.setdefault(_pony.root_entity_name(entity), root)
    return list(found.values())


def audit_trigger_sql(db: Any) -> list[str]:
    """The DDL of trigger mode for the mapped ``db``: the fold function, then per audited table (of an
    entity with ``audit_mode = "trigger"``) its function and triggers. Idempotent statements (``CREATE
    OR REPLACE``, ``DROP TRIGGER IF EXISTS``), for a migration or :func:`install_audit_triggers`."""
    if _pony.dialect(db) != "postgres":
        raise UnsupportedDatabase(
            f"ponykit: audit_mode = 'trigger' needs PostgreSQL; the {_pony.describe_database(db)} is "
            f"{_pony.dialect(db)}. Use audit_mode = 'app' (the default) there"
        )
    q = dialect_of(db).q
    history = declare_history(db)
    history_table = q(_pony.entity_info(history).table)
    statements = [_FOLD]
    for entity in _trigger_entities(db):
        statements.extend(_entity_sql(audit_plan(entity), history_table, q))
    return statements


def install_audit_triggers(db: Any) -> list[str]:
    """Create (or replace) the audit triggers of ``db``'s trigger-mode entities; the statements run.

    Call after ``db.generate_mapping(...)`` (and after every migration that changes an audited
    table's columns). Runs in the current ``db_session``, or in one of its own that commits.
    """
    statements = audit_trigger_sql(db)
    if _pony.in_db_session():
        _run(db, statements)
    else:
        with db_session:
            _run(db, statements)
    return statements


def _run(db: Any, statements: list[str]) -> None:
    for sql in statements:
        _pony.execute_in_session(db, sql, None)
