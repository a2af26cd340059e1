"""Pony's ``Database`` and its provider: facts about the server, and the per-instance interception points.

Provider methods are wrapped on one provider *instance*, converter lists are shadowed on one provider
*instance*: nothing here patches a Pony class for the whole process.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from pony.orm import Database

from ._typing import Entity
from .model import entities_of, table_key

__all__ = [
    "converter_base",
    "converter_class_for",
    "dialect",
    "dialect_converter_class",
    "has_subclasses",
    "install_converters",
    "is_bound",
    "is_mapped",
    "is_provider_method_wrapped",
    "look_in_current_schema",
    "mapping_signature",
    "max_params",
    "paramstyle",
    "positional_placeholder",
    "quote_name",
    "register_type_normalization",
    "server_identity",
    "server_version",
    "supports_insert_returning",
    "table_entities",
    "wrap_provider_method",
]


def has_subclasses(entity: Entity) -> bool:
    """True if other entities inherit from ``entity``."""
    return bool(entity._subclasses_)


def server_identity(db: Database) -> tuple[str, ...]:
    """What identifies the data ``db`` reaches on its server, the same from every client that reaches it.

    Asked of the server on a short connection of its own (never the session's: it may be inside a
    transaction), so client options (application_name, timeouts, host spellings, PyMySQL's ``conv``,
    PgBouncer in between) never change it: ``("postgres", database, current schema, system identifier or
    "")``, ``("mysql", database)``, ``("sqlite", real path of the file)``. An in-memory SQLite database
    is private to its process and Database, and so is its identity. Never holds a password.
    """
    name = dialect(db)
    pool = db.provider.pool
    if name == "sqlite":
        filename = str(getattr(pool, "filename", ""))
        if (
            getattr(pool, "is_shared_memory_db", False)
            or filename in ("", ":memory:")
            or "mode=memory" in filename
        ):
            return ("sqlite", ":memory:", str(os.getpid()), str(id(db)))
        return ("sqlite", os.path.realpath(filename))
    con = pool.dbapi_module.connect(*pool.args, **pool.kwargs)
    try:
        cursor = con.cursor()
        if name == "cockroach":
            cursor.execute("SELECT current_database(), current_schema()")
            return ("cockroach", *map(str, cursor.fetchone()))
        if name == "postgres":
            # The system identifier tells two clusters apart (a physical replica shares its primary's).
            # Read only when PUBLIC may, so that every role of one cluster computes the same identity.
            cursor.execute(
                "SELECT current_database(), current_schema(), "
                "has_function_privilege('public', 'pg_control_system()', 'EXECUTE')"
            )
            database, schema, readable = cursor.fetchone()
            system = ""
            if readable:
                cursor.execute("SELECT system_identifier::text FROM pg_control_system()")
                system = cursor.fetchone()[0]
            return ("postgres", str(database), str(schema), system)
        if name == "mysql":
            cursor.execute("SELECT DATABASE()")
            return ("mysql", str(cursor.fetchone()[0]))
        return (name,)  # other providers: the dialect alone (the docs ask for a namespace= then)
    finally:
        try:
            con.rollback()
        finally:
            con.close()


def mapping_signature(db: Database) -> tuple[Any, ...]:
    """The tables, columns and attribute types of every entity of ``db``: part of a cache key, so a
    changed mapping (another version of the application) never reads entries written under the old one.
    Plain strings only (no reprs of objects), so it is the same in every process."""

    def type_name(attr: Any) -> str:
        # The qualified name without the module: one class imported under two module paths (``__main__``
        # in one process, ``app.models`` in another) is the same type.
        py_type = attr.py_type
        return str(getattr(py_type, "__qualname__", py_type))

    return tuple(
        sorted(
            (
                name,
                repr(e._table_),
                tuple(e._columns_),
                tuple((a.name, type_name(a), tuple(a.columns)) for a in e._attrs_),
            )
            for name, e in entities_of(db).items()
        )
    )


def table_entities(db: Database) -> dict[str, frozenset[Any]]:
    """Lower-cased unqualified table name -> entity classes whose rows a write to that table changes.

    A table shared by an inheritance hierarchy maps to every entity of it; a many-to-many link table
    maps to the entities on both sides.
    """
    found: dict[str, set[Any]] = defaultdict(set)
    for entity in entities_of(db).values():
        found[table_key(entity._table_)].add(entity)
        for attr in entity._attrs_:
            if attr.is_collection and attr.reverse is not None and attr.reverse.is_collection:
                found[table_key(attr.table)].update((entity, attr.py_type))
    return {k: frozenset(v) for k, v in found.items()}


def is_bound(db: Database) -> bool:
    """True once ``db.bind(...)`` has succeeded."""
    return db.provider is not None


def is_mapped(db: Database) -> bool:
    """True once ``db.generate_mapping(...)`` has run."""
    return db.schema is not None


def dialect(db: Database) -> str:
    """The backend family: ``'sqlite'``, ``'postgres'``, ``'mysql'``, ``'cockroach'`` or ``'oracle'``."""
    provider = db.provider
    name = db.provider_name
    if name in ("sqlite", "postgres", "mysql", "cockroach", "oracle"):
        return str(name)
    return {"SQLite": "sqlite", "PostgreSQL": "postgres", "MySQL": "mysql", "Oracle": "oracle"}[
        provider.dialect
    ]


def supports_insert_returning(db: Database) -> bool:
    """True if ``INSERT ... RETURNING`` works here: PostgreSQL, SQLite >= 3.35, MariaDB >= 10.5.

    MySQL has no RETURNING. Its versions went from 5.7 to 8 and 9, while MariaDB's started at 10, so a
    MySQL-family server reporting 10.5 or later is a MariaDB with RETURNING.
    """
    family = dialect(db)
    if family == "sqlite":
        return sqlite3.sqlite_version_info >= (3, 35)
    if family == "mysql":
        return tuple(db.provider.server_version) >= (10, 5)
    return family in ("postgres", "cockroach")


def max_params(db: Database) -> int:
    """How many bound parameters one statement may carry on this backend."""
    return int(db.provider.max_params_count)


def paramstyle(db: Database) -> str:
    """The DB-API paramstyle of the driver: ``qmark``, ``format``, ``pyformat`` or ``named``."""
    return str(db.provider.paramstyle)


def quote_name(db: Database, name: str | tuple[str, ...]) -> str:
    """Quote a table or column name (or a ``(schema, table)`` pair) the way Pony does."""
    return str(db.provider.quote_name(name))


_WRAPPED = "_ponykit_wrapped_"


def wrap_provider_method(
    db: Database, name: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Replace ``db.provider.<name>`` on this provider instance with ``make_wrapper(original)``.

    The class attribute is untouched, so other Databases (even of the same dialect) are unaffected.
    Wrapping the same method twice raises, so a second ``attach`` can never stack hooks.
    """
    provider = db.provider
    if name in vars(provider) and getattr(vars(provider)[name], _WRAPPED, False):
        raise RuntimeError(f"provider.{name} of {db!r} is already wrapped by ponykit")
    original = getattr(provider, name)
    wrapper = functools.wraps(original)(make_wrapper(original))
    setattr(wrapper, _WRAPPED, True)
    setattr(provider, name, wrapper)


_SCHEMA_METHODS = ("table_exists", "index_exists", "fk_exists")


def look_in_current_schema(db: Database) -> None:
    """PostgreSQL: make this provider instance look for unqualified tables in ``current_schema()``.

    Pony's ``table_exists``, ``index_exists`` and ``fk_exists`` look for an unqualified name in schema
    ``public`` (``default_schema_name``), while ``CREATE TABLE`` and every query use the connection's
    ``search_path``. With ``?options=-c search_path=tenant1`` and a table of the same name in ``public``,
    ``generate_mapping(create_tables=True)`` took the public table for the tenant's, skipped creating
    it, and failed. The wrapped methods ask the connection for its ``current_schema()`` (the schema
    ``CREATE TABLE`` uses) and look there; schema-qualified names (``_table_ = ("s", "t")``) are unchanged.
    Other dialects are left alone.
    """
    if dialect(db) not in ("postgres", "cockroach"):
        return
    for name in _SCHEMA_METHODS:
        if not is_provider_method_wrapped(db, name):
            wrap_provider_method(db, name, _in_current_schema)


def _in_current_schema(original: Callable[..., Any]) -> Callable[..., Any]:
    def method(connection: Any, table_name: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(table_name, str):
            cursor = connection.cursor()
            cursor.execute("SELECT current_schema()")
            row = cursor.fetchone()
            if row and row[0]:  # None when no schema of the search_path exists: Pony's own lookup
                table_name = (row[0], table_name)
        return original(connection, table_name, *args, **kwargs)

    return method


def is_provider_method_wrapped(db: Database, name: str) -> bool:
    """True if ``db.provider.<name>`` carries a ponykit wrapper."""
    return bool(getattr(vars(db.provider).get(name), _WRAPPED, False))


def install_converters(db: Database, pairs: list[tuple[type, type]]) -> None:
    """Put ``(py_type, ConverterClass)`` pairs in front of this provider instance's converter list.

    Pony picks the first entry whose type ``issubclass`` matches, so ponykit's entries win over the
    dialect's own (a ``str``-based Enum would otherwise map to plain ``StrConverter``). The class-level
    list is left alone: other Databases never see these converters.
    """
    provider = db.provider
    current = list(provider.converter_classes)
    new_types = {t for t, _ in pairs}
    kept = [(t, c) for t, c in current if t not in new_types]
    provider.converter_classes = list(pairs) + kept


def converter_class_for(db: Database, py_type: type) -> type:
    """The converter class this Database's provider would use for ``py_type``."""
    return db.provider._get_converter_type_by_py_type(py_type)  # type: ignore[no-any-return]


def converter_base() -> type:
    """Pony's base ``Converter`` class, for ponykit types to subclass."""
    from pony.orm.dbapiprovider import Converter

    return Converter  # type: ignore[no-any-return]


def server_version(db: Database) -> tuple[int, ...]:
    """The database server version Pony detected at the first connection (e.g. ``(10, 11, 19)``)."""
    version = getattr(db.provider, "server_version", None)
    if isinstance(version, int):  # psycopg2 reports 150019 for 15.19 (and 90605 for 9.6.5)
        return (version // 10000, version // 100 % 100, version % 100)
    return tuple(version) if version else ()


def dialect_converter_class(db: Database, py_type: type) -> type:
    """The converter class plain Pony gives ``py_type`` on this dialect (ponykit's entries ignored)."""
    for key, cls in type(db.provider).converter_classes:
        if issubclass(py_type, key):
            return cls  # type: ignore[no-any-return]
    raise TypeError(f"the {db.provider.dialect} provider has no converter for {py_type.__name__}")


def register_type_normalization(py_type: type, storage: type) -> None:
    """Tell Pony's query translator to treat ``py_type`` like ``storage`` (process-wide, see types docs).

    ``pony.orm.ormtypes.type_normalization_dict`` is global. It only maps a type to the primitive type it
    is stored as; ponykit adds only types that are mapped through ponykit converters (Enum classes used
    as attribute types, ponykit's own value types, registered user types), and the per-Database parameter
    converters turn such values into their storage form before binding.
    """
    from pony.orm import ormtypes

    ormtypes.type_normalization_dict[py_type] = storage


def positional_placeholder(db: Database) -> str:
    """The positional parameter marker of the driver (``?`` or ``%s``), for ``executemany`` statements."""
    return "?" if db.provider.paramstyle == "qmark" else "%s"
