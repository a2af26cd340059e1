"""The bookshop's services against the test database: each test starts from empty tables."""

from decimal import Decimal

import pytest
from bookshop.models import Author, Book
from bookshop.services import OutOfStock, add_book, outbox, place_order, restock, titles_tagged
from pony.orm import commit, db_session, select


@pytest.fixture(autouse=True)
def _empty_outbox():
    outbox.clear()


def test_add_book_creates_its_author_and_tags(pk_db):
    add_book("Dune", "9780441013593", Decimal("9.99"), "Frank Herbert", tags=["sf", "classic"])
    add_book("Children of Dune", "9780441104024", Decimal("8.99"), "Frank Herbert", tags=["sf"])
    with db_session:
        assert Author.select().count() == 1
        assert select(b.title for b in Book if b.author.name == "Frank Herbert").count() == 2
    assert titles_tagged("sf") == ["Children of Dune", "Dune"]


def test_an_order_takes_stock_and_sends_its_email_after_commit(pk_db):
    add_book("Emma", "9780141439587", Decimal("6.50"), "Jane Austen", stock=3)
    order_id = place_order("9780141439587", 2)
    with db_session:
        assert Book.get(isbn="9780141439587").stock == 1
    assert outbox == [f"order {order_id}: 2 x 9780141439587"]


def test_a_refused_order_changes_nothing_and_sends_nothing(pk_db):
    add_book("Persuasion", "9780141439686", Decimal("6.50"), "Jane Austen", stock=1)
    with pytest.raises(OutOfStock):
        place_order("9780141439686", 5)
    with db_session:
        assert Book.get(isbn="9780141439686").stock == 1
    assert outbox == []


def test_restock_is_one_bulk_statement(pk_db, count_queries):
    for n in range(3):
        add_book(f"Volume {n}", f"97800000000{n:02d}", Decimal("1"), "Anon")
    with count_queries() as counter:
        assert restock([f"97800000000{n:02d}" for n in range(3)], 5) == 3
    assert counter.count <= 4  # the select, the savepoint pair and one UPDATE
    with db_session:
        assert sorted(b.stock for b in Book.select()) == [5, 5, 5]


def test_an_explicit_commit_inside_a_test_is_still_undone_at_its_end(pk_db):
    with db_session:
        Author(name="Committed, then rolled back")
        commit()
    with db_session:
        assert Author.get(name="Committed, then rolled back") is not None


def test_the_previous_tests_left_nothing(pk_db):
    with db_session:
        assert Author.select().count() == 0
        assert Book.select().count() == 0
