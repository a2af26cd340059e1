"""Per-test isolation, property-tested: whatever one test writes, the next one sees none of it."""

from decimal import Decimal

from bookshop.models import Author, Book, Tag
from bookshop.services import add_book
from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import db_session

from ponykit.testing import isolated

# Lowercase ASCII: MariaDB's default collation would take "a" and "A" (or "a" and "a ") for one name.
names = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=30)


@settings(max_examples=20, deadline=None)
@given(st.lists(names, min_size=1, max_size=8, unique=True), st.lists(st.integers(0, 50), max_size=8))
def test_1_writes_random_rows(authors, stocks):
    # isolated(): each example starts from the test's state, as each test starts from empty tables.
    with isolated():
        with db_session:
            for name in authors:
                Author(name=name)
        for i, stock in enumerate(stocks):
            add_book(
                f"Book {i}", f"97811111111{i:02d}", Decimal("2.50"), authors[0], tags=[f"t{i}"], stock=stock
            )
        with db_session:
            assert Author.select().count() == len(authors)


def test_2_sees_none_of_them():
    with db_session:
        assert Author.select().count() == 0
        assert Book.select().count() == 0
        assert Tag.select().count() == 0
