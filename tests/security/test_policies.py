"""Policies on every backend: ``scoped()`` filters in the SQL and stays a Pony query, several policies are
OR-ed, actions select policies, a missing policy or principal refuses before any SQL, ``can()`` follows
the session's pending changes, and what Python-side scoping does not cover (as documented)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pony.orm import Database, Optional, PrimaryKey, Required, Set, db_session, desc, exists, select

import ponykit as pk
from ponykit.query import paginate
from ponykit.security import Scoped, acting_as, can, policy, principal_source, registered_policies, scoped


@dataclass(frozen=True)
class User:
    """A principal: what the policies below read."""

    id: int
    tenant_id: int | None
    is_admin: bool = False
    name: str | None = None
    permissions: frozenset[str] = field(default_factory=frozenset)


@dataclass
class Model:
    """The entities of one test's Database and the ids of its rows."""

    db: Database
    Tenant: Any
    Customer: Any
    Order: Any
    t1: int
    t2: int
    orders: dict[str, int]


@pytest.fixture
def m(db: Database) -> Model:
    class Tenant(db.Entity):  # type: ignore[name-defined,misc]
        name = Required(str)
        customers = Set("Customer")
        orders = Set("Order")

    class Customer(db.Entity):  # type: ignore[name-defined,misc]
        name = Required(str)
        tenant = Required(Tenant)
        orders = Set("Order")

    class Order(db.Entity, Scoped):  # type: ignore[name-defined,misc]
        tenant = Required(Tenant)
        customer = Optional(Customer)
        owner_id = Optional(int)
        label = Optional(str, nullable=True)
        total = Required(int)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    with db_session:
        t1, t2 = Tenant(name="one"), Tenant(name="two")
        ann, bob = Customer(name="ann", tenant=t1), Customer(name="bob", tenant=t2)
        rows = {
            "o1": Order(tenant=t1, customer=ann, owner_id=1, label="a", total=10),
            "o2": Order(tenant=t1, owner_id=None, label=None, total=20),
            "o3": Order(tenant=t2, customer=bob, owner_id=2, label="A", total=30),
            "o4": Order(tenant=t2, customer=bob, owner_id=1, label="b", total=40),
        }
    return Model(db, Tenant, Customer, Order, t1.id, t2.id, {k: o.id for k, o in rows.items()})


def names(m: Model, objs: Any) -> set[str]:
    """The fixture names (o1 ...) of some Order objects."""
    by_id = {v: k for k, v in m.orders.items()}
    return {by_id[o.id] for o in objs}


def same_tenant(m: Model, actions: Any = ("read",)) -> None:
    policy(m.Order, actions=actions)(lambda o, user: o.tenant.id == user.tenant_id or user.is_admin)


def test_scoped_filters_in_sql_and_stays_a_query(m: Model) -> None:
    same_tenant(m)
    Order = m.Order
    user = User(1, m.t1)
    with db_session, acting_as(user):
        query = Order.scoped()
        assert names(m, query) == {"o1", "o2"}
        assert query.count() == 2
        assert names(m, query.filter(lambda o: o.total > 10)) == {"o2"}
        assert [o.total for o in query.order_by(desc(Order.total))] == [20, 10]
        assert names(m, scoped(select(o for o in Order if o.total >= 20))) == {"o2"}
        assert names(m, scoped(Order.select(lambda o: o.label is None))) == {"o2"}
        page = paginate(scoped(Order).order_by(Order.id), page=1, per_page=1)
        assert page.total == 2
        assert names(m, page.items) == {"o1"}
        # The principal's values are parameters: two principals of one type share the SQL text.
        other = scoped(Order, principal=User(9, m.t2))
        assert other.get_sql() == query.get_sql()
        assert names(m, other) == {"o3", "o4"}
        assert names(m, scoped(Order, principal=User(9, None, is_admin=True))) == {"o1", "o2", "o3", "o4"}


def test_explicit_principal_wins_over_the_current_one(m: Model) -> None:
    same_tenant(m)
    with db_session, acting_as(User(1, m.t1)):
        assert names(m, m.Order.scoped(principal=User(2, m.t2))) == {"o3", "o4"}
        assert names(m, scoped(m.Order)) == {"o1", "o2"}


def test_several_policies_are_or_ed(m: Model) -> None:
    same_tenant(m)

    @policy(m.Order)
    def own_orders(order: Any, user: Any) -> Any:
        return order.owner_id == user.id

    assert [p.func for p in registered_policies(m.Order, "read")][1] is own_orders
    with db_session:
        assert names(m, scoped(m.Order, principal=User(1, m.t1))) == {"o1", "o2", "o4"}
        assert names(m, scoped(m.Order, principal=User(2, None))) == {"o3"}
        assert names(m, scoped(m.Order, principal=User(3, None))) == set()


def test_actions_choose_the_policies(m: Model) -> None:
    same_tenant(m, actions="read")
    policy(m.Order, actions=("update", "delete"))(lambda o, u: o.owner_id == u.id)
    policy(m.Order, actions="*")(lambda o, u: u.is_admin)
    user = User(1, m.t1)
    admin = User(5, None, is_admin=True)
    with db_session:
        assert names(m, scoped(m.Order, "read", user)) == {"o1", "o2"}
        assert names(m, scoped(m.Order, "update", user)) == {"o1", "o4"}
        assert names(m, scoped(m.Order, "delete", user)) == {"o1", "o4"}
        assert names(m, scoped(m.Order, "archive", user)) == set()  # only the "*" policy applies
        assert names(m, scoped(m.Order, "archive", admin)) == {"o1", "o2", "o3", "o4"}
        o4 = m.Order[m.orders["o4"]]
        assert can(user, "update", o4)
        assert not can(user, "read", o4)
        assert not can(user, "archive", o4)
        assert can(admin, "archive", o4)


def test_no_policy_refuses_before_any_sql(m: Model) -> None:
    policy(m.Order, actions="update")(lambda o, u: o.owner_id == u.id)
    user = User(1, m.t1)
    with db_session:
        o1 = m.Order[m.orders["o1"]]
        with pk.count_queries() as counted:
            with pytest.raises(pk.PermissionDenied, match=r"Order has no policy for action 'read'") as info:
                scoped(m.Order, principal=user)
            with pytest.raises(pk.PermissionDenied, match="Customer has no policy"):
                scoped(m.Customer, principal=user)
        assert counted.count == 0
        assert isinstance(info.value, PermissionError)
        assert (info.value.entity, info.value.action) == ("Order", "read")
        assert "@pk.policy(Order" in str(info.value)
        assert can(user, "read", o1) is False
        assert can(user, "update", o1) is True


def test_no_principal_refuses_before_any_sql(m: Model) -> None:
    same_tenant(m)
    with db_session:
        with pk.count_queries() as counted:
            with pytest.raises(pk.PermissionDenied, match="needs a principal and none is acting"):
                scoped(m.Order)
            with acting_as(None), pytest.raises(pk.PermissionDenied):
                m.Order.scoped()
        assert counted.count == 0
        assert can(None, "read", m.Order[m.orders["o1"]]) is False


def test_principal_source_is_asked_when_none_is_set(m: Model) -> None:
    same_tenant(m)
    principal_source(lambda: User(1, m.t2))
    try:
        with db_session:
            assert names(m, scoped(m.Order)) == {"o3", "o4"}
            with acting_as(User(1, m.t1)):
                assert names(m, scoped(m.Order)) == {"o1", "o2"}
            with acting_as(None), pytest.raises(pk.PermissionDenied):
                scoped(m.Order)  # acting as nobody hides the source
    finally:
        principal_source(None)


def test_can_flushes_new_and_changed_objects_like_a_query(m: Model) -> None:
    same_tenant(m)
    user = User(1, m.t1)
    with db_session:
        fresh = m.Order(tenant=m.Tenant[m.t1], total=1)  # not flushed yet: can() flushes it, as select would
        assert can(user, "read", fresh)
        assert fresh in set(scoped(m.Order, principal=user))
        moved = m.Order[m.orders["o1"]]
        moved.tenant = m.Tenant[m.t2]  # decided on the new value
        assert not can(user, "read", moved)
        assert moved not in set(scoped(m.Order, principal=user))
        gone = m.Order[m.orders["o2"]]
        gone.delete()
        assert not can(user, "read", gone)
        foreign = m.Order(tenant=m.Tenant[m.t2], total=2)
        assert not can(user, "read", foreign)


def test_closures_globals_and_generators_in_policies(m: Model) -> None:
    """A policy reading a closure variable and a generator capturing its own arguments (which Pony 0.7.20
    misreads on Python 3.11/3.12 for its own lambdas) runs with the right names on the database."""
    Customer = m.Customer

    def make(minimum: int) -> Any:
        def customer_named_like_user(o: Any, user: Any) -> Any:
            return o.total >= minimum and exists(
                c for c in Customer if c.tenant == o.tenant and c.name == user.name and c == o.customer
            )

        return customer_named_like_user

    policy(m.Order)(make(15))
    with db_session:
        assert names(m, scoped(m.Order, principal=User(0, None, name="bob"))) == {"o3", "o4"}
        assert names(m, scoped(m.Order, principal=User(0, None, name="ann"))) == set()  # o1's total is 10


def test_policies_of_a_base_entity_apply_to_subclasses(make_db: Any) -> None:
    db = make_db()

    class Doc(db.Entity):  # type: ignore[name-defined,misc]
        tenant_id = Required(int)
        owner_id = Optional(int)

    class Memo(Doc):  # type: ignore[name-defined,misc]
        urgent = Required(bool, default=False)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    policy(Doc)(lambda d, u: d.tenant_id == u.tenant_id)
    policy(Memo)(lambda d, u: d.owner_id == u.id)
    user = User(7, 1)
    with db_session:
        d1, d2 = Doc(tenant_id=1), Doc(tenant_id=2, owner_id=7)
        m1, m2, m3 = Memo(tenant_id=1), Memo(tenant_id=2, owner_id=7), Memo(tenant_id=2)
        assert set(scoped(Doc, principal=user)) == {d1, m1}  # Doc's policy only
        assert set(scoped(Memo, principal=user)) == {m1, m2}  # Doc's OR Memo's
        assert [can(user, "read", o) for o in (d1, d2, m1, m2, m3)] == [True, False, True, True, False]


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda m: policy("Order"), "entity class first"),
        (lambda m: policy(m.Order, actions=()), "action name"),
        (lambda m: policy(m.Order, actions=("read", "")), "action name"),
        (lambda m: policy(m.Order)(lambda o: o.total > 1), "two positional arguments"),
        (lambda m: scoped(select(o.total for o in m.Order)), "query of entity objects"),
        (lambda m: scoped("Order"), "entity class or a Pony query"),
        (lambda m: scoped(m.Order, "*"), "one action name"),
        (lambda m: can(User(1, 1), "read", 5), "entity object"),
    ],
)
def test_wrong_calls_raise_option_errors(m: Model, call: Any, words: str) -> None:
    policy(m.Order)(lambda o, u: o.total > 0)
    with db_session, pytest.raises(pk.OptionError, match=words):
        call(m)


def test_a_policy_with_statements_is_refused_at_registration(m: Model) -> None:
    def two_statements(o: Any, user: Any) -> Any:
        if user.is_admin:
            return True
        return o.owner_id == user.id

    with pytest.raises(pk.OptionError, match="policy\\(Order\\) cannot use .*two_statements.*single"):
        policy(m.Order)(two_statements)
    assert registered_policies(m.Order) == []


def test_what_python_side_scoping_does_not_cover(m: Model, backend: Any) -> None:
    """As docs/security.md says: only the queries given to scoped() are filtered. Collections, Entity[pk],
    Entity.get(), unscoped queries and raw SQL still return another tenant's rows (PostgreSQL row-level
    security covers those)."""
    same_tenant(m)
    user = User(1, m.t1)
    foreign = {m.orders["o3"], m.orders["o4"]}
    with db_session, acting_as(user):
        assert not foreign & {o.id for o in scoped(m.Order)}
        bob = m.Customer.get(name="bob")  # get(): not scoped
        assert {o.id for o in bob.orders} == foreign  # a collection load: not scoped
        assert m.Order[m.orders["o3"]].total == 30  # Entity[pk]: not scoped
        assert m.Order.get(label="b").id == m.orders["o4"]
        assert foreign <= {o.id for o in select(o for o in m.Order)}  # an unscoped query
        table = {"postgres": '"order"', "mysql": "`order`"}.get(backend.name, '"Order"')
        assert foreign <= set(m.db.select(f"id FROM {table}"))  # raw SQL


def test_a_policy_registered_later_takes_effect(m: Model) -> None:
    same_tenant(m)
    user = User(1, m.t2)
    with db_session:
        assert names(m, scoped(m.Order, principal=user)) == {"o3", "o4"}
        assert names(m, scoped(m.Order.select(), principal=user)) == {"o3", "o4"}

        def small(o: Any, u: Any) -> Any:
            return o.total < 15

        assert policy(m.Order)(small) is small  # the decorator returns the predicate unchanged
        assert names(m, scoped(m.Order, principal=user)) == {"o1", "o3", "o4"}
        assert names(m, scoped(m.Order.select(), principal=user)) == {"o1", "o3", "o4"}
        assert can(user, "read", m.Order[m.orders["o1"]])


def test_the_same_policy_text_on_two_entities(m: Model) -> None:
    """Pony caches translations by text: two entities with word-for-word the same policy keep their own
    tables (the entity is part of the cache key)."""
    same_tenant(m)
    policy(m.Customer)(lambda o, user: o.tenant.id == user.tenant_id or user.is_admin)
    user = User(1, m.t1)
    with db_session:
        assert names(m, scoped(m.Order, principal=user)) == {"o1", "o2"}
        assert {c.name for c in scoped(m.Customer, principal=user)} == {"ann"}
        assert {c.name for c in scoped(m.Customer.select(), principal=user)} == {"ann"}
        assert names(m, scoped(m.Order.select(), principal=user)) == {"o1", "o2"}
        assert can(user, "read", m.Customer.get(name="ann"))
        assert not can(user, "read", m.Customer.get(name="bob"))


def test_keyset_pages_of_a_scoped_query(m: Model) -> None:
    same_tenant(m)
    secret = b"k" * 32
    with db_session, acting_as(User(1, m.t2)):
        first = pk.paginate_keyset(scoped(m.Order).order_by(m.Order.total), 1, secret=secret)
        assert names(m, first.items) == {"o3"}
        second = pk.paginate_keyset(
            scoped(m.Order).order_by(m.Order.total), 1, after=first.next_cursor, secret=secret
        )
        assert names(m, second.items) == {"o4"}
        assert not second.has_next


def test_policies_pony_cannot_apply_name_entity_action_and_policy(m: Model) -> None:
    same_tenant(m)
    policy(m.Order, actions="odd")(lambda o, u: o.label.zfill(3) == u.name)

    class Anonymous:
        id = 0

    with db_session:
        with pytest.raises(
            pk.OptionError, match=r"'read' policies of Order \(.*test_policies.*\).*(is_admin|tenant_id)"
        ):
            scoped(m.Order, principal=Anonymous())
        with pytest.raises(pk.OptionError, match="read the principal"):
            can(Anonymous(), "read", m.Order[m.orders["o1"]])
        with pytest.raises(pk.ConfigurationError, match="Pony cannot translate the 'odd' policies of Order"):
            scoped(m.Order.select(), "odd", User(1, 1))


def test_can_with_a_composite_primary_key(make_db: Any) -> None:
    db = make_db()

    class Member(db.Entity):  # type: ignore[name-defined,misc]
        org = Required(str)
        num = Required(int)
        level = Required(int)
        PrimaryKey(org, num)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    policy(Member)(lambda mb, u: mb.level <= u.id)
    user = User(2, None)
    with db_session:
        low, high, other = (
            Member(org="a", num=1, level=1),
            Member(org="a", num=2, level=3),
            Member(org="b", num=1, level=2),
        )
        assert set(scoped(Member, principal=user)) == {low, other}
        assert [can(user, "read", x) for x in (low, high, other)] == [True, False, True]
