"""The bulk section of the Pony door (ponykit._pony): encoders, statement execution, eviction helpers."""

from __future__ import annotations

import io
from typing import Any

import pony.orm.core
import pytest
from pony.orm import Database, Optional, Required, Set, commit, db_session, select
from pony.orm.core import OperationWithDeletedObjectError

import ponykit as pk
from ponykit import _pony


@pytest.fixture
def ents(db: Database) -> tuple[Any, Any]:
    class Owner(db.Entity):
        name = Required(str, unique=True)
        pets = Set("Pet")

    class Pet(db.Entity):
        name = Required(str, 10)
        nick = Optional(str)
        owner = Optional(Owner)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Owner, Pet


def test_value_encoder_matches_encode_value(ents: tuple[Any, Any]) -> None:
    """The fast bulk encoder gives what encode_value (Pony's own path) gives, and raises where it raises."""
    _owner, pet = ents
    enc = _pony.bulk_value_encoder(pet, pet.name)
    assert enc("  rex ") == _pony.encode_value(pet.name, "  rex ")[0] == "rex"
    assert _pony.bulk_value_encoder(pet, pet.nick)(_pony.DEFAULT) == ""
    with pytest.raises(ValueError, match="too long"):
        enc("x" * 11)
    with pytest.raises(ValueError, match="required"):
        enc("")
    with pytest.raises(TypeError):
        enc(3)


def test_relation_encoder_takes_objects_and_keys_without_seeding(ents: tuple[Any, Any]) -> None:
    """A relation encodes an object or a key to the key column; a key creates no seed object."""
    owner, pet = ents
    enc = _pony.bulk_value_encoder(pet, pet.owner)
    with db_session:
        o = owner(name="o")
        commit()
        assert enc(o) == o.id
        assert enc(12345) == 12345
        assert not any(x.id == 12345 for x in _pony.cached_objects(o._database_, owner))
        with pytest.raises(ValueError, match="must be int"):
            enc("not a key")


def test_execute_in_session_joins_the_transaction(ents: tuple[Any, Any], db: Database) -> None:
    """A statement run through execute_in_session is rolled back with the session."""
    _owner, pet = ents
    with pytest.raises(RuntimeError), db_session:
        table = _pony.quote_name(db, _pony.entity_info(pet).table)
        _pony.execute_in_session(db, f"DELETE FROM {table}", None)
        pet(name="a")
        _pony.flush_session(db)
        raise RuntimeError
    with db_session:
        assert select(p for p in pet).count() == 0


def test_refresh_objects_reloads_read_values(ents: tuple[Any, Any], db: Database) -> None:
    """After a raw UPDATE, refresh_objects makes read objects show the new value without an error."""
    _owner, pet = ents
    with db_session:
        p = pet(name="a")
    with db_session:
        p = pet[p.id]
        assert p.name == "a"
        table = _pony.quote_name(db, _pony.entity_info(pet).table)
        _pony.execute_in_session(db, f"UPDATE {table} SET {_pony.quote_name(db, 'name')} = 'b'", None)
        _pony.refresh_objects(db, [p], frozenset({"name"}))
        assert p.name == "b"
        assert select(x for x in pet)[:][0].name == "b"


def test_forget_objects_removes_from_identity_map_and_collections(
    ents: tuple[Any, Any], db: Database
) -> None:
    """forget_objects takes deleted rows out of the identity map, key indexes and loaded collections."""
    owner, pet = ents
    with db_session:
        o = owner(name="o")
        p = pet(name="a", owner=o)
        commit()
        assert list(o.pets) == [p]
        table = _pony.quote_name(db, _pony.entity_info(pet).table)
        _pony.execute_in_session(db, f"DELETE FROM {table}", None)
        _pony.forget_objects(db, [p])
        assert list(o.pets) == []
        assert pet.get(id=p.id) is None
        with pytest.raises(OperationWithDeletedObjectError):
            p.name  # noqa: B018


def test_reset_reverse_of_lets_collections_see_new_rows(ents: tuple[Any, Any], db: Database) -> None:
    """After rows pointing at a loaded object are inserted raw, its loaded collection picks them up."""
    owner, pet = ents
    with db_session:
        o = owner(name="o")
        commit()
        assert len(o.pets) == 0
        table = _pony.quote_name(db, _pony.entity_info(pet).table)
        cols = ", ".join(_pony.quote_name(db, c) for c in ("name", "nick", "owner"))
        ph = "?" if _pony.paramstyle(db) == "qmark" else "%s"
        _pony.execute_in_session(db, f"INSERT INTO {table} ({cols}) VALUES ({ph}, '', {ph})", ("n", o.id))
        _pony.reset_reverse_of(db, pet, frozenset({"owner"}))
        assert [x.name for x in o.pets] == ["n"]


def test_entity_query_sql_requires_entity_queries(ents: tuple[Any, Any]) -> None:
    """entity_query_sql gives the entity and SQL of an object query and refuses other queries."""
    _owner, pet = ents
    with db_session:
        entity, sql, _args = _pony.entity_query_sql(select(p for p in pet if p.name == "x"))
        assert entity is pet
        assert sql.upper().startswith("SELECT")
        with pytest.raises(TypeError):
            _pony.entity_query_sql(select(p.name for p in pet))


@pytest.mark.backends("postgres")  # COPY ... FROM STDIN is PostgreSQL's
def test_copy_in_session_joins_the_transaction_and_is_reported(ents: tuple[Any, Any], db: Database) -> None:
    """copy_in_session copies rows in the session's transaction (rolled back with it), returns the row
    count, and execute listeners and Pony's statistics see the statement."""
    _owner, pet = ents
    table = _pony.quote_name(db, _pony.entity_info(pet).table)
    cols = ", ".join(_pony.quote_name(db, c) for c in ("name", "nick"))
    sql = f"COPY {table} ({cols}) FROM STDIN"
    seen: list[Any] = []
    pk.get_kit(db).add_execute_listener(lambda _db, s, args, seconds, error: seen.append((s, args, error)))
    with pytest.raises(RuntimeError), db_session:
        assert _pony.copy_in_session(db, sql, io.StringIO("a\t\nb\tx\\ty\n")) == 2
        assert sorted(select((p.name, p.nick) for p in pet)) == [("a", ""), ("b", "x\ty")]
        raise RuntimeError
    assert seen[0] == (sql, None, None)
    assert sql in db.local_stats
    with db_session:
        assert select(p for p in pet).count() == 0
        with pytest.raises(pony.orm.core.DataError):  # Pony's own wrapper of the driver's error
            _pony.copy_in_session(db, sql, io.StringIO("too\tmany\tcolumns\n"))


def test_discriminator_filter_names_the_class_and_its_subclasses(db: Database) -> None:
    """discriminator_filter gives the discriminator column and the values of a subclass and its own
    subclasses, as Pony's criteria do; None for the root and for entities without a hierarchy."""

    class Animal(db.Entity):
        name = Required(str)

    class Dog(Animal):
        pass

    class Puppy(Dog):
        pass

    class Rock(db.Entity):
        name = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    assert _pony.discriminator_filter(Animal) is None
    assert _pony.discriminator_filter(Rock) is None
    column, values = _pony.discriminator_filter(Dog) or ("", ())
    assert column == Animal._discriminator_attr_.column
    assert sorted(values) == ["Dog", "Puppy"]
    assert _pony.discriminator_filter(Puppy) == (column, ("Puppy",))


def test_encoder_source_plain_datetime_binds_as_pony(db: Database) -> None:
    """On an attached Database the compiled lines of a plain datetime attribute give what Pony's own
    converter gives: an aware value is bound as it is, not turned into naive UTC (issue #12 item 6)."""
    import datetime as dt

    from ponykit.bulk._rows import plan_for

    class Event(db.Entity):
        at = Required(dt.datetime)
        label = Required(str)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    plan = plan_for(Event)
    code, env = _pony.bulk_encoder_source(Event, Event.at, "v", "a_", plan.param_encoders)
    assert not any("is_python_value" in line for line in code)
    aware = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    conv = Event.at.converters[0]
    for value in (aware, dt.datetime(2024, 1, 1, 12)):
        namespace = dict(env, v=value)
        exec("\n".join(code), namespace)
        assert namespace["v"] == conv.py2sql(conv.val2dbval(conv.validate(value, None), None))
    encode = plan.shape(("at", "label")).encode
    assert encode({"at": aware, "label": "x"}) == (conv.py2sql(aware), "x")


def test_insert_returning_support(
    ents: tuple[Any, Any], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every server here has RETURNING; a MySQL-numbered server does not, and return_ids says so first."""
    assert _pony.supports_insert_returning(db)
    version = _pony.server_version(db)
    assert len(version) >= 2 and all(isinstance(part, int) for part in version) and version[0] >= 3
    if _pony.dialect(db) != "mysql":
        return
    author = ents[0]
    monkeypatch.setattr(db.provider, "server_version", (8, 0, 36))  # what a MySQL 8 server reports
    assert not _pony.supports_insert_returning(db)
    with db_session:
        with pytest.raises(
            pk.errors.ConfigurationError, match=r"return_ids=True\) needs INSERT \.\.\. RETURNING.*8\.0\.36"
        ):
            pk.bulk_insert(author, [{"name": "x"}], return_ids=True)
        assert pk.bulk_insert(author, [{"name": "x"}]) == 1


def test_bookkeeping_in_session_joins_the_transaction_unreported(ents: tuple[Any, Any], db: Database) -> None:
    """SAVEPOINT / ROLLBACK TO run on the session's connection in its transaction (started first), and
    execute listeners do not see them (as they do not see Pony's BEGIN/COMMIT)."""
    _owner, pet = ents
    statements: list[str] = []
    pk.get_kit(db).add_execute_listener(lambda _db, sql, *_: statements.append(sql))
    with db_session:
        _pony.bookkeeping_in_session(db, "SAVEPOINT sp_test")
        _pony.execute_in_session(
            db, f"INSERT INTO {_pony.quote_name(db, 'pet')} (name, nick) VALUES ('a', '')", ()
        )
        _pony.bookkeeping_in_session(db, "ROLLBACK TO SAVEPOINT sp_test")
        _pony.bookkeeping_in_session(db, "RELEASE SAVEPOINT sp_test")
        _pony.execute_in_session(
            db, f"INSERT INTO {_pony.quote_name(db, 'pet')} (name, nick) VALUES ('b', '')", ()
        )
    assert [s.split()[0] for s in statements] == ["INSERT", "INSERT"]
    with db_session:
        assert select(p.name for p in pet)[:] == ["b"]


def test_bulk_attrs_value_kind(db: Database) -> None:
    """value_kind says what a column's bound values can hold, for the check of refused values."""
    from datetime import date
    from decimal import Decimal

    class Thing(db.Entity):
        text = Required(str)
        ratio = Optional(float)
        amount = Optional(Decimal)
        count = Optional(int)
        day = Optional(date)
        parent = Optional("Thing", reverse="children")
        children = Set("Thing", reverse="parent")

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    kinds = {a.name: a.value_kind for a in _pony.bulk_attrs(Thing)}
    assert kinds == {
        "id": "safe",
        "text": "str",
        "ratio": "number",
        "amount": "number",
        "count": "safe",
        "day": "safe",
        "parent": "safe",  # the kind of the key it binds (an int): no per-value check of a relation
    }
