"""Versioned: the version counts up on every path (ORM flush, bulk_update, bulk_upsert, soft delete), ETags,
expected versions (ORM and bulk compare-and-swap), Pony's optimistic check kept; and a hypothesis run of
mixed operations checking that updated_at and version advance on every path and created_at never moves."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pony.orm import (
    Database,
    OptimisticCheckError,
    Optional,
    PrimaryKey,
    Required,
    commit,
    db_session,
    flush,
    rollback,
)

import ponykit as pk
from ponykit._pony import entity_info
from ponykit._sql import dialect_of
from ponykit.errors import VersionConflict
from ponykit.mixins import SoftDeletable, Timestamped, Versioned


def _map(db: Database) -> None:
    pk.attach(db)
    db.generate_mapping(create_tables=True)


@pytest.fixture
def Order(db: Database) -> Any:
    class Order(db.Entity, Versioned):
        total = Required(int)
        code = Optional(str, unique=True)

    _map(db)
    return Order


def _new(entity: Any, **values: Any) -> Any:
    obj = entity(**values)
    flush()
    return obj.id


def test_orm_version_counts_every_flushed_update(Order: Any) -> None:
    with db_session:
        order_id = _new(Order, total=1)
        assert Order[order_id].version == 1
    with db_session:
        Order[order_id].total = 2
        flush()
        assert Order[order_id].version == 2
        Order[order_id].total = 3
    with db_session:
        assert Order[order_id].version == 3
        _ = Order[order_id].total  # a read does not count
    with db_session:
        assert Order[order_id].version == 3


def test_a_change_behind_ponys_back_raises_ponys_optimistic_error(Order: Any, db: Database) -> None:
    with db_session:
        order_id = _new(Order, total=1)
    with pytest.raises(OptimisticCheckError), db_session:
        order = Order[order_id]
        _ = order.total
        table = dialect_of(db).q(entity_info(Order).table)
        db.execute(f"UPDATE {table} SET version = version + 1")
        order.total = 5
        flush()


def test_etag_is_stable_and_names_entity_key_and_version(Order: Any) -> None:
    with db_session:
        order_id = _new(Order, total=1)
    with db_session:
        assert Order[order_id].etag == f'"Order:{order_id}:1"'
        Order[order_id].total = 2
    with db_session:
        assert Order[order_id].etag == f'"Order:{order_id}:2"'


def test_etag_quotes_key_text(db: Database) -> None:
    class Sku(db.Entity, Versioned):
        code = PrimaryKey(str)

    _map(db)
    with db_session:
        Sku(code='a:b "c"/d')
    with db_session:
        tag = Sku['a:b "c"/d'].etag
        assert tag == '"Sku:a%3Ab%20%22c%22%2Fd:1"'
        assert tag.count('"') == 2
        Sku['a:b "c"/d'].expect_version(tag)


def test_expect_version(Order: Any) -> None:
    with db_session:
        order_id = _new(Order, total=1)
    with db_session:
        order = Order[order_id]
        order.expect_version(1)
        order.expect_version(order.etag)
        order.expect_version("W/" + order.etag)
        with pytest.raises(VersionConflict, match="expected version 2, the object is at version 1") as info:
            order.expect_version(2)
        assert (info.value.expected, info.value.actual, info.value.entity) == (2, 1, "Order")
        with pytest.raises(VersionConflict, match="ETag given is of version 7"):
            order.expect_version(f'"Order:{order_id}:7"')
        with pytest.raises(VersionConflict, match="names another object"):
            order.expect_version('"Other:1:1"')
        with pytest.raises(ValueError, match="expected an int version"):
            order.expect_version(1.0)  # type: ignore[arg-type]


def test_assigning_a_stale_version_raises_at_the_flush(Order: Any) -> None:
    with db_session:
        order_id = _new(Order, total=1)
    with db_session:
        Order[order_id].total = 2
    with pytest.raises(VersionConflict, match="version was set to 1"), db_session:
        Order[order_id].set(total=9, version=1)  # a client's stale copy
    with db_session:
        assert (Order[order_id].total, Order[order_id].version) == (2, 2)
        Order[order_id].set(total=3, version=2)  # the current version: accepted and counted up
    with db_session:
        assert (Order[order_id].total, Order[order_id].version) == (3, 3)


def test_bulk_update_and_upsert_count_up(Order: Any) -> None:
    with db_session:
        ids = pk.bulk_insert(Order, [{"total": i, "code": f"c{i}"} for i in range(3)], return_ids=True)
    with db_session:
        loaded = Order[ids[0]]
        assert pk.bulk_update(Order, [{"id": i, "total": 10} for i in ids]) == 3
        assert loaded.version == 2  # a loaded object shows the database's count
        loaded.total = 11  # and a later ORM update passes Pony's optimistic check
    with db_session:
        assert [Order[i].version for i in ids] == [3, 2, 2]
        result = pk.bulk_upsert(
            Order, [{"code": "c1", "total": 5}, {"code": "new", "total": 6}], conflict="code"
        )
        assert (result.inserted, result.updated) == (1, 1)
    with db_session:
        assert Order[ids[1]].version == 3
        assert Order.get(code="new").version == 1
        pk.bulk_update(Order, [{"id": ids[2], "total": 7, "code": "z"}], fields=["total"])
    with db_session:
        assert Order[ids[2]].version == 3


def test_bulk_row_version_is_an_expected_version(Order: Any) -> None:
    with db_session:
        ids = pk.bulk_insert(Order, [{"total": i} for i in range(4)], return_ids=True)
    with db_session:
        Order[ids[1]].total = 100  # now at version 2
    with db_session:
        rows = [
            {"id": ids[0], "total": 1, "version": 1},
            {"id": ids[1], "total": 1, "version": 1},  # stale
            {"id": ids[2], "total": 1},  # no expectation
            {"id": ids[3], "total": 1, "version": 5},  # stale
        ]
        with pytest.raises(VersionConflict, match="2 row") as info:
            pk.bulk_update(Order, rows)
        assert info.value.rows == (1, 3)
        assert "position 1: expected 1, stored 2" in str(info.value)
        # nothing of the call was written
        assert [(Order[i].total, Order[i].version) for i in ids] == [(0, 1), (100, 2), (2, 1), (3, 1)]
        rows[1]["version"], rows[3]["version"] = 2, 1
        assert pk.bulk_update(Order, rows) == 4
    with db_session:
        assert [Order[i].version for i in ids] == [2, 3, 2, 2]
        with pytest.raises(VersionConflict, match="stored no row"):
            pk.bulk_update(Order, [{"id": 999, "total": 1, "version": 1}])
        with pytest.raises(pk.BulkWriteError, match="not the primary key"):
            pk.bulk_upsert(Order, [{"code": "x", "total": 1, "version": 1}], conflict="code")
        with pytest.raises(pk.BulkWriteError, match="as a str"):
            pk.bulk_update(Order, [{"id": ids[0], "total": 1, "version": "2"}])
        rollback()


def test_bulk_expected_version_with_a_composite_key(db: Database) -> None:
    class Line(db.Entity, Versioned):
        order = Required(int)
        no = Required(int)
        qty = Required(int)
        PrimaryKey(order, no)

    _map(db)
    with db_session:
        pk.bulk_insert(Line, [{"order": 1, "no": n, "qty": 0} for n in range(3)])
    with db_session:
        assert pk.bulk_update(Line, [{"order": 1, "no": 0, "qty": 5, "version": 1}]) == 1
    with db_session:
        with pytest.raises(VersionConflict):
            pk.bulk_update(Line, [{"order": 1, "no": 0, "qty": 6, "version": 1}])
        rollback()
    with db_session:
        assert (Line[1, 0].qty, Line[1, 0].version) == (5, 2)


def test_configurable_name_clash_inheritance(db: Database) -> None:
    class Doc(db.Entity, Versioned):
        version_name = "revision"
        title = Required(str)

    class Memo(Doc):
        body = Optional(str)

    with pytest.raises(pk.ConfigurationError, match="version_name"):

        class Clash(db.Entity, Versioned):
            version = Required(int)

    _map(db)
    with db_session:
        memo_id = _new(Memo, title="t")
        assert Memo[memo_id].revision == 1 and not hasattr(Memo[memo_id], "version")
    with db_session:
        Memo[memo_id].body = "b"
    with db_session:
        pk.bulk_update(Memo, [{"id": memo_id, "body": "c"}])
        pk.bulk_update(Doc, [{"id": memo_id, "title": "u", "revision": 3}])
    with db_session:
        assert Memo[memo_id].revision == 4
        assert Memo[memo_id].etag == f'"Memo:{memo_id}:4"'


# ---------------------------------------------------------------------------------------------------------
# Every path advances updated_at and version (hypothesis over mixed operations)


@pytest.fixture
def Account(db: Database) -> Any:
    class Account(db.Entity, Timestamped, SoftDeletable, Versioned):
        id = PrimaryKey(int)
        name = Required(str)
        balance = Required(int)

    class Ledger(db.Entity, Timestamped, Versioned):  # the mixins on a second entity of the same database
        note = Required(str)

    _map(db)
    return Account


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["orm_create", "orm_update", "bulk_insert", "bulk_update", "bulk_upsert", "soft", "restore"]
        ),
        st.lists(st.integers(0, 7), min_size=1, max_size=4, unique=True),
        st.integers(-5, 5),
    ),
    min_size=1,
    max_size=10,
)


@given(ops=OPS)
def test_every_path_advances_updated_at_and_version(
    Account: Any, ops: list[tuple[str, list[int], int]]
) -> None:
    with db_session:
        Account.select().delete(bulk=True)
    state: dict[int, tuple[Any, Any, int]] = {}  # id -> (created_at, updated_at, version)
    for op, keys, amount in ops:
        existing = [k for k in keys if k in state]
        new = [k for k in keys if k not in state]
        with db_session:
            if op == "orm_create":
                for k in new:
                    Account(id=k, name=f"n{k}", balance=amount)
                touched = new
            elif op == "bulk_insert":
                pk.bulk_insert(Account, [{"id": k, "name": f"n{k}", "balance": amount} for k in new])
                touched = new
            elif op == "orm_update":
                for k in existing:
                    Account[k].balance += 1  # always a change
                touched = existing
            elif op == "bulk_update":
                pk.bulk_update(Account, [{"id": k, "balance": amount} for k in existing])
                touched = existing
            elif op == "bulk_upsert":
                pk.bulk_upsert(
                    Account, [{"id": k, "name": f"u{k}", "balance": amount} for k in keys], conflict="id"
                )
                touched = keys
            elif op == "soft":
                touched = [k for k in existing if Account[k].soft_delete()]
            elif op == "bulk_soft":
                touched = [k for k in existing if Account[k].deleted_at is None]
                assert pk.bulk_delete(Account, existing, soft=True) == len(touched)
            else:
                touched = [k for k in existing if Account[k].restore()]
        with db_session:
            now = {a.id: (a.created_at, a.updated_at, a.version) for a in Account.select()}
        assert set(now) == set(state) | set(touched)
        for k, (created, updated, version) in now.items():
            if k not in state:
                assert version == 1 and created == updated, (op, k)
                continue
            old_created, old_updated, old_version = state[k]
            assert created == old_created, (op, k)  # created_at never changes after insert
            if k in touched:
                assert version == old_version + 1, (op, k)
                assert updated > old_updated, (op, k)  # each op is its own transaction: microseconds apart
            else:
                assert (updated, version) == (old_updated, old_version), (op, k)
        state = now


def test_rollback_leaves_versions_and_timestamps(Account: Any) -> None:
    with db_session:
        Account(id=1, name="a", balance=0)
    with db_session:
        before = (Account[1].updated_at, Account[1].version)
    with db_session:
        Account[1].balance = 5
        pk.bulk_update(Account, [{"id": 1, "balance": 6}])
        rollback()
    with db_session:
        assert (Account[1].updated_at, Account[1].version) == before
        Account[1].balance = 7
        commit()
        assert Account[1].version == before[1] + 1


def test_delete_and_bulk_delete_of_versioned_objects(Order: Any) -> None:
    with db_session:
        first, second = _new(Order, total=1), _new(Order, total=2)
    with db_session:
        Order[first].total = 3
        flush()
        Order[first].delete()
        assert pk.bulk_delete(Order, [second]) == 1
    with db_session:
        assert Order.select().count() == 0
