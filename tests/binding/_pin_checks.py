"""What the PostgreSQL and MariaDB replica tests share to check read-your-writes pins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pony.orm import Database, db_session

import ponykit as pk
from ponykit.binding import current_pin, replica_status, use_pin


def pins_after(db: Database, work: Callable[[], Any]) -> tuple[bool, int]:
    """Run ``work`` in a fresh pin scope: whether it left a pin, and how many pins ``db`` recorded."""
    before = replica_status(db)["pins"]
    with use_pin():
        work()
        return current_pin() is not None, replica_status(db)["pins"] - before


def writes_of_every_kind(db: Database, account: Any) -> tuple[Callable[[], None], ...]:
    """A write of each kind, each in its own session: an ORM flush, raw SQL, a bulk write."""

    def orm_write() -> None:
        with db_session:
            account[0].value = 1

    def raw_write() -> None:
        with db_session:
            db.execute("UPDATE account SET value = 2 WHERE id = 1")

    def bulk_write() -> None:
        with db_session:
            pk.bulk_update(account, [{"id": 0, "value": 3}])

    return orm_write, raw_write, bulk_write
