"""To-one relation values in bulk writes: the encoder of a relation column (a key, a composite key or an
object per row), its inline source for ponykit's compiled row encoders, and what a reference check
needs to know about the entity referred to.

A relation column binds the primary key of the object referred to. Pony's ``Entity(**row)`` validates a
key given for it as ``_get_by_raw_pkval_`` does (each part through the key attribute's ``validate``) and
an object by its class and session; the bound value is then the relation converter's ``py2sql`` of the
raw key. The inline source makes the same checks in the compiled encoder (no call per row for a key or an
object of a plain key), so that a relation column costs what a column of the key's type costs.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pony.orm.core as _core
import pony.orm.dbapiprovider as _dbapiprovider

from ._typing import Attribute, Entity

__all__ = [
    "DriverFailure",
    "Reference",
    "driver_error",
    "driver_failure",
    "reference_of",
    "relation_encoder",
    "relation_encoder_setup",
    "relation_encoder_source",
    "relation_value_kind",
]


@dataclass(frozen=True)
class Reference:
    """What a to-one relation attribute refers to, for a check that the rows referred to exist."""

    entity: Entity  # the entity referred to
    name: str  # its name, for messages
    pk_attrs: tuple[str, ...]  # its primary-key attributes (their values may be sensitive)


def reference_of(attr: Attribute) -> Reference:
    """The :class:`Reference` of a to-one relation attribute."""
    rentity = attr.py_type
    return Reference(rentity, rentity.__name__, tuple(a.name for a in rentity._pk_attrs_))


def _plain_pk(attr: Attribute) -> list[Attribute] | None:
    """The key attributes of the entity ``attr`` refers to, when the key is plain (no relation in it,
    one converter and no ``py_check`` each) and ``attr`` has no ``py_check`` (which Pony runs on the
    object); else None."""
    rentity = attr.py_type
    parts = list(rentity._pk_attrs_)
    if attr.py_check is not None or any(
        a.reverse is not None or len(a.converters) != 1 or a.py_check is not None for a in parts
    ):
        return None
    return parts


def relation_value_kind(attr: Attribute, kind_of: Callable[[Attribute], str]) -> str:
    """The value kind of a relation column (see ``BulkAttr.value_kind``): that of the key it binds when
    every part of the key has one kind, else ``"any"``."""
    parts = list(attr.py_type._pk_attrs_)
    if any(a.reverse is not None for a in parts):
        return "any"
    kinds = {kind_of(a) for a in parts}
    return kinds.pop() if len(kinds) == 1 else "any"


def relation_encoder(entity: Entity, attr: Attribute) -> Callable[[Any], Any]:
    """The encoder of one relation value (see ``bulk_value_encoder``): an object of the entity referred
    to, or its primary key (a scalar, or a tuple for a composite key), or None/DEFAULT."""
    rentity = attr.py_type
    converters = list(attr.converters)
    n = len(converters)
    validate_attr = attr.validate
    pk_parts = _plain_pk(attr)

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


def relation_encoder_setup(entity: Entity, attr: Attribute, prefix: str) -> tuple[list[str], dict[str, Any]]:
    """Lines run once per call of a compiled encoder before its rows (``{prefix}cache``: the session's
    cache, which an object given as a relation value must belong to), and the names they use."""
    db = entity._database_
    return [f"{prefix}cache = {prefix}get_cache()"], {f"{prefix}get_cache": db._get_cache}


def relation_encoder_source(
    attr: Attribute,
    var: str,
    prefix: str,
    inline_check: Callable[[Any, bool, str, str, dict[str, Any]], Any],
) -> tuple[list[str], dict[str, Any]] | None:
    """Lines encoding the relation value in ``var`` in place, with the names they use; None when the
    relation cannot be inlined (a key holding a relation, a ``py_check``): then one call does it all.

    The lines need ``{prefix}slow`` (the full encoder, which also raises Pony's errors) and
    ``{prefix}cache`` (see :func:`relation_encoder_setup`). A key takes the inline check of its key
    attribute's converter (``inline_check``, as for a column of that type); an object of the entity
    referred to (or a subclass) of this session binds its key; None passes through when the attribute
    is nullable and not Required; anything else takes the full encoder.
    """
    parts = _plain_pk(attr)
    if parts is None:
        return None
    rentity = attr.py_type
    slow, orig = f"{prefix}slow", f"{prefix}orig"
    env: dict[str, Any] = {f"{prefix}rcls": frozenset([rentity, *rentity._subclasses_])}
    p2s = _py2sql_names(attr, prefix, env)
    n = len(parts)
    lines = [f"{orig} = {var}"]
    if n == 1:
        check = inline_check(parts[0].converters[0], isinstance(parts[0], _core.Required), var, prefix, env)
        lines += [check.guard, *(f"    {line}" for line in check.body)]
        if check.fail:
            lines += [f"    if {' or '.join(check.fail)}:", f"        {var} = {slow}({orig})"]
            lines += ["    else:", f"        {var} = {p2s[0]}({var})"] if p2s[0] else []
        else:
            lines.append(f"    {var} = {p2s[0]}({var})" if p2s[0] else "    pass")
    else:
        tuple_lines = _tuple_key_lines(parts, var, prefix, env, inline_check, p2s)
        if tuple_lines is not None:
            lines += tuple_lines
    keyword = "elif" if len(lines) > 1 else "if"
    # An object: Pony's validate checks its class and that it belongs to this session.
    lines += [
        f"{keyword} type({var}) in {prefix}rcls and {var}._session_cache_ is {prefix}cache:",
        f"    {var} = {var}._pkval_",
    ]
    if n == 1:
        lines += [f"    {var} = {p2s[0]}({var})"] if p2s[0] else []
    elif any(p2s):
        items = ", ".join(f"{p}({var}[{k}])" if p else f"{var}[{k}]" for k, p in enumerate(p2s))
        lines.append(f"    {var} = ({items})")
    nothing = f"    {var} = {None if n == 1 else (None,) * n!r}"
    if attr.nullable and not isinstance(attr, _core.Required):
        lines += [f"elif {var} is None:", nothing]
    if attr.default is None and not isinstance(attr, _core.Required):
        # A missing value: Pony's validate gives None for an attribute without a default.
        env[f"{prefix}DEF"] = _core.DEFAULT
        lines += [f"elif {var} is {prefix}DEF:", nothing]
    lines += ["else:", f"    {var} = {slow}({var})"]
    return lines, env


def _py2sql_names(attr: Attribute, prefix: str, env: dict[str, Any]) -> list[str | None]:
    """Per key column, the name of the relation converter's ``py2sql`` in ``env``, or None where it is
    Pony's identity."""
    identity = _dbapiprovider.Converter.py2sql
    names: list[str | None] = []
    for k, conv in enumerate(attr.converters):
        if type(conv).py2sql is identity:
            names.append(None)
        else:
            env[f"{prefix}p2s{k}"] = conv.py2sql
            names.append(f"{prefix}p2s{k}")
    return names


def _tuple_key_lines(
    parts: list[Attribute],
    var: str,
    prefix: str,
    env: dict[str, Any],
    inline_check: Callable[[Any, bool, str, str, dict[str, Any]], Any],
    p2s: list[str | None],
) -> list[str] | None:
    """The inline path of a composite key given as a tuple: taken when each part has the exact type its
    converter's inline check takes and passes it; None when a part's check needs more than a condition."""
    conds: list[str] = []
    for k, part in enumerate(parts):
        item = f"{prefix}k{k}"
        check = inline_check(part.converters[0], isinstance(part, _core.Required), item, f"{prefix}{k}_", env)
        if check.body:
            return None  # autostrip or a converter's own validate: the full encoder does it
        conds.append(check.guard[len("if ") : -1])
        conds.extend(f"not ({fail})" for fail in check.fail)
    n = len(parts)
    unpack = ", ".join(f"{prefix}k{k}" for k in range(n))
    items = ", ".join(f"{p}({prefix}k{k})" if p else f"{prefix}k{k}" for k, p in enumerate(p2s))
    return [
        f"if type({var}) is tuple and len({var}) == {n}:",
        f"    {unpack}, = {var}",
        f"    if {' and '.join(conds)}:",
        f"        {var} = ({items})",
        "    else:",
        f"        {var} = {prefix}slow({prefix}orig)",
    ]


# ---------------------------------------------------------------------------------------------------------
# What a refused write statement says


@dataclass(frozen=True)
class DriverFailure:
    """What a database error raised by a write statement says about the row it refused.

    ``kind`` is ``"foreign_key"`` (a reference to a missing row), ``"unique"`` (a duplicate key),
    ``"data"`` (a value the column refused: out of range, bad text) or ``"other"``. ``line`` is the
    1-based line of PostgreSQL's COPY data being read when it failed (its error context ``COPY t, line
    N``; None elsewhere, and for foreign keys, which PostgreSQL checks after the last line); ``column``
    the column the server names, if any.
    """

    kind: str
    line: int | None = None
    column: str | None = None


_COPY_CONTEXT = re.compile(r"COPY .*?, line (\d+)(?:, column (.+?)(?::|$))?")
_KEY_DETAIL = re.compile(r"Key \((.+?)\)=")
_MYSQL_COLUMN = re.compile(r"[Cc]olumn '([^']+)'")  # "Data too long for column 'x' at row 1"
_MYSQL_FOREIGN_KEY = frozenset({1216, 1217, 1451, 1452})
_MYSQL_UNIQUE = frozenset({1062, 1586})


def driver_error(exc: BaseException) -> BaseException:
    """The driver's exception behind one of Pony's wrappers (its ``original_exc``), or ``exc`` itself."""
    original = getattr(exc, "original_exc", None)
    return original if isinstance(original, BaseException) else exc


def driver_failure(exc: BaseException) -> DriverFailure | None:
    """The :class:`DriverFailure` of Pony's ``IntegrityError``/``DataError`` raised by a statement
    (the driver's error is its ``original_exc``); None for any other exception (a lost connection ...)."""
    if not isinstance(exc, (_dbapiprovider.IntegrityError, _dbapiprovider.DataError)):
        return None
    orig: Any = driver_error(exc)
    code = getattr(orig, "pgcode", None)
    if isinstance(code, str):  # psycopg2
        diag = orig.diag
        found = _COPY_CONTEXT.search(diag.context or "")
        line = int(found.group(1)) if found else None
        column = diag.column_name or (found.group(2) if found and found.group(2) else None)
        if column is None:  # a key's violation: "Key (author)=(5) is not present in table ..."
            key = _KEY_DETAIL.match(diag.message_detail or "")
            column = key.group(1).split(",")[0].strip().strip('"') if key else None
        kind = {"23503": "foreign_key", "23505": "unique"}.get(code)
        return DriverFailure(kind or ("data" if code.startswith("22") else "other"), line, column)
    if isinstance(orig, sqlite3.Error):
        text = str(orig)
        if text.startswith("FOREIGN KEY constraint failed"):
            return DriverFailure("foreign_key")
        # "UNIQUE constraint failed: book.isbn, ...", "NOT NULL constraint failed: book.title"
        first = text.partition(" failed: ")[2].split(",")[0].strip().rpartition(".")[2] or None
        return DriverFailure("unique" if text.startswith("UNIQUE") else "other", None, first)
    number = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None  # PyMySQL: (errno, text)
    if number in _MYSQL_FOREIGN_KEY:
        return DriverFailure("foreign_key")
    if number in _MYSQL_UNIQUE:
        return DriverFailure("unique")
    named = _MYSQL_COLUMN.search(str(orig.args[1]) if len(orig.args) > 1 else "")
    kind = "data" if isinstance(exc, _dbapiprovider.DataError) else "other"
    return DriverFailure(kind, None, named.group(1) if named else None)
