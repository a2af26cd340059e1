"""Migration files: the exact text written for a catalogue of single changes (golden files, which double
as examples for the docs), loading a directory into a graph, replay (merges included) and the lock.

``PONYKIT_UPDATE_GOLDEN=1`` rewrites the golden files from the current rendering (review the diff).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _ops_support import ID, entity, named, person_pet, snap, spec

from ponykit.errors import MigrationStateError
from ponykit.migrate import op
from ponykit.migrate._autodetect import autodetect
from ponykit.migrate._files import (
    LOCK_NAME,
    load,
    read_lock,
    render_migration,
    replay,
    slugify,
    snapshot_hash,
    write_lock,
    write_migration,
)

GOLDEN = Path(__file__).parent / "golden"


def touch(db: Any) -> None:
    """A data migration step used by the catalogue (importable: the file references it)."""


Change = Callable[[dict[str, Any]], None]


def _attrs(s: dict[str, Any], name: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = s["entities"][name]["attrs"]
    return result


def _drop_clubs(s: dict[str, Any]) -> None:
    del _attrs(s, "Person")[4]
    del s["entities"]["Club"]


def _no_m2m(s: dict[str, Any]) -> None:
    del _attrs(s, "Person")[4]
    _attrs(s, "Club").pop()


def _set_age(age: dict[str, Any]) -> Change:
    def change(s: dict[str, Any]) -> None:
        _attrs(s, "Person")[2] = named("age", age)

    return change


def _rename_dog(s: dict[str, Any]) -> None:
    s["entities"]["Hound"] = s["entities"].pop("Dog")


# name -> (change to person_pet(), autodetect keyword arguments)
CATALOGUE: dict[str, tuple[Change, dict[str, Any]]] = {
    "add_entity": (
        lambda s: s["entities"].update(Toy=entity(("id", ID), ("label", spec("Required", "str", 30)))),
        {},
    ),
    "drop_entity": (_drop_clubs, {"allow_drop": True}),
    "rename_entity": (
        lambda s: op.RenameEntity("Pet", "Animal")._forwards(s),
        {"renames": {"Pet": "Animal"}},
    ),
    "add_attr_implied_backfill": (
        lambda s: _attrs(s, "Person").append(named("nick", spec("Optional", "str", 40))),
        {},
    ),
    "add_attr_backfill": (
        lambda s: _attrs(s, "Person").append(named("level", spec("Required", "int"))),
        {"backfill": {"Person.level": 1}},
    ),
    "drop_attr": (lambda s: _attrs(s, "Pet").pop(), {"allow_drop": True}),
    "rename_attr": (
        lambda s: op.RenameAttr("Person", "name", "full_name")._forwards(s),
        {"renames": {"Person.name": "full_name"}},
    ),
    "alter_type": (_set_age(spec("Optional", "float")), {}),
    "alter_size_lossy": (
        lambda s: _attrs(s, "Dog").__setitem__(0, named("bark", spec("Optional", "str", 10))),
        {"allow_lossy": True},
    ),
    "alter_nullable": (_set_age(spec("Required", "int")), {"backfill": {"Person.age": 0}}),
    "alter_unique": (_set_age(spec("Optional", "int", unique=True)), {}),
    "alter_index": (_set_age(spec("Optional", "int", index=True)), {}),
    "add_composite_key": (lambda s: s["entities"]["Pet"]["composite_keys"].append(["owner", "nick"]), {}),
    "drop_composite_key": (lambda s: s["entities"]["Person"]["composite_keys"].clear(), {}),
    "add_composite_index": (
        lambda s: s["entities"]["Person"]["composite_indexes"].append(["age", "name"]),
        {},
    ),
    "m2m_remove": (_no_m2m, {"allow_drop": True}),
    "subclass_add": (
        lambda s: s["entities"].update(
            Cat=entity(("lives", spec("Required", "int", default=9)), bases=["Pet"])
        ),
        {},
    ),
    "subclass_rename": (_rename_dog, {"renames": {"Dog": "Hound"}}),
    "set_discriminator": (lambda s: s["entities"]["Dog"].update(discriminator="dog"), {}),
    "set_table": (lambda s: s["entities"]["Person"].update(table="people"), {}),
    "typed_defaults": (
        lambda s: _attrs(s, "Person").extend(
            [
                named("token", spec("Optional", "UUID", default={"callable": "uuid.uuid4"})),
                named("price", spec("Required", "Decimal", 10, 2, default={"decimal": "1.50"})),
            ]
        ),
        {},
    ),
}


def _case(name: str) -> tuple[dict[str, Any], dict[str, Any], list[op.Operation]]:
    """(before, after, operations) of a catalogue entry."""
    if name == "m2m_add":
        before = person_pet()
        _no_m2m(before)
        return before, person_pet(), autodetect(before, person_pet())
    if name == "run_python":
        return person_pet(), person_pet(), [op.RunPython(touch, reverse=op.noop), op.RunPython(op.noop)]
    if name == "run_sql":
        ops = [
            op.RunSQL({"postgres": "ANALYZE person", "sqlite": "ANALYZE"}),
            op.RunSQL("SELECT 1", reverse="SELECT 2"),
        ]
        return person_pet(), person_pet(), ops
    change, kwargs = CATALOGUE[name]
    after = person_pet()
    change(after)
    return person_pet(), after, autodetect(person_pet(), after, **kwargs)


CASES = [*CATALOGUE, "m2m_add", "run_python", "run_sql"]


@pytest.mark.parametrize("name", CASES)
def test_golden_text(name: str) -> None:
    _, after, ops = _case(name)
    assert ops, "a catalogue entry must change something"
    text = render_migration(ops, name.replace("_", " "), "0002_abcdef", ["0001_000000"], snapshot_hash(after))
    path = GOLDEN / f"{name}.py.txt"
    if os.environ.get("PONYKIT_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", CASES)
def test_written_file_loads_and_replays(name: str, tmp_path: Path) -> None:
    before, after, ops = _case(name)
    first = write_migration(tmp_path, autodetect(snap(), before), "initial")
    root = load(tmp_path).heads[0]
    second = write_migration(tmp_path, ops, f"{name} change", root)
    assert first.name.startswith("0001_") and second.name.startswith("0002_")
    assert second.name.endswith(f"_{name}_change.py")
    graph = load(tmp_path)
    head = graph.heads[0]
    assert graph.roots == [root] and graph.revisions == [root, head]
    assert graph[head].parents == (root,) and graph.children[root] == [head]
    assert list(graph[head].operations) == ops
    assert replay(graph, head) == after
    assert graph[head].schema_hash == snapshot_hash(after)


def test_written_files_are_ruff_clean(tmp_path: Path) -> None:
    for name in CASES:
        _, after, ops = _case(name)
        (tmp_path / f"m_{name}.py").write_text(
            render_migration(ops, name, "0002_abcdef", ["0001_000000"], snapshot_hash(after)),
            encoding="utf-8",
        )
    for command in (["ruff", "format", "--check", "--quiet"], ["ruff", "check", "--quiet", "--no-cache"]):
        done = subprocess.run([*command, str(tmp_path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def _write(folder: Path, name: str, revision: str, down: Any, body: str = "") -> None:
    text = f"from ponykit.migrate import op\nrevision = {revision!r}\ndown_revision = {down!r}\n"
    text += f"operations = [{body}]\n"
    (folder / name).write_text(text, encoding="utf-8")


def test_graph_heads_merges_and_checksums(tmp_path: Path) -> None:
    person = 'op.AddEntity("Person", attrs=[("id", {"kind": "PrimaryKey", "type": "int"})])'
    pet = person.replace("Person", "Pet")
    _write(tmp_path, "0001_aaaaaa_a.py", "r1", None, person)
    _write(tmp_path, "0002_bbbbbb_b.py", "r2", "r1", pet)
    _write(tmp_path, "0002_cccccc_c.py", "r3", "r1", 'op.RenameEntity("Person", "Human")')
    graph = load(tmp_path)
    assert sorted(graph.heads) == ["r2", "r3"]
    assert len(graph["r1"].checksum) == 64
    _write(tmp_path, "0003_dddddd_m.py", "r4", ("r2", "r3"))
    graph = load(tmp_path)
    assert graph.heads == ["r4"] and graph.revisions[0] == "r1" and graph.revisions[-1] == "r4"
    assert sorted(replay(graph, "r4")["entities"]) == ["Human", "Pet"]
    # both branches change Person differently: the merge cannot be replayed
    x = 'op.AddAttr("Person", "x", {"kind": "Optional", "type": "int"})'
    _write(tmp_path, "0002_bbbbbb_b.py", "r2", "r1", x)
    _write(tmp_path, "0002_cccccc_c.py", "r3", "r1", x.replace('"x"', '"y"'))
    merged = replay(load(tmp_path), "r4")["entities"]["Person"]
    assert [a["name"] for a in merged["attrs"]] == ["id", "x", "y"]
    _write(tmp_path, "0002_cccccc_c.py", "r3", "r1", x.replace("int", "str"))
    with pytest.raises(MigrationStateError, match="changed entity Person in conflicting ways"):
        replay(load(tmp_path), "r4")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([("0001_aaaaaa_a.py", "r1", None), ("0002_bbbbbb_b.py", "r1", None)], "declared by two files"),
        ([("0001_aaaaaa_a.py", "r1", "nope")], "'nope' is not a revision"),
        ([("0001_aaaaaa_a.py", "r1", "r2"), ("0002_bbbbbb_b.py", "r2", "r1")], "cycle"),
        ([("0001_aaaaaa_a.py", "r1", 5)], "down_revision must be"),
    ],
)
def test_broken_histories_are_reported(
    tmp_path: Path, files: list[tuple[str, str, Any]], message: str
) -> None:
    for name, revision, down in files:
        _write(tmp_path, name, revision, down)
    with pytest.raises(MigrationStateError, match=message):
        load(tmp_path)


def test_write_after_the_single_head_or_merge(tmp_path: Path) -> None:
    first = write_migration(tmp_path, autodetect(snap(), person_pet()), "initial")
    second = write_migration(tmp_path, [op.AddCompositeIndex("Person", ["age", "name"])], "index")
    graph = load(tmp_path)
    root = graph.roots[0]
    assert first.name.startswith(root) and graph.parents(graph.heads[0]) == (root,)
    write_migration(tmp_path, [op.SetTable("Person", None, "people")], "table", root)
    with pytest.raises(MigrationStateError, match="several heads"):
        write_migration(tmp_path, [], "more")
    heads = load(tmp_path).heads
    merge = write_migration(tmp_path, [], "merge", heads)
    graph = load(tmp_path)
    assert graph.heads == [merge.name[:11]] and set(graph.parents(graph.heads[0])) == set(heads)
    merged = replay(graph, graph.heads[0])
    assert merged["entities"]["Person"]["table"] == "people"
    assert merged["entities"]["Person"]["composite_indexes"] == [["age", "name"]]
    assert graph[graph.heads[0]].schema_hash == snapshot_hash(merged)
    assert "down_revision = (" in merge.read_text(encoding="utf-8")
    assert second.exists()


def test_an_operation_that_does_not_apply_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "0001_aaaaaa_a.py", "r1", None, 'op.RenameEntity("Ghost", "Spirit")')
    with pytest.raises(MigrationStateError, match=r"0001_aaaaaa_a\.py: operation 1 \(rename entity Ghost"):
        replay(load(tmp_path), "r1")


def test_loading_does_not_touch_sys_modules(tmp_path: Path) -> None:
    import sys

    write_migration(tmp_path, autodetect(snap(), person_pet()), "initial")
    names = set(sys.modules)
    graph = load(tmp_path)
    assert set(sys.modules) == names
    assert graph[graph.heads[0]].module.__name__.startswith("ponykit_migration_")


def test_lock_round_trip_and_tamper_check(tmp_path: Path) -> None:
    assert read_lock(tmp_path) is None
    write_lock(tmp_path, "0001_abcdef", person_pet())
    lock = read_lock(tmp_path)
    assert lock == {
        "format": 1,
        "head": "0001_abcdef",
        "hash": snapshot_hash(person_pet()),
        "snapshot": person_pet(),
    }
    text = (tmp_path / LOCK_NAME).read_text(encoding="utf-8")
    assert text.endswith("}\n") and text.startswith('{\n  "format": 1,')
    (tmp_path / LOCK_NAME).write_text(text.replace('"age"', '"years"'), encoding="utf-8")
    with pytest.raises(MigrationStateError, match="edited by hand"):
        read_lock(tmp_path)


def test_slugs() -> None:
    assert slugify("Add nickname to Person!") == "add_nickname_to_person"
    assert slugify("ÄÖ") == "migration"
    assert len(slugify("x" * 100)) == 40


def test_a_real_models_snapshot_round_trips_through_a_file(tmp_path: Path) -> None:
    """A Pony model as the snapshot reads it -> autodetect -> file -> load -> replay: the same snapshot."""
    from datetime import datetime
    from decimal import Decimal

    from pony.orm import Database, Json, Optional, Required, Set, composite_key

    from ponykit.migrate import _snapshot as snapshots

    db = Database()

    class Person(db.Entity):  # type: ignore[name-defined]
        name = Required(str, 80, index=True)
        age = Optional(int, size=16)
        born = Optional(datetime, precision=3)
        money = Optional(Decimal, 10, 2, default=Decimal("1.5"))
        data = Optional(Json)
        pets = Set("Pet")
        clubs = Set("Club")
        composite_key(name, age)

    class Pet(db.Entity):  # type: ignore[name-defined]
        owner = Required(Person)
        nick = Optional(str, unique=True)

    class Club(db.Entity):  # type: ignore[name-defined]
        _table_ = "clubs"
        members = Set(Person, table="membership")

    expected = snapshots.snapshot(db)
    write_migration(tmp_path, autodetect(snap(), expected), "initial")
    graph = load(tmp_path)
    assert replay(graph, graph.heads[0]) == expected
    assert graph[graph.heads[0]].schema_hash == snapshots.snapshot_hash(expected)


def test_a_declared_discriminator_round_trips_through_a_file() -> None:
    from pony.orm import Discriminator

    operation = op.AddAttr("Pet", "kind", Discriminator(str))
    assert operation.attr_decl == spec("Discriminator", "str")


def test_a_hierarchys_snapshot_round_trips_through_a_file(tmp_path: Path) -> None:
    """The snapshot of a hierarchy holds Pony's implicit ``classtype`` Discriminator: its file must load."""
    from pony.orm import Database, Optional

    from ponykit.migrate import _snapshot as snapshots

    db = Database()

    class Pet(db.Entity):  # type: ignore[name-defined]
        nick = Optional(str)

    class Dog(Pet):  # type: ignore[name-defined]
        _discriminator_ = "dog"
        bark = Optional(str, 20)

    expected = snapshots.snapshot(db)
    write_migration(tmp_path, autodetect(snap(), expected), "initial")
    graph = load(tmp_path)
    assert replay(graph, graph.heads[0]) == expected


def test_callable_defaults_of_c_types_round_trip_through_a_file(tmp_path: Path) -> None:
    """``default=datetime.now`` (a method of a C type: no ``__module__``), ``date.today``, ``uuid.uuid4``:
    the commonest callable defaults are written as importable names and read back as the same objects."""
    import datetime as dt
    import uuid

    from pony.orm import Database, Optional, Required

    from ponykit._pony import map_offline
    from ponykit.migrate import make
    from ponykit.migrate._snapshot import snapshot

    db = Database()

    class Post(db.Entity):
        created = Required(dt.datetime, default=dt.datetime.now)
        day = Optional(dt.date, default=dt.date.today)
        token = Required(uuid.UUID, default=uuid.uuid4)

    map_offline(db, "sqlite")
    path = make(db, "posts", directory=tmp_path)
    assert path is not None
    assert "default=_datetime.datetime.now" in path.read_text()
    graph = load(tmp_path)
    assert replay(graph, graph.heads[0]) == snapshot(db)
    attrs = {a["name"]: a for a in snapshot(db)["entities"]["Post"]["attrs"]}
    assert attrs["created"]["options"]["default"] == {"callable": "datetime.datetime.now"}
