"""08 diagnostics: a slow query logged with its plan and the index to add, explain(), and a profile report.

Turns on the slow-query log, runs a query on a 12,000-row table by a column without an index, and shows
the log record: the plan (EXPLAIN, never ANALYZE, SELECTs only) and a warning naming the index in Pony
terms. After the index is added, ``explain()`` has nothing to warn about. Then ``profile()`` records a
block with an N+1 loop and writes a self-contained HTML report.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Callable

from pony.orm import Database, Required, Set, db_session, select

import ponykit as pk
from ponykit.diagnostics import explain, set_slow_query_log


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Customer(db.Entity):
        name = Required(str)
        orders = Set("Order")

    class Order(db.Entity):
        customer = Required(Customer)
        placed = Required(int)
        code = Required(str)

    pk.bind_url(db, f"sqlite:///{workdir / 'diagnostics.db'}?create_db=1")
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        pk.bulk_insert(Customer, ({"name": f"customer {i}"} for i in range(200)))
        pk.bulk_insert(
            Order, ({"customer": 1 + i % 200, "placed": i, "code": f"k{i}"} for i in range(12_000))
        )

    slow_log = logging.getLogger("ponykit.sql.slow")
    keep = _Keep()
    slow_log.addHandler(keep)
    slow_log.propagate = False
    set_slow_query_log(db, 0)  # every statement counts as slow here: a real threshold is 100-500 ms
    try:
        with db_session:
            wanted = "k11999"
            found = select(o for o in Order if o.code == wanted)[:]
    finally:
        set_slow_query_log(db, None)
        slow_log.removeHandler(keep)
        slow_log.propagate = True
    record = next(r for r in keep.records if "code" in getattr(r, "db.query.text", ""))
    warnings = getattr(record, "plan.warnings", [])
    say(f"slow query ({getattr(record, 'duration_ms', 0):.1f} ms) found {len(found)} order; its plan:")
    for line in record.getMessage().splitlines()[-4:]:
        say(f"  {line}")
    assert warnings
    assert "Order.code" in str(warnings)

    with db_session:
        db.execute('CREATE INDEX idx_order_code ON "Order" (code)')
    with db_session:
        plan = explain(select(o for o in Order if o.code == wanted))
    say(f"after CREATE INDEX: {plan.render().splitlines()[1].strip()}; warnings: {len(plan.warnings)}")
    assert not plan.warnings

    report = workdir / "profile.html"
    with pk.profile(db, path=report) as prof, db_session:
        for customer in Customer.select().order_by(Customer.id)[:10]:
            customer.orders.count()  # one COUNT per customer: an N+1 pattern
    groups = len(prof.n_plus_one)
    say(f"profile(): {len(prof.statements)} statements, {groups} N+1 group(s); report at {report.name}")
    say(f"  {prof.n_plus_one[0]}")
    assert prof.n_plus_one
    assert report.stat().st_size > 0
