"""from_dict / update_from over a tree: nested creation of related objects, entity objects as relation
values, the fields= allow-list, and every error of the whole tree reported once with its path."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pony.orm import Database, Optional, Required, Set, commit, db_session, delete, flush

import ponykit as pk
from ponykit import _pony
from ponykit.errors import FieldError


@pytest.fixture
def m(db: Database) -> Any:
    """Customers, products, orders with lines (one-to-many) and an invoice (one-to-one)."""

    class Customer(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        name = Required(str, 40)
        orders = Set("Order")

    class Product(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        name = Required(str, 40)
        lines = Set("Line")

    class Order(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        customer = Required(Customer)
        note = Optional(str, 100)
        internal = Optional(str, 100, hidden=True)
        lines = Set("Line")
        invoice = Optional("Invoice")
        labels = Set("Label")

    class Line(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        order = Required(Order)
        product = Required(Product)
        qty = Required(int, min=1, max=1000)
        price = Optional(Decimal, 8, 2)

    class Invoice(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        order = Required(Order)
        number = Required(str, 20, unique=True)

    class Label(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        text = Required(str, 20)
        orders = Set(Order)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        Customer(name="Ann")
        for name in ("p1", "p2", "p3"):
            Product(name=name)

    class NS:
        pass

    ns: Any = NS()
    ns.db, ns.Customer, ns.Product = db, Customer, Product
    ns.Order, ns.Line, ns.Invoice, ns.Label = Order, Line, Invoice, Label
    return ns


def _paths(exc: pytest.ExceptionInfo[pk.ValidationError]) -> list[str]:
    return [e.path for e in exc.value.errors]


def _nothing_new(m: Any) -> None:
    """No object of the tree is left in the identity map, and none reaches the database."""
    assert not [o for o in _pony.session_objects(m.db) if isinstance(o, (m.Order, m.Line, m.Invoice))]
    flush()
    assert m.Order.select().count() == m.Line.select().count() == m.Invoice.select().count() == 0


def test_order_with_lines_is_created(m: Any) -> None:
    """The lines are created with their reverse attribute set to the new order; a to-one relation takes
    a new object (created before) and a one-to-one reverse a new object (created after)."""
    with db_session:
        order = m.Order.from_dict(
            {
                "customer": {"name": "Bob"},
                "note": "n",
                "lines": [{"product": 3, "qty": 2}, {"product": 1, "qty": 1, "price": "9.50"}],
                "invoice": {"number": "F-1"},
            }
        )
        commit()
        oid = order.id
    with db_session:
        order = m.Order[oid]
        assert order.customer.name == "Bob"
        assert order.invoice.number == "F-1"
        lines = sorted((ln.product.id, ln.qty, ln.price) for ln in order.lines)
        assert lines == [(1, 1, Decimal("9.50")), (3, 2, None)]


def test_many_to_many_nested(m: Any) -> None:
    """A new object in a many-to-many collection gets the parent in its own collection."""
    with db_session:
        old = m.Label(text="old")
        order = m.Order.from_dict({"customer": 1, "labels": [{"text": "new"}, old]})
        with pytest.raises(pk.ValidationError) as exc:
            order.update_from({"labels": [{"text": "x", "orders": [1]}]})
        assert exc.value.errors == [
            FieldError("labels.0.orders", "set automatically to the Order it is nested in; leave it out")
        ]
        commit()
        oid = order.id
    with db_session:
        assert sorted(lb.text for lb in m.Order[oid].labels) == ["new", "old"]
        assert all([o.id for o in lb.orders] == [oid] for lb in m.Order[oid].labels)


def test_entity_objects_are_relation_values(m: Any) -> None:
    """An entity object of the right class is accepted, a new unsaved one included; another class not."""
    with db_session:
        order = m.Order(customer=m.Customer[1])  # Order[new:...]
        line = m.Line.from_dict({"order": order, "product": m.Product[2], "qty": 3})
        assert line.order is order
        with pytest.raises(pk.ValidationError) as exc:
            m.Line.from_dict({"order": m.Customer[1], "product": [m.Product[1]], "qty": 1})
        assert exc.value.errors[0].message == "expected a Order or its key, got a Customer"
        assert _paths(exc) == ["order", "product"]
        existing = m.Order.from_dict({"customer": 1, "lines": [line, {"product": 1, "qty": 1}]})
        commit()
        assert {ln.qty for ln in existing.lines} == {3, 1}
        assert line.order is existing


def test_every_error_of_the_tree_with_its_path(m: Any) -> None:
    """All problems of parent and children come in one ValidationError; nothing is created."""
    payload = {
        "customer": 99,
        "note": "x" * 101,
        "lines": [
            {"product": 1, "qty": 1},
            {"product": 2, "qty": 0},
            {"product": 7, "qty": "two", "bogus": 1},
            {"qty": 1, "price": "1.234"},
            {"product": 1, "qty": 10**6},
            {"product": 1, "qty": 1, "order": 1},
            {"product": 1, "qty": 1, "id": 5},  # holds Line's key: a reference (other keys ignored)
            "nope",
            {"product": 1, "qty": 1},
            {"product": 1, "qty": 1},
            {"product": 1, "qty": 0},
        ],
        "invoice": {},
    }
    with db_session:
        with pytest.raises(pk.ValidationError) as exc:
            m.Order.from_dict(payload)
        assert _paths(exc) == [
            "customer",
            "invoice.number",
            "lines.1.qty",
            "lines.2.bogus",
            "lines.2.product",
            "lines.2.qty",
            "lines.3.price",
            "lines.3.product",
            "lines.4.qty",
            "lines.5.order",
            "lines.6",
            "lines.7",
            "lines.10.qty",
            "note",
        ]
        errors = {e.path: e.message for e in exc.value.errors}
        assert errors["lines.3.product"] == "missing required attribute"
        assert errors["lines.5.order"] == "set automatically to the new Order it is nested in; leave it out"
        assert errors["lines.6"] == "no Line with primary key 5 exists"
        assert errors["lines.7"] == "invalid key of Line: expected an integer, got string 'nope'"
        _nothing_new(m)
        with pytest.raises(pk.ValidationError) as exc:
            m.Customer.from_dict({"name": "C", "orders": [{"note": "a"}, {"internal": "x"}]})
        assert exc.value.errors == [
            FieldError(
                "orders.1.internal",
                "'internal' is a hidden attribute of Order and cannot be set from input; "
                "pass allow=['orders.internal'] to permit it",
            )
        ]
        _nothing_new(m)
        customer = m.Customer.from_dict(
            {"name": "C", "orders": [{"internal": "x"}]}, allow=["orders.internal"]
        )
        assert [o.internal for o in customer.orders] == ["x"]


def test_late_failure_leaves_nothing(m: Any) -> None:
    """A problem only Pony sees while creating (a unique value already in the identity map) is a
    ValidationError with the path of that object, and the objects created before it are taken back."""
    with db_session:
        m.Invoice(order=m.Order(customer=m.Customer[1]), number="F-1")
        flush()
        assert m.Product[1].name  # loaded by the reference below anyway: only new objects must not stay
        before = set(_pony.session_objects(m.db))
        with pytest.raises(pk.ValidationError) as exc:
            m.Order.from_dict(
                {"customer": 1, "lines": [{"product": 1, "qty": 1}], "invoice": {"number": "F-1"}}
            )
        assert _paths(exc) == ["invoice"]
        assert "F-1" in str(exc.value)
        assert set(_pony.session_objects(m.db)) == before
        commit()
        assert (m.Order.select().count(), m.Line.select().count(), m.Invoice.select().count()) == (1, 0, 1)


def test_fields_allow_list(m: Any) -> None:
    """Only attributes named in fields= may be set, nested ones by dotted path; typos are set-up errors."""
    fields = ["customer", "note", "lines.product", "lines.qty"]
    with db_session:
        with pytest.raises(pk.ValidationError) as exc:
            m.Order.from_dict(
                {
                    "customer": 1,
                    "invoice": {"number": "x"},
                    "lines": [{"product": 1, "qty": 1, "price": "1"}],
                },
                fields=fields,
            )
        errors = {e.path: e.message for e in exc.value.errors}
        assert set(errors) == {"invoice", "lines.0.price"}  # "lines" itself is implied by "lines.qty"
        with pytest.raises(pk.ValidationError) as exc:
            m.Order.from_dict(
                {"customer": 1, "lines": [{"product": 1, "qty": 1, "price": "1"}]}, fields=fields
            )
        assert _paths(exc) == ["lines.0.price"]
        assert "'price' is not in fields= (this input may set only ['product', 'qty'])" in str(exc.value)
        # allow= is still needed for protected attributes, fields= does not open them
        with pytest.raises(pk.ValidationError, match="hidden attribute"):
            m.Order.from_dict({"customer": 1, "internal": "x"}, fields=["customer", "internal"])
        order = m.Order.from_dict({"customer": 1, "lines": [{"product": 2, "qty": 4}]}, fields=fields)
        commit()
        assert [ln.qty for ln in order.lines] == [4]
        with pytest.raises(pk.ConfigurationError, match="Order has no attribute 'nope'"):
            m.Order.from_dict({"customer": 1}, fields=["customer", "nope"])
        with pytest.raises(pk.ConfigurationError, match="Order.note is not a relation"):
            m.Order.from_dict({"customer": 1}, fields=["note.x"])


def test_update_from_nested(m: Any) -> None:
    """update_from takes the same tree: the array is the collection's new content; a nested object may
    name its existing parent, not another one."""
    with db_session:
        order = m.Order.from_dict({"customer": 1, "lines": [{"product": 1, "qty": 1}]})
        commit()
        first = next(iter(order.lines))
        with pytest.raises(pk.ValidationError) as exc:
            order.update_from({"note": "y", "lines": [first, {"product": 9, "qty": 1, "order": 12345}]})
        assert _paths(exc) == ["lines.1.order", "lines.1.product"]
        assert order.note == ""
        assert len(order.lines) == 1
        with pytest.raises(pk.ValidationError) as exc:
            order.update_from({"lines": [{"product": 2, "qty": 5, "order": {"note": "x"}}]})
        assert exc.value.errors == [
            FieldError("lines.0.order", "expected a Order key or an object with ['id']")
        ]
        order.update_from({"note": "y", "lines": [first, {"product": 2, "qty": 5, "order": order.id}]})
        commit()
        assert sorted(ln.qty for ln in order.lines) == [1, 5]


_line = st.fixed_dictionaries(
    {
        "product": st.sampled_from([1, 2, 3, 9]),  # 9 does not exist
        "qty": st.sampled_from([1, 7, 0, -1, 1001, "x"]),
        "price": st.sampled_from([None, "1.50", "1.505", "1234567.00"]),
    }
)


def _bad_leaves(lines: list[dict[str, Any]]) -> set[str]:
    """The oracle: the invalid leaves of a tree, computed from the values alone."""
    bad = set()
    for i, line in enumerate(lines):
        if line["product"] == 9:
            bad.add(f"lines.{i}.product")
        if not (isinstance(line["qty"], int) and 1 <= line["qty"] <= 1000):
            bad.add(f"lines.{i}.qty")
        if line["price"] in ("1.505", "1234567.00"):
            bad.add(f"lines.{i}.price")
    return bad


@settings(max_examples=20)
@given(lines=st.lists(_line, max_size=6), good_customer=st.booleans())
def test_reported_paths_are_the_invalid_leaves(
    m: Any, lines: list[dict[str, Any]], good_customer: bool
) -> None:
    """Hypothesis over trees of valid and invalid children: the reported paths are exactly the invalid
    leaves; a valid tree is stored as given (read back in a new session)."""
    with db_session:
        delete(ln for ln in m.Line)
        delete(o for o in m.Order)
    bad = _bad_leaves(lines) | (set() if good_customer else {"customer"})
    with db_session:
        payload = {"customer": 1 if good_customer else 42, "lines": lines}
        if bad:
            with pytest.raises(pk.ValidationError) as exc:
                m.Order.from_dict(payload)
            assert set(_paths(exc)) == bad
            assert len(_paths(exc)) == len(bad)
            _nothing_new(m)
            return
        order = m.Order.from_dict(payload)
        flush()
        oid = order.id
    with db_session:
        stored = sorted(
            (ln.product.id, ln.qty, "" if ln.price is None else str(ln.price)) for ln in m.Order[oid].lines
        )
    # None sorts as "" (a price is never empty text), so rows that differ only in price still order.
    assert stored == sorted((ln["product"], ln["qty"], ln["price"] or "") for ln in lines)
