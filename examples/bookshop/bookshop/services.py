"""The bookshop's service functions: each one transaction, emails sent only after a commit."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from pony.orm import db_session, select

import ponykit as pk

from .models import Author, Book, Order, Tag, db

# Stands in for a mail queue: on_commit appends, so a rolled-back order never sends anything.
outbox: list[str] = []


class OutOfStock(Exception):
    """The order asks for more copies than the shop has."""


@db_session
def add_book(
    title: str, isbn: str, price: Decimal, author: str, tags: Iterable[str] = (), stock: int = 0
) -> int:
    """Add a book (its author and tags made when new); the book's id."""
    writer = Author.get(name=author) or Author(name=author)
    book = Book(
        title=title,
        isbn=isbn,
        price=price,
        stock=stock,
        author=writer,
        tags=[Tag.get(name=t) or Tag(name=t) for t in tags],
    )
    book.flush()
    return int(book.id)


@db_session
def place_order(isbn: str, quantity: int) -> int:
    """Take ``quantity`` copies off the stock and record the order; the order's id."""
    book = Book.get_for_update(isbn=isbn)
    if book is None:
        raise LookupError(f"no book with ISBN {isbn}")
    if book.stock < quantity:
        raise OutOfStock(f"{book.title}: {book.stock} in stock, {quantity} ordered")
    book.stock -= quantity
    order = Order(book=book, quantity=quantity)
    order.flush()
    pk.on_commit(lambda: outbox.append(f"order {order.id}: {quantity} x {isbn}"), db=db)
    return int(order.id)


@db_session
def titles_tagged(tag: str) -> list[str]:
    """The titles of the books with ``tag``, sorted."""
    return sorted(select(b.title for b in Book if tag in b.tags.name))


@db_session
def restock(isbns: Iterable[str], copies: int) -> int:
    """Add ``copies`` to the stock of each book; the number of books changed."""
    books = select(b for b in Book if b.isbn in list(isbns))[:]
    return pk.bulk_update(Book, [{"id": b.id, "stock": b.stock + copies} for b in books])
