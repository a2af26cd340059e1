"""Timestamped: created_at/updated_at set by Pony's flush and by bulk_insert/bulk_update/bulk_upsert, on
every backend; names configurable; clashes refused; inheritance and several entities per database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pony.orm import Database, Optional, PrimaryKey, Required, db_session, flush, select

import ponykit as pk
from ponykit.mixins import Timestamped

OLD = datetime(2001, 2, 3, 4, 5, 6, 700000, tzinfo=UTC)


def _new(entity: Any, **values: Any) -> Any:
    """The primary key of a new object (flushed, so that the key is known)."""
    obj = entity(**values)
    flush()
    return obj.id


def _map(db: Database) -> None:
    pk.attach(db)
    db.generate_mapping(create_tables=True)


@pytest.fixture
def Note(db: Database) -> Any:
    class Note(db.Entity, Timestamped):
        text = Required(str)
        key = Optional(str, unique=True)

    _map(db)
    return Note


def test_orm_create_sets_both_to_one_utc_instant(Note: Any) -> None:
    before = datetime.now(UTC)
    with db_session:
        note = Note(text="a")
        assert note.created_at == note.updated_at
    after = datetime.now(UTC)
    with db_session:
        note = Note[note.id]
        assert note.created_at.tzinfo is not None and note.created_at.utcoffset() == timedelta(0)
        assert before <= note.created_at <= after
        assert note.created_at == note.updated_at


def test_orm_update_advances_updated_at_only(Note: Any) -> None:
    with db_session:
        note_id = _new(Note, text="a")
    with db_session:
        created, updated = Note[note_id].created_at, Note[note_id].updated_at
    with db_session:
        Note[note_id].text = "b"
    with db_session:
        note = Note[note_id]
        assert note.created_at == created
        assert note.updated_at > updated
        second = note.updated_at
        note.text = "c"
        flush()
        note.text = "d"  # a second flush in one transaction advances it again
    with db_session:
        assert Note[note_id].updated_at > second


def test_a_read_or_an_unchanged_flush_does_not_touch(Note: Any) -> None:
    with db_session:
        note_id = _new(Note, text="a")
    with db_session:
        updated = Note[note_id].updated_at
    with db_session:
        _ = Note[note_id].text
    with db_session:
        assert Note[note_id].updated_at == updated


def test_values_the_code_gives_win(Note: Any) -> None:
    with db_session:
        note = Note(text="a", created_at=OLD)
        assert note.created_at == OLD and note.updated_at > OLD
        note2 = Note(text="b", created_at=OLD, updated_at=OLD)
    with db_session:
        Note[note2.id].set(text="c", updated_at=OLD + timedelta(days=1))
    with db_session:
        assert Note[note.id].created_at == OLD
        assert Note[note2.id].created_at == OLD
        assert Note[note2.id].updated_at == OLD + timedelta(days=1)


def test_naive_value_is_refused(Note: Any) -> None:
    with db_session, pytest.raises(ValueError, match="naive"):
        Note(text="a", created_at=datetime(2020, 1, 1))


def test_updated_at_never_goes_backwards(Note: Any) -> None:
    """A stored updated_at in the future (a clock that stepped back) is kept, not moved back."""
    future = datetime.now(UTC) + timedelta(days=1)
    with db_session:
        note_id = _new(Note, text="a", updated_at=future)
    with db_session:
        Note[note_id].text = "b"
    with db_session:
        assert Note[note_id].updated_at == future


def test_bulk_insert_sets_both_per_batch_unless_given(Note: Any) -> None:
    rows = [
        {"text": "a"},
        {"text": "b", "created_at": OLD},
        {"text": "c", "created_at": OLD, "updated_at": OLD},
    ]
    before = datetime.now(UTC)
    with db_session:
        assert pk.bulk_insert(Note, rows) == 3
    assert rows[0] == {"text": "a"}  # the caller's rows are not changed
    with db_session:
        notes = {n.text: n for n in Note.select()}
        assert notes["a"].created_at == notes["a"].updated_at >= before
        assert notes["b"].created_at == OLD and notes["b"].updated_at >= before
        assert notes["c"].created_at == notes["c"].updated_at == OLD
        assert notes["a"].updated_at == notes["b"].updated_at  # one instant per batch


def test_bulk_update_advances_updated_at(Note: Any) -> None:
    with db_session:
        ids = pk.bulk_insert(Note, [{"text": str(i)} for i in range(4)], return_ids=True)
    with db_session:
        before = {n.id: (n.created_at, n.updated_at) for n in Note.select()}
    with db_session:
        pk.bulk_update(Note, [{"id": ids[0], "text": "x"}, {"id": ids[1], "text": "y"}])
        pk.bulk_update(Note, [{"id": ids[2], "text": "z", "key": "k"}], fields=["text"])  # named fields
        pk.bulk_update(Note, [{"id": ids[3], "text": "w", "updated_at": OLD}])  # given: wins
    with db_session:
        after = {n.id: (n.created_at, n.updated_at) for n in Note.select()}
    for i in ids:
        assert after[i][0] == before[i][0]
    for i in ids[:3]:
        assert after[i][1] > before[i][1]
    assert after[ids[3]][1] == OLD


def test_bulk_update_refreshes_loaded_objects(Note: Any) -> None:
    with db_session:
        note_id = _new(Note, text="a")
    with db_session:
        note = Note[note_id]
        old = note.updated_at
        pk.bulk_update(Note, [{"id": note_id, "text": "b"}])
        assert note.text == "b" and note.updated_at > old


def test_bulk_upsert_inserts_with_both_and_updates_only_updated_at(Note: Any) -> None:
    with db_session:
        Note(text="old", key="k1")
    with db_session:
        created1, updated1 = Note.get(key="k1").created_at, Note.get(key="k1").updated_at
    with db_session:
        result = pk.bulk_upsert(
            Note, [{"key": "k1", "text": "new"}, {"key": "k2", "text": "n2"}], conflict="key"
        )
        assert (result.inserted, result.updated) == (1, 1)
    with db_session:
        one, two = Note.get(key="k1"), Note.get(key="k2")
        assert one.text == "new" and one.created_at == created1 and one.updated_at > updated1
        assert two.created_at == two.updated_at  # one instant per batch, as bulk_insert
    with db_session:  # update= names the attributes: updated_at is written too
        pk.bulk_upsert(Note, [{"key": "k2", "text": "n3"}], conflict="key", update=["text"])
    with db_session:
        assert Note.get(key="k2").updated_at > two.updated_at
        assert Note.get(key="k2").created_at == two.created_at


def test_configurable_names(db: Database) -> None:
    class Doc(db.Entity, Timestamped):
        created_at_name = "created"
        updated_at_name = "modified"
        title = Required(str)

    _map(db)
    with db_session:
        doc = Doc(title="t")
        assert doc.created == doc.modified
        assert not hasattr(doc, "created_at")
    with db_session:
        Doc[doc.id].title = "u"
        pk.bulk_insert(Doc, [{"title": "v"}])
    with db_session:
        assert Doc[doc.id].modified > Doc[doc.id].created
        assert select(d for d in Doc if d.title == "v").first().created is not None


@pytest.mark.backends("sqlite")
def test_clash_is_refused_with_a_clear_error(db: Database) -> None:
    with pytest.raises(pk.ConfigurationError, match=r"Clash\.created_at .*created_at_name"):

        class Clash(db.Entity, Timestamped):
            created_at = Required(datetime)


@pytest.mark.backends("sqlite")
def test_bad_option_values_are_refused(db: Database) -> None:
    with pytest.raises(pk.ConfigurationError, match="two different attribute names"):

        class Same(db.Entity, Timestamped):
            created_at_name = "stamp"
            updated_at_name = "stamp"

    with pytest.raises(pk.ConfigurationError, match="created_at_name must be an attribute name"):

        class Bad(db.Entity, Timestamped):
            created_at_name = "not a name"


def test_inheritance_and_several_entities(db: Database) -> None:
    class Person(db.Entity, Timestamped):
        id = PrimaryKey(int, auto=True)
        name = Required(str)

    class Student(Person):
        school = Optional(str)

    class Tag(db.Entity, Timestamped):
        label = Required(str)

    _map(db)
    with db_session:
        student = Student(name="s", school="x")
        tag = Tag(label="t")
        assert student.created_at == student.updated_at
        assert tag.created_at == tag.updated_at
    with db_session:
        stamp = Student[student.id].updated_at
        Student[student.id].school = "y"
        Tag[tag.id].label = "u"
    with db_session:
        assert Student[student.id].updated_at > stamp
        assert Tag[tag.id].updated_at > Tag[tag.id].created_at
        pk.bulk_insert(Student, [{"name": "b", "school": "z"}])
        pk.bulk_update(Student, [{"id": student.id, "school": "w"}])
    with db_session:
        assert Student.get(name="b").created_at is not None
        assert Student[student.id].updated_at > stamp
        assert "created_at" not in Student.__dict__  # inherited from Person, not added twice


def test_aware_values_in_other_zones_are_stored_as_utc(Note: Any) -> None:
    paris = timezone(timedelta(hours=1))
    with db_session:
        note_id = _new(Note, text="a", created_at=OLD.astimezone(paris))
    with db_session:
        assert Note[note_id].created_at == OLD
        assert Note[note_id].created_at.utcoffset() == timedelta(0)
