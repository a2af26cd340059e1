"""03 bulk writes: 50,000 rows in one call, validated as Pony would, and a session that stays consistent.

Inserts rows from a generator, updates and upserts by key, deletes by query, and shows that an object
loaded before the bulk update sees the new value and that an invalid row names itself.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from decimal import Decimal

from pony.orm import Database, Optional, Required, db_session, select

import ponykit as pk


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Product(db.Entity):
        sku = Required(str, 20, unique=True)
        name = Required(str, 100)
        price = Required(Decimal, 10, 2)
        note = Optional(str)

    pk.bind_url(db, f"sqlite:///{workdir / 'bulk.db'}?create_db=1")
    pk.attach(db)
    db.generate_mapping(create_tables=True)

    n = 50_000
    rows = ({"sku": f"SKU-{i:06d}", "name": f"product {i}", "price": Decimal(i % 500) / 4} for i in range(n))
    start = time.perf_counter()
    with db_session:
        count = pk.bulk_insert(Product, rows)
    say(f"bulk_insert wrote {count:,} rows from a generator in {time.perf_counter() - start:.2f}s")

    with db_session:
        first = Product.get(sku="SKU-000000")
        say(f"loaded before the update: {first.sku} costs {first.price}")
        pk.bulk_update(Product, [{"id": first.id, "price": Decimal("19.99")}])
        say(f"after bulk_update, the same object shows {first.price} (no UnrepeatableReadError)")
        result = pk.bulk_upsert(
            Product,
            [
                {"sku": "SKU-000001", "name": "renamed", "price": Decimal(1)},
                {"sku": "NEW-1", "name": "new", "price": 2},
            ],
            conflict="sku",
        )
        say(f"bulk_upsert on sku: {result.inserted} inserted, {result.updated} updated")
        gone = pk.bulk_delete(Product, select(p for p in Product if p.price == 0))
        say(f"bulk_delete by query removed {gone:,} free products")

    try:
        with db_session:
            pk.bulk_insert(Product, [{"sku": "OK", "name": "fine", "price": 1}, {"sku": "BAD", "price": 1}])
    except pk.BulkWriteError as exc:
        say(f"an invalid row is refused before its batch is written: row {exc.row_index}, {exc.attribute!r}")
    with db_session:
        say(f"rows now: {select(p for p in Product).count():,} (the failed call left nothing behind)")
    db.disconnect()
