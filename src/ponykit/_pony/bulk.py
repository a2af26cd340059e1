"""Bulk writes (ponykit.bulk): validating and encoding values as Pony does, running batches in the session."""

from __future__ import annotations

import datetime
import decimal
import threading
import time
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pony.orm.core as _core
from pony.orm import Database

from ._typing import Attribute, Entity

__all__ = [
    "BULK_DEFAULT",
    "BulkAttr",
    "attr_names_without_columns",
    "bulk_attrs",
    "bulk_encoder_source",
    "bulk_value_encoder",
    "collection_attr_names",
    "copy_in_session",
    "discriminator_filter",
    "execute_in_session",
    "in_self_reported_statement",
    "pk_is_plain",
]


# Pony's marker for "no value given": Attribute.validate turns it into the attribute's default.
BULK_DEFAULT: Any = _core.DEFAULT

# Exact types that can be neither entities nor proxies; filled below.
_SAFE_TYPES: frozenset[type] = frozenset()


def _init_safe_types() -> frozenset[type]:
    import datetime
    import decimal
    import uuid

    return frozenset(
        {
            str,
            int,
            float,
            bool,
            bytes,
            decimal.Decimal,
            datetime.date,
            datetime.datetime,
            datetime.time,
            datetime.timedelta,
            uuid.UUID,
        }
    )


_SAFE_TYPES = _init_safe_types()


@dataclass(frozen=True)
class BulkAttr:
    """How one attribute of an entity is written by a bulk statement."""

    name: str
    attr: Attribute
    columns: tuple[str, ...]
    is_pk: bool
    is_auto_pk: bool  # an auto-generated primary key: omitted from INSERT when no value is given
    has_sql_default: bool  # Pony omits the column (so the SQL DEFAULT applies) when the value is None
    is_relation: bool
    reverse_is_collection: bool
    is_discriminator: bool
    is_lazy: bool
    sensitive: bool  # never show values of this attribute in an error
    # What the bound values can hold, for the check of values the driver refuses (ponykit.bulk._check):
    # "safe" (int, bool, date, time, datetime, timedelta, UUID, bytes: never refused), "str", "number"
    # (float, Decimal) or "any" (relations, custom and other types: checked by the values' types).
    value_kind: str = "any"


def bulk_attrs(entity: Entity) -> tuple[BulkAttr, ...]:
    """The attributes of ``entity`` stored in its table, in column order, described for bulk writes."""
    disc = entity._discriminator_attr_
    result = []
    for attr in entity._attrs_with_columns_:
        converter = attr.converters[0] if attr.converters else None
        # Encrypted types mark themselves with __ponykit_sensitive__; their values stay out of errors.
        sensitive = bool(
            getattr(attr.py_type, "__ponykit_sensitive__", False)
            or getattr(converter, "__ponykit_sensitive__", False)
        )
        result.append(
            BulkAttr(
                name=attr.name,
                attr=attr,
                columns=tuple(attr.columns),
                is_pk=bool(attr.is_pk),
                is_auto_pk=bool(attr.is_pk and attr.auto),
                has_sql_default=attr.sql_default not in (None, False),
                is_relation=attr.reverse is not None,
                reverse_is_collection=bool(attr.reverse is not None and attr.reverse.is_collection),
                is_discriminator=attr is disc,
                is_lazy=bool(attr.lazy),
                sensitive=sensitive,
                value_kind=_value_kind(attr),
            )
        )
    return tuple(result)


def _value_kind(attr: Attribute) -> str:
    if attr.reverse is not None:
        return "any"  # the related primary key, of any type
    py_type = attr.py_type
    if not isinstance(py_type, type):
        return "any"
    if issubclass(py_type, str):
        return "str"
    if py_type in (float, decimal.Decimal):
        return "number"
    if py_type in _SAFE_KINDS:
        return "safe"
    return "any"


_SAFE_KINDS: frozenset[type] = frozenset(
    {int, bool, bytes, datetime.date, datetime.datetime, datetime.time, datetime.timedelta, uuid.UUID}
)


def collection_attr_names(entity: Entity) -> frozenset[str]:
    """Names of the collection attributes (``Set``) of ``entity``: bulk writes do not take them."""
    return frozenset(a.name for a in entity._attrs_ if a.is_collection)


def attr_names_without_columns(entity: Entity) -> frozenset[str]:
    """Names of the non-collection attributes of ``entity`` that have no column (the reverse of a 1-1)."""
    return frozenset(a.name for a in entity._attrs_ if not a.is_collection and not a.columns)


def bulk_value_encoder(entity: Entity, attr: Attribute) -> Callable[[Any], Any]:
    """A function turning one given value (or ``BULK_DEFAULT``) into the column value(s) Pony would bind.

    Semantics are those of ``Entity(**kwargs)`` followed by the INSERT of ``_save_created_``: the value
    goes through ``attr.validate`` (defaults, callable defaults, ``Optional(str)`` as ``''``, required
    and nullable checks, the converter's ``validate`` with max_len/min/max, ``py_check``), then
    ``val2dbval`` and ``py2sql``. Relations accept an entity instance or its primary key (a scalar or a
    tuple) and give the related primary-key columns. Invalid values raise Pony's own ``TypeError`` or
    ``ValueError``. The result is a scalar for a one-column attribute and a tuple otherwise.

    For values of plain builtin types the attribute-level wrapper is skipped and its checks are made
    inline (the same checks, in the same order); converter steps Pony's base ``Converter`` leaves as
    the identity are not called. Anything unusual takes Pony's own path.
    """
    from pony.orm.dbapiprovider import Converter

    validate_attr = attr.validate
    if attr.reverse is not None:
        return _relation_encoder(entity, attr)
    converter = attr.converters[0]
    if attr is entity._discriminator_attr_:

        def encode_discriminator(value: Any) -> Any:
            val = validate_attr(value, None, entity)
            return converter.py2sql(converter.val2dbval(val, None))

        return encode_discriminator
    cvalidate = converter.validate
    conv_type = type(converter)
    val2dbval = None if conv_type.val2dbval is Converter.val2dbval else converter.val2dbval
    py2sql = None if conv_type.py2sql is Converter.py2sql else converter.py2sql
    py_check = attr.py_check
    required = isinstance(attr, _core.Required)
    safe = _SAFE_TYPES
    default_marker = _core.DEFAULT

    def finish(val: Any) -> Any:
        if val is None:
            return None
        if val2dbval is not None:
            val = val2dbval(val, None)
        if py2sql is not None:
            val = py2sql(val)
        return val

    # A constant default is encoded once (a callable one is called for every row, as Pony does).
    no_default = object()
    constant_default: Any = no_default
    if not callable(attr.default):
        try:
            constant_default = finish(validate_attr(default_marker, None, entity))
        except (TypeError, ValueError):
            constant_default = no_default

    def encode(value: Any) -> Any:
        if type(value) in safe:
            try:
                val = cvalidate(value, None)
            except UnicodeDecodeError:
                val = None  # Pony words this error itself: take its path below
            else:
                if val is not None and (py_check is None or py_check(val)) and not (required and val == ""):
                    return finish(val)
        elif value is default_marker and constant_default is not no_default:
            return constant_default
        return finish(validate_attr(value, None, entity))

    return encode


def bulk_encoder_source(
    entity: Entity,
    attr: Attribute,
    var: str,
    prefix: str,
    param_encoders: dict[type, Any] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Python source lines that encode the value in variable ``var`` in place, and the names they use.

    The same semantics as :func:`bulk_value_encoder` (which the lines call for anything unusual and to
    raise Pony's own errors), inlined into ponykit's compiled row encoder: the per-value function calls
    are most of a bulk write's time. A check is inlined only where the converter's ``validate`` is
    Pony's own (not overridden by a subclass or a custom type), so what runs is the code Pony runs: for
    ``StrConverter`` the autostrip and ``max_len``, for ``IntConverter`` and ``DecimalConverter``
    ``min``/``max``, for ``BoolConverter`` nothing for a ``bool``, for ``DatetimeConverter`` nothing for
    a ``datetime`` when the precision keeps every microsecond, for ``DateConverter`` nothing for a
    ``date``; other converters' ``validate`` is called directly. Then ``py_check``, the
    required-not-empty rule, ``val2dbval`` and ``py2sql`` (when not the identity).

    ``param_encoders`` is the Database's map of ponykit value types (``ponykit.types``): the converter
    classes ponykit wraps for query parameters encode values of those types in ``py2sql`` and hand
    everything else to the dialect's own ``py2sql``; the lines do the same without the wrapper's call.
    """
    from pony.orm.dbapiprovider import (
        BoolConverter,
        Converter,
        ConverterWithMicroseconds,
        DateConverter,
        DatetimeConverter,
        DecimalConverter,
        IntConverter,
        StrConverter,
    )

    slow = f"{prefix}slow"
    env: dict[str, Any] = {slow: bulk_value_encoder(entity, attr)}
    if attr.reverse is not None or attr is entity._discriminator_attr_ or len(attr.converters) != 1:
        return [f"{var} = {slow}({var})"], env
    conv = attr.converters[0]
    ct = type(conv)
    required = isinstance(attr, _core.Required)
    orig = f"{prefix}orig"
    lines = [f"{orig} = {var}"]
    fail: list[str] = []  # conditions, on the validated value, that send the value down Pony's path
    if ct.validate is StrConverter.validate:
        lines.append(f"if type({var}) is str:")
        if conv.autostrip:
            lines.append(f"    {var} = {var}.strip()")
        if conv.max_len:
            fail.append(f"len({var}) > {int(conv.max_len)}")
        if required:
            fail.append(f"{var} == ''")
    elif ct.validate is IntConverter.validate:
        lines.append(f"if type({var}) is int:")
        if conv.min_val is not None:
            fail.append(f"{var} < {int(conv.min_val)}")
        if conv.max_val is not None:
            fail.append(f"{var} > {int(conv.max_val)}")
    elif ct.validate is DecimalConverter.validate:
        env[f"{prefix}Dec"] = decimal.Decimal
        lines.append(f"if type({var}) is {prefix}Dec:")  # Decimal(val) is val itself
        for bound, op, tag in ((conv.min_val, "<", "min"), (conv.max_val, ">", "max")):
            if bound is not None:
                env[f"{prefix}{tag}"] = bound
                fail.append(f"{var} {op} {prefix}{tag}")
    elif ct.validate is BoolConverter.validate:
        lines.append(f"if type({var}) is bool:")
    elif (
        ct.validate is DatetimeConverter.validate
        and ct.round_microseconds_to_precision is ConverterWithMicroseconds.round_microseconds_to_precision
        and conv.precision is not None
        and conv.precision >= 6
    ):
        env[f"{prefix}DT"] = datetime.datetime
        lines.append(f"if type({var}) is {prefix}DT:")  # full precision: no rounding, the value itself
    elif ct.validate is DateConverter.validate:
        env[f"{prefix}D"] = datetime.date
        lines.append(f"if type({var}) is {prefix}D:")
    else:
        env[f"{prefix}cv"] = conv.validate
        env[f"{prefix}safe"] = _SAFE_TYPES
        lines.append(f"if type({var}) in {prefix}safe:")
        lines.append(f"    {var} = {prefix}cv({var}, None)")
        fail.append(f"{var} is None")
        if required:
            fail.append(f"{var} == ''")
    if attr.py_check is not None:
        env[f"{prefix}check"] = attr.py_check
        fail.append(f"not {prefix}check({var})")
    finish = []
    if ct.val2dbval is not Converter.val2dbval:
        env[f"{prefix}v2d"] = conv.val2dbval
        finish.append(f"{var} = {prefix}v2d({var}, None)")
    py2sql = ct.py2sql
    if vars(ct).get("_ponykit_param_converter_") and param_encoders is not None:
        # ponykit's query-parameter wrapper (ponykit.types.base.enable_query_params), inlined.
        env[f"{prefix}enc"] = param_encoders
        finish.append(f"{prefix}t = {prefix}enc.get(type({var}))")
        finish.append(f"if {prefix}t is not None and {prefix}t.is_python_value({var}):")
        finish.append(f"    {var} = {prefix}t.to_db({var})")
        py2sql = getattr(ct.__mro__[1], "py2sql")  # noqa: B009 - the wrapped dialect class
        if py2sql is not Converter.py2sql:
            env[f"{prefix}p2s"] = types.MethodType(py2sql, conv)
            finish.append(f"{var} = {prefix}p2s({var})")
    elif py2sql is not Converter.py2sql:
        env[f"{prefix}p2s"] = conv.py2sql
        finish.append(f"{var} = {prefix}p2s({var})")
    if fail:
        lines.append(f"    if {' or '.join(fail)}:")
        lines.append(f"        {var} = {slow}({orig})")
        if finish:
            lines.append("    else:")
            lines.extend(f"        {line}" for line in finish)
    elif finish:
        lines.extend(f"    {line}" for line in finish)
    elif not lines[-1].startswith("    "):
        lines.append("    pass")
    if attr.nullable and not required:
        lines.append(f"elif {var} is None:")  # Attribute.validate passes None through for nullable attrs
        lines.append("    pass")
    lines.append("else:")
    lines.append(f"    {var} = {slow}({var})")
    return lines, env


def _relation_encoder(entity: Entity, attr: Attribute) -> Callable[[Any], Any]:
    rentity = attr.py_type
    converters = list(attr.converters)
    n = len(converters)
    validate_attr = attr.validate
    pk_parts: list[Attribute] | None = None
    if attr.py_check is None and all(a.reverse is None for a in rentity._pk_attrs_):
        pk_parts = list(rentity._pk_attrs_)

    def encode(value: Any) -> Any:
        if value is None or value is _core.DEFAULT or isinstance(value, _core.Entity) or pk_parts is None:
            val = validate_attr(value, None, entity)
            if val is None:
                return None if n == 1 else (None,) * n
            raw = val._get_raw_pkval_()
        else:
            # A primary key: validated like Pony's _get_by_raw_pkval_ does, without making a seed object.
            vals = value if type(value) is tuple else (value,)
            if len(vals) != n:
                raise TypeError(
                    f"Invalid number of columns were specified for attribute {attr}. "
                    f"Expected: {n}, got: {len(vals)}"
                )
            raw = tuple(_validate_pk_part(a, rentity, v) for a, v in zip(pk_parts, vals, strict=True))
        if n == 1:
            return converters[0].py2sql(raw[0])
        return tuple(c.py2sql(v) for c, v in zip(converters, raw, strict=True))

    return encode


def _validate_pk_part(pk_attr: Attribute, rentity: Entity, value: Any) -> Any:
    if isinstance(value, _core.Entity):
        raise TypeError(f"Attribute must be of {rentity.__name__} type. Got: {type(value).__name__} object")
    try:
        return pk_attr.validate(value, None, rentity, from_db=False)
    except TypeError:
        raise TypeError(
            f"a {rentity.__name__} object or its primary key is expected. Got: {type(value).__name__}"
        ) from None


def pk_is_plain(entity: Entity) -> bool:
    """True if the primary-key values Pony binds are the Python values (no relation, identity converters)."""
    from pony.orm.dbapiprovider import Converter

    for attr in entity._pk_attrs_:
        if attr.reverse is not None:
            return False
        conv = type(attr.converters[0])
        if getattr(conv, "_ponykit_param_converter_", False):
            # ponykit's query-parameter wrapper only encodes values of registered types; the key values
            # themselves pass through as the dialect's own converter would bind them.
            conv = conv.__mro__[1]
        if conv.py2sql is not Converter.py2sql or conv.val2dbval is not Converter.val2dbval:
            return False
    return True


def execute_in_session(db: Database, sql: str, arguments: Any) -> Any:
    """Run one statement in the current db_session's transaction through Pony's provider; the cursor.

    Goes through ``db._exec_sql`` with ``start_transaction=True``: pending ORM changes are flushed
    first, the transaction is started (``BEGIN IMMEDIATE`` on SQLite), and the provider's ``execute``
    (so ponykit's execute listeners, Pony's SQL log and statistics) sees the statement. A list of tuples
    runs as ``executemany``. The session commits or rolls back the statement with everything else.
    """
    _statement_state.self_reported += 1
    try:
        return db._exec_sql(sql, arguments, start_transaction=True)
    finally:
        _statement_state.self_reported -= 1


def copy_in_session(db: Database, sql: str, data: Any) -> int:
    """Run ``COPY ... FROM STDIN`` reading the file-like ``data`` in the current db_session's transaction
    (PostgreSQL, psycopg2); the number of rows copied.

    The statement takes the path of :func:`execute_in_session` (``db._exec_sql``): pending changes are
    flushed, the transaction is started, Pony's SQL log and statistics and the provider's ``execute``
    (so ponykit's execute listeners and ``count_queries``) see it, with no arguments. A lost connection
    goes through Pony's ``cache.reconnect``, so the same rule as for every statement applies: before
    the transaction wrote anything it is reconnected and the COPY run again; after a write, an attached
    Database raises ``ConnectionLostError`` (``transactions``) and nothing is retried. Only the cursor
    differs: its ``execute`` is psycopg2's ``copy_expert``, since COPY's rows come from a file.
    """
    _statement_state.self_reported += 1
    try:
        cache = db._get_cache()
        cache.immediate = True
        connection = cache.prepare_connection_for_query_execution()
        cursor = _CopyCursor(connection.cursor(), data)
        if _core.local.debug:
            _core.log_sql(sql)
        provider = db.provider
        start = time.time()  # Pony's statistics use time.time()
        try:
            provider.execute(cursor, sql, None, False)
        except Exception as exc:  # noqa: BLE001 - as db._exec_sql: reconnect() re-raises what it cannot mend
            # (and raises ConnectionLostError when the transaction already wrote: no partial retry)
            connection = cache.reconnect(exc)
            data.seek(0)
            cursor = _CopyCursor(connection.cursor(), data)
            if _core.local.debug:
                _core.log_sql(sql)
            start = time.time()
            provider.execute(cursor, sql, None, False)
        if cache.immediate:
            cache.in_transaction = True
        db._update_local_stat(sql, start)
        return int(cursor.rowcount)
    finally:
        _statement_state.self_reported -= 1


class _CopyCursor:
    """Stands in for a DB-API cursor in ``provider.execute``: ``execute(sql)`` runs ``copy_expert``."""

    _CHUNK = 1 << 18  # bytes psycopg2 reads from the file per call

    def __init__(self, cursor: Any, data: Any) -> None:
        self._cursor = cursor
        self._data = data

    def execute(self, sql: str, arguments: Any = None) -> None:
        if arguments is not None:
            raise TypeError("COPY FROM STDIN takes its rows from the file, not from arguments")
        self._cursor.copy_expert(sql, self._data, self._CHUNK)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def discriminator_filter(entity: Entity) -> tuple[str, tuple[Any, ...]] | None:
    """``(column, values)`` restricting ``entity``'s table to rows of ``entity`` and its subclasses, or None.

    The values are the discriminators Pony's own criteria use (``_construct_discriminator_criteria_``:
    the entity's and every subclass's), as bound parameters. None when the entity has no discriminator
    or is the root of its hierarchy (every row of the table is one of its objects).
    """
    attr = entity._discriminator_attr_
    if attr is None or entity._root_ is entity:
        return None
    converter = attr.converters[0]
    values = [entity._discriminator_, *(sub._discriminator_ for sub in entity._subclasses_)]
    encoded = tuple(converter.py2sql(converter.val2dbval(v, None)) for v in dict.fromkeys(values))
    return attr.column, encoded


class _StatementState(threading.local):
    def __init__(self) -> None:
        self.self_reported = 0


_statement_state = _StatementState()


def in_self_reported_statement() -> bool:
    """True while :func:`execute_in_session` runs a statement whose writes the caller reports itself.

    Statement listeners that infer writes from SQL text skip these: the caller (a bulk operation)
    reports the exact keys it wrote with ``record_writes``.
    """
    return _statement_state.self_reported > 0
