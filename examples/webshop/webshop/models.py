"""The shop's entities: customers, products, orders and their lines.

``Customer`` shows ponykit's validation (``@pk.validates`` for one attribute, ``clean()`` for the whole
object: both run in ``from_dict`` with Pony's own checks, one 422 listing every problem, and again at the
flush); ``Product`` is ``Versioned`` (its ETag makes price and stock changes conditional: ``If-Match``).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from pony.orm import Database, Optional, PrimaryKey, Required, Set

import ponykit as pk
from ponykit.errors import FieldError
from ponykit.mixins import Versioned


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

        @pk.validates("email")
        def check_email(self, name: str, value: str) -> None:
            local, at, domain = value.partition("@")
            if not (local and at and domain) or any(c.isspace() for c in value) or "@" in domain:
                raise ValueError("must be an e-mail address (name@domain)")

        def clean(self) -> list[FieldError] | None:
            # A rule on two attributes: clean() sees the object with all its values set.
            if self.name.strip().casefold() == self.email.casefold():
                return [FieldError("name", "must not be the e-mail address")]
            return None

    class Product(db.Entity, pk.Serializable, Versioned):
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
