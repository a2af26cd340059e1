"""ponykit.bulk on every backend: writes, validation, batches, progress, and session consistency."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pony.orm import (
    Database,
    ObjectNotFound,
    Optional,
    PrimaryKey,
    Required,
    Set,
    commit,
    composite_key,
    db_session,
    rollback,
    select,
)

import ponykit as pk
from ponykit.kit import CommitEvent


class Schema:
    """The entities of one test database."""

    def __init__(self, db: Database) -> None:
        class Author(db.Entity):
            name = Required(str, unique=True)
            books = Set("Book")

        class Book(db.Entity):
            title = Required(str, 40)
            nick = Optional(str)
            price = Optional(Decimal, 12, 2)
            year = Optional(int, min=-5, max=3000)  # not min=0: Pony ignores a zero bound
            code = Optional(str, py_check=lambda s: s == "" or s.isupper())
            made = Required(date, default=lambda: date(2020, 1, 2))
            author = Optional(Author)
            tags = Set("Tag")

            def before_insert(self) -> None:
                if self.nick == "hook":
                    self.nick = "set by hook"

        class Tag(db.Entity):
            label = Required(str, unique=True)
            books = Set(Book)

        class Animal(db.Entity):
            name = Required(str)

        class Dog(Animal):
            barks = Optional(bool)

        class Member(db.Entity):
            org = Required(str)
            num = Required(int)
            PrimaryKey(org, num)
            role = Optional(str)
            email = Optional(str, nullable=True)
            composite_key(role, email)

        self.db = db
        self.kit = pk.attach(db)
        db.generate_mapping(create_tables=True)
        self.Author, self.Book, self.Tag, self.Animal, self.Dog, self.Member = (
            Author,
            Book,
            Tag,
            Animal,
            Dog,
            Member,
        )


@pytest.fixture
def s(db: Database) -> Schema:
    return Schema(db)


# ---------------------------------------------------------------------------------------------------------
# bulk_insert


def test_insert_applies_pony_defaults_and_returns_ids_in_order(s: Schema) -> None:
    """Defaults (callable too), Optional(str) as '' and ids in row order come out as Pony would make them."""
    with db_session:
        ids = pk.bulk_insert(
            s.Book, [{"title": "a"}, {"title": " b ", "price": Decimal("1.50")}], return_ids=True
        )
        assert isinstance(ids, list)
        assert len(ids) == 2
        assert ids[0] < ids[1]
    with db_session:
        a, b = s.Book[ids[0]], s.Book[ids[1]]
        assert (a.title, a.nick, a.price, a.made) == ("a", "", None, date(2020, 1, 2))
        assert (b.title, b.price) == ("b", Decimal("1.50"))  # autostrip, as Pony does


def test_insert_counts_rows_of_a_generator(s: Schema) -> None:
    """A generator is consumed in batches and the count of rows inserted is returned."""
    with db_session:
        n = pk.bulk_insert(s.Book, ({"title": f"t{i}", "year": i} for i in range(25)), batch_size=10)
        assert n == 25
        assert select(b for b in s.Book).count() == 25


def test_insert_relations_by_object_or_key_and_loaded_collections_see_them(s: Schema) -> None:
    """Relations take objects or keys, and a collection loaded before the call shows the new rows."""
    with db_session:
        ann = s.Author(name="ann")
        commit()
        assert len(ann.books) == 0
        pk.bulk_insert(s.Book, [{"title": "x", "author": ann}, {"title": "y", "author": ann.id}])
        assert sorted(b.title for b in ann.books) == ["x", "y"]


def test_insert_subclass_sets_discriminator(s: Schema) -> None:
    """A single-table-inheritance subclass gets its discriminator, so the rows load as that class."""
    with db_session:
        pk.bulk_insert(s.Dog, [{"name": "rex", "barks": True}])
        pk.bulk_insert(s.Animal, [{"name": "generic"}])
    with db_session:
        dogs = select(a for a in s.Animal if a.name == "rex")[:]
        assert type(dogs[0]) is s.Dog
        assert dogs[0].barks is True
        assert type(s.Animal.get(name="generic")) is s.Animal


def test_insert_composite_primary_key_and_nullable(s: Schema) -> None:
    """Composite primary keys are written and returned; nullable Optional(str) keeps None."""
    with db_session:
        keys = pk.bulk_insert(
            s.Member, [{"org": "o", "num": 1}, {"org": "o", "num": 2, "email": "e"}], return_ids=True
        )
        assert keys == [("o", 1), ("o", 2)]
    with db_session:
        assert s.Member["o", 1].email is None
        assert s.Member["o", 1].role is None


@pytest.mark.parametrize(
    ("row", "attribute"),
    [
        ({"title": "x" * 41}, "title"),
        ({"title": "ok", "year": -10}, "year"),
        ({"title": "ok", "code": "lower"}, "code"),
        ({}, "title"),
        ({"title": "ok", "price": "not a number"}, "price"),
        ({"title": "ok", "author": "nobody"}, "author"),
        ({"title": "ok", "nonsense": 1}, "nonsense"),
    ],
)
def test_insert_rejects_what_pony_rejects(s: Schema, row: dict[str, Any], attribute: str) -> None:
    """An invalid row raises BulkWriteError naming row, attribute, expected and given; nothing is written."""
    rows = [{"title": "fine"}, row]
    with db_session:
        with pytest.raises(pk.BulkWriteError) as info:
            pk.bulk_insert(s.Book, rows)
        assert info.value.row_index == 1
        assert info.value.attribute == attribute
        assert info.value.entity == "Book"
        assert "row 1" in str(info.value)
        assert select(b for b in s.Book).count() == 0
    # Pony itself refuses the same row.
    with pytest.raises((TypeError, ValueError)), db_session:
        s.Book(**row)


def test_insert_rejects_one_to_many_collections(s: Schema) -> None:
    """A one-to-many collection in a row is refused (its members hold the reference); many-to-many
    collections are written (tests/bulk/test_bulk_links.py)."""
    with db_session, pytest.raises(pk.BulkWriteError, match="one-to-many collection") as info:
        pk.bulk_insert(s.Author, [{"name": "ok", "books": []}])
    assert info.value.attribute == "books"


def test_failing_row_in_batch_k_of_n_writes_nothing_after_rollback(s: Schema) -> None:
    """A bad row in batch 3 of 4 stops before that batch, and the call's earlier batches are undone
    (issue #12: a caller who catches the error and commits must not commit part of the call)."""
    rows = [{"title": f"t{i}"} for i in range(40)]
    rows[25] = {"title": "x" * 99}
    seen: list[tuple[int, int | None]] = []
    with db_session:
        with pytest.raises(pk.BulkWriteError) as info:
            pk.bulk_insert(
                s.Book, rows, batch_size=10, progress=lambda done, total: seen.append((done, total))
            )
        assert info.value.row_index == 25
        assert select(b for b in s.Book).count() == 0  # batches 1 and 2 undone with the call
        rollback()
    assert seen == [(10, 40), (20, 40)]
    with db_session:
        assert select(b for b in s.Book).count() == 0


def test_progress_reports_none_total_for_iterators(s: Schema) -> None:
    """progress gets (rows done, None) after each batch of an iterator."""
    seen: list[tuple[int, int | None]] = []
    with db_session:
        pk.bulk_insert(
            s.Tag,
            iter([{"label": str(i)} for i in range(5)]),
            batch_size=2,
            progress=lambda *a: seen.append(a),
        )
    assert seen == [(2, None), (4, None), (5, None)]


def test_hooks_opt_in_runs_before_insert(s: Schema) -> None:
    """hooks=True runs before_insert on a transient object and writes what it set; by default it does not."""
    with db_session:
        pk.bulk_insert(s.Book, [{"title": "a", "nick": "hook"}], hooks=True)
        pk.bulk_insert(s.Book, [{"title": "b", "nick": "hook"}])
    with db_session:
        assert s.Book.get(title="a").nick == "set by hook"
        assert s.Book.get(title="b").nick == "hook"
        assert select(b for b in s.Book).count() == 2


def test_outside_db_session_is_an_error(s: Schema) -> None:
    """Bulk writes join the caller's transaction, so they need a db_session."""
    with pytest.raises(pk.ConfigurationError):
        pk.bulk_insert(s.Tag, [{"label": "x"}])


# ---------------------------------------------------------------------------------------------------------
# Commit events and statement listeners


def test_commit_event_names_entity_and_keys(s: Schema) -> None:
    """The commit after a bulk write reports the entity and the keys written, so caches invalidate."""
    events: list[CommitEvent] = []
    s.kit.subscribe(events.append)
    with db_session:
        ids = pk.bulk_insert(s.Tag, [{"label": "a"}, {"label": "b"}], return_ids=True)
    with db_session:
        pk.bulk_update(s.Tag, [{"id": ids[0], "label": "c"}])
    with db_session:
        pk.bulk_delete(s.Tag, select(t for t in s.Tag if t.label == "b"))
    with db_session:
        pk.bulk_insert(s.Tag, [{"label": "d"}])
    assert [dict(e.writes) for e in events] == [
        {"Tag": frozenset(ids)},
        {"Tag": frozenset([ids[0]])},
        {"Tag": frozenset([ids[1]])},
        {"Tag": None},
    ]


def test_rolled_back_bulk_write_reports_nothing(s: Schema) -> None:
    """A bulk write whose session rolls back produces no commit event."""
    events: list[CommitEvent] = []
    s.kit.subscribe(events.append)
    with pytest.raises(RuntimeError), db_session:
        pk.bulk_insert(s.Tag, [{"label": "a"}])
        raise RuntimeError("boom")
    assert events == []


def test_execute_listeners_see_bulk_statements(s: Schema, backend_name: str) -> None:
    """Bulk statements go through Pony's provider, so execute listeners (query counting) see them:
    COPY on PostgreSQL (after taking the keys from the sequence for return_ids), INSERT elsewhere."""
    statements: list[str] = []
    s.kit.add_execute_listener(lambda db, sql, args, seconds, error: statements.append(sql))
    with db_session:
        pk.bulk_insert(s.Tag, [{"label": "a"}, {"label": "b"}])
    first = "COPY" if backend_name == "postgres" else "INSERT"
    assert any(sql.startswith(first) for sql in statements), statements
    statements.clear()
    with db_session:
        pk.bulk_insert(s.Tag, [{"label": "c"}], return_ids=True)
    if backend_name == "postgres":
        assert [sql.split()[0] for sql in statements] == ["SELECT", "COPY"], statements
        assert "nextval" in statements[0]
    else:
        assert [sql.split()[0] for sql in statements] == ["INSERT"], statements


# ---------------------------------------------------------------------------------------------------------
# bulk_update


def test_update_shows_new_values_on_objects_read_before(s: Schema) -> None:
    """Objects loaded and read before the update show the new values, without UnrepeatableReadError."""
    with db_session:
        ids = pk.bulk_insert(s.Book, [{"title": f"t{i}", "year": i} for i in range(3)], return_ids=True)
    with db_session:
        books = select(b for b in s.Book).order_by(s.Book.id)[:]
        assert [b.year for b in books] == [0, 1, 2]
        n = pk.bulk_update(s.Book, [{"id": ids[0], "year": 100, "title": "new"}, {"id": ids[1], "year": 101}])
        assert n == 2
        assert [b.year for b in books] == [100, 101, 2]
        assert books[0].title == "new"
        assert s.Book[ids[0]].title == "new"
        assert sorted(select(b.year for b in s.Book if b.year > 99)) == [100, 101]
        assert select(b for b in s.Book).order_by(s.Book.id)[:][0].year == 100  # a re-select raises nothing
        books[2].year = 7  # and Pony can keep writing
    with db_session:
        assert sorted(select(b.year for b in s.Book)[:]) == [7, 100, 101]


def test_update_moves_unique_key_and_relation(s: Schema) -> None:
    """A changed unique key and a changed relation are seen through get() and loaded collections."""
    with db_session:
        ann, bob = s.Author(name="ann"), s.Author(name="bob")
        book = s.Book(title="b", author=ann)
        commit()
        assert list(ann.books) == [book]
        assert len(bob.books) == 0
        pk.bulk_update(s.Author, [{"id": ann.id, "name": "anne"}])
        pk.bulk_update(s.Book, [{"id": book.id, "author": bob.id}])
        assert s.Author.get(name="anne") is ann
        assert s.Author.get(name="ann") is None
        assert book.author is bob
        assert list(bob.books) == [book]
        assert len(ann.books) == 0


def test_update_with_fields_and_errors(s: Schema) -> None:
    """fields limits what is set; a bad value, a missing key or a key change raise BulkWriteError."""
    with db_session:
        (bid,) = pk.bulk_insert(s.Book, [{"title": "t", "year": 1}], return_ids=True)
        pk.bulk_update(s.Book, [{"id": bid, "year": 2, "title": "ignored"}], fields=["year"])
        assert (s.Book[bid].title, s.Book[bid].year) == ("t", 2)
        with pytest.raises(pk.BulkWriteError, match="year"):
            pk.bulk_update(s.Book, [{"id": bid, "year": 5000}])
        with pytest.raises(pk.BulkWriteError, match="primary-key"):
            pk.bulk_update(s.Book, [{"year": 3}])
        with pytest.raises(pk.BulkWriteError, match="primary key"):
            pk.bulk_update(s.Book, [{"id": bid, "year": 3}], fields=["id"])
        assert pk.bulk_update(s.Book, [{"id": bid + 1000, "year": 3}]) == 0


def test_update_composite_key(s: Schema) -> None:
    """Rows with a composite primary key are updated by that key."""
    with db_session:
        pk.bulk_insert(s.Member, [{"org": "o", "num": i} for i in range(3)])
        assert pk.bulk_update(s.Member, [{"org": "o", "num": 1, "role": "admin"}]) == 1
    with db_session:
        assert [m.role for m in select(m for m in s.Member).order_by(s.Member.num)] == [None, "admin", None]


# ---------------------------------------------------------------------------------------------------------
# bulk_upsert


def test_upsert_counts_inserted_and_updated(s: Schema) -> None:
    """Rows with a new key are inserted, rows with an existing key updated, and both are counted."""
    with db_session:
        pk.bulk_insert(s.Author, [{"name": "ann"}])
        ann = s.Author.get(name="ann")
        result = pk.bulk_upsert(s.Member, [{"org": "o", "num": 1, "role": "a"}], conflict=("org", "num"))
        assert (result.inserted, result.updated) == (1, 0)
        result = pk.bulk_upsert(
            s.Member,
            [{"org": "o", "num": 1, "role": "b"}, {"org": "o", "num": 2, "role": "c"}],
            conflict=["num", "org"],
            return_ids=True,
        )
        assert (result.inserted, result.updated, result.ids) == (1, 1, [("o", 1), ("o", 2)])
        assert s.Member["o", 1].role == "b"
        skip = pk.bulk_upsert(
            s.Author, [{"name": "ann"}, {"name": "zed"}], conflict="name", update=(), return_ids=True
        )
        assert (skip.inserted, skip.updated, skip.skipped) == (1, 0, 1)
        assert skip.ids == [ann.id, s.Author.get(name="zed").id]


def test_upsert_refreshes_loaded_objects(s: Schema) -> None:
    """An object read before an upsert shows the updated values afterwards."""
    with db_session:
        pk.bulk_insert(s.Member, [{"org": "o", "num": 1, "role": "old"}])
    with db_session:
        m = s.Member["o", 1]
        assert m.role == "old"
        pk.bulk_upsert(s.Member, [{"org": "o", "num": 1, "role": "new"}], conflict=("org", "num"))
        assert m.role == "new"
        assert select(x.role for x in s.Member)[:] == ["new"]


def test_upsert_conflict_must_be_a_declared_key(s: Schema) -> None:
    """conflict must name the primary key or a declared unique key; anything else is a ConfigurationError."""
    with db_session:
        with pytest.raises(pk.ConfigurationError, match="not a unique key"):
            pk.bulk_upsert(s.Book, [{"title": "x"}], conflict="title")
        with pytest.raises(pk.BulkWriteError, match="same conflict key"):
            pk.bulk_upsert(s.Tag, [{"label": "a"}, {"label": "a"}], conflict="label")
        with pytest.raises(pk.BulkWriteError, match="lacks"):
            pk.bulk_upsert(s.Tag, [{"id": 5}], conflict="label")


# ---------------------------------------------------------------------------------------------------------
# bulk_delete


def test_delete_by_keys_forgets_loaded_objects(s: Schema) -> None:
    """Deleted objects are gone from Entity[pk], get() and exists(); queries no longer see them."""
    with db_session:
        ids = pk.bulk_insert(s.Tag, [{"label": str(i)} for i in range(4)], return_ids=True)
    with db_session:
        tags = select(t for t in s.Tag).order_by(s.Tag.id)[:]
        assert tags[0].label == "0"
        assert pk.bulk_delete(s.Tag, [ids[0], tags[1]]) == 2
        with pytest.raises(ObjectNotFound):
            s.Tag[ids[0]]
        assert s.Tag.get(label="1") is None
        assert not s.Tag.exists(id=ids[1])
        assert select(t.label for t in s.Tag).order_by(1)[:] == ["2", "3"]
    with db_session:
        assert select(t for t in s.Tag).count() == 2


def test_delete_by_query_and_many_to_many_links(s: Schema) -> None:
    """Deleting by query removes the rows and their link rows; loaded collections drop them."""
    with db_session:
        a, b = s.Tag(label="a"), s.Tag(label="b")
        book = s.Book(title="t", tags=[a, b])
        commit()
        assert len(book.tags) == 2
        assert pk.bulk_delete(s.Tag, select(t for t in s.Tag if t.label == "a")) == 1
        assert list(book.tags) == [b]
    with db_session:
        assert [t.label for t in s.Book.get(title="t").tags] == ["b"]


def test_delete_composite_keys(s: Schema) -> None:
    """Composite keys are given as tuples."""
    with db_session:
        pk.bulk_insert(s.Member, [{"org": "o", "num": i} for i in range(3)])
        assert pk.bulk_delete(s.Member, [("o", 0), ("o", 2)]) == 2
        assert select(m.num for m in s.Member)[:] == [1]
        with pytest.raises(pk.BulkWriteError):
            pk.bulk_delete(s.Member, ["o"])


def test_sql_default_applies_when_value_is_none(make_db: Any) -> None:
    """Like Pony, a None value of an attribute with sql_default leaves the column out: the default applies."""
    db = make_db()

    class Counter(db.Entity):
        label = Required(str)
        hits = Optional(int, sql_default="7")

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Counter(label="pony")
        pk.bulk_insert(Counter, [{"label": "bulk"}, {"label": "given", "hits": 3}, {"id": 50, "label": "id"}])
    with db_session:
        hits = {c.label: c.hits for c in select(c for c in Counter)}
        assert hits == {"pony": 7, "bulk": 7, "given": 3, "id": 7}
        assert Counter[50].label == "id"
