"""Bulk insert, update, upsert and delete at the driver's speed, consistent with Pony's session.

Every function runs inside the caller's ``db_session`` and transaction, under a savepoint that undoes the
whole call if it raises (all or nothing, also for a caller who catches the error), validates and
converts each value exactly as Pony would for ``Entity(**row)`` / ``obj.set(**row)``, and leaves the
session consistent: loaded objects show the new values, deleted objects are gone, cached query results
are dropped, and the commit event names the entities and keys written.

Entity hooks (``before_insert`` ...) do not run, as with Pony's own ``Query.delete(bulk=True)``;
``bulk_insert(..., hooks=True)`` runs ``before_insert`` on a transient object per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from .. import _pony
from ..errors import BulkWriteError, ConfigurationError, OptionError
from ._batch import (
    Progress,
    Row,
    _after_write,
    _all_or_nothing,
    _batches,
    _cached_by_pk,
    _check_refused,
    _check_settable,
    _chunks,
    _conflict_key,
    _encode_batch,
    _encode_pk,
    _flat,
    _start,
    _total,
    _update_group,
    _update_names,
    _upsert_group,
    raise_masked,
)
from ._collation import KeyCanon
from ._copy import copy_allowed, copy_group, prepare_copy
from ._insert import insert_group, insert_groups

__all__ = ["UpsertResult", "bulk_delete", "bulk_insert", "bulk_update", "bulk_upsert"]


@dataclass(frozen=True)
class UpsertResult:
    """What :func:`bulk_upsert` did: rows ``inserted``, rows ``updated``, rows ``skipped`` (existing rows
    left alone because ``update=()``), and the primary keys in row order when ``return_ids=True``."""

    inserted: int
    updated: int
    skipped: int = 0
    ids: list[Any] | None = field(default=None)


# ---------------------------------------------------------------------------------------------------------
# INSERT


@overload
def bulk_insert(
    entity: Any,
    rows: Iterable[Row],
    *,
    batch_size: int | None = None,
    return_ids: Literal[False] = False,
    progress: Progress | None = None,
    hooks: bool = False,
) -> int: ...


@overload
def bulk_insert(
    entity: Any,
    rows: Iterable[Row],
    *,
    batch_size: int | None = None,
    return_ids: Literal[True],
    progress: Progress | None = None,
    hooks: bool = False,
) -> list[Any]: ...


@overload
def bulk_insert(
    entity: Any,
    rows: Iterable[Row],
    *,
    batch_size: int | None = None,
    return_ids: bool,
    progress: Progress | None = None,
    hooks: bool = False,
) -> list[Any] | int: ...


def bulk_insert(
    entity: Any,
    rows: Iterable[Row],
    *,
    batch_size: int | None = None,
    return_ids: bool = False,
    progress: Progress | None = None,
    hooks: bool = False,
) -> list[Any] | int:
    """Insert ``rows`` (dicts keyed by attribute name) into ``entity``'s table; the number inserted.

    Values are validated and converted exactly as ``Entity(**row)`` would (defaults, ``Optional(str)``
    as ``''``, nullable, ``py_check``, min/max/max_len, custom and encrypted types, the discriminator of
    a single-table-inheritance subclass); relations take an entity object or its primary key. ``rows``
    may be a generator of millions: memory stays bounded by ``batch_size`` rows (default 10,000). An
    invalid row, or a value the driver would refuse (text not encodable as UTF-8; NUL in text on
    PostgreSQL; NaN or infinity on MariaDB), raises :class:`~ponykit.errors.BulkWriteError` before
    anything of its batch is written. A call that raises leaves nothing written: it runs under a
    savepoint of the session's transaction, rolled back to when the call fails.

    On PostgreSQL each batch is one ``COPY ... FROM STDIN`` where COPY stores exactly what INSERT
    would (not for tables with rewrite rules, nor for a batch holding a value with no exact COPY text;
    see docs/bulk.md); text holding NUL, which PostgreSQL cannot store, raises BulkWriteError.

    ``return_ids=True`` returns the primary keys in row order instead of a count (``RETURNING`` on
    SQLite >= 3.35 and MariaDB >= 10.5; on PostgreSQL keys taken from the key's sequence before the
    COPY, or ``RETURNING``). ``progress(done, total)`` is called after each batch (``total`` is None
    for an iterator). ``hooks=True`` runs each row through a transient object and its
    ``before_insert`` hook first (``after_insert`` never runs), at the speed of creating objects.
    """
    plan, dialect, size = _start(entity, batch_size, "bulk_insert")
    db = dialect.db
    if return_ids and not _pony.supports_insert_returning(db):
        version = ".".join(map(str, _pony.server_version(db))) or "unknown"
        raise ConfigurationError(
            f"bulk_insert({plan.name}, return_ids=True) needs INSERT ... RETURNING, which this "
            f"{_pony.dialect(db)} server (version {version}) lacks: it takes PostgreSQL, SQLite >= 3.35 "
            "or MariaDB >= 10.5. Insert without return_ids and read the keys back by a unique key."
        )
    total = _total(rows)
    ids: list[Any] = []
    done = 0
    mask_names = tuple(n for n, a in plan.attrs.items() if a.has_sql_default)
    with _all_or_nothing(db) as savepoint:
        for batch in _batches(rows, size):
            if hooks:
                batch = _run_hooks(plan, batch, done)
            groups = insert_groups(plan, batch, done, mask_names)
            for group in groups:  # values the driver would refuse: before anything of the batch is sent
                _check_refused(
                    plan,
                    dialect.name,
                    group.names,
                    group.columns,
                    batch,
                    done,
                    "bulk_insert",
                    group.positions,
                )
            # PostgreSQL: COPY, the fastest way in, where it stores exactly what INSERT would.
            if copy_allowed(plan, dialect, return_ids):
                prepared = prepare_copy(plan, dialect, groups, batch, done, return_ids)
            else:
                prepared = [(group, None) for group in groups]
            savepoint.begin()
            keys: list[Any] = [None] * len(batch) if return_ids else []
            for group, text in prepared:
                if text is not None:
                    got = copy_group(plan, dialect, group, text)
                else:
                    got = insert_group(plan, dialect, group, return_ids)
                if not return_ids:
                    keys.extend(got)
                elif group.positions is None:
                    keys = got
                else:
                    for position, key in zip(group.positions, got, strict=True):
                        keys[position] = key
            if return_ids:
                ids.extend(keys)
            done += len(batch)
            _after_write(plan, db, keys if (return_ids or not plan.auto_pk) else None, plan.relations)
            if progress is not None:
                progress(done, total)
    return ids if return_ids else done


def _run_hooks(plan: Any, batch: list[Row], offset: int) -> list[Row]:
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


# ---------------------------------------------------------------------------------------------------------
# UPDATE


def bulk_update(
    entity: Any,
    rows: Iterable[Row],
    *,
    fields: Sequence[str] | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Update existing rows by primary key; the number of rows matched.

    Each row holds the primary-key attributes and the attributes to set (or, with ``fields``, at least
    those; other keys are then ignored). Values are validated and converted as ``obj.set(**row)`` would.
    Rows whose key does not exist are skipped (compare the returned count), as are keys of rows of
    another class of a single-table hierarchy. Objects of the session that were loaded before show
    the new values afterwards. Rows go in batches of ``batch_size`` (default 10,000);
    ``progress(done, total)`` is called after each batch (``total`` is None for an iterator).
    """
    plan, dialect, size = _start(entity, batch_size, "bulk_update")
    db = dialect.db
    if fields is not None:
        for name in fields:
            _check_settable(plan, name, None, "bulk_update")
    total = _total(rows)
    cached = _cached_by_pk(plan, db)
    done = matched = 0
    with _all_or_nothing(db) as savepoint:
        for batch in _batches(rows, size):
            # a row's checked attribute names -> (the rows' places in the batch, the rows)
            groups: dict[tuple[str, ...], tuple[list[int], list[Row]]] = {}
            seen: dict[tuple[str, ...], tuple[str, ...]] = {}  # a row's keys -> checked attribute names
            for i, row in enumerate(batch):
                row_keys = tuple(row) if isinstance(row, dict) else ()
                names = seen.get(row_keys)
                if names is None:
                    names = seen[row_keys] = _update_names(plan, row, fields, done + i)
                where, part = groups.setdefault(names, ([], []))
                where.append(i)
                part.append(row)
            encoded: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = []
            # SQLite binds the set values first, then the key; the others bind the key first.
            key_last = dialect.name == "sqlite"
            for names, (where, part) in groups.items():
                shape = plan.shape(names + plan.pk_names if key_last else plan.pk_names + names)
                values = _encode_batch(plan, part, done, shape.names, shape.encode, "bulk_update", where)
                _check_refused(
                    plan, dialect.name, shape.names, None, part, done, "bulk_update", where, values
                )
                encoded.append((names, values))
            savepoint.begin()
            keys: list[Any] = []
            npk = len(plan.pk_columns)
            for names, values in encoded:
                matched += _update_group(plan, dialect, names, values)
                if key_last:
                    keys.extend(v[-1] if npk == 1 else v[-npk:] for v in values)
                else:
                    keys.extend(v[0] if npk == 1 else v[:npk] for v in values)
            done += len(batch)
            written = frozenset(n for names, _ in encoded for n in names)
            refresh = [cached[k] for k in keys if k in cached]
            savepoint.refreshed.append((refresh, written))
            _after_write(plan, db, keys, written, refresh, written)
            if progress is not None:
                progress(done, total)
    return matched


# ---------------------------------------------------------------------------------------------------------
# UPSERT


def bulk_upsert(
    entity: Any,
    rows: Iterable[Row],
    *,
    conflict: str | Sequence[str],
    update: Sequence[str] | None = None,
    return_ids: bool = False,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> UpsertResult:
    """Insert rows, or update the existing row with the same ``conflict`` key; counts of each.

    ``conflict`` names the attributes of the primary key or of a unique key declared on the entity
    (``unique=True`` or ``composite_key``). A new row is inserted as by :func:`bulk_insert`; an existing
    one gets the attributes in ``update`` (default: every attribute the row gives, except the key) as
    ``obj.set(**row)`` would; ``update=()`` leaves existing rows alone (counted as ``skipped``). Two rows
    of one batch with the same key raise :class:`~ponykit.errors.BulkWriteError`. ``ON CONFLICT`` on
    SQLite and PostgreSQL; ``ON DUPLICATE KEY UPDATE`` on MariaDB, where a clash on any other unique key
    of the table also turns the insert into an update (a MariaDB rule). Rows go in batches of
    ``batch_size`` (default 10,000); ``progress(done, total)`` is called after each batch (``total`` is
    None for an iterator).
    """
    plan, dialect, size = _start(entity, batch_size, "bulk_upsert")
    db = dialect.db
    key = _conflict_key(plan, conflict)
    if update is not None:
        for name in update:
            _check_settable(plan, name, None, "bulk_upsert")
    total = _total(rows)
    mask_names = tuple(n for n, a in plan.attrs.items() if a.has_sql_default)
    key_cols = plan.columns_of(key)
    # Conflict keys compare as the key columns do (MariaDB: case- and accent-insensitive collations).
    canon = KeyCanon(plan, dialect, key_cols)
    inserted = updated = skipped = done = 0
    ids: list[Any] = []
    with _all_or_nothing(db) as savepoint:
        for batch in _batches(rows, size):
            groups: dict[tuple[frozenset[str], int], list[tuple[int, tuple[Any, ...]]]] = {}
            names_of: dict[frozenset[str], tuple[str, ...]] = {}
            batch_keys: list[tuple[Any, ...]] = []
            for i, row in enumerate(batch):
                if not isinstance(row, dict):
                    raise plan.row_error(row, done + i, (), TypeError("not a dict"), "bulk_upsert")
                for name in key:
                    if name not in row:
                        raise BulkWriteError(
                            f"bulk_upsert({plan.name}): row {done + i} lacks {name!r}, part of the conflict "
                            f"key {key}; every row must give the key it is matched on",
                            row_index=done + i,
                            entity=plan.name,
                            attribute=name,
                        )
                given = frozenset(row)
                names = names_of.get(given)
                if names is None:
                    names = names_of[given] = plan.insert_names(plan.auto_pk is None or plan.auto_pk in given)
                masks = tuple(n for n in mask_names if n in names)
                shape = plan.shape(names, masks)
                one = _encode_batch(plan, [row], done + i, names, shape.encode, "bulk_upsert")[0]
                values = one[0] if masks else one
                mask = one[1] if masks else 0
                columns = plan.columns_of(names)
                batch_keys.append(tuple(values[columns.index(c)] for c in key_cols))
                groups.setdefault((given, mask), []).append((i, values))
            for (given, _mask), items in groups.items():
                _check_refused(
                    plan,
                    dialect.name,
                    names_of[given],
                    None,
                    [batch[i] for i, _ in items],
                    done,
                    "bulk_upsert",
                    [i for i, _ in items],
                    [v for _, v in items],
                )
            _check_duplicate_keys(plan, key, canon, batch_keys, done)
            savepoint.begin()
            batch_ids: list[Any] = [None] * len(batch)
            for (given, mask), items in groups.items():
                names = names_of[given]
                upd = [
                    n
                    for n in (update if update is not None else names)
                    if n in given
                    and n not in key
                    and not plan.attrs[n].is_pk
                    and not plan.attrs[n].is_discriminator
                ]
                i_count, u_count, s_count = _upsert_group(
                    plan,
                    dialect,
                    names,
                    mask,
                    mask_names,
                    key,
                    upd,
                    items,
                    batch_ids if return_ids else None,
                    canon,
                )
                inserted += i_count
                updated += u_count
                skipped += s_count
            done += len(batch)
            if return_ids:
                ids.extend(batch_ids)
            refresh = _pony.cached_objects(db, plan.entity)
            savepoint.refreshed.append((refresh, None))
            _after_write(plan, db, batch_ids if return_ids else None, plan.relations, refresh, None)
            if progress is not None:
                progress(done, total)
    return UpsertResult(inserted, updated, skipped, ids if return_ids else None)


def _check_duplicate_keys(
    plan: Any, key: tuple[str, ...], canon: KeyCanon, keys: list[tuple[Any, ...]], offset: int
) -> None:
    """Two rows of one batch whose conflict keys the database holds equal: BulkWriteError (the second
    would silently overwrite the first in one statement)."""
    if canon.active:
        canon.prepare(keys)
        keys = [canon(k) for k in keys]
    seen: dict[tuple[Any, ...], int] = {}
    for i, k in enumerate(keys):
        first = seen.setdefault(k, i)
        if first != i:
            how = " (equal under the key columns' collation)" if canon.active else ""
            raise BulkWriteError(
                f"bulk_upsert({plan.name}): rows {offset + first} and {offset + i} of one batch have "
                f"the same conflict key {key}{how}; merge them before the call",
                row_index=offset + i,
                entity=plan.name,
                attribute=key[0],
            )


# ---------------------------------------------------------------------------------------------------------
# DELETE


def bulk_delete(entity: Any, pks_or_query: Any, *, batch_size: int | None = None) -> int:
    """Delete rows by primary key (scalars, tuples for composite keys, or objects) or by a Pony query
    selecting objects of ``entity``; the number of rows deleted.

    Link-table rows of many-to-many collections go too. Pony's cascade rules and ``before_delete``
    hooks do not run: rows still referenced by a foreign key make the database refuse the delete.
    Deleted objects of the session are gone afterwards (``Entity[pk]`` raises ``ObjectNotFound``).
    On a subclass of a single-table hierarchy only rows of that class (and its subclasses) go, as
    Pony's ``Entity[pk]`` finds only those.
    """
    plan, dialect, size = _start(entity, batch_size, "bulk_delete")
    db = dialect.db
    if _pony.is_query(pks_or_query):
        q_entity, sql, arguments = _pony.entity_query_sql(pks_or_query)
        if not issubclass(q_entity, plan.entity):
            raise OptionError(
                f"bulk_delete({plan.name}): the query selects {q_entity.__name__} objects; pass a query "
                f"selecting {plan.name} objects, or call bulk_delete({q_entity.__name__}, query)"
            )
        cursor = _pony.execute_in_session(db, dialect.select_keys_of(sql, plan.pk_columns), arguments)
        raw_keys = [r[0] if len(r) == 1 else tuple(r) for r in cursor.fetchall()]
    else:
        raw_keys = [_encode_pk(plan, value, i) for i, value in enumerate(pks_or_query)]
    cached = _cached_by_pk(plan, db)
    links = _pony.entity_info(plan.entity).link_tables
    npk = len(plan.pk_columns)
    # A subclass of a single-table hierarchy deletes only its own rows, as Pony's Entity[pk] finds only
    # those: a key of a row of the parent or a sibling class is left alone (and not counted).
    classes = plan.class_values
    class_filter = (plan.class_column, len(classes)) if plan.class_column else None
    per = max(1, min(size, (dialect.max_params - len(classes)) // npk))
    deleted = 0
    with _all_or_nothing(db) as savepoint:  # a refused chunk (a foreign key) undoes the earlier ones
        for chunk in _chunks(raw_keys, per):
            savepoint.begin()
            args = (tuple(chunk) if npk == 1 else _flat(chunk)) + classes
            for link in links:
                sql = dialect.delete_links(
                    link.table, link.columns, plan.table, plan.pk_columns, len(chunk), class_filter
                )
                _pony.execute_in_session(db, sql, args)
            sql = dialect.delete_keys(plan.table, plan.pk_columns, len(chunk), class_filter)
            deleted += int(_pony.execute_in_session(db, sql, args).rowcount)
    _pony.forget_objects(db, [cached[k] for k in raw_keys if k in cached])
    _after_write(plan, db, raw_keys, ())
    return deleted
