"""The door functions the audit trail uses (ponykit._pony.audit), checked against Pony itself."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pony.orm import Database, Discriminator, Optional, PrimaryKey, Required, Set, db_session, flush

import ponykit as pk
from ponykit import _pony


def declare(db: Database) -> tuple[Any, Any]:
    class Team(db.Entity):
        code = PrimaryKey(str, 10)
        members = Set("Member")

    class Member(db.Entity):
        kind = Discriminator(str)
        name = Required(str)
        price = Optional(Decimal, 10, 2)
        team = Optional(Team)
        bio = Optional(str, lazy=True, nullable=True)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Team, Member


def test_audited_attributes_are_the_own_columns_without_key_and_discriminator(db: Database) -> None:
    _, Member = declare(db)
    assert [a.name for a in _pony.audited_attributes(Member)] == ["name", "price", "team", "bio"]


def test_stored_and_current_values(db: Database) -> None:
    Team, Member = declare(db)
    with db_session:
        team = Team(code="t1")
        m = Member(name="a", price=Decimal("1.50"), team=team, bio="long")
        flush()
        attrs = _pony.audited_attributes(Member)
        assert _pony.current_values(m, attrs) == {
            "name": "a",
            "price": Decimal("1.50"),
            "team": ("t1",),  # a reference: the related row's flat key
            "bio": "long",
        }
    with db_session:
        m = Member[m.id]
        m.name = "b"
        stored = _pony.stored_values(m, attrs)
        assert stored["name"] == "a"  # as last read: not the unflushed assignment
        assert "bio" not in stored  # lazy and never loaded: left out
        assert _pony.current_values(m, attrs)["name"] == "b"


def test_column_decoder_gives_pony_values_from_raw_columns(db: Database) -> None:
    Team, Member = declare(db)
    with db_session:
        Member(name="a", price=Decimal("2.50"), team=Team(code="t2"))
    price = _pony.entity_attribute(Member, "price")
    team = _pony.entity_attribute(Member, "team")
    with db_session:
        raw = db.select("SELECT price, team FROM member")[0]
    assert _pony.column_decoder(price)(raw[0]) == Decimal("2.50")
    assert _pony.column_decoder(team, 0)(raw[1]) == "t2"
    assert _pony.column_decoder(price)(None) is None
