"""The snapshot (``ponykit.migrate._snapshot``): canonical JSON, hashes, validation, mapped or not."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Optional, Required, Set, composite_key

import ponykit
from conftest import Backend
from ponykit import _pony
from ponykit.errors import MigrationError
from ponykit.migrate._snapshot import (
    FORMAT,
    dumps,
    empty_snapshot,
    load_snapshot,
    snapshot,
    snapshot_hash,
)
from ponykit.types import AwareDatetime


def declare(db: Database, suffix: str = "") -> None:
    class Person(db.Entity):
        name = Required(str, 80, index=True)
        nick = Optional(str, 40)
        born = Optional(AwareDatetime)
        pets = Set("Pet")
        composite_key(name, nick)

    class Pet(db.Entity):
        owner = Required(Person)
        label = Optional(str, column="Pet_Label" + suffix)


def map_attached(db: Database, dialect: str) -> None:
    """Map ``db`` offline as an application does: bound, attached (ponykit's types), then mapped."""
    _pony.offline_bind(db, dialect)
    ponykit.attach(db)
    db.generate_mapping(create_tables=False, check_tables=False)


def test_the_empty_snapshot() -> None:
    assert empty_snapshot() == {"format": FORMAT, "entities": {}}
    assert FORMAT == 1
    assert load_snapshot(dumps(empty_snapshot())) == empty_snapshot()


def test_dumps_is_canonical_and_deterministic() -> None:
    first, second = Database(), Database()
    declare(first)
    declare(second)
    map_attached(second, "sqlite")
    text = dumps(snapshot(first))
    assert text == dumps(snapshot(second))  # unmapped and mapped, two Databases: the same bytes
    assert text.endswith("}\n") and "\n  " in text
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert load_snapshot(text) == snapshot(first)


def test_the_hash_is_of_the_compact_canonical_json() -> None:
    db = Database()
    declare(db)
    snap = snapshot(db)
    compact = json.dumps(snap, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    import hashlib

    assert snapshot_hash(snap) == "sha256:" + hashlib.sha256(compact.encode()).hexdigest()
    other = Database()
    declare(other, suffix="2")
    assert snapshot_hash(snapshot(other)) != snapshot_hash(snap)


@given(st.dictionaries(st.text(), st.one_of(st.integers(), st.text(), st.booleans(), st.none()), max_size=5))
def test_key_order_never_changes_the_text_or_the_hash(options: dict[str, Any]) -> None:
    attr = {"name": "x", "kind": "Optional", "type": "int", "args": [], "options": options}
    entity = {
        "bases": [],
        "table": None,
        "discriminator": None,
        "primary_key": ["id"],
        "attrs": [attr],
        "composite_keys": [],
        "composite_indexes": [],
    }
    snap = {"format": 1, "entities": {"E": entity}}
    reordered = {"entities": {"E": dict(reversed(entity.items()))}, "format": 1}
    reordered["entities"]["E"]["attrs"] = [{**attr, "options": dict(reversed(options.items()))}]
    assert dumps(snap) == dumps(reordered)
    assert snapshot_hash(snap) == snapshot_hash(reordered)
    assert load_snapshot(dumps(snap)) == snap


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "a JSON object"),
        ('{"format": 2, "entities": {}}', "'format'"),
        ('{"format": 1}', "'entities'"),
        ('{"format": 1, "entities": {"A": {"bases": []}}}', "entity 'A'"),
    ],
)
def test_load_snapshot_refuses_what_is_not_a_snapshot(text: str, message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        load_snapshot(text)


def test_an_unmapped_database_is_left_unmapped() -> None:
    db = Database()
    declare(db)
    snapshot(db)
    assert not _pony.is_mapped(db) and not _pony.is_bound(db)


@pytest.mark.parametrize("dialect", _pony.DIALECTS)
def test_a_bound_unmapped_database_snapshots_as_it_will_map(dialect: str) -> None:
    bound, mapped = Database(), Database()
    declare(bound)
    declare(mapped)
    _pony.offline_bind(bound, dialect)
    map_attached(mapped, dialect)
    assert snapshot(bound) == snapshot(mapped)
    assert not _pony.is_mapped(bound)


def test_ponykit_own_tables_are_part_of_the_snapshot() -> None:
    db = Database()
    declare(db)
    _pony.offline_bind(db, "postgres")
    ponykit.attach(db, outbox=True, inbox=True)
    snap = snapshot(db)
    tables = {spec["table"] for spec in snap["entities"].values()}
    assert {"ponykit_outbox", "ponykit_inbox"} <= tables


def test_a_database_mapped_on_its_server_snapshots_as_offline(backend: Backend) -> None:
    live = Database()
    declare(live)
    ponykit.bind_url(live, backend.url)
    ponykit.attach(live, outbox=True)
    live.generate_mapping(create_tables=True)
    offline = Database()
    declare(offline)
    _pony.offline_bind(offline, backend.name)
    ponykit.attach(offline, outbox=True)
    offline.generate_mapping(create_tables=False, check_tables=False)
    try:
        assert dumps(snapshot(live)) == dumps(snapshot(offline))
    finally:
        live.disconnect()
