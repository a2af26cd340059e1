"""The shop's entities: customers, products, orders and their lines."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from pony.orm import Database, Optional, PrimaryKey, Required, Set

import ponykit as pk


def utc_now() -> dt.datetime:
    """Now in UTC, naive (as the column stores it): the API adds the UTC offset back."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def define(db: Database) -> dict[str, type]:
    """Declare the entities on ``db``; return them by name."""

    class Customer(db.Entity, pk.Serializable):
        id = PrimaryKey(int, auto=True)
        name = Required(str, max_len=80)
        email = Required(str, max_len=120, unique=True)
        orders = Set("Order")

    class Product(db.Entity, pk.Serializable):
        id = PrimaryKey(int, auto=True)
        name = Required(str, max_len=80)
        price = Required(Decimal, precision=10, scale=2, min=Decimal("0.01"))
        stock = Required(int, min=0, max=1_000_000)
        lines = Set("OrderLine")

    class Order(db.Entity, pk.Serializable):
        id = PrimaryKey(int, auto=True)
        customer = Required(Customer)
        created = Required(dt.datetime, default=utc_now)
        note = Optional(str, max_len=200)
        lines = Set("OrderLine")

    class OrderLine(db.Entity, pk.Serializable):
        order = Required(Order)
        product = Required(Product)
        qty = Required(int, min=1)
        PrimaryKey(order, product)

    return {"Customer": Customer, "Product": Product, "Order": Order, "OrderLine": OrderLine}
