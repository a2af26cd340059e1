"""05 cache: cached_select, @cached_query and @cached, invalidated only after commit.

Caches a query and a service function in a MemoryCache, shows a hit running no SQL, a session reading
its own uncommitted writes, and a commit invalidating the entries.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

from pony.orm import Database, Required, db_session, rollback, select

import ponykit as pk
from ponykit.query import MemoryCache


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Product(db.Entity):
        name = Required(str)
        price = Required(int)

    pk.bind_url(db, f"sqlite:///{workdir / 'cache.db'}?create_db=1")
    kit = pk.attach(db, cache=MemoryCache(ttl=300))
    db.generate_mapping(create_tables=True)
    with db_session:
        for i in range(20):
            Product(name=f"product {i}", price=10 * i)

    statements: list[str] = []
    kit.add_execute_listener(lambda db, sql, *rest: statements.append(sql))

    def cheap() -> Any:
        return select(p for p in Product if p.price < 100).order_by(Product.id)

    with db_session:
        first = pk.cached_select(cheap())
    say(f"first cached_select: {len(first)} products, {len(statements)} SQL statement(s)")
    statements.clear()
    with db_session:
        again = pk.cached_select(cheap())
        say(f"second one, new session: {len(again)} real entities ({again[0]!r}...), {len(statements)} SQL")

    with db_session:
        Product(name="bargain", price=1)
        mine = pk.cached_select(cheap())
        say(f"inside a session that wrote a Product: {len(mine)} (reads its own write), then rollback")
        rollback()
    with db_session:
        say(f"after the rollback the entry is still valid: {len(pk.cached_select(cheap()))} products")

    built: list[int] = []

    @pk.cached_query
    def under(price: int) -> Any:
        built.append(price)
        return select((p.name, p.price) for p in Product if p.price < price).order_by(2)

    statements.clear()
    for _ in range(3):
        rows = under(30)  # value results need no db_session
    say(f"@cached_query under(30) three times: {rows}, built once: {built}, {len(statements)} SQL")

    @pk.cached(depends_on=[Product])
    def price_list() -> dict[str, int]:
        with db_session:
            return {p.name: p.price for p in Product.select() if p.price < 30}

    price_list()
    price_list()
    say(f"@cached price_list twice: {price_list.cache_info()}")  # type: ignore[attr-defined]
    with db_session:
        Product[1].price = 25
    say(f"after a commit changed a price: {price_list()} ({price_list.cache_info()})")  # type: ignore[attr-defined]
    with db_session:
        say(f"and cached_select sees it too: {[p.price for p in pk.cached_select(cheap())][:3]}")
