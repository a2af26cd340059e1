"""06 serialization: JSON-safe to_dict, query-to-JSON without objects, validated from_dict.

Serializes an order with Decimal, datetime and Enum values, nests its lines, turns a query into JSON
bytes straight from the rows, and shows from_dict refusing a bad payload with every problem listed.
"""

from __future__ import annotations

import datetime as dt
import enum
import pathlib
from collections.abc import Callable
from decimal import Decimal

from pony.orm import Database, Required, Set, db_session, select

import ponykit as pk


class Status(enum.Enum):
    """Where an order is."""

    OPEN = "open"
    SHIPPED = "shipped"


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Customer(db.Entity, pk.Serializable):
        __sensitive__ = ("email",)
        name = Required(str)
        email = Required(str)
        orders = Set("Order")

    class Order(db.Entity, pk.Serializable):
        customer = Required(Customer)
        placed = Required(dt.datetime)
        status = Required(Status)
        total = Required(Decimal, 10, 2)
        lines = Set("Line")

    class Line(db.Entity, pk.Serializable):
        order = Required(Order)
        product = Required(str)
        price = Required(Decimal, 10, 2)

    pk.bind_url(db, f"sqlite:///{workdir / 'serialization.db'}?create_db=1")
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        ann = Customer(name="Ann", email="ann@example.com")
        for i in range(3):
            order = Order(
                customer=ann, placed=dt.datetime(2024, 5, i + 1, 9), status=Status.OPEN, total=Decimal(0)
            )
            Line(order=order, product="saddle", price=Decimal("49.5"))
            Line(order=order, product="brush", price=Decimal("7.25"))
            order.total = sum(line.price for line in order.lines)

    with db_session:
        order = Order[1]
        say(f"order.to_json(): {order.to_json().decode()}")
        nested = order.to_json(only=["id", "total"], related={"lines": {"only": ["product", "price"]}})
        say(f"with nested lines: {nested.decode()}")
        say(f"the customer, email left out as sensitive: {Customer[1].to_json().decode()}")
        data = pk.to_json(select(o for o in Order if o.total > 50), only=["id", "placed", "total"])
        say(f"pk.to_json(query), straight from the rows: {data.decode()}")

    with db_session:
        try:
            Order.from_dict({"id": 99, "customer": 7, "status": "lost", "total": "a lot"})
        except pk.ValidationError as exc:
            say("Order.from_dict(bad payload) refused, every problem listed:")
            for error in exc.errors:
                say(f"  {error.path}: {error.message}")
