"""Factories (issue #23 item 4): valid objects of any entity, on every backend.

The central test declares random sets of entities (hypothesis draws the attribute types and options,
keys, relations and an inheritance pair), maps them on the test's backend, and checks that
``factory(E)()`` makes 50 objects of every entity that flush and commit, with distinct unique values,
and that the values of ``strategies.entity(E)`` construct and commit too.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pony.orm import (
    Database,
    Json,
    Optional,
    PrimaryKey,
    Required,
    Set,
    commit,
    composite_key,
    db_session,
    flush,
    rollback,
)

import ponykit as pk
from ponykit.errors import FactoryError, OptionError
from ponykit.testing import factory
from ponykit.testing import strategies as pks

KEY = pk.security.KeyRing.generate_key()


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Point:
    """A type of the application's own, which the factory has no rule for."""

    def __init__(self, text: str) -> None:
        self.text = text


pk.types.register_type(Point, storage=str, to_db=lambda p: p.text, from_db=Point, replace=True)


# ---------------------------------------------------------------------------------------------------------
# Random models


@dataclass
class AttrSpec:
    name: str
    kind: str  # "Required" | "Optional"
    py_type: Any
    args: tuple[Any, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EntitySpec:
    name: str
    attrs: list[AttrSpec]
    pk: list[str]  # non-auto primary key attribute names ([] for an auto id)
    composite: list[str]  # a composite_key of these attributes ([] for none)


# Types that may be unique (MariaDB cannot index TEXT/BLOB without a length, so str needs max_len).
_KEYABLE = (str, int, Decimal, dt.date, dt.datetime, uuid.UUID, ipaddress.IPv4Address)
_TYPES = (
    *_KEYABLE,
    float,
    bool,
    dt.time,
    dt.timedelta,
    bytes,
    Json,
    Color,
    pk.types.AwareDatetime,
    pk.types.IPNetwork,
)


@st.composite
def attr_specs(draw: st.DrawFn, name: str, keyable: bool = False) -> AttrSpec:
    choices = _KEYABLE if keyable else _TYPES
    py_type = draw(st.sampled_from(choices))
    spec = AttrSpec(name, "Required" if keyable else draw(st.sampled_from(["Required", "Optional"])), py_type)
    if py_type is str:
        max_len = draw(st.integers(4, 40)) if keyable else draw(st.none() | st.integers(1, 40))
        if max_len is not None:
            spec.args = (max_len,)
        if not keyable and spec.kind == "Optional" and draw(st.booleans()):
            spec.options["nullable"] = True
    elif py_type is int:
        size = draw(st.sampled_from([None, 16, 64]))
        if size:
            spec.options["size"] = size
        if draw(st.booleans()):
            spec.options["min"] = draw(st.integers(-1000, 1000))
            # Keys need room: every object made for a Required reference takes a number too.
            spec.options["max"] = spec.options["min"] + draw(st.integers(1000 if keyable else 0, 5000))
    elif py_type is float and draw(st.booleans()):
        spec.options["min"] = draw(st.floats(-100, 100))
        spec.options["max"] = spec.options["min"] + draw(st.floats(1, 100))
    elif py_type is Decimal:
        precision = draw(st.integers(5, 12))
        spec.args = (precision, draw(st.integers(1, 3)))
        if draw(st.booleans()):
            spec.options["max"] = Decimal(draw(st.integers(60, 999)))
    if keyable:
        return spec
    if py_type in _KEYABLE and draw(st.integers(0, 4)) == 0:
        spec.options["unique"] = True  # 50 objects need 50 values: a wide enough domain
        if py_type is str:
            spec.args = (max(spec.args[0] if spec.args else 40, 4),)
        if py_type is int and "max" in spec.options:
            spec.options["max"] = max(spec.options["max"], spec.options["min"] + 1000)
    elif py_type in (str, int, bool) and "min" not in spec.options and draw(st.integers(0, 3)) == 0:
        spec.options["default"] = {str: "d", int: 7, bool: True}[py_type]
    return spec


@st.composite
def model_specs(draw: st.DrawFn) -> tuple[list[EntitySpec], list[tuple[int, int, str]]]:
    entities = []
    for i in range(draw(st.integers(2, 4))):
        count = draw(st.integers(1, 5))
        attrs = [draw(attr_specs(f"a{i}{j}")) for j in range(count)]
        pk_names: list[str] = []
        composite: list[str] = []
        shape = draw(st.sampled_from(["auto", "auto", "pk", "pk2", "composite"]))
        if shape in ("pk", "pk2", "composite"):
            keys = [draw(attr_specs(f"k{i}{j}", keyable=True)) for j in range(1 if shape == "pk" else 2)]
            attrs += keys
            if shape == "composite":
                composite = [k.name for k in keys]
            else:
                pk_names = [k.name for k in keys]
        entities.append(EntitySpec(f"E{i}", attrs, pk_names, composite))
    # Relations from a later entity to an earlier one: Required references never form a cycle.
    relations = []
    for later, earlier in itertools.combinations(range(len(entities)), 2):
        kind = draw(st.sampled_from(["none", "required", "optional", "many", "one_one", "req_one"]))
        if kind != "none":
            relations.append((earlier, later, kind))
    return entities, relations


_serial = itertools.count()


def declare(db: Database, specs: list[EntitySpec], relations: list[tuple[int, int, str]]) -> list[Any]:
    """The entity classes of ``specs`` on ``db``, plus ``Sub``, a subclass of the first one."""
    suffix = next(_serial)
    names = [f"{s.name}x{suffix}" for s in specs]
    bodies: list[dict[str, Any]] = []
    for spec in specs:
        body: dict[str, Any] = {}
        for a in spec.attrs:
            kind = PrimaryKey if a.name in spec.pk and len(spec.pk) == 1 else Required
            if a.name not in spec.pk and a.kind == "Optional":
                kind = Optional
            body[a.name] = kind(a.py_type, *a.args, **a.options)
        bodies.append(body)
    for earlier, later, kind in relations:
        to, back = f"r{later}_{earlier}", f"b{earlier}_{later}"
        if kind == "required":
            bodies[later][to], bodies[earlier][back] = Required(names[earlier]), Set(names[later])
        elif kind == "optional":
            bodies[later][to], bodies[earlier][back] = Optional(names[earlier]), Set(names[later])
        elif kind == "many":
            bodies[later][to], bodies[earlier][back] = Set(names[earlier]), Set(names[later])
        elif kind == "one_one":
            bodies[later][to], bodies[earlier][back] = Optional(names[earlier]), Optional(names[later])
        else:
            bodies[later][to], bodies[earlier][back] = Required(names[earlier]), Optional(names[later])
    classes = []
    for spec, name, body in zip(specs, names, bodies, strict=True):
        # Pony's PrimaryKey(a, b) and composite_key(a, b) declare into the calling frame's namespace: run
        # them with the class body as that namespace.
        declarations = {"PrimaryKey": PrimaryKey, "composite_key": composite_key}
        if len(spec.pk) > 1:
            body["__parts__"] = tuple(body[n] for n in spec.pk)
            exec("PrimaryKey(*__parts__)", declarations, body)
        if spec.composite:
            body["__parts__"] = tuple(body[n] for n in spec.composite)
            exec("composite_key(*__parts__)", declarations, body)
        body.pop("__parts__", None)
        classes.append(type(name, (db.Entity,), body))
    classes.append(type(f"Sub{suffix}", (classes[0],), {"extra": Required(str, 20)}))
    return classes


def test_generated_models(make_db: Callable[[], Database]) -> None:
    """For random models, ``factory(E)()`` makes 50 objects of every entity that commit, with distinct
    unique values, and ``strategies.entity(E)`` values (references by the factory) commit too."""

    # No shrinking: each example creates tables, and a failing model prints whole anyway.
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
    )
    @given(model=model_specs(), data=st.data())
    def check(model: tuple[list[EntitySpec], list[tuple[int, int, str]]], data: st.DataObject) -> None:
        db = make_db()
        entities = declare(db, *model)
        pk.attach(db, keys=pk.security.KeyRing({"k1": KEY}))
        db.generate_mapping(create_tables=True)
        for entity in entities:  # drawn values on empty tables: they may repeat the factory's
            with db_session:
                factory(entity)(**data.draw(pks.entity(entity), label=entity.__name__))
                flush()
                rollback()
        with db_session:
            for entity in entities:
                made = factory(entity).create_batch(50)
                commit()
                for attr_name in _unique_names(entity):
                    values = [getattr(obj, attr_name) for obj in made]
                    assert len(set(values)) == len(values), attr_name

    check()


def _unique_names(entity: Any) -> list[str]:
    return [n for n, a in vars(entity).items() if getattr(a, "is_unique", False) and not a.is_collection]


# ---------------------------------------------------------------------------------------------------------
# One hand-made model: every type, defaults, overrides, batches, errors


@pytest.fixture
def shop(db: Database) -> Any:
    class Customer(db.Entity):  # type: ignore[name-defined,misc]
        email = Required(str, 30, unique=True)
        plan = Required(str, default="free")
        age = Required(int, min=18, max=120)
        secret = Required(pk.types.EncryptedStr)
        seen = Required(pk.types.AwareDatetime)
        color = Required(Color)
        address = Required(pk.types.IPAddress)
        balance = Required(Decimal, 6, 2)
        orders = Set("Order")
        note = Optional(str)

    class Order(db.Entity):  # type: ignore[name-defined,misc]
        customer = Required(Customer)
        number = Required(int, unique=True)
        year = Required(int, py_check=lambda y: 2000 <= y <= 2100)
        day = Required(dt.date)
        payload = Required(Json)

    class Boss(db.Entity):  # type: ignore[name-defined,misc]
        name = Required(str)
        boss = Required("Boss", reverse="staff")
        staff = Set("Boss", reverse="boss")

    class Never(db.Entity):  # type: ignore[name-defined,misc]
        odd = Required(int, py_check=lambda v: False)

    class Tiny(db.Entity):  # type: ignore[name-defined,misc]
        code = Required(str, 1, unique=True)

    class Place(db.Entity):  # type: ignore[name-defined,misc]
        where = Required(Point)

    pk.attach(db, keys=pk.security.KeyRing({"k1": KEY}))
    db.generate_mapping(create_tables=True)
    return db


def test_every_type_commits_and_options_hold(shop: Database) -> None:
    Customer, Order = shop.Customer, shop.Order
    make_order = factory(Order)
    with db_session:
        orders = make_order.create_batch(50)
        commit()
        customers = [o.customer for o in orders]
        assert len({c.email for c in customers}) == 50
        assert all(c.plan == "free" and 18 <= c.age <= 120 and c.note == "" for c in customers)
        assert len({o.number for o in orders}) == 50
        assert all(2000 <= o.year <= 2100 for o in orders)
    with db_session:
        assert Order.select().count() == 50 and Customer.select().count() == 50


def test_defaults_overrides_build_and_batches(shop: Database) -> None:
    Customer, Order = shop.Customer, shop.Order
    make_customer = factory(Customer, plan="pro", email=lambda n: f"user{n}@example.com")
    make_order = factory(Order, customer=make_customer)
    with db_session:
        ann = make_customer(email="ann@example.com")
        assert (ann.email, ann.plan) == ("ann@example.com", "pro")
        values = make_order.build(customer=ann)
        assert values["customer"] is ann and set(values) == {"customer", "number", "year", "day", "payload"}
        assert Order.select().count() == 0
        order = make_order()
        assert order.customer.plan == "pro" and order.customer.email.startswith("user")
        assert make_customer.create_batch(0) == []
        commit()


def test_reset_sequences(shop: Database) -> None:
    from ponykit.testing.factories import reset_sequences

    make_tiny = factory(shop.Tiny)
    with db_session:
        first = make_tiny().code
        rollback()
    reset_sequences(shop.Tiny)
    with db_session:
        assert make_tiny().code == first  # the rolled-back row's value, free again
        assert make_tiny().code != first
        commit()


def test_errors_name_the_attribute_and_the_fix(shop: Database) -> None:
    with pytest.raises(OptionError, match="Customer has no attribute 'nope'"):
        factory(shop.Customer, nope=1)
    with db_session, pytest.raises(FactoryError, match=r"Boss\.boss lead back to Boss"):
        factory(shop.Boss)()
    with (
        db_session,
        pytest.raises(FactoryError, match=r"Never\.odd: its py_check rejected.*Never, odd=\.\.\."),
    ):
        factory(shop.Never)()
    make_tiny = factory(shop.Tiny)
    with db_session, pytest.raises(FactoryError, match=r"Tiny\.code: it is unique .* fewer than 36"):
        make_tiny.create_batch(40)
    with db_session, pytest.raises(FactoryError, match=r"Place\.where: it has type 'Point'.*Place, where="):
        factory(shop.Place)()
    with db_session:
        assert factory(shop.Place, where=Point("here"))().where.text == "here"
        commit()


def test_an_application_model(db: Database) -> None:
    """The shapes of a typical app: a primary key made of references, a Required side of a one-to-one,
    many-to-many, a hierarchy with a discriminator, encrypted and enum columns; every entity made, flushed
    and committed, 20 times."""

    class User(db.Entity):  # type: ignore[name-defined,misc]
        email = Required(str, 80, unique=True)
        password = Required(pk.types.EncryptedStr)
        profile = Optional("Profile")
        orders = Set("Order")
        tags = Set("Tag")

    class Profile(db.Entity):  # type: ignore[name-defined,misc]
        user = Required(User)  # the Required side of a one-to-one
        bio = Optional(str)

    class Tag(db.Entity):  # type: ignore[name-defined,misc]
        name = PrimaryKey(str, 30)
        users = Set(User)

    class Product(db.Entity):  # type: ignore[name-defined,misc]
        sku = Required(str, 12, unique=True)
        price = Required(Decimal, 8, 2, min=Decimal("0.01"))
        lines = Set("Line")

    class Order(db.Entity):  # type: ignore[name-defined,misc]
        user = Required(User)
        status = Required(Color)
        placed = Required(pk.types.AwareDatetime)
        lines = Set("Line")
        payments = Set("Payment")

    class Line(db.Entity):  # type: ignore[name-defined,misc]
        order = Required(Order)
        product = Required(Product)
        quantity = Required(int, min=1, max=99)
        PrimaryKey(order, product)

    class Payment(db.Entity):  # type: ignore[name-defined,misc]
        order = Required(Order)
        amount = Required(Decimal, 8, 2)

    class CardPayment(Payment):  # type: ignore[name-defined,misc]
        last4 = Required(str, 4)

    pk.attach(db, keys=pk.security.KeyRing({"k1": KEY}))
    db.generate_mapping(create_tables=True)
    with db_session:
        for entity in db.entities.values():
            factory(entity).create_batch(20)
            commit()
        assert Line.select().count() == 20 and CardPayment.select().count() == 20
        assert all(p.user.profile is p for p in Profile.select())
        assert all(len(c.last4) <= 4 for c in CardPayment.select())
