"""Helpers of tests/migrate: driver connections, models created by Pony, and the oracle's models and data.

A model is a dict in the snapshot's shape (``{"entities": {name: {"bases", "table", "discriminator",
"primary_key", "attrs", "composite_keys", "composite_indexes"}}}``, see the migrate spec) without the implicit
``id`` attribute: :func:`source` renders it as Python declaring Pony entities and :func:`declare` runs that
source into a fresh ``Database``. :func:`fill` inserts rows through Pony and returns the expected data;
:func:`data_check` reads them back from a migrated database; :func:`fresh_schema` is the oracle's reference:
the introspected schema of a database Pony itself created from a model.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import sqlite3
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from pony.orm import Database, db_session

import ponykit
import ponykit.kit
from ponykit._pony import PhysicalSchema, map_offline, physical_schema
from ponykit.migrate._introspect import introspect

__all__ = [
    "EMPTY",
    "Data",
    "Model",
    "connect",
    "create_and_introspect",
    "data_check",
    "declare",
    "entity_order",
    "expected_schema",
    "fill",
    "fresh_schema",
    "live_schema",
    "scratch",
    "source",
    "truncate_all",
    "value_for",
]

Model = dict[str, Any]
# Expected rows: concrete entity name -> id -> {attr: value}; a to-one is the target's id, a Set the ids.
Data = dict[str, dict[int, dict[str, Any]]]
EMPTY = object()  # an attribute added without a backfill: None or Pony's empty value ('', {}, []) in old rows


def connect(url: str) -> Any:
    """A driver connection (sqlite3, psycopg2, pymysql) to the database a test backend's ``url`` names."""
    provider, kwargs = ponykit.parse_url(url)
    if provider == "sqlite":
        return sqlite3.connect(kwargs["filename"])
    if provider == "postgres":
        import psycopg2

        return psycopg2.connect(**kwargs)
    import pymysql

    kwargs["database"] = kwargs.pop("db")
    return pymysql.connect(**kwargs)


_scratch_numbers = itertools.count()


@contextlib.contextmanager
def scratch(backend: Any) -> Iterator[str]:
    """A URL of a new empty database beside ``backend``'s (a schema on PostgreSQL, a database on MariaDB, a
    file on SQLite), dropped afterwards: one per hypothesis example, since the fixture is per test."""
    number = next(_scratch_numbers)
    provider, kwargs = ponykit.parse_url(backend.url)
    if provider == "sqlite":
        path = kwargs["filename"]
        yield backend.url.replace(path, f"{path[:-3]}_{number}.db")
        return
    if provider == "postgres":
        base = kwargs["options"].split("search_path=")[1]
        name = f"{base}_{number}"
        url = backend.url.replace(f"search_path%3D{base}", f"search_path%3D{name}")
        create, drop = f'CREATE SCHEMA "{name}"', f'DROP SCHEMA IF EXISTS "{name}" CASCADE'
    else:
        base = kwargs["db"]
        name = f"{base}_{number}"
        url = backend.url.replace(f"/{base}", f"/{name}")
        create = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        drop = f"DROP DATABASE IF EXISTS `{name}`"
    admin = connect(backend.url)
    try:
        _run(admin, provider, create)
        yield url
    finally:
        _run(admin, provider, drop)
        admin.close()


def truncate_all(url: str, dialect: str) -> None:
    """Delete every row of every table but the version table (foreign keys not checked meanwhile)."""
    connection = connect(url)
    try:
        tables = list(introspect(connection, dialect).tables)
        cursor = connection.cursor()
        if dialect == "postgres" and tables:
            cursor.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
        elif dialect == "mysql":
            cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
            for table in tables:
                cursor.execute(f"DELETE FROM `{table}`")
            cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
        else:
            for table in tables:  # sqlite3 connections do not enforce foreign keys unless told to
                cursor.execute(f'DELETE FROM "{table}"')
        connection.commit()
    finally:
        connection.close()


def _run(connection: Any, provider: str, sql: str) -> None:
    cursor = connection.cursor()
    cursor.execute(sql)
    connection.commit()
    cursor.close()


def live_schema(url: str, dialect: str) -> PhysicalSchema:
    """Introspect the database at ``url`` on a fresh connection (closed afterwards)."""
    connection = connect(url)
    try:
        return introspect(connection, dialect)
    finally:
        connection.close()


def expected_schema(declare_fn: Callable[[Database, str], Any], dialect: str) -> PhysicalSchema:
    """The physical schema of the model ``declare_fn(db, dialect)`` declares, mapped offline."""
    db = Database()
    declare_fn(db, dialect)
    map_offline(db, dialect)
    return physical_schema(db)


def _forget(db: Database) -> None:
    db.disconnect()
    ponykit.kit.forget(db)


def create_and_introspect(
    declare_fn: Callable[[Database, str], Any], url: str, dialect: str
) -> PhysicalSchema:
    """Let Pony create the model's tables at ``url`` (``create_tables=True``), then introspect them."""
    db = Database()
    declare_fn(db, dialect)
    ponykit.bind_url(db, url)
    db.generate_mapping(create_tables=True)
    _forget(db)
    return live_schema(url, dialect)


# ---------------------------------------------------------------------------------------------------------
# Models as Python source

_IMPORTS = (
    "from datetime import date, datetime, time, timedelta\n"
    "from decimal import Decimal\n"
    "from uuid import UUID\n"
    "from pony.orm import (Discriminator, FloatArray, IntArray, Json, LongStr, Optional, PrimaryKey,\n"
    "    Required, Set, StrArray, composite_index, composite_key)\n"
)


def entity_order(model: Model) -> list[str]:
    """Entity names with every base before its subclasses (declaration order otherwise)."""
    entities = model["entities"]
    done: list[str] = []
    while len(done) < len(entities):
        for name, entity in entities.items():
            if name not in done and all(base in done for base in entity["bases"]):
                done.append(name)
    return done


def _attr_source(attr: dict[str, Any]) -> str:
    kind, kind_type = attr["kind"], attr["type"]
    first = repr(kind_type[len("entity:") :]) if kind_type.startswith("entity:") else kind_type
    parts = [first, *(repr(a) for a in attr["args"])]
    parts += [f"{key}={value!r}" for key, value in sorted(attr["options"].items())]
    return f"    {attr['name']} = {kind}({', '.join(parts)})"


def source(model: Model) -> str:
    """Python source declaring the model's entities on a ``db`` in scope."""
    lines = [_IMPORTS]
    for name in entity_order(model):
        entity = model["entities"][name]
        lines.append(f"class {name}({entity['bases'][0] if entity['bases'] else 'db.Entity'}):")
        if entity["table"]:
            lines.append(f"    _table_ = {entity['table']!r}")
        if entity["discriminator"]:
            lines.append(f"    _discriminator_ = {entity['discriminator']!r}")
        lines.extend(_attr_source(attr) for attr in entity["attrs"])
        lines.extend(f"    composite_key({', '.join(key)})" for key in entity["composite_keys"])
        lines.extend(f"    composite_index({', '.join(index)})" for index in entity["composite_indexes"])
        lines.append("    pass\n")
    return "\n".join(lines)


def declare(model: Model) -> Database:
    """A new Database with the model's entities declared (not bound, not mapped)."""
    db = Database()
    exec(compile(source(model), "<oracle model>", "exec"), {"db": db})  # the oracle's own drawn models only
    return db


def fresh_schema(model: Model, backend: Any, url: str | None = None) -> PhysicalSchema:
    """The oracle's reference: introspect a database Pony created from ``model`` (``url``: an empty database
    of ``backend``'s kind; by default ``backend.url`` itself, which must be empty)."""
    db = declare(model)
    ponykit.bind_url(db, url or backend.url)
    db.generate_mapping(create_tables=True)
    _forget(db)
    return live_schema(url or backend.url, backend.name)


# ---------------------------------------------------------------------------------------------------------
# Rows


def value_for(attr: dict[str, Any], i: int, salt: int) -> Any:
    """A value of ``attr``'s type, distinct for every row number ``i`` (so UNIQUE can be added later)."""
    kind_type, options = attr["type"], attr["options"]
    if kind_type == "str":
        return f"s{salt}_{i}"
    if kind_type == "LongStr":
        return f"long text {salt} {i} " * 3
    if kind_type == "int":
        return (salt + 3 * i) % 120 + (0 if options.get("unsigned") else -5)
    if kind_type == "float":
        return i + salt / 4
    if kind_type == "Decimal":
        return Decimal(i % 90) + Decimal(salt % 10) / 10
    if kind_type == "bool":
        return (i + salt) % 2 == 0
    if kind_type == "date":
        return date(2020, 1, 1) + timedelta(days=i + salt)
    if kind_type == "datetime":
        return datetime(2021, 3, 4, 5, 6, 7) + timedelta(hours=i, minutes=salt)
    if kind_type == "time":
        return time(10, i % 60, salt % 60)
    if kind_type == "timedelta":
        return timedelta(seconds=60 * i + salt)
    if kind_type == "UUID":
        return UUID(int=salt * 1000 + i + 1)
    if kind_type == "bytes":
        return bytes([i % 256, salt % 256])
    if kind_type == "Json":
        return {"i": i, "salt": salt}
    if kind_type == "IntArray":
        return [i, salt]
    if kind_type == "StrArray":
        return [f"a{i}", f"b{salt}"]
    if kind_type == "FloatArray":
        return [i + 0.5]
    raise AssertionError(f"no value for type {kind_type}")


def _root(model: Model, name: str) -> str:
    while model["entities"][name]["bases"]:
        name = model["entities"][name]["bases"][0]
    return name


def _all_attrs(model: Model, name: str) -> list[dict[str, Any]]:
    entity = model["entities"][name]
    inherited = _all_attrs(model, entity["bases"][0]) if entity["bases"] else []
    return inherited + list(entity["attrs"])


def fill(db: Database, model: Model, counts: dict[str, int], salt: int) -> Data:
    """Insert ``counts[entity]`` rows of each concrete entity through Pony (``db`` bound and mapped) and
    return the expected data. Optional to-one relations point at the first row of the target when there is
    one; each many-to-many links the i-th rows of both sides."""
    data: Data = {}
    objects: dict[str, list[Any]] = {}
    row = 0  # numbered across all entities: values are distinct in a whole hierarchy's table too
    with db_session:
        for name in entity_order(model):
            cls = db.entities[name]
            objects[name] = []
            for _ in range(counts.get(name, 0)):
                i, row = row, row + 1
                values: dict[str, Any] = {}
                for attr in _all_attrs(model, name):
                    if attr["kind"] in ("Required", "Optional") and not attr["type"].startswith("entity:"):
                        values[attr["name"]] = value_for(attr, i, salt)
                    elif attr["kind"] in ("Required", "Optional"):
                        targets = objects.get(attr["type"][7:]) or []
                        if targets:
                            values[attr["name"]] = targets[0]
                        elif attr["kind"] == "Required":
                            raise AssertionError(f"{name}.{attr['name']}: no target rows to refer to")
                obj = cls(**values)
                objects[name].append(obj)
        for name in entity_order(model):
            for attr in _all_attrs(model, name):
                if attr["kind"] == "Set" and attr["type"][7:] in objects:
                    reverse = next(
                        a
                        for a in _all_attrs(model, attr["type"][7:])
                        if a["name"] == attr["options"]["reverse"]
                    )
                    if reverse["kind"] != "Set" or name > attr["type"][7:]:
                        continue  # one side of a many-to-many adds the links
                    for i, obj in enumerate(objects[name]):
                        targets = objects[attr["type"][7:]]
                        if i < len(targets):
                            getattr(obj, attr["name"]).add(targets[i])
        db.commit()
        for name, objs in objects.items():
            data[name] = {}
            for obj in objs:
                data[name][obj.id] = _read(obj, model, name)
    return data


def _read(obj: Any, model: Model, name: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attr in _all_attrs(model, name):
        value = getattr(obj, attr["name"])
        if attr["kind"] == "Set":
            values[attr["name"]] = frozenset(o.id for o in value)
        elif attr["type"].startswith("entity:"):
            values[attr["name"]] = None if value is None else value.id
        elif attr["kind"] in ("Required", "Optional"):
            values[attr["name"]] = copy.deepcopy(value)
    return values


def _same(expected: Any, actual: Any) -> bool:
    if expected is EMPTY:
        return actual in (None, "", {}, [])
    if isinstance(expected, time) and isinstance(actual, str):
        return expected.isoformat() == actual  # Pony 0.7.20 reads SQLite's TIME back as text
    if isinstance(expected, float) and isinstance(actual, float):
        return abs(expected - actual) < 1e-9
    return bool(expected == actual)


def data_check(url: str, model: Model, data: Data) -> list[str]:
    """What differs between the rows at ``url`` read through the ``model`` mapped by Pony and ``data``
    (every row by key under its concrete entity, each attribute's value, ``Root.select()`` returning every
    row of its hierarchy). [] when the data survived."""
    problems: list[str] = []
    db = declare(model)
    ponykit.bind_url(db, url)
    db.generate_mapping(create_tables=False, check_tables=True)
    try:
        with db_session:
            roots = {_root(model, name) for name in model["entities"]}
            for root in sorted(roots):
                want = {
                    i
                    for name in data
                    if name in model["entities"] and _root(model, name) == root
                    for i in data[name]
                }
                got = {obj.id for obj in db.entities[root].select()}
                if want != got:
                    problems.append(f"{root}.select(): ids {sorted(want)} expected, {sorted(got)} found")
            for name, rows in sorted(data.items()):
                if name not in model["entities"]:
                    problems.append(f"expected rows of {name}, which the model does not have")
                    continue
                for key in rows:
                    obj = db.entities[_root(model, name)].get(id=key)
                    if obj is not None and type(obj).__name__ != name:
                        problems.append(f"{name}[{key}]: read back as a {type(obj).__name__}")
        # Values through the concrete class, in a new session: Pony 0.7.20 on SQLite returns a subclass's
        # time attribute as text when the object was loaded through the root.
        with db_session:
            for name, rows in sorted(data.items()):
                if name not in model["entities"]:
                    continue
                for key, values in rows.items():
                    obj = db.entities[name].get(id=key)
                    if obj is None:
                        problems.append(f"{name}[{key}]: missing")
                        continue
                    actual = _read(obj, model, name)
                    for attr, value in values.items():
                        if attr not in actual:
                            problems.append(f"{name}[{key}].{attr}: the model has no such attribute")
                        elif not _same(value, actual[attr]):
                            problems.append(
                                f"{name}[{key}].{attr}: {value!r} expected, {actual[attr]!r} found"
                            )
    finally:
        _forget(db)
    return problems
