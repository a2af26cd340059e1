# ruff: noqa: F405 - the models come from the star import of _plan_models
"""The planner's oracle cases: model A, model B, the hints, the rows and what must read back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from _plan_harness import Model
from _plan_models import *  # noqa: F403 - the models the cases name
from _plan_models import _add
from pony.orm import Database, Optional, Required

from ponykit.migrate._hints import Hints

CASES: dict[str, Case] = {
    "add_nullable": Case(
        person_a,
        person_plus(score=lambda: Optional(int), note=lambda: Optional(str, nullable=True)),
        fill=fill_people,
        expect=[("SELECT name, score FROM {Person} ORDER BY name", [("ann", None), ("bob", None)])],
    ),
    "add_not_null_backfill": Case(
        person_a,
        person_plus(
            level=lambda: Required(int), nick=lambda: Optional(str, 20), since=lambda: Required(date)
        ),
        hints=lambda d: Hints(
            backfills={
                (T("Person", d), "level"): 7,
                (T("Person", d), "nick"): "it's",
                (T("Person", d), "since"): date(2020, 2, 29),
            }
        ),
        fill=fill_people,
        expect=[
            ("SELECT name, level, nick FROM {Person} ORDER BY name", [("ann", 7, "it's"), ("bob", 7, "it's")])
        ],
    ),
    "add_not_null_refused": Case(
        person_a, person_plus(level=lambda: Required(int)), fill=fill_people, refused=True
    ),
    "drop_columns": Case(
        person_a,
        person_bare,
        hints=lambda d: Hints(dropped_columns={(T("Person", d), c) for c in ("age", "email", "boss")}),
        fill=fill_people,
        expect=[("SELECT name FROM {Person} ORDER BY name", [("ann",), ("bob",)])],
    ),
    "rename_columns": Case(
        person_a,
        person_renamed,
        hints=lambda d: Hints(
            column_renames={(T("Person", d), "name"): "full_name", (T("Person", d), "boss"): "manager"}
        ),
        fill=fill_people,
        expect=[
            (
                "SELECT p.full_name, b.full_name FROM {Person} p LEFT JOIN {Person} b ON b.id = p.manager"
                " ORDER BY p.full_name",
                [("ann", None), ("bob", "ann")],
            )
        ],
    ),
    "rename_table": Case(
        club_a,
        club_b,
        hints=club_hints,
        fill=fill_club,
        expect=[
            ("SELECT name, email FROM {Human}", [("ann", "a@x")]),
            ("SELECT tag FROM {Human_Tag}", [("t1",)]),
            ("SELECT COUNT(*) FROM {Pet} JOIN {Human} ON {Human}.id = {Pet}.owner", [(1,)]),
        ],
    ),
    "types_and_nullability": Case(
        types_a,
        types_b,
        hints=lambda d: Hints(backfills={(T("Item", d), "x"): 0}),
        fill=fill_items,
        expect=[
            ("SELECT s, n, t, x, y FROM {Item}", [("abcdefghij", 2**31 - 1, "twenty chars exactly", 0, 5)]),
        ],
    ),
    "nullable_refused": Case(types_a, types_b, fill=fill_items, refused=True),
    "narrow_fits": Case(
        narrow_a,
        narrow_b,
        hints=lambda d: Hints(lossy={(T("Item", d), "s")}),
        fill=lambda db: _add(db, "Item", s="abc"),
        expect=[("SELECT s FROM {Item}", [("abc",)])],
    ),
    "narrow_refused": Case(
        narrow_a,
        narrow_b,
        hints=lambda d: Hints(lossy={(T("Item", d), "s")}),
        fill=lambda db: _add(db, "Item", s="far too long"),
        refused=True,
    ),
    "keys_and_indexes": Case(
        keys_a,
        keys_b,
        fill=lambda db: _add(db, "Item", a=1, b=2, c="x"),
        expect=[("SELECT a, b, c FROM {Item}", [(1, 2, "x")])],
    ),
    "keys_and_indexes_back": Case(
        keys_b,
        keys_a,
        fill=lambda db: _add(db, "Item", a=1, b=2, c="x"),
        expect=[("SELECT a, b, c FROM {Item}", [(1, 2, "x")])],
    ),
    "add_m2m": Case(m2m_a, m2m_b, fill=fill_m2m, expect=[("SELECT COUNT(*) FROM {Person_Tag}", [(0,)])]),
    "drop_m2m": Case(
        m2m_b,
        m2m_a,
        hints=lambda d: Hints(dropped_tables={T("Person_Tag", d)}),
        fill=fill_m2m,
        expect=[("SELECT label FROM {Tag}", [("t",)])],
    ),
    "add_entity": Case(person_bare, club_a, fill=lambda db: _add(db, "Person", name="ann")),
    "drop_entity": Case(
        club_a,
        person_plus(),
        hints=lambda d: Hints(
            dropped_tables={T("Pet", d), T("Tag", d), T("Person_Tag", d)},
        ),
        fill=fill_club,
        expect=[("SELECT name FROM {Person}", [("ann",)])],
    ),
    "inheritance": Case(
        zoo_a,
        zoo_b,
        hints=zoo_hints,
        fill=fill_zoo,
        expect=[("SELECT name, kind FROM {Animal} ORDER BY name", [("generic", "Animal"), ("rex", "Hound")])],
    ),
    "composite_fk": Case(
        composite_a,
        composite_b,
        hints=lambda d: Hints(
            column_renames={(T("Thing", d), "box_x"): "holder_x", (T("Thing", d), "box_y"): "holder_y"}
        ),
        fill=fill_composite,
        expect=[("SELECT holder_x, holder_y FROM {Thing}", [(1, "a")])],
    ),
    "rename_and_retype": Case(
        person_a,
        mail_b,
        hints=lambda d: Hints(column_renames={(T("Person", d), "email"): "mail"}),
        fill=fill_people,
        expect=[
            ("SELECT name, mail, age FROM {Person} ORDER BY name", [("ann", "a@x", 30), ("bob", None, None)])
        ],
    ),
    "add_required_relation": Case(
        owned_a,
        owned_b,
        hints=lambda d: Hints(backfills={(T("Pet", d), "owner"): 1}),
        fill=fill_owned,
        expect=[("SELECT nick, owner FROM {Pet}", [("rex", 1)])],
    ),
    "rename_root_entity": Case(
        zoo_a,
        beast_b,
        hints=beast_hints,
        fill=fill_zoo,
        expect=[
            (
                "SELECT name, kind FROM {Beast} ORDER BY name",
                [("generic", "Beast"), ("nemo", "Fish"), ("rex", "Dog")],
            )
        ],
    ),
    "widen_referenced_key": Case(
        owned_b,
        bigid_b,
        fill=fill_owned_pet,
        expect=[("SELECT nick, owner FROM {Pet}", [("rex", 1)])],
    ),
    "defaults_restated": Case(
        defaults_a,
        defaults_b,
        fill=lambda db: _add(db, "Item", n=1, v="x", m=4),
        expect=[("SELECT n, v, m, k FROM {Item}", [(1, "x", 4, 3)])],
    ),
    "widen_referenced_text_key": Case(
        labels(20),
        labels(40),
        fill=fill_labels,
        expect=[("SELECT tag FROM {Person_Tag}", [("t1",)]), ("SELECT tag FROM {Note}", [("t1",)])],
    ),
    "first_subclass": Case(
        lone_a,
        lone_b,
        hints=lambda d: Hints(backfills={(T("Animal", d), "classtype"): "Animal"}),
        fill=lambda db: _add(db, "Animal", name="generic"),
        expect=[("SELECT name, classtype, bark FROM {Animal}", [("generic", "Animal", None)])],
    ),
}


CHAINS: dict[str, tuple[list[Model], list[Callable[[str], Hints]], Callable[[Database], None]]] = {
    "rename_then_drop_unique": (
        [person_a, mail_b, mail_c],
        [
            lambda d: Hints(column_renames={(T("Person", d), "email"): "mail"}),
            lambda d: Hints(dropped_columns={(T("Person", d), "age")}),
        ],
        fill_people,
    ),
    "rename_table_then_drop_entity": (
        [club_a, club_b, club_c],
        [club_hints, lambda d: Hints(dropped_tables={T("Pet", d)})],
        fill_club,
    ),
}
