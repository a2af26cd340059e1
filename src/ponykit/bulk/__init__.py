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
from ..errors import OptionError
from ._batch import (
    Progress,
    Row,
    after_write,
    all_or_nothing,
    batches,
    cached_by_pk,
    start,
    total_of,
)
from ._cascade import Cascade, has_relations
from ._collections import check_link_keys, insert_links, split_collections
from ._delete import delete_keys, encode_pks
from ._extensions import BulkExtension, Change
from ._insert import check_returning, insert_batch, run_hooks
from ._links import write_links
from ._rows import RowPlan
from ._update import Upsert, check_settable, encode_updates, update_keys, update_values, write_updates

__all__ = [
    "UpsertResult",
    "bulk_delete",
    "bulk_insert",
    "bulk_link",
    "bulk_unlink",
    "bulk_update",
    "bulk_upsert",
]


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
    check_references: bool = False,
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
    check_references: bool = False,
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
    check_references: bool = False,
) -> list[Any] | int: ...


def bulk_insert(
    entity: Any,
    rows: Iterable[Row],
    *,
    batch_size: int | None = None,
    return_ids: bool = False,
    progress: Progress | None = None,
    hooks: bool = False,
    check_references: bool = False,
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
    ``check_references=True`` looks up the rows that relation values refer to before each batch is
    written (one query per relation and batch); a missing one raises BulkWriteError naming the row.
    Without it the database's foreign key refuses the row, and its error is raised as a BulkWriteError
    naming the row too, as is every row the database refuses (see docs/bulk.md).

    A many-to-many collection takes a list of objects or keys of the other side
    (``{"title": ..., "tags": [1, 5]}``): its link rows are written as ``Entity(**row)`` would, after
    the batch's rows (with a generated key this needs ``RETURNING``, as ``return_ids`` does). A
    one-to-many collection is refused: set the reference on the children instead.
    """
    plan, dialect, size = start(entity, batch_size, "bulk_insert")
    extensions = plan.extensions
    want_keys = plan.auto_pk is not None and any(e.wants_keys for e in extensions)
    if return_ids or want_keys:
        check_returning(plan, dialect)
    total = total_of(rows)
    ids: list[Any] = []
    done = 0
    with all_or_nothing(dialect.db) as savepoint:
        for batch in batches(rows, size):
            for extension in extensions:
                batch = extension.prepare_insert(plan.entity, batch)
            batch, links = split_collections(plan, batch, done) if plan.collections else (batch, {})
            ask_ids = return_ids or want_keys or (bool(links) and plan.auto_pk is not None)
            if ask_ids and not return_ids and links:
                check_link_keys(plan, dialect, links)
            if hooks:
                batch = run_hooks(plan, batch, done)
            change = Change("insert", plan.entity, plan.pk_columns, None)
            tokens = _before(extensions, change)
            keys = insert_batch(plan, dialect, batch, done, ask_ids, savepoint, check_references)
            if extensions:
                known_keys = keys if (ask_ids or not plan.auto_pk) else None
                _after(
                    extensions, Change("insert", plan.entity, plan.pk_columns, _tuples(known_keys)), tokens
                )
            if return_ids:
                ids.extend(keys)
            if links:
                insert_links(plan, dialect, batch, links, keys if ask_ids else None, done, savepoint)
            done += len(batch)
            known = keys if (ask_ids or not plan.auto_pk) else None  # auto keys not returned: unknown
            after_write(plan, dialect.db, keys=known, relations=plan.relations)
            if progress is not None:
                progress(done, total)
    return ids if return_ids else done


# ---------------------------------------------------------------------------------------------------------
# MANY-TO-MANY LINKS


def bulk_link(collection: Any, pairs: Iterable[Any], *, batch_size: int | None = None) -> int:
    """Add links to a many-to-many collection: ``bulk_link(Book.tags, [(book, tag), (1, 5)])``; the
    number of link rows added.

    Each pair is ``(first, second)``: the first item is an object (or primary key, a tuple for a
    composite key) of the entity whose attribute is passed, the second one of the other side, so
    ``bulk_link(Tag.books, [(tag, book)])`` writes the same rows. The rows go to the link table Pony
    mapped, exactly as ``first.collection.add(second)`` and a flush would write them (both directions
    for a symmetric relation such as ``friends = Set('Person', reverse='friends')``). A link that exists
    already, or is given twice, is not written again and not counted, as Pony's ``add`` is then a no-op.
    An invalid key, or a key with no row (which the database's foreign key refuses), raises
    :class:`~ponykit.errors.BulkWriteError` naming the pair's input index and side. Nothing of a call
    that raises stays written. Loaded collections of both sides show the new links afterwards.

    COPY on PostgreSQL when none of a batch's links exists yet; ``batch_size`` pairs per batch (default
    50,000).
    """
    return write_links(collection, pairs, batch_size, True)


def bulk_unlink(collection: Any, pairs: Iterable[Any], *, batch_size: int | None = None) -> int:
    """Remove links of a many-to-many collection, as ``first.collection.remove(second)`` would; the
    number of link rows removed (pairs as for :func:`bulk_link`; a link that does not exist is skipped).
    Loaded collections of both sides no longer show the removed links afterwards.
    """
    return write_links(collection, pairs, batch_size, False)


# ---------------------------------------------------------------------------------------------------------
# UPDATE


def bulk_update(
    entity: Any,
    rows: Iterable[Row],
    *,
    fields: Sequence[str] | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    check_references: bool = False,
) -> int:
    """Update existing rows by primary key; the number of rows matched.

    Each row holds the primary-key attributes and the attributes to set (or, with ``fields``, at least
    those; other keys are then ignored). Values are validated and converted as ``obj.set(**row)`` would.
    Rows whose key does not exist are skipped (compare the returned count), as are keys of rows of
    another class of a single-table hierarchy. Objects of the session that were loaded before show
    the new values afterwards. Rows go in batches of ``batch_size`` (default 10,000);
    ``progress(done, total)`` is called after each batch (``total`` is None for an iterator).
    ``check_references`` as for :func:`bulk_insert`.
    """
    plan, dialect, size = start(entity, batch_size, "bulk_update")
    db = dialect.db
    extensions = plan.extensions
    if fields is not None:
        for name in fields:
            check_settable(plan, name, None, "bulk_update")
        # the attributes the entity's mixins set at every update are written too
        fields = (*fields, *(n for n in plan.extra_update_names if n not in fields))
    total = total_of(rows)
    cached = cached_by_pk(plan, db)
    done = matched = 0
    with all_or_nothing(db) as savepoint:
        for batch in batches(rows, size):
            for extension in extensions:
                batch = extension.prepare_update(plan.entity, batch)
            groups = encode_updates(plan, dialect, batch, done, fields, check_references)
            savepoint.begin()
            change = tokens = None
            if extensions:
                change = Change(
                    "update",
                    plan.entity,
                    plan.pk_columns,
                    _tuples(update_keys(plan, dialect, groups)),
                    update_values(plan, dialect, groups),
                    tuple(column for column, _ in plan.exprs),
                )
                tokens = _before(extensions, change)
            count, keys = write_updates(plan, dialect, groups, done, savepoint)
            if change is not None:
                _after(extensions, change, tokens)
            matched += count
            done += len(batch)
            written = frozenset(n for names, *_ in groups for n in names) | plan.expr_names
            loaded = [cached[k] for k in keys if k in cached]
            savepoint.refreshed.append((loaded, written))
            after_write(plan, db, keys=keys, relations=written, refresh=loaded, refresh_attrs=written)
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
    check_references: bool = False,
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
    None for an iterator). ``check_references`` as for :func:`bulk_insert`.
    """
    plan, dialect, size = start(entity, batch_size, "bulk_upsert")
    db = dialect.db
    upsert = Upsert(plan, dialect, conflict, update)
    total = total_of(rows)
    inserted = updated = skipped = done = 0
    ids: list[Any] = []
    with all_or_nothing(db) as savepoint:
        for batch in batches(rows, size):
            for extension in plan.extensions:
                batch = extension.prepare_update(plan.entity, batch)
            groups = upsert.encode(batch, done, check_references)
            savepoint.begin()
            change = tokens = None
            if plan.extensions:
                change = Change("upsert", plan.entity, upsert.key_cols, list(upsert.batch_keys))
                tokens = _before(plan.extensions, change)
            batch_ids: list[Any] = [None] * len(batch)
            i_count, u_count, s_count = upsert.write(groups, batch_ids if return_ids else None, savepoint)
            if change is not None:
                _after(plan.extensions, change, tokens)
            inserted += i_count
            updated += u_count
            skipped += s_count
            done += len(batch)
            if return_ids:
                ids.extend(batch_ids)
            loaded = _pony.cached_objects(db, plan.entity)
            savepoint.refreshed.append((loaded, None))
            keys = batch_ids if return_ids else None
            after_write(plan, db, keys=keys, relations=plan.relations, refresh=loaded)
            if progress is not None:
                progress(done, total)
    return UpsertResult(inserted, updated, skipped, ids if return_ids else None)


# ---------------------------------------------------------------------------------------------------------
# DELETE


def bulk_delete(entity: Any, pks_or_query: Any, *, batch_size: int | None = None, soft: bool = False) -> int:
    """Delete rows by primary key (scalars, tuples for composite keys, or objects) or by a Pony query
    selecting objects of ``entity``; the number of ``entity`` rows deleted.

    The end state is that of Pony's ``obj.delete()`` of each object: children of a ``cascade_delete``
    relation (Pony's default for a ``Set`` whose reverse is ``Required``) are deleted, recursively with
    their own relations; an ``Optional`` reverse is set to NULL; a ``Required`` reverse without cascade
    raises :class:`~ponykit.errors.BulkWriteError` naming the relation before anything is deleted;
    many-to-many link rows go. It takes a fixed number of statements per relation and level (per chunk
    of keys), never one per row. ``before_delete``/``after_delete`` hooks do not run. Loaded objects of
    the session that were deleted, the entity's or cascaded ones, are gone afterwards (``Entity[pk]``
    raises ``ObjectNotFound``); loaded children set to NULL show None; the commit event names every
    entity touched, so cached queries over the children drop too. On a subclass of a single-table
    hierarchy only rows of that class (and its subclasses) go, as Pony's ``Entity[pk]`` finds only those.

    ``soft=True`` (an entity with the :class:`~ponykit.mixins.SoftDeletable` mixin) marks the rows
    deleted instead, with one :func:`bulk_update` (so timestamps, versions and audit history follow), and
    returns the number of rows newly marked.
    """
    plan, dialect, size = start(entity, batch_size, "bulk_delete")
    db = dialect.db
    extensions = plan.extensions
    if _pony.is_query(pks_or_query):
        q_entity, sql, arguments = _pony.entity_query_sql(pks_or_query)
        if not issubclass(q_entity, plan.entity):
            raise OptionError(
                f"bulk_delete({plan.name}): the query selects {q_entity.__name__} objects; pass a query "
                f"selecting {plan.name} objects, or call bulk_delete({q_entity.__name__}, query)"
            )
        cursor = _pony.execute_in_session(db, dialect.select_keys_of(sql, plan.pk_columns), arguments)
        raw_keys = [r[0] if len(r) == 1 else tuple(r) for r in cursor.fetchall()]
        positions: dict[Any, int] = {}
    else:
        raw_keys = encode_pks(plan, pks_or_query)
        positions = {k: i for i, k in reversed(list(enumerate(raw_keys)))}
    if soft:
        return _soft_delete(plan, raw_keys, batch_size)
    change = Change("delete", plan.entity, plan.pk_columns, _tuples(list(dict.fromkeys(raw_keys))))
    if not has_relations(plan.entity):
        cached = cached_by_pk(plan, db)
        with all_or_nothing(db) as savepoint:  # a refused chunk (a foreign key) undoes the earlier ones
            tokens = _before(extensions, change)
            deleted = delete_keys(plan, dialect, raw_keys, size, savepoint)
            _after(extensions, change, tokens)
        _pony.forget_objects(db, [cached[k] for k in raw_keys if k in cached])
        after_write(plan, db, keys=raw_keys)
        return deleted
    cascade = Cascade(plan, dialect, size, input_index=positions)
    cascade.collect(list(dict.fromkeys(raw_keys)))  # reads only: a refused relation raises here
    with all_or_nothing(db) as savepoint:
        tokens = _before(extensions, change)
        gone, refresh = cascade.before_write(savepoint)
        deleted = cascade.write(savepoint)
        _after(extensions, change, tokens)
    cascade.after(gone, refresh)
    return deleted


def _soft_delete(plan: RowPlan, keys: list[Any], batch_size: int | None) -> int:
    for extension in plan.extensions:
        rows = extension.soft_delete_rows(plan.entity, keys)
        if rows is not None:
            return bulk_update(plan.entity, rows, batch_size=batch_size)
    raise OptionError(
        f"bulk_delete({plan.name}, ..., soft=True): {plan.name} has no soft-delete attribute; add the "
        f"ponykit.mixins.SoftDeletable mixin to {plan.name}, or delete the rows (soft=False)"
    )


# ---------------------------------------------------------------------------------------------------------
# EXTENSIONS (ponykit.mixins)


def _tuples(keys: list[Any] | None) -> list[tuple[Any, ...]] | None:
    if keys is None:
        return None
    return [k if isinstance(k, tuple) else (k,) for k in keys]


def _before(extensions: tuple[BulkExtension, ...], change: Change) -> list[Any]:
    return [extension.before_change(change) for extension in extensions]


def _after(extensions: tuple[BulkExtension, ...], change: Change, tokens: list[Any] | None) -> None:
    assert tokens is not None  # made by _before for the same change
    for extension, token in zip(extensions, tokens, strict=True):
        extension.after_change(change, token)
