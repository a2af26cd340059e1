"""Serialization (ponykit.serialization): attribute listing, raw rows of a query, reading an object's
loaded values and recording those reads as Pony's attribute access does."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import pony.orm.core as _core
import pony.orm.dbapiprovider as _dbapiprovider

from ._typing import Attribute, Entity

__all__ = [
    "decimal_limits",
    "decimal_quantum",
    "discriminator_value",
    "entity_attributes",
    "entity_pk_attributes",
    "find_by_raw_pk",
    "flush_if_dirty",
    "input_errors",
    "loaded_values",
    "mark_read",
    "output_values_source",
    "pony_repr",
    "query_entity_rows",
    "query_parts",
    "raw_pk_leaf_attributes",
    "raw_pk_of",
    "read_bits",
    "session_objects",
    "untracked",
    "validate_attribute",
]


def entity_attributes(entity: Entity) -> tuple[Attribute, ...]:
    """Every attribute of ``entity`` (inherited ones included) in declaration order, as Pony lists them."""
    return tuple(entity._attrs_)


def entity_pk_attributes(entity: Entity) -> tuple[Attribute, ...]:
    """The primary-key attributes of ``entity``."""
    return tuple(entity._pk_attrs_)


def raw_pk_leaf_attributes(entity: Entity) -> tuple[Attribute, ...]:
    """The attributes whose values make up ``_get_raw_pkval_()`` of an instance, one per pk column.

    A primary key that includes a relation is flattened into the related entity's own key attributes,
    the way Pony flattens it into columns.
    """
    leaves: list[Attribute] = []
    for attr in entity._pk_attrs_:
        if attr.reverse is not None and not attr.is_collection:
            leaves.extend(raw_pk_leaf_attributes(attr.py_type))
        else:
            leaves.append(attr)
    return tuple(leaves)


def discriminator_value(entity: Entity) -> Any:
    """The discriminator code Pony stores for ``entity``'s rows, or None without inheritance."""
    return entity._discriminator_ if entity._discriminator_attr_ is not None else None


def flush_if_dirty(obj: Any) -> None:
    """Flush the object's session when it holds unsaved changes, as Pony's own ``to_dict`` does.

    New objects get their primary keys this way, so relations to them serialize as keys.
    """
    cache = obj._session_cache_
    if cache is not None and cache.is_alive and cache.modified:
        cache.flush()


def decimal_quantum(attr: Attribute) -> Any:
    """The ``Decimal`` exponent Pony quantizes ``attr``'s values to (``Decimal('0.01')`` for scale 2)."""
    converter = attr.converters[0] if attr.converters else None
    exp = getattr(converter, "exp", None)
    if exp is None and converter is not None and getattr(converter, "scale", None) is not None:
        from decimal import Decimal

        exp = Decimal(10) ** -converter.scale
    return exp


def decimal_limits(attr: Attribute) -> tuple[int, int] | None:
    """``(precision, scale)`` of a ``Decimal`` attribute stored by Pony's own Decimal converter (the
    column's ``DECIMAL(precision, scale)``), or None for other attributes and custom Decimal types."""
    converter = attr.converters[0] if attr.converters else None
    if not isinstance(converter, _dbapiprovider.DecimalConverter):
        return None
    precision, scale = getattr(converter, "precision", None), getattr(converter, "scale", None)
    if not isinstance(precision, int) or not isinstance(scale, int):
        return None
    return precision, scale


def untracked(value: Any) -> Any:
    """A plain copy of a ``Json`` attribute value (Pony wraps them in change-tracking dict/list types)."""
    get = getattr(value, "get_untracked", None)
    return get() if get is not None else value


def query_parts(query: Any) -> tuple[Any, Any, int | None, int | None]:
    """``(query, result entity or None, limit, offset)`` of a Pony ``Query`` or a lazy ``QueryResult``.

    Anything else gives ``(None, None, None, None)``. The entity is None when the query selects
    something other than entity instances (tuples, attribute values, aggregates).
    """
    from pony.orm.core import EntityMeta, Query, QueryResult

    limit = offset = None
    if isinstance(query, QueryResult):
        if query._items is not None:  # already fetched: it is a list of objects now
            return None, None, None, None
        query, limit, offset = query._query, query._limit, query._offset
    if not isinstance(query, Query):
        return None, None, None, None
    expr_type = query._translator.expr_type
    entity = expr_type if isinstance(expr_type, EntityMeta) else None
    return query, entity, limit, offset


def query_entity_rows(
    query: Any, lazy_attrs: tuple[Attribute, ...], limit: int | None, offset: int | None
) -> tuple[list[Any], dict[Any, list[int]]]:
    """Run the query's own SELECT and return ``(raw rows, {attribute: [column offsets]})``.

    The SQL is exactly the one Pony would run to load the entities (same filters, order, distinct,
    limit and offset), with ``lazy_attrs`` joined into the select list as ``prefetch`` does, but rows
    are returned as the driver produced them: no objects are built and the identity map is untouched.
    Pending changes of the session are flushed first, as before any query.
    """
    if lazy_attrs:
        query = query.prefetch(*lazy_attrs)
    with query._prefetch_context:
        sql, arguments, attr_offsets, _key = query._construct_sql_and_arguments(limit, offset)
    database = query._database
    if database.provider.dialect != "SQLite":
        return database._exec_sql(sql, arguments).fetchall(), attr_offsets
    # Pony decodes SQLite text with a Python function (utf-8, errors replaced); the C decoder gives the
    # same strings for valid UTF-8, much faster. Text that is not valid UTF-8 makes it raise: then the
    # SELECT runs again with Pony's own decoder.
    connection = database._get_cache().prepare_connection_for_query_execution()
    original = connection.text_factory
    connection.text_factory = str
    try:
        rows = database._exec_sql(sql, arguments).fetchall()
    except (_core.OperationalError, sqlite3.OperationalError) as exc:
        if "decode" not in str(exc).lower():
            raise
        connection.text_factory = original
        rows = database._exec_sql(sql, arguments).fetchall()
    finally:
        connection.text_factory = original
    return rows, attr_offsets


def validate_attribute(attr: Attribute, value: Any) -> Any:
    """Validate ``value`` for ``attr`` with Pony's own checks: converter ``validate``, ``py_check``,
    min/max/max_len, required and nullability. Returns the value Pony would store; raises Pony's
    ``ValueError``/``TypeError`` otherwise. Relations take an instance or a raw primary key.
    """
    return attr.validate(value, None, attr.entity)


def input_errors() -> tuple[type[BaseException], ...]:
    """What Pony raises for bad values when an object is created or set: ``ValueError``/``TypeError``
    from validation and ``CacheIndexError`` (an ``OrmError``) for a unique value already in the
    identity map."""
    return (ValueError, TypeError, _core.CacheIndexError)


def find_by_raw_pk(entity: Entity, raw: tuple[Any, ...]) -> Any:
    """The instance of ``entity`` with this raw primary key (a tuple of column values), or None.

    Looks in the identity map first, then runs one SELECT. A key of the wrong shape or type gives None.
    """
    from pony.orm.core import ObjectNotFound

    pk_attrs = entity._pk_attrs_
    if len(pk_attrs) == len(raw):
        try:
            return entity.get(**{a.name: v for a, v in zip(pk_attrs, raw, strict=True)})
        except (TypeError, ValueError):
            return None
    try:  # a key that includes a relation: Pony resolves flattened column values itself
        obj = entity._get_by_raw_pkval_(raw)
        obj._load_()
    except (ObjectNotFound, TypeError, ValueError):
        return None
    return obj


def session_objects(db: Any) -> list[Any]:
    """Every live object in the current session's identity map, new unsaved ones included (objects
    without a key yet are in no index), so tests can check that nothing half-built was left behind."""
    cache = _core.local.db2cache.get(db)
    if cache is None or not cache.is_alive:
        return []
    return [o for o in cache.objects if o._status_ not in ("deleted", "cancelled", "marked_to_delete")]


def raw_pk_of(obj: Any) -> tuple[Any, ...]:
    """Same as :func:`raw_primary_key`: the flat tuple of an instance's primary-key column values."""
    return tuple(obj._get_raw_pkval_())


def pony_repr(obj: Any) -> str:
    """Pony's own ``Entity.__repr__`` of an instance (``User[1]``)."""
    from pony.orm.core import Entity as PonyEntity

    return str(PonyEntity.__repr__(obj))


def loaded_values(obj: Any) -> dict[Any, Any] | None:
    """The object's loaded attribute values by attribute (Pony's ``_vals_``), or None for a deleted object.

    An attribute missing from the mapping is not loaded yet; read it with ``attr.__get__(obj)``, which
    loads it. Collections are stored in another form here: always read them through ``__get__``.
    """
    if obj._status_ in _core.del_statuses:
        return None
    return obj._vals_  # type: ignore[no-any-return]


def read_bits(entity: Entity, attrs: Iterable[Attribute]) -> int:
    """The read bits of ``attrs`` on instances of ``entity``, for :func:`mark_read`.

    Pony records every attribute read through ``attr.__get__`` in the object's read bits; an update of
    the object later in the transaction then checks that those columns still hold what was read
    (optimistic concurrency). Primary keys, collections and volatile attributes have no bit.

    Two kinds of attribute are left out, because Pony 0.7.20's check of them fails the next update of
    the object (as it does after Pony's own ``to_dict``), so serializing must not arm it: ``Json`` on
    the MySQL provider (``CAST(... AS JSON)``, a syntax error on MariaDB) and ``time`` on SQLite (read
    back as text, which its converter cannot write).
    """
    bits = entity._bits_except_volatile_
    dialect = entity._database_.provider.dialect
    return sum(bits.get(attr, 0) for attr in attrs if not _check_fails(attr, dialect))


def _check_fails(attr: Attribute, dialect: str) -> bool:
    converter = attr.converters[0] if attr.converters else None
    if dialect == "MySQL":
        return isinstance(converter, _dbapiprovider.JsonConverter)
    if dialect == "SQLite":
        return isinstance(converter, _dbapiprovider.TimeConverter)
    return False


def mark_read(obj: Any, bits: int) -> None:
    """Record reads of the attributes in ``bits`` (from :func:`read_bits`), as Pony's attribute access does.

    Serializers read loaded values straight from :func:`loaded_values`; without this, a later update of
    the object would skip the optimistic checks Pony makes after ``to_dict`` or plain attribute reads.
    Call it only for attributes that are loaded (Pony assumes a read attribute has a database value).
    """
    wbits = obj._wbits_
    if wbits is not None:  # None for objects created in this session: Pony tracks nothing for them
        obj._rbits_ |= bits & ~wbits


def output_values_source(obj: str, vals: str, bits: str) -> tuple[list[str], list[str], dict[str, Any]]:
    """``(read lines, mark lines, namespace)``: :func:`flush_if_dirty` with :func:`loaded_values`, and
    :func:`mark_read`, as source for the generated per-entity serializers (on the per-object path the
    calls cost more than the rest of a small object's serialization).

    After the read lines, variable ``vals`` holds the loaded values of instance ``obj``, or None for a
    deleted object. The mark lines record the reads of the attributes in ``bits`` (the name of the
    integer from :func:`read_bits`); run them only once every one of those attributes was found in
    ``vals``, as Pony records a read only after the value is loaded. Lines are at indentation 0; they
    also use ``_pk_cache``, ``_pk_status``, ``_pk_wbits``, ``_pk_rbits`` and the namespace's names.
    """
    read = [
        f"_pk_cache = {obj}._session_cache_",
        "if _pk_cache is not None and _pk_cache.modified and _pk_cache.is_alive:",
        "    _pk_cache.flush()",
        # "loaded" first, by identity (Pony assigns interned literals; a miss only costs the set lookup)
        f"_pk_status = {obj}._status_",
        f"{vals} = (",
        f"    {obj}._vals_ if _pk_status is _pk_loaded or _pk_status not in _pk_deleted_statuses else None",
        ")",
    ]
    # rbits |= bits & ~wbits, as mark_read; the common cases skip the integer operations: an object
    # already marked with exactly these bits (the same int object), and a fresh one (nothing read or
    # written yet)
    mark = [
        f"_pk_wbits = {obj}._wbits_",
        "if _pk_wbits is not None:",
        f"    _pk_rbits = {obj}._rbits_",
        f"    if _pk_rbits is not {bits}:",
        f"        {obj}._rbits_ = (",
        f"            {bits} if not (_pk_rbits or _pk_wbits) else _pk_rbits | ({bits} & ~_pk_wbits)",
        "        )",
    ]
    return read, mark, {"_pk_deleted_statuses": _core.del_statuses, "_pk_loaded": "loaded"}
