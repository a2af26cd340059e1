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


def test_pattern_lookup_renders_like_per_key(db: Database, backend: Any) -> None:
    """A searchable lookup renders one condition per key of the ring, OR-ed, with bound patterns, in the
    backend's index-friendly shape; the index is rendered by install_index_renderer's function."""

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
    assert " OR " in sql
    if backend.name == "sqlite":
        assert sql.count('substr("email", 1, 69) >= ?') == 2
    elif backend.name == "postgres":
        assert sql.count('(substr("email", 1, 69) COLLATE "C") >= %(') == 2
    else:
        assert sql.count("`email` LIKE") == 2
    command = _pony.index_create_command(Person.email)
    assert command is not None and command.startswith("CREATE INDEX")
    assert "substr" in command or "(69)" in command


def test_pattern_bounds_and_condition_parts() -> None:
    """pattern_bounds gives the binary range of a prefix pattern; other patterns give an empty range."""
    assert _pony.pattern_bounds("v1:k1:ab:%") == ("v1:k1:ab:", "v1:k1:ab;")
    assert _pony.pattern_bounds("v1:-") == ("v1:-", "v1:-")
    bind = lambda index, part, f: f"<{index}{part}>"  # noqa: E731
    assert _pony.lookup_condition_parts("like", 0, "c", 0, str, bind) == ["c", " LIKE ", "<0like>"]
    parts = _pony.lookup_condition_parts("prefix-range", 5, "c", 1, str, bind)
    assert "".join(parts) == "(substr(c, 1, 5) >= <1low> AND substr(c, 1, 5) < <1high>)"
    with pytest.raises(ValueError, match="unknown lookup shape"):
        _pony.lookup_condition_parts("nope", 0, "c", 0, str, bind)


def test_default_index_and_renderer(db: Database) -> None:
    """default_column_index sets index=True only when undeclared; the renderer replaces Pony's DDL only
    for the indexes it returns a statement for."""

    class Thing(db.Entity):
        a = Required(str)
        b = Required(str, index="named_b")
        c = Required(str, index=False)

    for attr in (Thing.a, Thing.b, Thing.c):
        _pony.default_column_index(attr)
    assert (Thing.a.index, Thing.b.index, Thing.c.index) == (True, "named_b", False)
    seen: list[tuple[str, str]] = []

    def render(converter: Any, index: str, table: Any, column: str) -> str | None:
        seen.append((index, column))
        if column != "a":
            return None
        return f"CREATE INDEX {_pony.quote_name(db, index)} ON {_pony.quote_name(db, table)} (a, id)"

    _pony.install_index_renderer(db, render)
    _pony.install_index_renderer(db, render)  # idempotent: one schema class per provider
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    assert _pony.index_create_command(Thing.a) is not None
    assert "(a, id)" in str(_pony.index_create_command(Thing.a))
    assert "named_b" in str(_pony.index_create_command(Thing.b))
    assert _pony.index_create_command(Thing.c) is None
    assert {name for name, _ in seen} >= {"idx_thing__a", "named_b"}


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
