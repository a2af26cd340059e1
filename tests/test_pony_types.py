"""The types section of the _pony door: converter entries, normalization, SQL operations, metadata."""

from __future__ import annotations

from typing import Any

import pytest
from pony.orm import Database, Required, db_session, select

import ponykit as pk
from ponykit import _pony


class Marker:
    """A type only this test module normalizes."""


def test_wrap_param_converters_changes_parameters_only(make_db: Any) -> None:
    """Only query-parameter converters get the made class; attribute converters, the converter list and
    another Database's provider keep Pony's classes (issue #12 item 6)."""
    db, other = make_db(), make_db()
    before = list(db.provider.converter_classes)
    made = _pony.wrap_param_converters(db, str, lambda cls: type("X" + cls.__name__, (cls,), {}))
    assert _pony.wrap_param_converters(db, str, lambda cls: cls) is made  # idempotent
    assert list(db.provider.converter_classes) == before
    assert type(db.provider.get_converter_by_py_type(str)) is made
    assert type(db.provider.get_converter_by_py_type(int)) is not made
    assert type(other.provider.get_converter_by_py_type(str)) is made.__mro__[1]

    class Named(db.Entity):  # type: ignore[name-defined,misc]
        name = Required(str)

    db.generate_mapping(create_tables=True)
    assert type(_pony.attribute_converter(Named.name)) is made.__mro__[1]


def test_register_column_converter_maps_table_and_column(make_db: Any) -> None:
    """A registered attribute converter is found by its table and column once the entity is mapped."""
    db = make_db()

    class Stamp(db.Entity):  # type: ignore[name-defined,misc]
        _table_ = "pk_stamp"
        moment = Required(str, column="at_col")

    db.generate_mapping(create_tables=True)
    converter = _pony.attribute_converter(Stamp.moment)
    assert _pony.column_param_converters(db) == {}
    _pony.register_column_converter(converter)
    assert _pony.column_param_converters(db) == {("pk_stamp", "at_col"): converter}


def test_register_type_normalization() -> None:
    """A registered type normalizes to its storage type in Pony's translator."""
    from pony.orm.ormtypes import normalize_type

    with pytest.raises(TypeError):
        normalize_type(Marker)
    _pony.register_type_normalization(Marker, int)
    assert normalize_type(Marker) is int


def test_sql_operation_is_per_database(make_db: Any) -> None:
    """install_sql_operation shadows the builder class on one provider only."""
    db, other = make_db(), make_db()
    _pony.install_sql_operation(db, "PONYKIT_TEST_OP", lambda builder, a, b: ["1 = 1"])
    assert hasattr(db.provider.sqlbuilder_cls, "PONYKIT_TEST_OP")
    assert not hasattr(other.provider.sqlbuilder_cls, "PONYKIT_TEST_OP")


def test_pattern_lookup_renders_like_per_key(db: Database) -> None:
    """A searchable lookup renders one LIKE per key of the ring, OR-ed, with bound patterns."""

    class Person(db.Entity):
        email = Required(pk.types.EncryptedStr, searchable=True)

    ring = pk.security.KeyRing(
        {"a": pk.security.KeyRing.generate_key(), "b": pk.security.KeyRing.generate_key()}
    )
    pk.attach(db, keys=ring)
    db.generate_mapping(create_tables=True)
    with db_session:
        Person(email="x@y")
    with db_session:
        assert Person.get(email="x@y") is not None
        sql = db.last_sql
    assert sql.count(" LIKE ") == 2
    assert " OR " in sql


def test_metadata_helpers(db: Database) -> None:
    """Root entity names, default aliases, raw SQL conditions, placeholders and object keys."""

    class BaseThing(db.Entity):
        name = Required(str)

    class SubThing(BaseThing):
        extra = Required(int)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    assert _pony.root_entity_name(SubThing) == "BaseThing"
    assert _pony.default_alias(SubThing) == "st"
    assert _pony.attribute_entity(SubThing.extra) is SubThing
    assert _pony.positional_placeholder(db) in ("?", "%s")
    assert _pony.object_primary_key(None) is None
    with db_session:
        thing = SubThing(name="a", extra=1)
        thing.flush()
        assert _pony.object_primary_key(thing) == thing.id
        column = _pony.quote_name(db, _pony.sql_alias("t")) + "." + _pony.quote_name(db, "name")
        condition = _pony.raw_sql_condition(column + " = $v", {"v": "a"})
        assert [t.name for t in select(t for t in BaseThing if condition)] == ["a"]
        assert _pony.sql_alias("bt") == "bt"
        assert _pony.attribute_converter(BaseThing.name).py2sql("a") == "a"


def test_dialect_converter_class_ignores_ponykit_entries(db: Database) -> None:
    """Pony's own converter class for a type, even when ponykit's entries on the instance come first."""
    import enum

    class Shade(str, enum.Enum):
        DARK = "dark"

    pk.attach(db)
    assert _pony.converter_class_for(db, Shade).__name__ == "EnumConverter"
    plain = _pony.dialect_converter_class(db, Shade)
    assert plain is _pony.dialect_converter_class(db, str)
    assert (
        plain
        is type(db.provider).converter_classes[
            next(i for i, (key, _c) in enumerate(type(db.provider).converter_classes) if issubclass(str, key))
        ][1]
    )


def test_converter_without_option_hides_and_keeps_the_option(db: Database) -> None:
    """The converter never sees the option (Pony would refuse it); the attribute keeps it afterwards."""

    class Note(db.Entity):  # type: ignore[name-defined,misc]
        text = Required(str, 20, as_enum=True)

    attr = Note.text
    assert _pony.attribute_option(attr, "as_enum") is True
    assert _pony.attribute_option(attr, "missing", 5) == 5
    cls = _pony.dialect_converter_class(db, str)
    converter = _pony.converter_without_option(cls, db.provider, str, attr, "as_enum")
    assert converter.max_len == 20
    assert _pony.attribute_option(attr, "as_enum") is True
    with pytest.raises(TypeError, match="unknown option 'as_enum'"):
        cls(db.provider, str, attr)
