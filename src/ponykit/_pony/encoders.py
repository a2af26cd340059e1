"""Fast value paths written out as source: bulk-write value encoders, and the fragments of generated code
that read or write Pony's private slots (``_vals_``, ``_rbits_``, ``_session_cache_`` ...).

Generated source that names a Pony private name is produced here (and in :mod:`.materialize`) and nowhere
else in ponykit: callers splice the returned lines into their own functions.
"""

from __future__ import annotations

import datetime
import decimal
import types
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pony.orm.core as _core
import pony.orm.dbapiprovider as _dbapiprovider

from ._typing import Attribute, Entity
from .references import relation_encoder, relation_encoder_setup, relation_encoder_source, relation_value_kind

__all__ = [
    "BulkAttr",
    "bulk_attrs",
    "bulk_encoder_setup",
    "bulk_encoder_source",
    "bulk_value_encoder",
    "loaded_values",
    "mark_read",
    "output_values_source",
    "pk_is_plain",
    "read_bits",
]


# Exact types that can be neither entities nor proxies.
_SAFE_TYPES: frozenset[type] = frozenset(
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
    # (float, Decimal) or "any" (custom and other types: checked by the values' types); a relation has
    # the kind of the key it binds.
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
        return relation_value_kind(attr, _value_kind)  # the kind of the key referred to
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


def bulk_value_encoder(entity: Entity, attr: Attribute) -> Callable[[Any], Any]:
    """A function turning one given value (or ``DEFAULT``) into the column value(s) Pony would bind.

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
        return relation_encoder(entity, attr)
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
    required-not-empty rule, ``val2dbval`` and ``py2sql`` (when not the identity). A to-one relation
    takes its key attribute's inline check for a key, and binds the key of an object of the session
    (:func:`.references.relation_encoder_source`); the lines then need :func:`bulk_encoder_setup`'s.

    ``param_encoders`` is the Database's map of ponykit value types (``ponykit.types``): the converter
    classes ponykit wraps for query parameters encode values of those types in ``py2sql`` and hand
    everything else to the dialect's own ``py2sql``; the lines do the same without the wrapper's call.
    """
    slow = f"{prefix}slow"
    env: dict[str, Any] = {slow: bulk_value_encoder(entity, attr)}
    if attr.reverse is not None:
        inline = relation_encoder_source(attr, var, prefix, _inline_check)
        if inline is not None:
            env.update(inline[1])
            return inline[0], env
    if attr.reverse is not None or attr is entity._discriminator_attr_ or len(attr.converters) != 1:
        # Relations with a key holding a relation or a py_check, the discriminator and attributes with
        # several converters: one call does it all.
        return [f"{var} = {slow}({var})"], env
    conv = attr.converters[0]
    required = isinstance(attr, _core.Required)
    check = _inline_check(conv, required, var, prefix, env)
    if attr.py_check is not None:
        # Pony runs py_check after the converter's validate: the fail conditions are tested in order.
        env[f"{prefix}check"] = attr.py_check
        check.fail.append(f"not {prefix}check({var})")
    finish = _finish_lines(conv, var, prefix, env, param_encoders)
    # Attribute.validate passes None through for a nullable attribute that is not Required.
    pass_none = bool(attr.nullable and not required)
    lines = _emit(check, finish, var, prefix, pass_none)
    if getattr(getattr(conv, "ponykit_type", None), "deterministic", False):
        lines = _repeats_encoded_once(lines, var, prefix, env)
    return lines, env


def _repeats_encoded_once(lines: list[str], var: str, prefix: str, env: dict[str, Any]) -> list[str]:
    """``lines`` behind a one-entry memo (deterministic ponykit types only): the value object encoded last
    (a timestamp repeated down a batch) takes the last result. The memo is one tuple, replaced whole after
    a value encoded without error, so threads sharing the encoder never pair a value with another's
    result; Pony's DEFAULT ("no value": maybe a callable default) is never memoized."""
    memo = f"{prefix}memo"
    env[memo] = [(object(), None)]
    env[f"{prefix}DEFAULT"] = _core.DEFAULT
    given = f"{prefix}given"
    return [
        f"{prefix}last = {memo}[0]",
        f"if {var} is {prefix}last[0]:",
        f"    {var} = {prefix}last[1]",
        "else:",
        f"    {given} = {var}",
        *(f"    {line}" for line in lines),
        f"    if {given} is not {prefix}DEFAULT:",
        f"        {memo}[0] = ({given}, {var})",
    ]


def bulk_encoder_setup(entity: Entity, attr: Attribute, prefix: str) -> tuple[list[str], dict[str, Any]]:
    """Lines that the encoder lines of :func:`bulk_encoder_source` need run once per call of the compiled
    encoder, before its rows, and the names they use (for a relation: the session's cache)."""
    if attr.reverse is not None:
        return relation_encoder_setup(entity, attr, prefix)
    return [], {}


@dataclass
class _InlineCheck:
    """The inline path of one attribute's value, planned before any line of it is written."""

    guard: str  # the ``if`` line choosing the values the inline path takes (by exact type)
    body: list[str]  # lines run first on such a value (without indentation)
    # Conditions, on the validated value, that send the original value down Pony's path instead.
    fail: list[str]


def _inline_check(conv: Any, required: bool, var: str, prefix: str, env: dict[str, Any]) -> _InlineCheck:
    """The inline form of ``conv.validate`` (see :func:`bulk_encoder_source`); adds its names to ``env``.

    Each branch inlines only a ``validate`` that is Pony's own method: a subclass that overrides it may
    do anything, so it is called instead (the last branch).
    """
    dbapi = _dbapiprovider
    ct = type(conv)
    fail: list[str] = []
    if ct.validate is dbapi.StrConverter.validate:
        if conv.max_len:
            fail.append(f"len({var}) > {int(conv.max_len)}")
        if required:
            fail.append(f"{var} == ''")
        body = [f"{var} = {var}.strip()"] if conv.autostrip else []
        return _InlineCheck(f"if type({var}) is str:", body, fail)
    if ct.validate is dbapi.IntConverter.validate:
        if conv.min_val is not None:
            fail.append(f"{var} < {int(conv.min_val)}")
        if conv.max_val is not None:
            fail.append(f"{var} > {int(conv.max_val)}")
        return _InlineCheck(f"if type({var}) is int:", [], fail)
    if ct.validate is dbapi.DecimalConverter.validate:
        env[f"{prefix}Dec"] = decimal.Decimal
        # Bounds are Decimals, not literals: they go in the namespace.
        for bound, op, tag in ((conv.min_val, "<", "min"), (conv.max_val, ">", "max")):
            if bound is not None:
                env[f"{prefix}{tag}"] = bound
                fail.append(f"{var} {op} {prefix}{tag}")
        return _InlineCheck(f"if type({var}) is {prefix}Dec:", [], fail)  # Decimal(val) is val itself
    if ct.validate is dbapi.BoolConverter.validate:
        return _InlineCheck(f"if type({var}) is bool:", [], fail)
    if _keeps_datetime(conv):
        env[f"{prefix}DT"] = datetime.datetime
        return _InlineCheck(f"if type({var}) is {prefix}DT:", [], fail)
    if ct.validate is dbapi.DateConverter.validate:
        env[f"{prefix}D"] = datetime.date
        return _InlineCheck(f"if type({var}) is {prefix}D:", [], fail)
    # Any other converter: its own validate, called directly for plain builtin values. None means the
    # value is missing, which Pony's attribute-level validate words (defaults, required).
    env[f"{prefix}cv"] = conv.validate
    env[f"{prefix}safe"] = _SAFE_TYPES
    fail.append(f"{var} is None")
    if required:
        fail.append(f"{var} == ''")
    return _InlineCheck(f"if type({var}) in {prefix}safe:", [f"{var} = {prefix}cv({var}, None)"], fail)


def _keeps_datetime(conv: Any) -> bool:
    """True if Pony's datetime ``validate`` gives back a ``datetime`` value unchanged (full precision)."""
    ct = type(conv)
    return bool(
        ct.validate is _dbapiprovider.DatetimeConverter.validate
        and ct.round_microseconds_to_precision
        is _dbapiprovider.ConverterWithMicroseconds.round_microseconds_to_precision
        and conv.precision is not None
        and conv.precision >= 6
    )


def _finish_lines(
    conv: Any, var: str, prefix: str, env: dict[str, Any], param_encoders: dict[type, Any] | None
) -> list[str]:
    """Lines (without indentation) turning a validated value into the bound one: ``val2dbval``, then
    ``py2sql``, each only where it is not Pony's identity; adds their names to ``env``."""
    identity = _dbapiprovider.Converter
    ct = type(conv)
    finish = []
    if ct.val2dbval is not identity.val2dbval:
        env[f"{prefix}v2d"] = conv.val2dbval
        finish.append(f"{var} = {prefix}v2d({var}, None)")
    if vars(ct).get("_ponykit_param_converter_") and param_encoders is not None:
        # ponykit's query-parameter wrapper (ponykit.types.base.enable_query_params), inlined.
        env[f"{prefix}enc"] = param_encoders
        finish.append(f"{prefix}t = {prefix}enc.get(type({var}))")
        finish.append(f"if {prefix}t is not None and {prefix}t.is_python_value({var}):")
        finish.append(f"    {var} = {prefix}t.to_db({var})")
        py2sql = getattr(ct.__mro__[1], "py2sql")  # noqa: B009 - the wrapped dialect class
        if py2sql is not identity.py2sql:
            env[f"{prefix}p2s"] = types.MethodType(py2sql, conv)
            finish.append(f"{var} = {prefix}p2s({var})")
    elif ct.py2sql is not identity.py2sql:
        env[f"{prefix}p2s"] = conv.py2sql
        finish.append(f"{var} = {prefix}p2s({var})")
    return finish


def _emit(check: _InlineCheck, finish: list[str], var: str, prefix: str, pass_none: bool) -> list[str]:
    """The encoder's lines from the plan: the inline path, else None passed through (``pass_none``),
    else Pony's path (``{prefix}slow``), which also raises Pony's own errors for invalid values."""
    slow = f"{prefix}slow"
    orig = f"{prefix}orig"
    # The original value is kept: a value failing a check goes to Pony's path as given, not as stripped.
    lines = [f"{orig} = {var}", check.guard, *(f"    {line}" for line in check.body)]
    if check.fail:
        lines.append(f"    if {' or '.join(check.fail)}:")
        lines.append(f"        {var} = {slow}({orig})")
        if finish:
            lines.append("    else:")
            lines.extend(f"        {line}" for line in finish)
    elif finish:
        lines.extend(f"    {line}" for line in finish)
    elif not check.body:
        lines.append("    pass")  # nothing to do for such a value, but the ``if`` needs a body
    if pass_none:
        lines.append(f"elif {var} is None:")
        lines.append("    pass")
    lines.append("else:")
    lines.append(f"    {var} = {slow}({var})")
    return lines


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
