"""Regressions of issue 4 on every backend: single-table inheritance in bulk_delete/bulk_update, row
indexes and id order when one batch mixes rows with and without an explicit id or an SQL default."""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import Database, ObjectNotFound, Optional, Required, Set, commit, db_session, select

import ponykit as pk


class Zoo:
    """A single-table hierarchy (Animal > Dog, Animal > Cat) with a many-to-many on the root."""

    def __init__(self, db: Database) -> None:
        class Animal(db.Entity):
            name = Required(str)
            toys = Set("Toy")

        class Dog(Animal):
            barks = Optional(bool)

        class Puppy(Dog):
            pass

        class Cat(Animal):
            pass

        class Toy(db.Entity):
            label = Required(str)
            owners = Set(Animal)

        pk.attach(db)
        db.generate_mapping(create_tables=True)
        self.Animal, self.Dog, self.Puppy, self.Cat, self.Toy = Animal, Dog, Puppy, Cat, Toy

    def fill(self) -> dict[str, int]:
        """One row of each class, each with a toy; the ids by class name."""
        with db_session:
            ball = self.Toy(label="ball")
            objs = {
                "Animal": self.Animal(name="generic", toys=[ball]),
                "Dog": self.Dog(name="rex", toys=[ball]),
                "Puppy": self.Puppy(name="bit", toys=[ball]),
                "Cat": self.Cat(name="tom", toys=[ball]),
            }
            commit()
            return {k: o.id for k, o in objs.items()}


@pytest.fixture
def zoo(db: Database) -> Zoo:
    return Zoo(db)


def test_delete_of_a_subclass_leaves_rows_of_other_classes(zoo: Zoo) -> None:
    """bulk_delete(Dog, keys) deletes Dog rows (and subclasses) only, as Pony's Dog[key] finds only those:
    a key of the parent's or a sibling's row deletes nothing, and its link rows stay."""
    ids = zoo.fill()
    with db_session:
        # Pony's own view of these keys through Dog
        assert [zoo.Dog.get(id=i) is not None for i in ids.values()] == [False, True, True, False]
        generic = zoo.Animal[ids["Animal"]]
        assert generic.name == "generic"  # loaded before the call
        assert pk.bulk_delete(zoo.Dog, list(ids.values())) == 2
        assert generic.name == "generic"
        assert len(generic.toys) == 1
        assert zoo.Cat[ids["Cat"]].name == "tom"
        with pytest.raises(ObjectNotFound):
            zoo.Dog[ids["Dog"]]
    with db_session:
        assert sorted(a.name for a in zoo.Animal.select()) == ["generic", "tom"]
        assert sorted(a.name for a in zoo.Toy.get(label="ball").owners) == ["generic", "tom"]
        assert pk.bulk_delete(zoo.Cat, [ids["Animal"]]) == 0
        assert pk.bulk_delete(zoo.Animal, [ids["Cat"]]) == 1  # the root's keys cover every class
        assert select(a.name for a in zoo.Animal)[:] == ["generic"]


def test_delete_of_a_subclass_by_query(zoo: Zoo) -> None:
    """A query on a subclass deletes that class's rows (and its subclasses') only."""
    zoo.fill()
    with db_session:
        assert pk.bulk_delete(zoo.Dog, select(d for d in zoo.Dog)) == 2
    with db_session:
        assert sorted(a.name for a in zoo.Animal.select()) == ["generic", "tom"]


def test_update_of_a_subclass_leaves_rows_of_other_classes(zoo: Zoo) -> None:
    """bulk_update(Dog, rows) updates Dog rows only: a key of another class matches nothing, as
    Pony's Dog[key] finds nothing there."""
    ids = zoo.fill()
    with db_session:
        rows = [{"id": i, "name": "renamed"} for i in ids.values()]
        assert pk.bulk_update(zoo.Dog, rows) == 2
    with db_session:
        names = {type(a).__name__: a.name for a in zoo.Animal.select()}
        assert names == {"Animal": "generic", "Dog": "renamed", "Puppy": "renamed", "Cat": "tom"}


def test_row_index_when_a_batch_mixes_explicit_and_generated_ids(db: Database) -> None:
    """The failing row is named by its position in the input, whichever group of the batch it is in."""

    class Note(db.Entity):
        text = Required(str, 5)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    bad = "x" * 6
    cases = [
        ([{"text": "a"}, {"id": 100, "text": "b"}, {"text": bad}], 2),  # in the rows without id
        ([{"text": "a"}, {"text": "b"}, {"id": 100, "text": bad}], 2),  # in the rows with an id
        ([{"id": 100, "text": "a"}, {"text": "b"}, {"id": 101, "text": "c"}, {"text": bad}], 3),
    ]
    for rows, index in cases:
        with db_session:
            with pytest.raises(pk.BulkWriteError) as info:
                pk.bulk_insert(Note, [{"text": "ok"}] * 5 + rows, batch_size=4)
            assert info.value.row_index == 5 + index
            assert info.value.attribute == "text"
            assert f"row {5 + index}," in str(info.value)


def test_refused_value_shown_is_the_failing_rows_when_a_batch_mixes_ids(db: Database) -> None:
    """A value the driver would refuse, in a group of a batch that mixes explicit and generated ids, is
    reported with the failing row's own value (it once showed the value of another row of the batch)."""

    class Memo(db.Entity):
        text = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    refused = "lone \ud800 surrogate"
    rows = [{"id": 100, "text": "first"}, {"text": "second"}, {"text": refused}]
    with db_session:
        with pytest.raises(pk.BulkWriteError) as info:
            pk.bulk_insert(Memo, rows)
        assert info.value.row_index == 2
        assert info.value.attribute == "text"
        assert repr(refused) in str(info.value)
        assert "second" not in str(info.value)
        assert "first" not in str(info.value)


def test_ids_in_row_order_when_a_batch_mixes_shapes(db: Database) -> None:
    """return_ids gives keys in row order although the batch is written in groups (explicit id or not,
    a column with an SQL default None or given), and each key is the key of its own row."""

    class Counter(db.Entity):
        label = Required(str)
        hits = Optional(int, sql_default="7")

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    rows: list[dict[str, Any]] = [
        {"label": "a"},
        {"id": 1000, "label": "b"},
        {"label": "c", "hits": 3},
        {"label": "d"},
        {"id": 1001, "label": "e", "hits": 4},
    ]
    with db_session:
        ids = pk.bulk_insert(Counter, rows, return_ids=True)
        assert isinstance(ids, list)
        assert ids[1] == 1000
        assert ids[4] == 1001
        assert [Counter[i].label for i in ids] == ["a", "b", "c", "d", "e"]
        assert [Counter[i].hits for i in ids] == [7, 7, 3, 7, 4]
