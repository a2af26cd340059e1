"""The door's many-to-many functions (``ponykit._pony.links``): the link table as Pony maps it, keys of
objects, the int fast path's bounds, and loaded collections kept true after link rows were written."""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import Database, Optional, PrimaryKey, Required, Set, db_session

import ponykit as pk
from ponykit import _pony


@pytest.fixture
def m(db: Database) -> Any:
    class Book(db.Entity):
        title = Required(str)
        tags = Set("Tag", table="book_tags", column="tag_ref")
        author = Optional("Author")

    class Tag(db.Entity):
        id = PrimaryKey(int, size=16)
        books = Set(Book, column="book_ref")

    class Person(db.Entity):
        friends = Set("Person", reverse="friends")

    class Author(db.Entity):
        books = Set(Book)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return db


def test_many_to_many_reads_pony_mapping(m: Any) -> None:
    """Declared link table and column names come back exactly; one-to-many and plain attributes give None."""
    link = _pony.many_to_many(m.Book.tags)
    assert link is not None
    assert (link.table, link.owner_columns, link.other_columns) == ("book_tags", ("book_ref",), ("tag_ref",))
    assert (link.owner, link.other, link.symmetric, link.label) == (m.Book, m.Tag, False, "Book.tags")
    back = _pony.many_to_many(m.Tag.books)
    assert back is not None
    assert (back.owner_columns, back.other_columns) == (("tag_ref",), ("book_ref",))
    friends = _pony.many_to_many(m.Person.friends)
    assert friends is not None
    assert friends.symmetric
    assert _pony.many_to_many(m.Author.books) is None
    assert _pony.many_to_many(m.Book.title) is None


def test_int_key_bounds_and_object_keys(m: Any) -> None:
    assert _pony.int_key_bounds(m.Tag.id) == (-(2**15), 2**15 - 1)
    assert _pony.int_key_bounds(m.Book.title) is None
    with db_session:
        tag = m.Tag(id=7)
        book = m.Book(title="t")
        assert _pony.object_keys([tag, 3], m.Tag) == ([7, 3], None)
        assert _pony.object_keys([3, book], m.Tag)[1] == 1


def test_update_loaded_links_keeps_both_sides_true(m: Any) -> None:
    """Added links appear in loaded collections on both sides; a collection whose new member is not in
    the session is marked not fully loaded and reloads; removed links go."""
    link = _pony.many_to_many(m.Book.tags)
    assert link is not None
    with db_session:
        m.Book(title="a")
        m.Tag(id=1)
        m.Tag(id=2)
    with db_session:
        book, tag = m.Book.select().first(), m.Tag[1]
        assert len(book.tags) == 0
        assert len(tag.books) == 0
        sql = "INSERT INTO book_tags (book_ref, tag_ref) VALUES ($bid, 1), ($bid, 2)"
        m.execute(sql, {}, {"bid": book.id})
        _pony.update_loaded_links(link, [(book, tag), (book, None)], True)  # Tag[2]: not in the session
        assert list(tag.books) == [book]
        assert {t.id for t in book.tags} == {1, 2}  # reloaded: the second tag was not known
        m.execute("DELETE FROM book_tags WHERE tag_ref = 1")
        _pony.update_loaded_links(link, [(book, tag)], False)
        assert {t.id for t in book.tags} == {2}
        assert list(tag.books) == []
