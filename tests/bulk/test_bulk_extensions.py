"""BulkExtension.wants_old: bulk_update's statements return the old values an extension asks for
(PostgreSQL), or tell it to read them itself (elsewhere)."""

from __future__ import annotations

from typing import Any

from pony.orm import Database, Optional, Required, db_session

import ponykit as pk
from ponykit.bulk._extensions import BulkExtension, Change, register_extension


class Spy(BulkExtension):
    """Asks for the old ``qty`` and keeps what each hook saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, Any]] = []

    def wants_old(self, change: Change) -> tuple[str, ...]:
        return ("qty",)

    def before_change(self, change: Change) -> Any:
        self.seen.append(("before", change.old_columns, change.old))
        return None

    def after_change(self, change: Change, token: Any) -> None:
        self.seen.append(("after", change.old_columns, change.old))


def test_old_values_come_back_from_the_update_on_postgres_only(db: Database, backend: Any) -> None:
    class Thing(db.Entity):
        name = Required(str)
        qty = Required(int)
        note = Optional(str, nullable=True)

    spy = Spy()
    register_extension(Thing, spy)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        pk.bulk_insert(Thing, [{"id": i, "name": f"t{i}", "qty": i * 10} for i in (1, 2, 3)])
    with db_session:
        matched = pk.bulk_update(
            Thing,
            [
                {"id": 1, "qty": 11},
                {"id": 2, "name": "x"},  # another group of columns, another statement
                {"id": 1, "name": "y"},  # row 1 again: its second statement sees qty 11
                {"id": 9, "qty": 1},  # no such row
            ],
        )
        assert matched == 3
        assert [(t.id, t.name, t.qty) for t in Thing.select().order_by(Thing.id)] == [
            (1, "y", 11),
            (2, "x", 20),
            (3, "t3", 30),
        ]
    (_, before_cols, before_old), (_, after_cols, after_old) = spy.seen[-2:]
    if backend.name == "postgres":
        assert before_cols == after_cols == ("id", "qty")
        assert before_old is None  # known after the statements only
        assert sorted(after_old[:1]) == [(1, 10)]  # the first statement: qty as it was before the batch
        assert sorted(after_old[1:]) == [(1, 11), (2, 20)]
    else:
        assert (before_cols, before_old, after_cols, after_old) == ((), None, (), None)
