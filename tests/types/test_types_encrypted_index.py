"""Searchable encrypted attributes: the lookup index on every backend, plaintext length limits, and
identifiers with ``$`` in ``match()`` (issue #12 items 13, 16)."""

from __future__ import annotations

import base64
import sys
from typing import Any

import pytest
from pony.orm import Database, Optional, Required, db_session, select

import ponykit as pk
from ponykit import _pony
from ponykit.diagnostics import count_queries
from ponykit.errors import ConfigurationError, ValidationError
from ponykit.security import KeyRing

KEY1 = base64.urlsafe_b64encode(bytes(range(32))).decode()
KEY2 = base64.urlsafe_b64encode(bytes(range(100, 132))).decode()
LONG = "x" * 6000  # over PostgreSQL's btree entry limit (~2.7 KB) once encrypted
PWN = "c$(__import__('sys').modules.setdefault('pk_pwn',1))"


def make_customer(db: Database, column: str | None = None, limits: bool = False) -> Any:
    """Customer with a searchable email; ``limits`` adds attributes with plaintext length limits."""
    lengths: tuple[Any, Any] = ((12,), {"max_len": 5}) if limits else ((), {})

    class Customer(db.Entity):
        name = Required(str)
        email = Required(pk.types.EncryptedStr, searchable=True, **({"column": column} if column else {}))
        nick = Optional(pk.types.EncryptedStr, *lengths[0])
        bio = Optional(pk.types.EncryptedStr, searchable=True, **lengths[1])

    pk.attach(db, keys=KeyRing({"k2": KEY2, "k1": KEY1}))
    db.generate_mapping(create_tables=True)
    return Customer


def seed(customer: Any, rows: int) -> None:
    with db_session:
        pk.bulk_insert(customer, ({"name": f"n{i}", "email": f"c{i}@example.com"} for i in range(rows)))
        customer(name="long", email=LONG)


def plan(db: Database, backend: str, sql: str, params: Any) -> str:
    """The query plan of ``sql`` as text, from the backend's own EXPLAIN."""
    with db_session:
        cursor = _pony.raw_connection(db).cursor()
        if backend == "postgres":
            # A tiny table may be cheaper to scan: forbid scans, so the plan shows whether the index
            # *can* serve the predicate (an unusable index still yields a sequential scan).
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql, params)
        elif backend == "mysql":
            cursor.execute("ANALYZE TABLE customer")
            cursor.fetchall()
            cursor.execute("EXPLAIN " + sql, params)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(" ".join(str(c) for c in row) for row in cursor.fetchall())


def test_lookup_uses_the_index(db: Database, backend: Any) -> None:
    """Entity.get(attr=v) and match() are served by the index ponykit created with the table (EXPLAIN),
    under every key of the ring, and values of any length (6 KB) are stored, indexed and found."""
    customer = make_customer(db)
    seed(customer, 1500)
    with count_queries(db) as counter, db_session:
        assert customer.get(email="c7@example.com").name == "n7"
        assert customer.get(email=LONG).name == "long"
        assert customer.get(email="nobody") is None
        found = select(c for c in customer if pk.types.match(customer.email, "c9@example.com"))[:]
        assert [c.name for c in found] == ["n9"]
    get_sql = counter.statements[0]
    match_sql = counter.statements[-1]
    for statement in (get_sql, match_sql):
        text = plan(db, backend.name, statement.sql, statement.params)
        if backend.name == "postgres":
            assert "idx_customer__email" in text, text
            assert "Seq Scan" not in text, text
        elif backend.name == "mysql":
            assert "idx_customer__email" in text and "range" in text, text
        else:
            assert "USING INDEX idx_customer__email" in text, text
            assert "SCAN" not in text.replace("SEARCH", ""), text
    assert "idx_customer__email" in pk.types.lookup_index_ddl(customer.email)


def test_index_ddl_for_existing_tables(db: Database, backend: Any) -> None:
    """lookup_index_ddl gives the statement for a table created before the index existed; running it
    makes lookups work as before; create_tables=True adds the index to an existing table too."""
    customer = make_customer(db)
    ddl = pk.types.lookup_index_ddl(customer.email)
    with db_session:
        customer(name="a", email="a@x")
        drop = "DROP INDEX idx_customer__email" + (" ON customer" if backend.name == "mysql" else "")
        db.execute(drop)
    with db_session:
        db.execute(ddl)
    with db_session:
        assert customer.get(email="a@x").name == "a"
    with pytest.raises(ConfigurationError, match="not a searchable encrypted attribute"):
        pk.types.lookup_index_ddl(customer.nick)


def test_index_false_and_index_on_unsearchable(make_db: Any) -> None:
    """index=False: no lookup index; index= on a non-searchable attribute is refused."""
    db = make_db()

    class Plain(db.Entity):
        email = Required(pk.types.EncryptedStr, searchable=True, index=False)

    pk.attach(db, keys=KeyRing({"k1": KEY1}))
    db.generate_mapping(create_tables=True)
    with pytest.raises(ConfigurationError, match="declared with index=False"):
        pk.types.lookup_index_ddl(Plain.email)
    with db_session:
        Plain(email="a@x")
    with db_session:
        assert Plain.get(email="a@x") is not None

    db2 = make_db()

    class Bad(db2.Entity):
        note = Required(pk.types.EncryptedStr, index=True)

    pk.attach(db2, keys=KeyRing({"k1": KEY1}))
    with pytest.raises(ConfigurationError, match=r"Bad\.note: index= needs searchable=True"):
        db2.generate_mapping(create_tables=True)


def test_plaintext_max_length(db: Database) -> None:
    """EncryptedStr takes a plaintext length limit (positional like str, or max_len=): longer values are
    refused through the ORM and bulk_insert with an error naming the attribute, never the value."""
    customer = make_customer(db, limits=True)
    with db_session:
        c = customer(name="a", email="a@x", nick="twelve chars", bio="five!")
        with pytest.raises(ValidationError, match=r"^attribute Customer\.nick: expected at most 12") as info:
            c.nick = "thirteen char"
        assert "thirteen" not in str(info.value)
        with pytest.raises(ValidationError, match=r"Customer\.bio: expected at most 5 characters"):
            customer(name="b", email="b@x", bio="sixsix")
    with db_session, pytest.raises(ValidationError) as bulk_info:
        pk.bulk_insert(customer, [{"name": "c", "email": "c@x", "nick": "a" * 13}])
    assert "aaaaaaaaaaaaa" not in str(bulk_info.value)
    with db_session:
        assert customer.select().count() == 1
        assert customer.get(bio="five!").nick == "twelve chars"


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        ({"max_len": 0}, "must be a positive int"),
        ({"max_len": "5"}, "must be a positive int, got str"),
        ({"args": (5, 6)}, "give the maximum length once"),
        ({"args": (5,), "max_len": 5}, "give the maximum length once"),
        ({"type": "bytes", "args": (5,)}, "applies to EncryptedStr only"),
    ],
)
def test_bad_max_length_refused(make_db: Any, declare: dict[str, Any], message: str) -> None:
    """Wrong length declarations are refused at mapping with a ConfigurationError naming the attribute."""
    db = make_db()
    declare = dict(declare)  # the parameter is shared by the backends' runs
    args = declare.pop("args", ())
    py_type = pk.types.EncryptedBytes if declare.pop("type", None) == "bytes" else pk.types.EncryptedStr

    class Thing(db.Entity):
        secret = Required(py_type, *args, **declare)

    pk.attach(db, keys=KeyRing({"k1": KEY1}))
    with pytest.raises(ConfigurationError, match=rf"Thing\.secret: .*{message}"):
        db.generate_mapping(create_tables=True)


def test_dollar_in_column_name_is_not_evaluated_by_match(db: Database) -> None:
    """A '$' in a column name reaches SQL as text through match() and lookups: no code runs (F5)."""
    sys.modules.pop("pk_pwn", None)
    customer = make_customer(db, column=PWN)
    with db_session:
        customer(name="a", email="a@x")
        customer(name="b", email="b@x")
    with db_session:
        assert [c.name for c in select(c for c in customer if pk.types.match(customer.email, "b@x"))] == ["b"]
        assert customer.get(email="a@x").name == "a"
    assert "pk_pwn" not in sys.modules
