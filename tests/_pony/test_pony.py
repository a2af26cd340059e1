"""The door into Pony (ponykit._pony), tested on its own on every backend."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import (
    Database,
    Discriminator,
    Json,
    Optional,
    PrimaryKey,
    Required,
    Set,
    commit,
    composite_key,
    db_session,
    flush,
)

import ponykit as pk
from ponykit import _pony


@pytest.fixture
def shop(db: Database) -> dict[str, Any]:
    """A schema with every shape _pony describes: composite pk, keys, STI, m2m, relations."""

    class Customer(db.Entity):
        id = PrimaryKey(int, auto=True)
        email = Required(str, unique=True)
        nick = Optional(str)
        first = Optional(str)
        last = Optional(str)
        orders = Set("Order")
        composite_key(first, last)

    class Order(db.Entity):
        region = Required(str)
        number = Required(int)
        customer = Required(Customer)
        total = Required(Decimal, precision=10, scale=2)
        placed = Required(dt.datetime)
        meta = Optional(Json)
        tags = Set("Tag")
        PrimaryKey(region, number)

    class Tag(db.Entity):
        label = Required(str, unique=True)
        orders = Set(Order)

    class Animal(db.Entity):
        kind = Discriminator(str)
        name = Required(str)

    class Dog(Animal):
        _discriminator_ = "dog"
        good = Optional(bool)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return {"db": db, "Customer": Customer, "Order": Order, "Tag": Tag, "Animal": Animal, "Dog": Dog}


def test_entity_info_describes_tables_and_keys(shop: dict[str, Any]) -> None:
    """entity_info names the table, columns, primary key, unique keys and link tables."""
    info = _pony.entity_info(shop["Customer"])
    assert info.name == "Customer"
    assert info.pk_attrs == ("id",) and info.pk_columns == ("id",) and not info.pk_is_composite
    assert set(info.columns) == {"id", "email", "nick", "first", "last"}
    assert set(info.keys) == {("email",), ("first", "last")}
    order = _pony.entity_info(shop["Order"])
    assert order.pk_is_composite and order.pk_attrs == ("region", "number")
    assert "customer" in order.columns
    assert [lt.attr for lt in order.link_tables] == ["tags"]
    link = order.link_tables[0]
    assert len(link.columns) == 2 and len(link.reverse_columns) == 1  # composite pk side, single pk side


def test_entity_info_single_table_inheritance(shop: dict[str, Any]) -> None:
    """A subclass shares its root's table and knows its discriminator code."""
    dog, animal = _pony.entity_info(shop["Dog"]), _pony.entity_info(shop["Animal"])
    assert dog.table == animal.table
    assert dog.discriminator == ("kind", "kind", "dog")
    assert animal.discriminator is not None and animal.discriminator[2] == "Animal"
    assert _pony.entity_lineage(shop["Dog"]) == [shop["Dog"], shop["Animal"]]


def test_entity_info_requires_mapping(db: Database) -> None:
    """Asking for metadata before generate_mapping says what to do."""

    class Early(db.Entity):
        name = Required(str)

    with pytest.raises(RuntimeError, match="generate_mapping"):
        _pony.entity_info(Early)


def test_column_converters_and_attributes(shop: dict[str, Any]) -> None:
    """Converters are listed per column attribute; unknown attribute names are reported with the entity."""
    conv = _pony.column_converters(shop["Order"])
    assert len(conv["customer"]) == 1 and len(conv["total"]) == 1
    with pytest.raises(AttributeError, match="Order has no attribute 'nope'"):
        _pony.entity_attribute(shop["Order"], "nope")


def raw_row(db: Database, entity: Any, where: str) -> tuple[Any, ...]:
    table = _pony.quote_name(db, entity._table_)
    return tuple(db.select(f"SELECT * FROM {table} WHERE {where}")[0])


def test_encode_value_matches_what_pony_binds(shop: dict[str, Any]) -> None:
    """encode_value gives exactly the column values Pony stored for the same Python values."""
    db, Customer, Order = shop["db"], shop["Customer"], shop["Order"]
    placed = dt.datetime(2024, 2, 29, 13, 14, 15)  # MariaDB keeps no microseconds by default
    with db_session:
        c = Customer(email="a@example.com")
        Order(region="eu", number=1, customer=c, total=Decimal("12.30"), placed=placed, meta={"a": [1, 2]})
        commit()
        values = {
            "total": _pony.encode_value(Order.total, Decimal("12.30")),
            "placed": _pony.encode_value(Order.placed, placed),
            "customer": _pony.encode_value(Order.customer, c),
            "customer_by_key": _pony.encode_value(Order.customer, c.id),
            "nick": _pony.encode_value(Customer.nick, _pony.DEFAULT),
        }
        assert values["nick"] == ("",)  # Optional(str) is stored as '' when not given, as Pony does
        with pytest.raises(ValueError, match="cannot be set to None"):
            _pony.encode_value(Customer.nick, None)
        row = db.select("SELECT total, placed, customer FROM " + _pony.quote_name(db, Order._table_))[0]
        assert values["customer"] == values["customer_by_key"] == (c.id,)
        assert _pony.decode_value(Order.total, row[0]) == Decimal("12.30")
        assert _pony.decode_value(Order.placed, row[1]) == placed
        assert _pony.decode_value(Order.total, values["total"][0]) == Decimal("12.30")
        assert _pony.decode_value(Order.placed, values["placed"][0]) == placed


def test_column_value_is_encode_value_for_values_an_object_holds(shop: dict[str, Any]) -> None:
    """For values a loaded object holds, column_value gives what encode_value gives, without validating."""
    Customer, Order = shop["Customer"], shop["Order"]
    placed = dt.datetime(2024, 2, 29, 13, 14, 15)
    with db_session:
        c = Customer(email="b@example.com", nick="  spaced  ")
        Order(region="eu", number=7, customer=c, total=Decimal("0.10"), placed=placed, meta={"k": None})
    with db_session:
        order = Order.get(region="eu", number=7)
        for attr in (Order.region, Order.number, Order.total, Order.placed, Order.meta):
            value = getattr(order, attr.name)
            assert _pony.column_value(attr, value) == _pony.encode_value(attr, value)[0], attr
        nick = order.customer.nick
        assert _pony.column_value(Customer.nick, nick) == _pony.encode_value(Customer.nick, nick)[0]
        assert _pony.column_value(Customer.first, None) is None


def test_encode_value_validates_like_pony(shop: dict[str, Any]) -> None:
    """Invalid values fail in encode_value with Pony's own messages (required, type)."""
    Customer, Order = shop["Customer"], shop["Order"]
    with db_session:
        with pytest.raises(ValueError, match="required"):
            _pony.encode_value(Customer.email, "")
        with pytest.raises((TypeError, ValueError)):
            _pony.encode_value(Order.number, "not a number")


@given(text=st.text(max_size=50))
def test_encode_str_round_trips(shop: dict[str, Any], text: str) -> None:
    """Any string encodes to what decodes back to itself, stripped as Pony's autostrip does."""
    Customer = shop["Customer"]
    with db_session:
        encoded = _pony.encode_value(Customer.nick, text)
        assert _pony.decode_value(Customer.nick, encoded[0]) == text.strip()


def test_session_cache_access(shop: dict[str, Any]) -> None:
    """session_cache is None until the session touches the Database; connect_session opens a connection."""
    db = shop["db"]
    assert not _pony.in_db_session()
    with db_session:
        assert _pony.in_db_session() and _pony.session_depth() == 1
        assert _pony.session_cache(db) is None
        cache = _pony.connect_session(db)
        assert _pony.session_cache(db) is cache and cache.connection is not None
        assert _pony.is_alive(cache)
    assert not _pony.is_alive(cache)


def test_outside_session_hides_and_restores(shop: dict[str, Any]) -> None:
    """outside_session lets code open its own db_session in the middle of another, then restores it."""
    db, Customer = shop["db"], shop["Customer"]
    with db_session:
        Customer(email="outer@example.com")
        flush()
        outer = _pony.session_cache(db)
        with _pony.outside_session():
            assert not _pony.in_db_session()
            with db_session:
                assert _pony.session_cache(db) is not outer
        assert _pony.session_cache(db) is outer and _pony.session_depth() == 1


def test_provider_wrapping_is_per_instance(make_db: Any) -> None:
    """Wrapping a provider method affects one Database, not another of the same dialect; never twice."""
    db1, db2 = make_db(), make_db()
    calls: list[str] = []

    def make(original: Any) -> Any:
        def commit(connection: Any, cache: Any = None) -> Any:
            calls.append("wrapped")
            return original(connection, cache)

        return commit

    for n, database in enumerate((db1, db2)):

        class Item(database.Entity):
            _table_ = f"wrap_item_{n}"
            name = Required(str)

        database.generate_mapping(create_tables=True)
    _pony.wrap_provider_method(db1, "commit", make)
    assert _pony.is_provider_method_wrapped(db1, "commit")
    assert not _pony.is_provider_method_wrapped(db2, "commit")
    with pytest.raises(RuntimeError, match="already wrapped"):
        _pony.wrap_provider_method(db1, "commit", make)
    with db_session:
        db2.Item(name="b")
    assert calls == []
    with db_session:
        db1.Item(name="a")
    assert calls == ["wrapped"]


def test_install_converters_is_per_database(make_db: Any) -> None:
    """A converter installed on one Database maps a type there and nowhere else."""
    db1, db2 = make_db(), make_db()

    class Celsius(float):
        pass

    base = _pony.converter_class_for(db1, float)

    class CelsiusConverter(base):  # type: ignore[misc, valid-type]
        def validate(self, val: Any, obj: Any = None) -> Any:
            return Celsius(super().validate(val, obj))

        def sql2py(self, val: Any) -> Any:
            return Celsius(val)

    _pony.install_converters(db1, [(Celsius, CelsiusConverter)])
    assert _pony.converter_class_for(db1, Celsius) is CelsiusConverter
    assert _pony.converter_class_for(db2, Celsius) is not CelsiusConverter

    class Reading(db1.Entity):
        temp = Required(Celsius)

    db1.generate_mapping(create_tables=True)
    with db_session:
        Reading(temp=21.5)
    with db_session:
        assert isinstance(Reading.select().first().temp, Celsius)


def test_write_hooks_report_saved_objects(shop: dict[str, Any]) -> None:
    """install_write_hooks reports every saved object with its status, once per save."""
    db, Customer = shop["db"], shop["Customer"]
    seen: list[tuple[str, str]] = []
    other: list[Any] = []

    def record(cache: Any, obj: Any, status: str) -> None:
        seen.append((type(obj).__name__, status))
        other.append(cache)

    # attach() already hooked this Database; a second recorder on a fresh hook set shows the mechanism.
    db.__dict__.pop("_ponykit_hooked_entities_", None)
    _pony.install_write_hooks(db, record)
    with db_session:
        c = Customer(email="x@example.com")
        flush()
        c.nick = "x"
        flush()
        c.delete()
    assert seen == [("Customer", "inserted"), ("Customer", "updated"), ("Customer", "deleted")]


def test_threads_see_their_own_session(shop: dict[str, Any]) -> None:
    """Each thread has its own session cache and depth."""
    db = shop["db"]
    results: list[Any] = []

    def worker() -> None:
        results.append((_pony.in_db_session(), _pony.session_cache(db)))
        db.disconnect()

    with db_session:
        _pony.connect_session(db)
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert results == [(False, None)]


def test_dialect_and_limits(backend: Any, db: Database) -> None:
    """dialect, paramstyle and max_params describe the backend in use."""
    assert _pony.dialect(db) == backend.name
    assert _pony.paramstyle(db) in ("qmark", "format", "pyformat")
    assert _pony.max_params(db) >= 999
    assert _pony.is_bound(db) and not _pony.is_mapped(db)
    assert _pony.quote_name(db, "a").strip('`"') == "a"
