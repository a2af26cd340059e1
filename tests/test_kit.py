"""attach() and get_kit(): the one set-up call, its timing rules and its per-Database scope."""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import Database, Required, db_session

import ponykit as pk
from ponykit import _pony


def test_attach_before_bind_says_when_to_call_it() -> None:
    """attach() on an unbound Database raises ConfigurationError explaining the order of calls."""
    with pytest.raises(pk.ConfigurationError) as info:
        pk.attach(Database())
    assert "before the Database was bound" in str(info.value)
    assert "bind_url(db, url)" in str(info.value) and "generate_mapping" in str(info.value)


def test_attach_after_mapping_says_when_to_call_it(db: Database) -> None:
    """attach() after generate_mapping raises ConfigurationError naming the right moment."""

    class Thing(db.Entity):
        name = Required(str)

    db.generate_mapping(create_tables=True)
    with pytest.raises(pk.ConfigurationError, match="after db.generate_mapping"):
        pk.attach(db)


def test_attach_rejects_non_database() -> None:
    """attach() names the type it was given when it is not a Database."""
    with pytest.raises(pk.ConfigurationError, match="got str"):
        pk.attach("sqlite://:memory:")  # type: ignore[arg-type]


def test_second_attach_returns_same_kit_and_keeps_options(db: Database) -> None:
    """A second attach() returns the same Kit, replaces the options given and installs nothing twice."""
    first = pk.attach(db, keys="ring-1", cache="cache-1")
    second = pk.attach(db, keys="ring-2")
    assert second is first
    assert first.keys == "ring-2" and first.cache == "cache-1"
    assert _pony.is_provider_method_wrapped(db, "commit")


def test_get_kit(db: Database) -> None:
    """get_kit() returns the attached Kit and explains how to attach when there is none."""
    with pytest.raises(pk.ConfigurationError, match=r"call ponykit.attach\(db\)"):
        pk.get_kit(db)
    kit = pk.attach(db)
    assert pk.get_kit(db) is kit and kit.db is db


def test_kit_repr_hides_keys_and_cache_contents(db: Database) -> None:
    """The Kit's repr names the key ring's type, never its contents."""

    class SecretRing:
        secret = "s3cr3t-material"

        def __repr__(self) -> str:
            return f"SecretRing({self.secret})"

    kit = pk.attach(db, keys=SecretRing())
    assert "s3cr3t" not in repr(kit) and "SecretRing" in repr(kit)


def test_register_converter_only_before_mapping(db: Database) -> None:
    """register_converter works before mapping and raises afterwards with the fix in the message."""

    class Upper(str):
        pass

    base = _pony.converter_class_for(db, str)

    class UpperConverter(base):  # type: ignore[misc, valid-type]
        def validate(self, val: Any, obj: Any = None) -> Any:
            return Upper(super().validate(val, obj).upper())

    kit = pk.attach(db)
    kit.register_converter(Upper, UpperConverter)

    class Shout(db.Entity):
        word = Required(Upper)

    db.generate_mapping(create_tables=True)
    with db_session:
        Shout(word="hey")
    with db_session:
        assert Shout.select().first().word == "HEY"
    with pytest.raises(pk.ConfigurationError, match="before db.generate_mapping"):
        kit.register_converter(Upper, UpperConverter)


def test_converters_do_not_leak_to_other_databases(make_db: Any) -> None:
    """A converter registered through one Kit is unknown to another Database in the same process."""
    db1, db2 = make_db(), make_db()

    class Tagged(str):
        pass

    base = _pony.converter_class_for(db1, str)

    class TaggedConverter(base):  # type: ignore[misc, valid-type]
        pass

    pk.attach(db1).register_converter(Tagged, TaggedConverter)
    pk.attach(db2)
    assert _pony.converter_class_for(db1, Tagged) is TaggedConverter
    assert _pony.converter_class_for(db2, Tagged) is not TaggedConverter


def test_execute_listener_sees_every_statement(db: Database) -> None:
    """Execute listeners see ORM and raw statements with timings, and can be removed."""

    class Row(db.Entity):
        name = Required(str)

    kit = pk.attach(db)
    db.generate_mapping(create_tables=True)
    seen: list[tuple[str, float]] = []
    remove = kit.add_execute_listener(lambda d, sql, args, secs, err: seen.append((sql, secs)))
    with db_session:
        Row(name="a")
        Row.select().count()
    assert any(sql.upper().startswith("INSERT") for sql, _ in seen)
    assert any("COUNT" in sql.upper() for sql, _ in seen)
    assert all(secs >= 0 for _, secs in seen)
    remove()
    count = len(seen)
    with db_session:
        Row.select().count()
    assert len(seen) == count


def test_failing_execute_listener_does_not_break_queries(db: Database) -> None:
    """A listener that raises is logged; the statement's result is unaffected."""

    class Row(db.Entity):
        name = Required(str)

    kit = pk.attach(db)
    db.generate_mapping(create_tables=True)
    kit.add_execute_listener(lambda *a: 1 / 0)
    with db_session:
        Row(name="a")
    with db_session:
        assert Row.select().count() == 1
