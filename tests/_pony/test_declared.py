"""The door's declared options (``ponykit._pony.declared``): attribute and entity specs, declared again."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest
from pony.orm import (
    Database,
    Discriminator,
    Json,
    Optional,
    PrimaryKey,
    Required,
    Set,
    composite_index,
    composite_key,
)

from ponykit import _pony


def _today() -> datetime.date:
    return datetime.date.today()


def declare_people(db: Database) -> None:
    class Person(db.Entity):
        name = Required(str, 80, index=True)
        age = Optional(int, size=16)
        nick = Optional(str, 40, nullable=True, unique=True)
        born = Optional(datetime.date, default=_today)
        score = Optional(Decimal, 10, 3, sql_default="0")
        pets = Set("Pet", cascade_delete=False)
        kind = Discriminator(str)
        composite_key(name, age)
        composite_index(age, born)

    class Student(Person):
        _discriminator_ = "student"
        school = Optional(str, column="school_name")
        courses = Set("Course", table="enrolment")

    class Pet(db.Entity):
        owner = Required(Person)
        name = Required(str, 30)
        data = Optional(Json)
        PrimaryKey(owner, name)

    class Course(db.Entity):
        _table_ = "courses"
        code = PrimaryKey(str, 10)
        students = Set(Student)


def mapped_people(dialect: str = "sqlite") -> Database:
    db = Database()
    declare_people(db)
    _pony.map_offline(db, dialect)
    return db


def test_entity_specs_read_the_declarations_canonically() -> None:
    specs = _pony.entity_specs(mapped_people("postgres"))
    assert list(specs) == ["Person", "Student", "Pet", "Course"]
    person = specs["Person"]
    assert person["bases"] == [] and person["table"] is None and person["discriminator"] is None
    assert person["primary_key"] == ["id"]
    attrs = {a["name"]: a for a in person["attrs"]}
    assert [a["name"] for a in person["attrs"]] == [
        "id",
        "name",
        "age",
        "nick",
        "born",
        "score",
        "pets",
        "kind",
    ]
    assert attrs["id"] == {
        "name": "id",
        "kind": "PrimaryKey",
        "type": "int",
        "args": [],
        "options": {"auto": True},
    }
    assert attrs["name"] == {
        "name": "name",
        "kind": "Required",
        "type": "str",
        "args": [80],
        "options": {"index": True},
    }
    assert attrs["age"]["options"] == {"size": 16}  # nullable: Pony's own for an Optional int
    assert attrs["nick"]["options"] == {"unique": True}  # an optional unique one is nullable anyway
    assert attrs["born"]["options"] == {"default": {"callable": f"{__name__}._today"}}
    assert attrs["score"]["args"] == [10, 3] and attrs["score"]["options"] == {"sql_default": "0"}
    assert attrs["pets"] == {
        "name": "pets",
        "kind": "Set",
        "type": "entity:Pet",
        "args": [],
        "options": {"cascade_delete": False, "reverse": "owner"},
    }
    assert attrs["kind"] == {
        "name": "kind",
        "kind": "Discriminator",
        "type": "str",
        "args": [],
        "options": {},
    }
    assert person["composite_keys"] == [["name", "age"]]
    assert person["composite_indexes"] == [["age", "born"]]
    student = specs["Student"]
    assert (
        student["bases"] == ["Person"] and student["discriminator"] == "student" and student["table"] is None
    )
    assert student["primary_key"] == ["id"]
    school, courses = student["attrs"]
    assert school["options"] == {"column": "school_name"}  # nullable: Pony's own in a subclass
    assert courses["options"] == {"reverse": "students", "table": "enrolment"}
    pet = specs["Pet"]
    assert pet["primary_key"] == ["owner", "name"] and pet["composite_keys"] == []
    assert pet["attrs"][0]["options"] == {"reverse": "pets"}
    assert pet["attrs"][2]["type"] == "Json"
    assert specs["Course"]["table"] == "courses"


@pytest.mark.parametrize("dialect", _pony.DIALECTS)
def test_declared_again_the_entities_map_to_the_same_schema(dialect: str) -> None:
    app = mapped_people(dialect)
    specs = _pony.entity_specs(app)
    again = Database()
    _pony.declare_entities(again, specs)
    _pony.map_offline(again, dialect)
    assert _pony.entity_specs(again) == specs
    assert _pony.physical_schema(again) == _pony.physical_schema(app)
    assert again.schema.generate_create_script() == app.schema.generate_create_script()


def test_specs_of_an_unmapped_model_keep_what_is_declared() -> None:
    db = Database()
    declare_people(db)
    specs = _pony.entity_specs(db)
    student = specs["Student"]
    assert student["attrs"][1]["options"] == {"table": "enrolment"}  # no reverse yet: Pony links at mapping


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        (Optional(str, 40), {"kind": "Optional", "type": "str", "args": [40], "options": {}}),
        (Required("Person"), {"kind": "Required", "type": "entity:Person", "args": [], "options": {}}),
        (
            Required(int, default=3, unsigned=True, column="n"),
            {
                "kind": "Required",
                "type": "int",
                "args": [],
                "options": {"column": "n", "default": 3, "unsigned": True},
            },
        ),
        (
            Optional(Decimal, default=Decimal("1.50")),
            {"kind": "Optional", "type": "Decimal", "args": [], "options": {"default": {"decimal": "1.50"}}},
        ),
        (
            Set("Tag", table="t", reverse="items"),
            {"kind": "Set", "type": "entity:Tag", "args": [], "options": {"reverse": "items", "table": "t"}},
        ),
        (
            Optional(datetime.datetime, precision=3, nullable=True, index="idx_at"),
            {
                "kind": "Optional",
                "type": "datetime",
                "args": [],
                "options": {"index": "idx_at", "precision": 3},
            },
        ),
        (
            Optional(str, nullable=True),
            {"kind": "Optional", "type": "str", "args": [], "options": {"nullable": True}},
        ),
    ],
)
def test_an_unbound_attribute_reads_as_declared_and_declares_back(
    attribute: Any, expected: dict[str, Any]
) -> None:
    spec = _pony.attr_spec(attribute)
    assert spec == {"name": None, **expected}
    again = _pony.declare_attr(spec)
    assert type(again) is type(attribute)
    assert _pony.attr_spec(again) == spec


def test_options_pony_would_infer_read_as_not_declared() -> None:
    """A migration file's ``Optional(int, nullable=True)`` is the app's ``Optional(int)``."""
    assert _pony.attr_spec(Optional(int, nullable=True)) == _pony.attr_spec(Optional(int))
    assert _pony.attr_spec(Optional(str, unique=True, nullable=True)) == _pony.attr_spec(
        Optional(str, unique=True)
    )
    assert _pony.attr_spec(Optional("Person", nullable=True)) == _pony.attr_spec(Optional("Person"))


def test_custom_types_are_named_by_module_and_qualname() -> None:
    from ponykit.types import AwareDatetime

    spec = _pony.attr_spec(Optional(AwareDatetime))
    assert spec["type"] == "py:ponykit.types.builtin.AwareDatetime"
    assert _pony.import_qualname("ponykit.types.builtin.AwareDatetime") is AwareDatetime


def test_unknown_types_and_kinds_are_refused_with_the_name() -> None:
    with pytest.raises(ValueError, match="'Money'"):
        _pony.declare_attr({"name": "x", "kind": "Required", "type": "Money", "args": [], "options": {}})
    with pytest.raises(ValueError, match="'Maybe'"):
        _pony.declare_attr({"name": "x", "kind": "Maybe", "type": "int", "args": [], "options": {}})
    with pytest.raises(ValueError, match="'Ghost'"):
        _pony.declare_entities(
            Database(),
            {
                "A": {
                    "bases": ["Ghost"],
                    "table": None,
                    "discriminator": None,
                    "primary_key": ["id"],
                    "attrs": [],
                    "composite_keys": [],
                    "composite_indexes": [],
                }
            },
        )


def test_mapping_facts() -> None:
    db = mapped_people("mysql")
    assert _pony.mapping_table(db, "Student") == "person"
    assert _pony.mapping_columns(db, "Pet", "owner") == ("owner",)
    assert _pony.mapping_columns(db, "Student", "school") == ("school_name",)
    assert _pony.mapping_columns(db, "Person", "pets") == ()
    assert _pony.mapping_link(db, "Student", "courses") == ("enrolment", ("course",))
    assert _pony.mapping_link(db, "Course", "students") == ("enrolment", ("student",))
    assert _pony.mapping_link(db, "Person", "pets") is None
    assert _pony.mapping_discriminator(db, "Student") == ("person", "kind", "student")
    assert _pony.mapping_discriminator(db, "Course") is None


def test_values_a_snapshot_cannot_restore_read_back_the_same_and_refuse_to_run() -> None:
    db = Database()

    class Thing(db.Entity):
        at = Optional(datetime.datetime, default=lambda: datetime.datetime(2020, 1, 1))
        n = Optional(int, py_check=lambda v: v > 0)

    _pony.map_offline(db, "sqlite")
    specs = _pony.entity_specs(db)
    at, n = specs["Thing"]["attrs"][1:]
    assert set(at["options"]["default"]) == {"repr"} and set(n["options"]["py_check"]) == {"repr"}
    again = Database()
    _pony.declare_entities(again, specs)
    _pony.map_offline(again, "sqlite")
    assert _pony.entity_specs(again) == specs
    stand_in = _pony.value_of_spec(at["options"]["default"])
    with pytest.raises(RuntimeError, match="not restorable"):
        stand_in()
