"""The serialization section of ponykit._pony: the Pony internals the serializer relies on."""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import Database, Json, LongStr, Optional, PrimaryKey, Required, Set, db_session, select

import ponykit as pk
from ponykit import _pony


def _models(db: Database) -> Any:
    class Org(db.Entity):  # type: ignore[name-defined]
        code = Required(str)
        num = Required(int)
        PrimaryKey(code, num)
        members = Set("Member")

    class Member(db.Entity):  # type: ignore[name-defined]
        org = Required(Org)
        name = Required(str)
        bio = Optional(LongStr)
        data = Optional(Json)

    class Sub(Member):  # type: ignore[name-defined]
        pass

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Org, Member, Sub


def test_metadata_helpers(db: Database) -> None:
    """Attribute listing, pk leaves (flattened through relations), subclasses and discriminator codes."""
    org, member, sub = _models(db)
    assert [a.name for a in _pony.entity_attributes(member)] == [
        "id",
        "org",
        "name",
        "bio",
        "data",
        "classtype",
    ]
    assert [a.name for a in _pony.entity_pk_attributes(org)] == ["code", "num"]
    assert [a.name for a in _pony.raw_pk_leaf_attributes(org)] == ["code", "num"]
    assert _pony.has_subclasses(member)
    assert not _pony.has_subclasses(org)
    assert _pony.discriminator_value(sub) == "Sub"
    assert _pony.discriminator_value(org) is None


def test_query_rows_and_lookup(db: Database) -> None:
    """query_entity_rows runs Pony's own SELECT (lazy columns on request) and builds no objects."""
    org, member, _sub = _models(db)
    with db_session:
        o = org(code="a", num=1)
        member(org=o, name="m", bio="long", data={"k": 1})
    with db_session:
        query, entity, limit, offset = _pony.query_parts(select(m for m in member).limit(5))
        assert entity is member
        assert (limit, offset) == (5, None)
        rows, offsets = _pony.query_entity_rows(query, (member.bio,), limit, offset)
        assert rows[0][offsets[member.name][0]] == "m"
        assert rows[0][offsets[member.bio][0]] == "long"
        assert len(offsets[member.org]) == 2
        assert not any(isinstance(x, member) for x in _pony.require_session_cache(db).objects)
        assert _pony.query_parts([1, 2]) == (None, None, None, None)
        assert _pony.query_parts(select(m.name for m in member))[1] is None
        found = _pony.find_by_raw_pk(org, ("a", 1))
        assert found is not None
        assert _pony.raw_primary_key(found) == ("a", 1)
        assert _pony.find_by_raw_pk(org, ("zz", 9)) is None


def test_values_and_validation(db: Database) -> None:
    """loaded_values, untracked Json copies, Pony's validate, flush and repr helpers."""
    org, member, _sub = _models(db)
    with db_session:
        o = org(code="a", num=1)
        m = member(org=o, name="m", data={"k": [1]})
        _pony.flush_if_dirty(m)
        assert m.id is not None
        values = _pony.loaded_values(m)
        assert values is not None
        assert values[member.name] == "m"
        plain = _pony.untracked(m.data)
        assert type(plain) is dict
        assert plain == {"k": [1]}
        assert _pony.validate_attribute(member.name, "x") == "x"
        assert _pony.is_entity_instance(m)
        assert _pony.pony_repr(m) == f"Member[{m.id}]"
        m.delete()
        assert _pony.loaded_values(m) is None


@pytest.mark.backends("sqlite")
def test_sqlite_invalid_utf8_falls_back_to_ponys_decoder(db: Database) -> None:
    """Text that is not valid UTF-8 is read as Pony reads it (replacement characters), on both paths."""
    org, member, _sub = _models(db)
    with db_session:
        member(org=org(code="a", num=1), name="ok")
    with db_session:
        db.execute("UPDATE Member SET name = CAST(x'ff41' AS TEXT)")
    with db_session:
        query = select(m for m in member)
        rows, offsets = _pony.query_entity_rows(query, (), None, None)
        assert rows[0][offsets[member.name][0]] == "\ufffdA"
        assert query.first().name == "\ufffdA"


def test_read_tracking_helpers(db: Database, backend: Any) -> None:
    """read_bits/mark_read and the generated read block: values, deleted objects, and the bits Pony arms."""
    org, member, _sub = _models(db)
    with db_session:
        member(org=org(code="a", num=1), name="m", data={"k": 1})
    assert _pony.read_bits(org, [org.code, org.num, org.members]) == 0  # key columns and a collection
    assert _pony.read_bits(member, [member.name]) != 0
    # Pony's optimistic check of a Json column fails on MariaDB: never armed on the MySQL provider
    assert (_pony.read_bits(member, [member.data]) == 0) == (backend.name == "mysql")
    read, mark, names = _pony.output_values_source("obj", "vals", "bits")
    source = "\n".join(["def run(obj, bits):", *("    " + line for line in read + mark), "    return vals"])
    exec(source, names)
    with db_session:
        obj = member.select().first()
        values = names["run"](obj, _pony.read_bits(member, [member.name, member.data]))
        assert values is _pony.loaded_values(obj)
        _pony.mark_read(obj, _pony.read_bits(member, [member.name]))
        obj.delete()
        assert names["run"](obj, 0) is None


def test_decimal_limits(db: Database) -> None:
    """decimal_limits reads precision and scale of Pony's Decimal converter (defaults 12, 2)."""
    from decimal import Decimal

    class Money(db.Entity):  # type: ignore[name-defined]
        amount = Required(Decimal, 10, 3)
        plain = Optional(Decimal)
        label = Optional(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    assert _pony.decimal_limits(Money.amount) == (10, 3)
    assert _pony.decimal_limits(Money.plain) == (12, 2)
    assert _pony.decimal_limits(Money.label) is None


def test_session_objects(db: Database) -> None:
    """session_objects lists new objects (no key yet, in no index) and loaded ones, not deleted ones."""
    org, member, _sub = _models(db)
    assert _pony.session_objects(db) == []
    with db_session:
        o = org(code="a", num=1)
        m = member(org=o, name="m")
        assert set(_pony.session_objects(db)) == {o, m}
        m.delete()
        assert _pony.session_objects(db) == [o]
        assert ValueError in _pony.input_errors()
        with pytest.raises(_pony.input_errors()):
            org(code="a", num=1)  # the key is in the identity map already
