"""Factories from the models: every entity of the app gets valid objects without listing its attributes."""

import pytest
from bookshop.models import Author, Book, Order, Tag, db
from hypothesis import given, settings
from pony.orm import db_session

from ponykit.testing import factory, isolated, strategies

make_book = factory(Book, stock=5)


@pytest.mark.parametrize(
    "entity", sorted(db.entities.values(), key=lambda e: e.__name__), ids=lambda e: e.__name__
)
def test_every_entity_has_a_factory_whose_objects_commit(pk_db, entity):
    make = factory(entity)
    with db_session:
        made = make.create_batch(3)
    with db_session:
        assert entity.select().count() == 3
        assert len({o.get_pk() for o in made}) == 3


def test_an_order_factory_makes_its_book_and_author(pk_db):
    with db_session:
        order = factory(Order)()
        assert order.book.author.name
    with db_session:
        assert (Order.select().count(), Book.select().count(), Author.select().count()) == (1, 1, 1)


@settings(max_examples=15, deadline=None)
@given(strategies.entity(Book))
def test_random_valid_books_commit(values):
    with isolated():
        with db_session:
            make_book(**values)
        with db_session:
            assert Book.select().count() == 1


def test_tags_from_the_factory_are_unique(pk_db):
    with db_session:
        names = [t.name for t in factory(Tag).create_batch(20)]
    assert len(set(names)) == 20
