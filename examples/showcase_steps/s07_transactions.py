"""07 transactions: a retry that succeeds, a savepoint that rolls back one part, and isolation.

A service function decorated with ``transaction(retry=...)`` meets a real optimistic-check conflict on its
first attempt (another writer changed the row it read), is rolled back and runs again; it is applied once.
Then a savepoint undoes one part of a transaction, in the database and in the session's objects, while
the rest commits.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from pony.orm import Database, Required, Set, db_session, select

import ponykit as pk


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Book(db.Entity):
        title = Required(str)
        stock = Required(int)
        orders = Set("Order")

    class Order(db.Entity):
        book = Required(Book)
        quantity = Required(int)

    pk.bind_url(db, f"sqlite:///{workdir / 'transactions.db'}?create_db=1")
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Book(title="Dune", stock=10)

    attempts: list[int] = []
    committed: list[str] = []

    @pk.transaction(retry=3, db=db)
    def order(book_id: int, quantity: int) -> None:
        attempts.append(len(attempts) + 1)
        book = Book[book_id]
        if len(attempts) == 1:
            # Another writer takes one copy between our read and our write (raw SQL stands in for it).
            db.execute("UPDATE book SET stock = stock - 1 WHERE id = $book_id")
        book.stock -= quantity  # Pony's optimistic check at flush: the row is no longer what we read
        Order(book=book, quantity=quantity)
        pk.on_commit(lambda: committed.append(f"order of {quantity}"))

    order(1, 2)
    with db_session:
        stock = Book[1].stock
    say(f"order(): {len(attempts)} attempts (the first met an OptimisticCheckError and rolled back)")
    say(f"stock is {stock} (10 - 2, applied once); on_commit ran {committed}")
    assert attempts == [1, 2]
    assert stock == 8
    assert committed == ["order of 2"]

    with pk.transaction(db=db):
        book = Book[1]
        Order(book=book, quantity=1)  # kept
        book.stock -= 1
        try:
            with pk.savepoint(db):
                book.stock -= 100  # a bulk order that cannot be served
                Order(book=book, quantity=100)
                pk.on_commit(lambda: committed.append("order of 100"))
                if book.stock < 0:
                    raise ValueError("not enough stock")
        except ValueError:
            pass
        in_session = select(o for o in Order).count()
        say(f"the savepoint rolled back: stock {book.stock} in the session, {in_session} orders, not 3")
        assert book.stock == 7
    with db_session:
        stock = Book[1].stock
        orders = sorted(o.quantity for o in Order.select())
    say(f"committed: stock {stock}, orders {orders}, on_commit ran {committed}")
    assert stock == 7
    assert orders == [1, 2]
    assert committed == ["order of 2"]

    with pk.transaction(isolation="serializable", read_only=True, db=db):
        count = select(o for o in Order).count()
        total = sum(select(o.quantity for o in Order))
    say(f"a read-only serializable transaction: {count} order(s), {total} copies, one snapshot")
