"""Schema-per-tenant on PostgreSQL: Pony's table/index/foreign-key lookups in the current schema.

Pony's ``table_exists`` looks for unqualified names in ``public``. With a ``search_path`` in the URL
(docs/setup.md) and a table of the same name in ``public``, ``generate_mapping(create_tables=True)``
skipped creating the tenant's table and failed (issue #12 item 21). The fixture family already gives
each PostgreSQL test its own schema through ``?options=-c search_path=...``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pony.orm import Database, Optional, Required, Set, db_session, select

import ponykit as pk
from ponykit import _pony


def declare(db: Database, table: str) -> tuple[Any, Any]:
    class Widget(db.Entity):  # type: ignore[name-defined,misc]
        _table_ = table
        name = Required(str, index=f"idx_{table}")
        parts = Set("Part")

    class Part(db.Entity):  # type: ignore[name-defined,misc]
        _table_ = table + "_part"
        widget = Optional(Widget)

    return Widget, Part


@pytest.fixture
def public_twin(backend_name: str, _admin: Any) -> Any:
    """A table name that also exists in schema ``public`` (with another shape), dropped afterwards."""
    table = "pk_widget_" + uuid.uuid4().hex[:8]
    _admin.execute(backend_name, f'CREATE TABLE public."{table}" (id serial primary key, other text)')
    _admin.execute(backend_name, f'CREATE TABLE public."{table}_part" (id serial primary key)')
    _admin.execute(backend_name, f'CREATE INDEX "idx_{table}" ON public."{table}" (other)')
    yield table
    _admin.execute(backend_name, f'DROP TABLE IF EXISTS public."{table}", public."{table}_part"')


@pytest.mark.backends("postgres")
def test_create_tables_in_search_path_schema(make_db: Any, public_twin: str) -> None:
    """Attached, the tenant's tables, index and foreign key are created in the search_path schema and
    used, although ``public`` holds tables of the same names; a second mapping finds them all."""
    db = make_db()
    widget, part = declare(db, public_twin)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        w = widget(name="tenant")
        part(widget=w)
    with db_session:
        schema = db.select("SELECT current_schema()")[0]
        assert schema != "public"
        assert select(x.name for x in widget)[:] == ["tenant"]
        tables = db.select(
            "SELECT schemaname FROM pg_catalog.pg_tables WHERE tablename = $public_twin ORDER BY schemaname"
        )
        assert sorted(tables) == sorted(["public", schema])
    db.disconnect()
    again = make_db()
    widget2, _part2 = declare(again, public_twin)
    pk.attach(again)
    again.generate_mapping(create_tables=True)  # everything exists: nothing is created twice
    with db_session:
        assert select(x.name for x in widget2)[:] == ["tenant"]


@pytest.mark.backends("postgres")
def test_plain_pony_looks_in_public(db: Database, public_twin: str) -> None:
    """The Pony behaviour ponykit works around: without attach() the same mapping fails."""
    declare(db, public_twin)
    with pytest.raises(Exception, match="does not exist"):
        db.generate_mapping(create_tables=True)


@pytest.mark.backends("postgres")
def test_look_in_current_schema_is_per_instance(make_db: Any, public_twin: str) -> None:
    """Only the provider instance it was called on looks in current_schema(); qualified names unchanged."""
    db, other = make_db(), make_db()
    _pony.look_in_current_schema(db)
    _pony.look_in_current_schema(db)  # idempotent
    assert _pony.is_provider_method_wrapped(db, "table_exists")
    assert not _pony.is_provider_method_wrapped(other, "table_exists")
    with db_session:
        connection = _pony.raw_connection(db)
        assert db.provider.table_exists(connection, public_twin) is None
        assert db.provider.table_exists(connection, ("public", public_twin)) == public_twin
        assert other.provider.table_exists(_pony.raw_connection(other), public_twin) == public_twin


def test_look_in_current_schema_leaves_other_dialects(db: Database, backend_name: str) -> None:
    """SQLite and MariaDB have no such lookup problem: their providers are not wrapped."""
    _pony.look_in_current_schema(db)
    wrapped = _pony.is_provider_method_wrapped(db, "table_exists")
    assert wrapped == (backend_name == "postgres")
