"""Helpers of tests/migrate: a driver connection to a test backend, a model created by Pony, the oracle."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from pony.orm import Database

import ponykit
from ponykit._pony import PhysicalSchema, map_offline, physical_schema
from ponykit.migrate._introspect import introspect

__all__ = ["connect", "create_and_introspect", "expected_schema", "live_schema"]


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


def live_schema(url: str, dialect: str) -> PhysicalSchema:
    """Introspect the database at ``url`` on a fresh connection (closed afterwards)."""
    connection = connect(url)
    try:
        return introspect(connection, dialect)
    finally:
        connection.close()


def expected_schema(declare: Callable[[Database, str], Any], dialect: str) -> PhysicalSchema:
    """The physical schema of the model ``declare(db, dialect)`` declares, mapped offline."""
    db = Database()
    declare(db, dialect)
    map_offline(db, dialect)
    return physical_schema(db)


def create_and_introspect(declare: Callable[[Database, str], Any], url: str, dialect: str) -> PhysicalSchema:
    """Let Pony create the model's tables at ``url`` (``create_tables=True``), then introspect them."""
    db = Database()
    declare(db, dialect)
    ponykit.bind_url(db, url)
    db.generate_mapping(create_tables=True)
    db.disconnect()
    ponykit.kit.forget(db)
    return live_schema(url, dialect)
