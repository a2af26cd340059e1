"""Custom attribute types, Enum, aware datetimes and ip addresses on every backend."""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
from decimal import Decimal
from typing import Any

import pytest
from pony.orm import Database, Optional, Required, db_session, select

import ponykit as pk
from ponykit import _pony


class Plan(enum.Enum):
    FREE = "free"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class Size(str, enum.Enum):
    S = "s"
    L = "l"


class Prio(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Money:
    """A small value object: an amount in a currency-less Decimal."""

    def __init__(self, amount: Decimal | str) -> None:
        self.amount = Decimal(amount)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.amount == self.amount

    def __hash__(self) -> int:
        return hash(self.amount)


class Cents(pk.types.AttributeType):
    """Money stored as integer cents (a class-style type)."""

    python_type = Money
    storage = int

    def validate(self, value: Any) -> Any:
        if isinstance(value, (int, str, Decimal)) and not isinstance(value, bool):
            value = Money(Decimal(value))
        if not isinstance(value, Money):
            raise TypeError(f"expected Money, got {type(value).__name__}")
        if value.amount < 0:
            raise ValueError("amount must not be negative")
        return value

    def to_db(self, value: Any) -> Any:
        return int(value.amount * 100)

    def from_db(self, value: Any) -> Any:
        return Money(Decimal(value) / 100)


class Slug(str):
    """A lowercase identifier (registered function-style, stored as str)."""


pk.types.register_type(Money, Cents)
pk.types.register_type(
    Slug, storage=str, to_db=str, from_db=Slug, validate=lambda v: Slug(str(v).lower().strip())
)


def make_schema(db: Database) -> Any:
    """Declare Account with one attribute of each type, attach and map."""

    class Account(db.Entity):
        name = Required(str)
        plan = Required(Plan)
        size = Optional(Size, as_enum=True)
        prio = Required(Prio, default=Prio.LOW, as_enum=True)
        color = Optional(Color)
        seen = Optional(pk.types.AwareDatetime)
        ip = Optional(ipaddress.IPv4Address)
        addr = Optional(pk.types.IPAddress)
        net = Optional(pk.types.IPNetwork)
        balance = Optional(Money)
        slug = Optional(Slug)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Account


@pytest.fixture
def schema(db: Database) -> tuple[Database, Any]:
    return db, make_schema(db)


def test_enum_round_trip_and_queries(schema: Any) -> None:
    """Enums are stored by value and work in get(), ==, in, filter() and != in generator queries."""
    db, Account = schema
    with db_session:
        Account(name="a", plan=Plan.PRO, size=Size.L, prio=Prio.HIGH, color=Color.BLUE)
        Account(name="b", plan="free", size="s", color=1)
        Account(name="c", plan=Plan.ENTERPRISE)
    with db_session:
        a = Account.get(name="a")
        assert (a.plan, a.size, a.prio, a.color) == (Plan.PRO, Size.L, Prio.HIGH, Color.BLUE)
        assert type(Account.get(name="b").size) is Size
        assert Account.get(plan=Plan.FREE).name == "b"
        assert {x.name for x in select(x for x in Account if x.plan == Plan.PRO)} == {"a"}
        assert {x.name for x in select(x for x in Account if x.plan in (Plan.PRO, Plan.FREE))} == {"a", "b"}
        assert {x.name for x in select(x for x in Account if x.plan != Plan.PRO)} == {"b", "c"}
        assert {x.name for x in select(x for x in Account if x.prio == Prio.HIGH)} == {"a"}
        assert {x.name for x in select(x for x in Account if x.color == Color.RED)} == {"b"}
        assert {x.name for x in select(x for x in Account if x.size == Size.S)} == {"b"}
        assert [x.name for x in Account.select().filter(plan=Plan.ENTERPRISE)] == ["c"]
        wanted = [Plan.FREE, Plan.ENTERPRISE]
        assert {x.name for x in select(x for x in Account if x.plan in wanted)} == {"b", "c"}
    rows = _raw(db, "plan, prio FROM account ORDER BY name")
    assert [tuple(r) for r in rows] == [("pro", 2), ("free", 1), ("enterprise", 1)]


def test_enum_invalid_values(schema: Any) -> None:
    """An unknown enum value from the user or from the database raises a clear error."""
    db, Account = schema
    with db_session, pytest.raises(ValueError, match=r"Account\.plan: 'gold' is not a valid Plan value"):
        Account(name="x", plan="gold")
    with db_session, pytest.raises(TypeError, match=r"expected a Plan member, got Size\.L"):
        Account(name="x", plan=Size.L)
    with db_session:
        Account(name="x", plan=Plan.FREE)
    with db_session:
        db.execute("UPDATE account SET plan = 'gold'")
    with db_session, pytest.raises(ValueError, match=r"Account\.plan .*holds 'gold'.*not a Plan value"):
        Account.get(name="x").plan  # noqa: B018


def test_aware_datetime(schema: Any) -> None:
    """Aware datetimes are stored as UTC, come back aware, compare in queries; naive ones are rejected."""
    db, Account = schema
    paris = dt.timezone(dt.timedelta(hours=2))
    moment = dt.datetime(2024, 5, 1, 14, 30, tzinfo=paris)
    with db_session:
        Account(name="a", plan=Plan.FREE, seen=moment)
        with pytest.raises(ValueError, match=r"Account\.seen: got a naive datetime"):
            Account(name="b", plan=Plan.FREE, seen=dt.datetime(2024, 1, 1))
    with db_session:
        seen = Account.get(name="a").seen
        assert seen == moment
        assert seen.tzinfo == dt.timezone.utc
        assert seen.hour == 12
        assert Account.get(seen=moment).name == "a"
        later = moment + dt.timedelta(minutes=1)
        assert [x.name for x in select(x for x in Account if x.seen < later)] == ["a"]
        assert [x.name for x in select(x for x in Account if x.seen == moment)] == ["a"]
    (stored,) = _raw(db, "seen FROM account")
    assert str(stored).startswith("2024-05-01 12:30") or (
        isinstance(stored, dt.datetime) and stored.hour == 12
    )


def test_ip_addresses(schema: Any) -> None:
    """ipaddress values round-trip as text and compare in generator queries."""
    _db, Account = schema
    with db_session:
        Account(name="a", plan=Plan.FREE, ip="10.0.0.1", addr=ipaddress.ip_address("::1"), net="10.0.0.0/8")
        with pytest.raises(ValueError, match=r"Account\.ip: '10\.0\.0\.300' is not a valid IPv4 address"):
            Account(name="b", plan=Plan.FREE, ip="10.0.0.300")
    with db_session:
        a = Account.get(name="a")
        assert a.ip == ipaddress.IPv4Address("10.0.0.1")
        assert a.addr == ipaddress.IPv6Address("::1")
        assert a.net == ipaddress.IPv4Network("10.0.0.0/8")
        ip = ipaddress.IPv4Address("10.0.0.1")
        assert [x.name for x in select(x for x in Account if x.ip == ip)] == ["a"]
        assert Account.get(addr=ipaddress.IPv6Address("::1")).name == "a"


def test_custom_types(schema: Any) -> None:
    """A class-style and a function-style registered type validate, store, load and query."""
    db, Account = schema
    with db_session:
        Account(name="a", plan=Plan.FREE, balance=Money("12.34"), slug="  Hello ")
        Account(name="b", plan=Plan.FREE, balance="0.5")
        with pytest.raises(ValueError, match=r"Account\.balance: amount must not be negative"):
            Account(name="c", plan=Plan.FREE, balance=Money("-1"))
        with pytest.raises(TypeError, match=r"Account\.balance: expected Money, got list"):
            Account(name="c", plan=Plan.FREE, balance=[])
    with db_session:
        a = Account.get(name="a")
        assert a.balance == Money("12.34")
        assert a.slug == "hello"
        assert type(a.slug) is Slug
        assert Account.get(balance=Money("0.50")).name == "b"
        big = Money("10")
        assert [x.name for x in select(x for x in Account if x.balance > big)] == ["a"]
        assert [x.name for x in select(x for x in Account if x.slug == Slug("hello"))] == ["a"]
        assert a.to_dict()["balance"] == Money("12.34")
    assert sorted(_raw(db, "balance FROM account WHERE balance IS NOT NULL")) == [50, 1234]
    (encoded,) = _pony.encode_value(Account.balance, Money("1.25"))
    assert encoded == 125
    assert _pony.decode_value(Account.balance, 125) == Money("1.25")


@pytest.mark.backends("sqlite")
def test_converters_are_per_database(make_db: Any) -> None:
    """A Database that is not attached gets none of ponykit's converters, even after another is attached."""
    attached = make_db()
    make_schema(attached)
    plain = make_db()

    class Thing(plain.Entity):
        plan = Required(Plan)

    with pytest.raises(TypeError, match="No database converter found"):
        plain.generate_mapping(create_tables=True)


def test_json_codecs() -> None:
    """json_codec gives each type's JSON form and schema: enum value, ISO datetime, str ip, storage."""
    codec = pk.types.json_codec(Plan)
    assert codec is not None
    assert codec.to_json(Plan.PRO) == "pro"
    assert codec.from_json("pro") is Plan.PRO
    assert codec.json_schema() == {"type": "string", "enum": ["free", "pro", "enterprise"]}
    prio = pk.types.json_codec(Prio)
    assert prio is not None
    assert prio.json_schema()["type"] == "integer"
    assert prio.to_json(Prio.HIGH) == 2
    aware = pk.types.json_codec(pk.types.AwareDatetime)
    assert aware is not None
    moment = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    assert aware.to_json(moment) == "2024-05-01T12:00:00+00:00"
    assert aware.from_json("2024-05-01T14:00:00+02:00") == moment
    ip = pk.types.json_codec(ipaddress.IPv4Address)
    assert ip is not None
    assert ip.to_json(ipaddress.IPv4Address("1.2.3.4")) == "1.2.3.4"
    money = pk.types.json_codec(Money)
    assert money is not None
    assert money.to_json(Money("1.5")) == 150
    assert money.from_json(150) == Money("1.5")
    assert money.json_schema() == {"type": "integer"}
    assert pk.types.json_codec(int) is None


def test_register_type_rejects_bad_declarations() -> None:
    """register_type explains what is missing or wrong."""
    with pytest.raises(pk.ConfigurationError, match="needs either an AttributeType subclass"):
        pk.types.register_type(Money, storage=int)
    with pytest.raises(pk.ConfigurationError, match="storage must be one of"):
        pk.types.register_type(Money, storage=list, to_db=list, from_db=list)


def _raw(db: Database, sql: str) -> list[Any]:
    with db_session:
        return list(db.select(sql))
