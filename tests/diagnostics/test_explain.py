"""explain() and explain_sql() on live servers: plans of Pony queries, warnings and their index hints,
analyze, refusals, and plans that carry no parameter values."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import Database, Required, Set, count, db_session, desc, select

import ponykit as pk
from ponykit.diagnostics import count_queries, detect_n_plus_one, explain, explain_sql
from ponykit.errors import ConfigurationError, OptionError


def _declare(db: Database) -> tuple[Any, Any]:
    class Customer(db.Entity):
        name = Required(str)
        orders = Set("Order")

    class Order(db.Entity):
        customer = Required(Customer)
        code = Required(str)
        placed = Required(int)
        total = Required(int)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Customer, Order


def _fill(customer: Any, order: Any, orders: int) -> None:
    with db_session:
        pk.bulk_insert(customer, ({"name": f"c{i}"} for i in range(100)))
    with db_session:
        rows = (
            {"customer": 1 + i % 100, "code": f"k{i}", "placed": i, "total": i % 1000} for i in range(orders)
        )
        pk.bulk_insert(order, rows)


@pytest.fixture
def shop(db: Database) -> tuple[Database, Any, Any]:
    customer, order = _declare(db)
    _fill(customer, order, 300)
    return db, customer, order


def test_plans_of_simple_filtered_ordered_and_joined_queries(shop: Any) -> None:
    _db, _customer, order = shop
    code, total = "k7", 7
    with db_session, count_queries() as counter:
        queries = {
            "simple": order.select(),
            "filtered": select(o for o in order if o.code == code),
            "ordered": select(o for o in order if o.total == total).order_by(order.placed),
            "limited": select(o for o in order).order_by(desc(order.placed)).limit(5),
            "joined": select((o, o.customer.name) for o in order if o.customer.name == "c5"),
        }
        plans = {name: explain(query) for name, query in queries.items()}
    assert counter.count == 0  # EXPLAINs and row counts never pass through Pony's provider
    for name, plan in plans.items():
        assert plan.nodes, name
        assert "order" in plan.tables, (name, plan.render())
        assert plan.render().strip(), name
        assert plan.backend in ("postgresql", "mariadb", "sqlite")
        json.dumps(plan.to_dict())
        assert not plan.analyzed and plan.total_ms is None
    assert {"order", "customer"} <= set(plans["joined"].tables)
    if plans["simple"].backend != "sqlite":
        assert any(n.estimated_rows is not None for n in plans["simple"].walk())
    assert all(not w for w in (plans["filtered"].warnings,))  # 300 rows: too small to warn about


def test_explain_is_invisible_to_the_counters(shop: Any) -> None:
    """Five EXPLAINs of one shape are not an N+1 pattern, nor statements at all."""
    _db, _customer, order = shop
    with db_session, count_queries() as counter, detect_n_plus_one(threshold=2):
        for value in range(5):
            explain(select(o for o in order if o.total == value))
    assert counter.count == 0


def test_explain_sql_on_a_statement_listeners_cursor(shop: Any) -> None:
    """What profile() does: plan each SELECT right after it ran, on its own cursor's connection, from a
    statement listener, while Pony has not read its rows yet."""
    db, _customer, order = shop
    plans: list[Any] = []

    def listener(db_: Database, cursor: Any, sql: str, arguments: Any, seconds: float, error: Any) -> None:
        if error is None and sql.lstrip().upper().startswith("SELECT"):
            plans.append(explain_sql(db_, sql, arguments, cursor=cursor))

    remove = pk.get_kit(db).add_statement_listener(listener)
    try:
        with db_session, count_queries() as counter:
            wanted = "k3"
            found = select(o for o in order if o.code == wanted)[:]
            assert [o.code for o in found] == ["k3"]  # the rows are intact after the EXPLAIN
    finally:
        remove()
    assert counter.count == 1
    assert len(plans) == 1 and plans[0].tables == ["order"]


def test_analyze_measures_a_select(shop: Any) -> None:
    _db, _customer, order = shop
    total = 3
    with db_session:
        plan = explain(select(o for o in order if o.total == total), analyze=True)
    assert plan.analyzed
    assert plan.total_ms is not None and plan.total_ms >= 0
    if plan.backend == "sqlite":
        assert plan.rows == 1  # SQLite: the query was run and its rows counted
    else:
        assert any(n.actual_rows is not None for n in plan.walk())


def test_analyze_never_runs_a_write(shop: Any, backend: Any) -> None:
    db, _customer, order = shop
    with db_session:
        before = order[1].total
        with pytest.raises(OptionError, match="analyze"):
            explain_sql(db, 'UPDATE "order" SET total = total + 1', analyze=True)
        if backend.name != "sqlite":  # Pony writes no FOR UPDATE on SQLite (it locks the whole file)
            with pytest.raises(OptionError, match="analyze"):
                explain(order.select().for_update(), analyze=True)
        with pytest.raises(OptionError, match="analyze"):
            explain_sql(db, "WITH x AS (SELECT 1) SELECT * FROM x FOR UPDATE", analyze=True)
    with db_session:
        assert order[1].total == before


def test_explain_without_analyze_of_a_write_does_not_apply_it(shop: Any, backend: Any) -> None:
    db, _customer, order = shop
    table = "`order`" if backend.name == "mysql" else '"order"'
    with db_session:
        before = order[1].total
        plan = explain_sql(db, f"UPDATE {table} SET total = total + 1 WHERE id = 1")
        assert plan.nodes
    with db_session:
        assert order[1].total == before


def test_refusals(shop: Any) -> None:
    db, _customer, order = shop
    with pytest.raises(ConfigurationError, match="db_session"):
        explain(order.select())
    with db_session:
        with pytest.raises(OptionError, match="Pony query"):
            explain("SELECT 1")
        with pytest.raises(OptionError, match=r"limit"):
            explain(order.select()[:2])  # already fetched
        with pytest.raises(OptionError, match="EXPLAIN"):
            explain_sql(db, "EXPLAIN SELECT 1")
        with pytest.raises(OptionError, match="several"):
            explain_sql(db, "SELECT 1; DELETE FROM customer")
        with pytest.raises(OptionError):
            explain_sql(db, "CREATE TABLE x (a int)")
        with pytest.raises(OptionError, match="threshold"):
            explain(order.select(), threshold=0)
    with db_session:
        assert order.select().count() == 300  # nothing was deleted


def test_a_plan_holds_no_parameter_values(shop: Any) -> None:
    """Values bound to the statement (which may be sensitive) and literals Pony inlined are hidden in
    every part of the plan: raw output, nodes, render(), to_dict()."""
    _db, _customer, order = shop
    secret = "SECRET-4711-marker"
    with db_session:
        plans = [
            explain(select(o for o in order if o.code == secret)),
            explain(select(o for o in order if o.code == "SECRET-4711-inline")),
            explain(select(o for o in order if o.code == secret), analyze=True),
        ]
    for plan in plans:
        data = plan.to_dict()
        assert data.pop("sql") == plan.sql  # the statement's text: inlined constants are program text
        dumped = json.dumps(data) + plan.render() + repr((plan.raw, plan.nodes, plan.warnings))
        assert "SECRET-4711" not in dumped


_SPECIAL = st.sampled_from(["'", '"', "\\", "`", "\n", "\t", "%", "%s", "?", "$1", "é", "\u2028", "😀", "''"])
_ANY_CHAR = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


@given(text=st.lists(st.one_of(_SPECIAL, _ANY_CHAR), max_size=12).map("".join))
def test_no_value_of_any_text_reaches_a_plan(shop: Any, text: str) -> None:
    """Quotes, backslashes, newlines, non-ASCII: whatever the value, the plan shows ``?`` (MariaDB
    prints such values into its JSON unescaped; PostgreSQL doubles quotes and keeps backslashes)."""
    _db, _customer, order = shop
    value = "MARK" + text + "KRAM"
    with db_session:
        plan = explain(select(o for o in order if o.code == value))
    dumped = json.dumps(plan.to_dict(), ensure_ascii=False) + plan.render()
    assert "MARK" not in dumped and "KRAM" not in dumped
    assert plan.nodes


def test_in_an_open_transaction_explain_leaves_it_usable(shop: Any) -> None:
    """On PostgreSQL the EXPLAIN runs under a savepoint: a failing one does not abort the caller's
    transaction; elsewhere a failed statement never aborts a transaction."""
    db, _customer, order = shop
    with db_session:
        order[1].total = 999
        db.flush()
        with pytest.raises(Exception):  # noqa: PT011 - each driver raises its own class
            explain_sql(db, "SELECT no_such_column FROM customer")
        assert select(o.total for o in order if o.id == 1).first() == 999
    with db_session:
        assert order[1].total == 999


@pytest.fixture
def large(db: Database) -> tuple[Database, Any]:
    customer, order = _declare(db)
    _fill(customer, order, 100_000)
    return db, order


def test_warnings_name_the_missing_index_then_nothing_once_it_exists(large: Any, backend: Any) -> None:
    """A full scan of a 100k-row table names the index to add in Pony terms; after CREATE INDEX and
    ANALYZE the same queries have no warning."""
    db, order = large
    code, total = "k500", 5
    filtered = select(o for o in order if o.code == code)
    ordered = select(o for o in order if o.total == total).order_by(order.placed)
    grouped = select((o.total, count(o)) for o in order)
    with db_session:
        before = explain(filtered)
        sorted_before = explain(ordered)
        grouped_plan = explain(grouped)
    scans = [w for w in before.warnings if w.kind == "full_scan"]
    assert scans and scans[0].table == "order"
    assert scans[0].suggestion.startswith("Order.code: add index=True"), before.render()
    assert sorted_before.warnings[0].suggestion.startswith("composite_index(Order.total, Order.placed)")
    assert grouped_plan.warnings  # reads and sorts (or groups) all 100,000 rows
    q = "`" if backend.name == "mysql" else '"'
    table = f"{q}order{q}"
    with db_session:
        db.execute(f"CREATE INDEX idx_order_code ON {table} ({q}code{q})")
        db.execute(f"CREATE INDEX idx_order_total_placed ON {table} ({q}total{q}, {q}placed{q})")
        db.execute(
            {"sqlite": "ANALYZE", "postgres": f"ANALYZE {table}"}.get(backend.name, f"ANALYZE TABLE {table}")
        )
    with db_session:
        after = explain(filtered)
        sorted_after = explain(ordered)
    assert after.warnings == (), after.render()
    assert sorted_after.warnings == (), sorted_after.render()
    assert any(n.index == "idx_order_code" for n in after.walk()), after.render()
