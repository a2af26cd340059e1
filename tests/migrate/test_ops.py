"""The operations: forwards/backwards on snapshots, rendering as Python that executes back to an equal
operation, and the physical hints they give through a Mapped."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from _ops_support import ID, entity, person_pet, rebuilt, snap, snapshots, spec
from hypothesis import given
from pony.orm import Optional, Required, Set

from ponykit.errors import MigrationError
from ponykit.migrate import op
from ponykit.migrate._hints import Hints
from ponykit.migrate._models import build


def _all_ops() -> list[op.Operation]:
    """One operation of each kind that applies to ``person_pet()``."""
    return [
        op.AddEntity("Toy", attrs=[("id", ID), ("label", spec("Required", "str", 30))]),
        op.DropEntity("Club", **_club()),
        op.RenameEntity("Person", "Human"),
        op.AddAttr("Person", "nick", spec("Optional", "str", 40, unique=True)),
        op.AddAttr("Person", "level", spec("Required", "int"), backfill=1, before="age"),
        op.DropAttr("Pet", "nick", spec=spec("Optional", "str")),
        op.RenameAttr("Person", "name", "full_name"),
        op.AlterAttr("Person", "name", spec("Required", "str", 80, index=True), spec("Required", "str", 120)),
        op.AddCompositeKey("Pet", ["owner", "nick"]),
        op.DropCompositeKey("Person", ["name", "age"]),
        op.AddCompositeIndex("Person", ["age", "name"]),
        op.SetDiscriminator("Dog", None, "dog"),
        op.SetTable("Person", None, "people"),
        op.RunSQL({"postgres": "ANALYZE person", "sqlite": "ANALYZE"}, reverse="SELECT 1"),
    ]


def _club() -> dict[str, Any]:
    base = person_pet()
    # Club's relation to Person goes first (a drop of an entity with a live reverse is made of two steps)
    return {"attrs": base["entities"]["Club"]["attrs"]}


def _base_for(operation: op.Operation) -> dict[str, Any]:
    base = person_pet()
    if isinstance(operation, op.DropEntity):
        del base["entities"]["Person"]["attrs"][4]  # Person.clubs
        base["entities"]["Club"]["attrs"] = [dict(name="id", **ID)]
        return base
    return base


@pytest.mark.parametrize("operation", _all_ops(), ids=lambda o: type(o).__name__)
def test_backwards_undoes_forwards(operation: op.Operation) -> None:
    before = _base_for(operation)
    if isinstance(operation, op.DropEntity):
        operation = op.DropEntity("Club", attrs=[dict(name="id", **ID)])
    kept = copy.deepcopy(before)
    after = operation.forwards(before)
    assert before == kept, "forwards must not change its argument"
    if not isinstance(operation, op.RunSQL):
        assert after != before
    assert operation.reversible
    assert operation.backwards(after) == before


@pytest.mark.parametrize("operation", _all_ops(), ids=lambda o: type(o).__name__)
def test_render_executes_back_to_an_equal_operation(operation: op.Operation) -> None:
    assert rebuilt(operation) == operation
    assert operation.describe()


def test_render_is_readable_python_with_ponys_classes() -> None:
    assert (
        op.AddAttr("Person", "nick", Optional(str, 40, unique=True)).render()
        == 'op.AddAttr("Person", "nick", Optional(str, 40, unique=True))'
    )
    assert (
        op.AddAttr("Pet", "owner", Required("Person", reverse="pets")).render()
        == 'op.AddAttr("Pet", "owner", Required("Person", reverse="pets"))'
    )
    assert (
        op.RenameAttr("Person", "name", "full_name").render()
        == 'op.RenameAttr("Person", "name", "full_name")'
    )
    text = op.AddEntity("Toy", attrs=[("id", ID), ("kids", spec("Set", "entity:Person"))]).render()
    assert text == (
        "op.AddEntity(\n"
        '    "Toy",\n'
        "    attrs=[\n"
        '        ("id", PrimaryKey(int, auto=True)),\n'
        '        ("kids", Set("Person")),\n'
        "    ],\n"
        ")"
    )


def test_pony_declarations_become_snapshot_specs() -> None:
    added = op.AddAttr("Person", "pets", Set("Pet", reverse="owner"))
    assert added.attr_decl == spec("Set", "entity:Pet", reverse="owner")
    assert added == op.AddAttr("Person", "pets", spec("Set", "entity:Pet", reverse="owner"))


def test_rename_entity_follows_relations_and_bases() -> None:
    after = op.RenameEntity("Pet", "Animal").forwards(person_pet())
    entities = after["entities"]
    assert "Pet" not in entities
    assert entities["Dog"]["bases"] == ["Animal"]
    assert entities["Person"]["attrs"][3]["type"] == "entity:Animal"


def test_rename_attr_follows_keys_and_the_reverse_side() -> None:
    after = op.RenameAttr("Person", "pets", "animals").forwards(person_pet())
    assert after["entities"]["Pet"]["attrs"][1]["options"]["reverse"] == "animals"
    after = op.RenameAttr("Person", "name", "full_name").forwards(person_pet())
    assert after["entities"]["Person"]["composite_keys"] == [["full_name", "age"]]


def test_add_attr_keeps_declaration_order() -> None:
    after = op.AddAttr("Person", "level", spec("Optional", "int"), before="age").forwards(person_pet())
    assert [a["name"] for a in after["entities"]["Person"]["attrs"]][:4] == ["id", "name", "level", "age"]


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (op.AddAttr("Nobody", "x", spec("Optional", "int")), "entity 'Nobody' does not exist"),
        (op.AddAttr("Person", "age", spec("Optional", "int")), "'age' already exists"),
        (op.DropAttr("Person", "name"), "composite_key"),
        (op.DropEntity("Pet"), "drop its subclasses first (Dog)"),
        (op.AlterAttr("Person", "age", spec("Optional", "str"), spec("Optional", "int")), "expected"),
        (op.RenameEntity("Person", "Pet"), "'Pet' already exists"),
    ],
)
def test_operations_that_do_not_apply_say_why(operation: op.Operation, message: str) -> None:
    with pytest.raises(MigrationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        operation.forwards(person_pet())


def test_irreversible_operations_refuse_backwards() -> None:
    for operation in (op.DropAttr("Pet", "nick"), op.DropEntity("Club"), op.RunPython(print), op.RunSQL("X")):
        assert not operation.reversible
        with pytest.raises(MigrationError, match="irreversible"):
            operation.backwards(person_pet())


def test_run_python_and_run_sql() -> None:
    calls: list[Any] = []
    step = op.RunPython(calls.append, reverse=op.noop)
    step.run("db")
    step.run_reverse("db")
    assert calls == ["db"]
    assert step.forwards(person_pet()) == person_pet()
    sql = op.RunSQL({"postgres": "ANALYZE person"}, reverse="SELECT 1")
    assert sql.statements("postgres") == "ANALYZE person"
    assert sql.statements("sqlite") is None
    assert sql.reverse_statements("mysql") == "SELECT 1"


def test_implied_backfills() -> None:
    assert op.implied_backfill(spec("Optional", "str")) == ""
    assert op.implied_backfill(spec("Optional", "Json")) == {}
    assert op.implied_backfill(spec("Optional", "IntArray")) == []
    assert op.implied_backfill(spec("Required", "int", default=3)) == 3
    assert op.implied_backfill(spec("Required", "int")) is op.MISSING
    assert op.implied_backfill(spec("Required", "str")) is op.MISSING
    assert not op.needs_backfill(spec("Optional", "int"))
    assert not op.needs_backfill(spec("Optional", "str", nullable=True))
    assert op.needs_backfill(spec("Optional", "str"))


# -- hints through _models.Mapped on SQLite (Pony's names: class-named tables, attr-named columns) -------


def _hints(base: dict[str, Any], *operations: op.Operation) -> Hints:
    after = base
    for operation in operations:
        after = operation.forwards(after)
    return op.collect_hints(operations, base, build(base, "sqlite"), build(after, "sqlite"))


def test_rename_entity_renames_its_table_link_tables_and_discriminator() -> None:
    hints = _hints(person_pet(), op.RenameEntity("Person", "Human"), op.RenameEntity("Dog", "Hound"))
    assert hints.table_renames == {"Person": "Human", "Club_Person": "Club_Human"}
    assert hints.column_renames == {("Club_Human", "person"): "human"}
    assert hints.discriminator_updates == [("Pet", "classtype", "Dog", "Hound")]


def test_rename_entity_keeps_a_declared_table() -> None:
    base = person_pet()
    base["entities"]["Person"]["table"] = "people"
    hints = _hints(base, op.RenameEntity("Person", "Human"))
    assert "people" not in hints.table_renames


def test_rename_attr_renames_columns_and_follows_an_earlier_entity_rename() -> None:
    hints = _hints(person_pet(), op.RenameEntity("Person", "Human"), op.RenameAttr("Human", "name", "full"))
    assert hints.column_renames[("Human", "name")] == "full"
    assert hints.table_renames["Person"] == "Human"


def test_add_attr_backfills_explicit_and_implied() -> None:
    hints = _hints(
        person_pet(),
        op.AddAttr("Person", "nick", spec("Optional", "str")),
        op.AddAttr("Person", "level", spec("Required", "int"), backfill=2),
        op.AddAttr("Person", "note", spec("Optional", "int")),
        op.AddAttr("Person", "flag", spec("Optional", "bool"), backfill=False),
    )
    assert hints.backfills == {("Person", "nick"): "", ("Person", "level"): 2, ("Person", "flag"): False}


def test_drops_name_what_they_drop() -> None:
    base = person_pet()
    hints = _hints(
        base,
        op.DropAttr("Pet", "nick"),
        op.DropAttr("Person", "clubs"),
        op.DropAttr("Club", "members"),
        op.DropEntity("Dog", attrs=[dict(name="bark", **spec("Optional", "str", 20))], bases=("Pet",)),
        op.DropEntity("Club", attrs=[dict(name="id", **ID)]),
    )
    # Dog was Pet's only subclass: Pony has no discriminator column for a lone entity
    assert hints.dropped_columns == {("Pet", "nick"), ("Pet", "bark"), ("Pet", "classtype")}
    assert hints.dropped_tables == {"Club", "Club_Person"}
    assert hints.discriminator_deletes == [("Pet", "classtype", "Dog")]


def test_dropping_a_hierarchy_drops_its_table_only() -> None:
    dog = op.DropEntity("Dog", attrs=[dict(name="bark", **spec("Optional", "str", 20))], bases=["Pet"])
    pet = op.DropEntity("Pet", attrs=[dict(name="id", **ID), dict(name="nick", **spec("Optional", "str"))])
    base = op.DropAttr("Pet", "owner").forwards(op.DropAttr("Person", "pets").forwards(person_pet()))
    hints = _hints(base, dog, pet)
    assert hints.dropped_tables == {"Pet"} and hints.discriminator_deletes == []


def test_deleted_subclass_rows_follow_a_renamed_root() -> None:
    dog = op.DropEntity("Dog", attrs=[dict(name="bark", **spec("Optional", "str", 20))], bases=["Pet"])
    hints = _hints(person_pet(), dog, op.RenameEntity("Pet", "Animal"))
    assert hints.discriminator_deletes == [("Animal", "classtype", "Dog")]
    assert hints.table_renames == {"Pet": "Animal"}
    assert ("Animal", "bark") in hints.dropped_columns


def test_first_subclass_backfills_the_new_discriminator_column() -> None:
    cat = op.AddEntity("Cat", attrs=[("lives", spec("Optional", "int"))], bases=["Pet"])
    assert _hints(person_pet(), cat).backfills == {}  # Pet already has a discriminator (Dog)
    vip = op.AddEntity("Vip", attrs=[("rank", spec("Optional", "int"))], bases=["Club"])
    assert _hints(person_pet(), vip).backfills == {("Club", "classtype"): "Club"}


def test_lossy_alter_is_flagged() -> None:
    old, new = spec("Required", "str", 80, index=True), spec("Required", "str", 10, index=True)
    hints = _hints(person_pet(), op.AlterAttr("Person", "name", old, new, lossy=True))
    assert hints.lossy == {("Person", "name")}


@given(snapshots())
def test_add_then_drop_entity_round_trips(base: dict[str, Any]) -> None:
    operation = op.AddEntity("Zed", attrs=[("id", ID), ("v", spec("Optional", "int"))])
    after = operation.forwards(base)
    assert operation.backwards(after) == base
    assert op.DropEntity("Zed", attrs=[("id", ID), ("v", spec("Optional", "int"))]).forwards(after) == base
    assert snap(**base["entities"]) == base
    assert entity(("id", ID))["primary_key"] == ["id"]


def test_subclass_attrs_get_only_explicit_backfills() -> None:
    hints = _hints(
        person_pet(),
        op.AddAttr("Dog", "collar", spec("Optional", "str")),
        op.AddAttr("Dog", "legs", spec("Required", "int"), backfill=4),
    )
    assert hints.backfills == {("Pet", "legs"): 4}


# -- the same through every dialect's names ---------------------------------------------------------------


def _mapped_hints(dialect: str, base: dict[str, Any], *operations: op.Operation) -> Hints:
    after = base
    for operation in operations:
        after = operation.forwards(after)
    return op.collect_hints(operations, base, build(base, dialect), build(after, dialect))


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mysql"])
def test_hints_with_ponys_names(dialect: str) -> None:
    def name(text: str) -> str:
        return text if dialect == "sqlite" else text.lower()

    hints = _mapped_hints(
        dialect,
        person_pet(),
        op.RenameEntity("Person", "Human"),
        op.RenameAttr("Human", "name", "full"),
        op.RenameEntity("Dog", "Hound"),
        op.AddAttr("Human", "nick", spec("Optional", "str")),
        op.DropAttr("Pet", "nick", spec=spec("Optional", "str")),
    )
    assert hints.table_renames == {name("Person"): name("Human"), name("Club_Person"): name("Club_Human")}
    assert hints.column_renames == {(name("Human"), "name"): "full", (name("Club_Human"), "person"): "human"}
    assert hints.backfills == {(name("Human"), "nick"): ""}
    assert hints.discriminator_updates == [(name("Pet"), "classtype", "Dog", "Hound")]
    assert hints.dropped_columns == {(name("Pet"), "nick")}


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_drop_hints_with_ponys_names(dialect: str) -> None:
    def name(text: str) -> str:
        return text if dialect == "sqlite" else text.lower()

    club = [dict(name="id", **ID), dict(name="members", **spec("Set", "entity:Person", reverse="clubs"))]
    hints = _mapped_hints(
        dialect,
        person_pet(),
        op.DropAttr("Person", "clubs", spec=spec("Set", "entity:Club", reverse="members")),
        op.DropEntity("Club", attrs=club),
        op.DropEntity("Dog", attrs=[dict(name="bark", **spec("Optional", "str", 20))], bases=["Pet"]),
    )
    assert hints.dropped_tables == {name("Club"), name("Club_Person")}
    assert hints.discriminator_deletes == [(name("Pet"), "classtype", "Dog")]
    assert hints.dropped_columns == {(name("Pet"), "bark"), (name("Pet"), "classtype")}


def test_hints_need_the_views_of_collect_hints() -> None:
    with pytest.raises(MigrationError, match="op.collect_hints"):
        op.RenameEntity("Person", "Human").hints(build(person_pet(), "sqlite"), object(), Hints())  # type: ignore[arg-type]
