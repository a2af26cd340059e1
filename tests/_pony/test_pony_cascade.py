"""The delete-rule door (``_pony.cascade``): Pony's ``obj.delete()`` rules read from the mapping."""

from __future__ import annotations

from pony.orm import Database, Optional, PrimaryKey, Required, Set, db_session

from ponykit import _pony


def _model() -> Database:
    db = Database()
    db.bind("sqlite", ":memory:")

    class Owner(db.Entity):
        id = PrimaryKey(int)
        items = Set("Item")  # Required reverse: cascade by default
        notes = Set("Note")  # Optional reverse: set NULL
        locks = Set("Lock", cascade_delete=False)  # Required reverse: refused
        tags = Set("Tag")  # many-to-many: no rule (link rows)
        card = Optional("Card")  # one-to-one, Required reverse, no cascade: refused
        seat = Optional("Seat")  # one-to-one, both Optional: the column is here, nothing to do

    class Special(Owner):
        extras = Set("Extra")

    class Item(db.Entity):
        owner = Required(Owner)

    class Note(db.Entity):
        owner = Optional(Owner)

    class Lock(db.Entity):
        owner = Required(Owner)

    class Tag(db.Entity):
        owners = Set(Owner)

    class Card(db.Entity):
        owner = Required(Owner)

    class Seat(db.Entity):
        owner = Optional(Owner)

    class Extra(db.Entity):
        special = Required(Special)
        marks = Set("Mark")

    class Mark(db.Entity):
        extras = Set(Extra)
        twins = Set("Mark", reverse="twins")  # symmetric: pairs stored both ways

    db.generate_mapping(create_tables=True)
    return db


def test_delete_rules_follow_ponys_rules() -> None:
    db = _model()
    rules = {r.attr: r for r in _pony.delete_rules(db.Owner)}
    assert {a: r.action for a, r in rules.items()} == {
        "Owner.items": "cascade",
        "Owner.notes": "set_null",
        "Owner.locks": "restrict",
        "Owner.card": "restrict",
        "Special.extras": "cascade",  # a subclass's relations count for the hierarchy
    }
    assert rules["Owner.items"].fk_columns == ("owner",) and rules["Owner.items"].target is db.Item
    assert rules["Owner.locks"].relation == "Owner.locks -> Lock.owner"
    assert rules["Owner.card"].reverse_name == "owner" and rules["Owner.card"].own_columns == ()
    assert _pony.delete_rules(db.Special) == _pony.delete_rules(db.Owner)  # one hierarchy, one table
    assert _pony.delete_rules(db.Mark) == ()


def test_link_tables_of_a_hierarchy_and_loaded_target() -> None:
    db = _model()
    assert [link.attr for link in _pony.link_tables_of(db.Owner)] == ["tags"]
    assert [link.attr for link in _pony.link_tables_of(db.Extra)] == ["marks"]
    twins = [link for link in _pony.link_tables_of(db.Mark) if link.attr == "twins"]
    assert sorted(link.columns for link in twins) == [("mark",), ("mark_2",)]
    with db_session:
        owner = db.Owner(id=1)
        item = db.Item(owner=owner)
        note = db.Note()
        assert _pony.loaded_target(item, "owner") is owner
        assert _pony.loaded_target(note, "owner") is None
        assert _pony.loaded_target(note, "nothing") is None
