"""bulk_link / bulk_unlink and collection values in bulk_insert rows, on every backend.

Oracle tests: twin entities live in one database, ``R*`` written through Pony objects (``a.tags.add(b)``,
``.remove()``, ``Entity(**row)``) and ``B*`` through ponykit.bulk, from the same hypothesis-generated
pairs (duplicates within the input, links that exist already, objects and keys mixed); their link tables
must hold the same rows. Then the session (loaded collections on both sides), the commit events and the
query cache, all or nothing, and the errors.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, PrimaryKey, Required, Set, commit, count, db_session, select

import ponykit as pk
from ponykit.kit import CommitEvent
from ponykit.query import cached_select
from ponykit.query.backends import MemoryCache

MEMBERS = [("a", 1), ("a", 2), ("b", 1), ("b'x", 7)]
GROUPS = ["x", "y", "z"]
N = 5  # books, tags and persons 1..N


class Schema:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Composite keys are declared inside the class body in Pony: build the twins that way.
        self.r = _twins(db, "R")
        self.b = _twins(db, "B")
        self.Post = type("Post", (db.Entity,), {"title": Required(str), "labels": Set("Label")})
        self.Label = type("Label", (db.Entity,), {"name": Required(str), "posts": Set(self.Post)})
        self.Shelf = type("Shelf", (db.Entity,), {"name": Required(str), "boxes": Set("Box")})
        self.Box = type("Box", (db.Entity,), {"shelf": Required(self.Shelf)})
        self.kit = pk.attach(db, cache=MemoryCache(maxsize=100, ttl=None, single_process=True))
        db.generate_mapping(create_tables=True)
        with db_session:
            for t in (self.r, self.b):
                for i in range(1, N + 1):
                    t.Book(id=i, title=f"b{i}")
                    t.Tag(id=i)
                    t.Person(id=i)
                for org, num in MEMBERS:
                    t.Member(org=org, num=num)
                for code in GROUPS:
                    t.Group(code=code)
            for name in ("l1", "l2"):
                self.Label(name=name)

    def links(self, attr: Any) -> list[tuple[Any, ...]]:
        """The rows of an attribute's link table, sorted."""
        link = pk._pony.many_to_many(attr)
        assert link is not None
        q = self.db.provider.quote_name
        cols = ", ".join(q(c) for c in link.owner_columns + link.other_columns)
        with db_session:
            rows = self.db.select(f"SELECT {cols} FROM {q(link.table)}")
        return sorted(tuple(r) if isinstance(r, tuple) else (r,) for r in rows)

    def clear_links(self) -> None:
        q = self.db.provider.quote_name
        with db_session:
            for t in (self.r, self.b):
                for attr in (t.Book.tags, t.Member.groups, t.Person.friends):
                    link = pk._pony.many_to_many(attr)
                    assert link is not None
                    self.db.execute(f"DELETE FROM {q(link.table)}")


def _twins(db: Database, p: str) -> Any:
    class T:
        pass

    book = type(
        f"{p}Book", (db.Entity,), {"id": PrimaryKey(int), "title": Required(str), "tags": Set(f"{p}Tag")}
    )
    tag = type(f"{p}Tag", (db.Entity,), {"id": PrimaryKey(int), "books": Set(book)})
    ns: dict[str, Any] = {"org": Required(str), "num": Required(int), "groups": Set(f"{p}Group")}
    exec("PrimaryKey(org, num)", {"PrimaryKey": PrimaryKey}, ns)  # Pony reads the class body
    member = type(f"{p}Member", (db.Entity,), ns)
    group = type(f"{p}Group", (db.Entity,), {"code": PrimaryKey(str), "members": Set(member)})
    person = type(
        f"{p}Person", (db.Entity,), {"id": PrimaryKey(int), "friends": Set(f"{p}Person", reverse="friends")}
    )
    t = T()
    t.Book, t.Tag, t.Member, t.Group, t.Person = book, tag, member, group, person  # type: ignore[attr-defined]
    return t


@pytest.fixture
def s(db: Database) -> Schema:
    return Schema(db)


# ---------------------------------------------------------------------------------------------------------
# Oracle: the link table after bulk equals the link table after Pony

KINDS = ["plain", "composite", "composite-second", "symmetric"]


def _sides(t: Any, kind: str) -> tuple[Any, Any, Any, list[Any], list[Any]]:
    """(collection, owner entity, other entity, owner keys, other keys) of one kind of relation."""
    if kind == "plain":
        return t.Book.tags, t.Book, t.Tag, list(range(1, N + 1)), list(range(1, N + 1))
    if kind == "composite":  # the composite key on the first side
        return t.Member.groups, t.Member, t.Group, MEMBERS, GROUPS
    if kind == "composite-second":  # ... and on the second
        return t.Group.members, t.Group, t.Member, GROUPS, MEMBERS
    return t.Person.friends, t.Person, t.Person, list(range(1, N + 1)), list(range(1, N + 1))


# (first index, second index, objects or keys): indexes wrap around the kind's keys.
index_pairs = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.booleans()), max_size=14)


def _apply(s: Schema, kind: str, existing: list[Any], pairs: list[Any], linked: bool) -> None:
    okeys, tkeys = _sides(s.r, kind)[3:]
    existing = [(i % len(okeys), j % len(tkeys), o) for i, j, o in existing]
    pairs = [(i % len(okeys), j % len(tkeys), o) for i, j, o in pairs]
    s.clear_links()
    for t in (s.r, s.b):  # the same starting links, written by Pony
        attr, owner, other, okeys, tkeys = _sides(t, kind)
        with db_session:
            for i, j, _ in existing:
                getattr(owner[okeys[i]], attr.name).add(other[tkeys[j]])
    attr, owner, other, okeys, tkeys = _sides(s.r, kind)
    with db_session:
        for i, j, _ in pairs:
            collection = getattr(owner[okeys[i]], attr.name)
            (collection.add if linked else collection.remove)(other[tkeys[j]])
    battr, bowner, bother, _, _ = _sides(s.b, kind)
    with db_session:
        given = [
            (bowner[okeys[i]] if as_obj else okeys[i], tkeys[j] if as_obj else bother[tkeys[j]])
            for i, j, as_obj in pairs
        ]
        count = (pk.bulk_link if linked else pk.bulk_unlink)(battr, given, batch_size=4)
    before = {(i, j) for i, j, _ in existing}
    after = {(i, j) for i, j, _ in pairs}
    if kind == "symmetric":
        rows = lambda links: {(a, b) for a, b in links} | {(b, a) for a, b in links}  # noqa: E731
        expected = len(rows(after) - rows(before)) if linked else len(rows(after) & rows(before))
    else:
        expected = len(after - before) if linked else len(after & before)
    assert count == expected
    assert s.links(battr) == s.links(attr)


@pytest.mark.parametrize("kind", KINDS)
@given(existing=index_pairs, pairs=index_pairs)
def test_bulk_link_writes_what_pony_add_writes(
    s: Schema, kind: str, existing: list[Any], pairs: list[Any]
) -> None:
    """Duplicates in the input and links already there are written once, as Pony's add() writes them."""
    _apply(s, kind, existing, pairs, linked=True)


@pytest.mark.parametrize("kind", KINDS)
@given(existing=index_pairs, pairs=index_pairs)
def test_bulk_unlink_removes_what_pony_remove_removes(
    s: Schema, kind: str, existing: list[Any], pairs: list[Any]
) -> None:
    """Links that exist go, links that do not are skipped, as with Pony's remove()."""
    _apply(s, kind, existing, pairs, linked=False)


@given(rows=st.lists(st.lists(st.integers(0, N - 1), max_size=6), max_size=6))
def test_bulk_insert_collections_write_what_pony_writes(s: Schema, rows: list[list[int]]) -> None:
    """``bulk_insert(Book, [{"tags": [...]}])`` leaves the link rows ``Book(tags=[...])`` leaves."""
    with db_session:
        for t in (s.r, s.b):
            t.Book.select(lambda b: b.id > N).delete(bulk=True)
    with db_session:
        for n, tags in enumerate(rows):
            s.r.Book(id=N + 1 + n, title="x", tags=[s.r.Tag[k + 1] for k in tags])
    with db_session:
        given = [
            {"id": N + 1 + n, "title": "x", "tags": [k + 1 if k % 2 else s.b.Tag[k + 1] for k in tags]}
            for n, tags in enumerate(rows)
        ]
        assert pk.bulk_insert(s.b.Book, given, batch_size=4) == len(rows)
    assert s.links(s.b.Book.tags) == s.links(s.r.Book.tags)


# ---------------------------------------------------------------------------------------------------------
# The session, commit events and the query cache


def test_loaded_collections_on_both_sides_follow_links(s: Schema) -> None:
    """Collections loaded before the call show added links and lose removed ones, on both sides; objects
    the session had not loaded stay out of it."""
    b = s.b
    with db_session:
        book, tag2, tag3 = b.Book[1], b.Tag[2], b.Tag[3]
        b.Book[2].tags.add(tag3)
        assert len(book.tags) == 0
        assert len(tag2.books) == 0
        assert {x.id for x in tag3.books} == {2}
        assert pk.bulk_link(b.Book.tags, [(book, 2), (1, tag3), (4, 2), (5, 5)]) == 4
        assert {t.id for t in book.tags} == {2, 3}
        assert {x.id for x in tag2.books} == {1, 4}
        assert {x.id for x in tag3.books} == {1, 2}
        assert 5 not in {t.id for t in pk._pony.cached_objects(s.db, b.Tag)}
        assert pk.bulk_unlink(b.Tag.books, [(2, 1), (2, 4), (3, 2)]) == 3
        assert {t.id for t in book.tags} == {3}
        assert list(tag2.books) == []
        assert {x.id for x in tag3.books} == {1}
        commit()
    with db_session:
        assert {t.id for t in b.Book[1].tags} == {3}
        assert {x.id for x in b.Tag[3].books} == {1}
        assert {x.id for x in b.Tag[5].books} == {5}


def test_loaded_symmetric_collections_follow_links(s: Schema) -> None:
    """A symmetric relation: both persons see each other after bulk_link, neither after bulk_unlink."""
    p = s.b.Person
    with db_session:
        one, two = p[1], p[2]
        assert len(one.friends) == 0
        assert len(two.friends) == 0
        assert pk.bulk_link(p.friends, [(1, 2), (3, 3)]) == 3  # (1, 2), (2, 1) and (3, 3)
        assert list(one.friends) == [two]
        assert list(two.friends) == [one]
        assert {x.id for x in p[3].friends} == {3}
        assert pk.bulk_unlink(p.friends, [(two, one)]) == 2
        assert list(one.friends) == []
        assert list(two.friends) == []


def test_commit_event_names_both_sides_and_cached_queries_drop(s: Schema) -> None:
    """The commit event names both entities with their keys; a cached query over the other side
    (tags by number of books) is read again after the commit."""
    b = s.b
    events: list[CommitEvent] = []
    s.kit.subscribe(events.append)

    def used_tags() -> list[int]:
        return sorted(t.id for t in cached_select(select(t for t in b.Tag if count(t.books) > 0)))

    with db_session:
        assert used_tags() == []
    with db_session:
        pk.bulk_link(b.Book.tags, [(1, 2), (3, 2), (1, 4)])
    assert dict(events[-1].writes) == {"BBook": frozenset({1, 3}), "BTag": frozenset({2, 4})}
    with db_session:
        assert used_tags() == [2, 4]
    with db_session:
        pk.bulk_unlink(b.Book.tags, [(1, 4)])
    assert dict(events[-1].writes) == {"BBook": frozenset({1}), "BTag": frozenset({4})}
    with db_session:
        assert used_tags() == [2]


# ---------------------------------------------------------------------------------------------------------
# All or nothing, and errors


@pytest.mark.parametrize("bad_at", [1, 5])
def test_bad_pair_leaves_nothing_linked(s: Schema, bad_at: int) -> None:
    """A bad pair in the middle (in the first batch, or after earlier batches were written) raises
    BulkWriteError naming its input index and side, and nothing of the call stays linked."""
    pairs: list[Any] = [(1, 1), (1, 2), (2, 3), (2, 4), (3, 1), (3, 2), (4, 4)]
    pairs[bad_at] = (2, "seven")
    with db_session:
        with pytest.raises(pk.BulkWriteError, match=f"pair {bad_at}, the second item") as info:
            pk.bulk_link(s.b.Book.tags, pairs, batch_size=2)
        assert info.value.row_index == bad_at
        assert info.value.entity == "BTag"
        assert s.links(s.b.Book.tags) == []
        commit()
    assert s.links(s.b.Book.tags) == []


@pytest.mark.parametrize(
    ("pairs", "index", "entity"), [([(1, 1), (2, 2), (1, 99)], 2, "BTag"), ([(1, 1), (42, 2)], 1, "BBook")]
)
def test_missing_key_is_refused_and_nothing_linked(
    s: Schema, pairs: list[Any], index: int, entity: str
) -> None:
    """A key with no row: the database's foreign key refuses it, the error names the pair and the side,
    and the call leaves nothing."""
    with db_session:
        with pytest.raises(pk.BulkWriteError, match=f"pair {index}, .* {entity} that does not exist") as info:
            pk.bulk_link(s.b.Book.tags, pairs, batch_size=2)
        assert (info.value.row_index, info.value.entity) == (index, entity)
        commit()
    assert s.links(s.b.Book.tags) == []


def test_bad_unlink_removes_nothing(s: Schema) -> None:
    """bulk_unlink is all or nothing too."""
    with db_session:
        pk.bulk_link(s.b.Book.tags, [(1, 1), (2, 2), (3, 3)])
    with db_session:
        with pytest.raises(pk.BulkWriteError) as info:
            pk.bulk_unlink(s.b.Book.tags, [(1, 1), (2, 2), (s.b.Tag[3], 3)], batch_size=2)
        assert info.value.row_index == 2
        assert "BTag object" in str(info.value)
        commit()
    assert s.links(s.b.Book.tags) == [(1, 1), (2, 2), (3, 3)]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([(1, 2, 3)], "pair 0 must be a tuple"),
        (["ab"], "pair 0 must be a tuple"),
        ([(("a", 1), "x"), ("a", "x")], "pair 1, the first item .BMember side.*tuple of 2 values"),
    ],
)
def test_pair_shapes_are_checked(s: Schema, pairs: list[Any], message: str) -> None:
    collection = s.b.Book.tags if "tuple of 2" not in message else s.b.Member.groups
    with db_session, pytest.raises(pk.BulkWriteError, match=message):
        pk.bulk_link(collection, pairs)


def test_only_many_to_many_collections_are_taken(s: Schema) -> None:
    """A one-to-many collection, a plain attribute or an entity class is refused with what to do."""
    with db_session:
        with pytest.raises(pk.OptionError, match="one-to-many collection.*Box.shelf"):
            pk.bulk_link(s.Shelf.boxes, [(1, 1)])
        with pytest.raises(pk.OptionError, match="not a collection"):
            pk.bulk_unlink(s.b.Book.title, [(1, 1)])
        with pytest.raises(pk.OptionError, match="Book.tags"):
            pk.bulk_link(s.b.Book, [(1, 1)])


# ---------------------------------------------------------------------------------------------------------
# bulk_insert with collection values


def test_insert_with_generated_keys_links_the_new_rows(s: Schema, backend_name: str) -> None:
    """Rows with generated keys: the links use the keys the database gave; a loaded collection of the
    other side shows the new rows."""
    with db_session:
        l1, l2 = s.Label.select().order_by(s.Label.id)[:]
        assert len(l1.posts) == 0
        n = pk.bulk_insert(
            s.Post, [{"title": "a", "labels": [l1, l2.id]}, {"title": "b"}, {"title": "c", "labels": l2}]
        )
        assert n == 3
        assert sorted(p.title for p in l1.posts) == ["a"]
        assert sorted(p.title for p in l2.posts) == ["a", "c"]
        ids = pk.bulk_insert(s.Post, [{"title": "d", "labels": [l1]}], return_ids=True)
        assert [p.id for p in l1.posts if p.title == "d"] == ids
        commit()
    with db_session:
        assert sorted(p.title for p in s.Label[l1.id].posts) == ["a", "d"]


def test_insert_bad_collection_item_names_row_and_attribute(s: Schema) -> None:
    with db_session:
        with pytest.raises(pk.BulkWriteError, match="row 1, an item of collection 'tags'") as info:
            pk.bulk_insert(
                s.b.Book, [{"id": 10, "title": "x", "tags": [1]}, {"id": 11, "title": "y", "tags": ["no"]}]
            )
        assert (info.value.row_index, info.value.attribute, info.value.entity) == (1, "tags", "BBook")
        commit()
    with db_session:
        assert s.b.Book.select(lambda x: x.id >= 10).count() == 0
    assert s.links(s.b.Book.tags) == []
