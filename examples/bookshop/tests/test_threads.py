"""Code running on other threads: a request served by a worker thread sees the test's rows; tests that
need real commits and concurrency are marked ponykit_transactional."""

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from bookshop.models import Book, Order
from bookshop.services import OutOfStock, add_book, place_order
from pony.orm import db_session


def test_a_worker_thread_sees_the_test_rows(pk_db):
    add_book("Ulysses", "9780199535675", Decimal("12"), "James Joyce", stock=2)
    result = []
    worker = threading.Thread(target=lambda: result.append(place_order("9780199535675", 1)))
    worker.start()
    worker.join()
    assert len(result) == 1
    with db_session:
        assert Book.get(isbn="9780199535675").stock == 1


@pytest.mark.ponykit_transactional
def test_concurrent_orders_never_oversell(pk_db):
    add_book("Dubliners", "9780199536436", Decimal("9"), "James Joyce", stock=10)

    def order() -> bool:
        try:
            place_order("9780199536436", 1)
            return True
        except OutOfStock:
            return False

    with ThreadPoolExecutor(4) as pool:
        placed = sum(pool.map(lambda _: order(), range(16)))
    with db_session:
        assert Book.get(isbn="9780199536436").stock == 10 - placed
        assert Order.select().count() == placed
    assert placed >= 1


def test_after_a_transactional_test_the_tables_are_empty(pk_db):
    with db_session:
        assert Book.select().count() == 0
        assert Order.select().count() == 0
