"""The physical planner's oracle on every backend: a database made by Pony from model A with rows, migrated
by the planned steps, equals one Pony creates fresh from model B, and the rows survive."""

from __future__ import annotations

import pytest
from _plan_cases import CASES, CHAINS
from _plan_harness import assert_same_as_fresh, connect, migrate, offline, rows, run
from _plan_models import (
    T,
    _add,
    _sql,
    chain_b,
    club_a,
    person_a,
    person_bare,
    person_plus,
    swap_a,
)
from pony.orm import Database, Required, db_session

from conftest import Backend
from ponykit.errors import MigrationError
from ponykit.migrate._hints import Hints
from ponykit.migrate._plan import plan


@pytest.mark.parametrize("name", sorted(CASES))
def test_oracle(backend: Backend, name: str) -> None:
    case = CASES[name]
    d = backend.name
    migration, counts = migrate(d, backend.url, case.a, case.b, case.hints(d), case.fill)
    if case.refused:
        assert any(counts), f"no check refused:\n{migration}"
        return
    assert not any(counts), f"a check refused: {counts}\n{migration}"
    assert_same_as_fresh(d, backend.url, case.b)
    for template, expected in case.expect:
        got = rows(d, backend.url, _sql(template, d))
        assert got == expected, f"{template}: {got} != {expected}\n{migration}"
    # Nothing left to do: planning from the model B against itself is empty.
    assert not plan(offline(case.b, d), offline(case.b, d), Hints()).steps


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mysql"])
def test_plans_are_deterministic_and_readable(dialect: str) -> None:
    case = CASES["add_not_null_backfill"]
    first = plan(offline(case.a, dialect), offline(case.b, dialect), case.hints(dialect))
    second = plan(offline(case.a, dialect), offline(case.b, dialect), case.hints(dialect))
    assert first.statements == second.statements
    assert str(first) == str(second)
    person = T("Person", dialect)
    assert f"{person}: " in str(first)
    assert 'add column nick (backfill "it\'s")' in str(first)
    assert all(step.description and step.sql for step in first.steps)


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mysql"])
def test_an_unexplained_drop_is_a_bug(dialect: str) -> None:
    with pytest.raises(AssertionError, match="column .*age disappears"):
        plan(offline(person_a, dialect), offline(person_bare, dialect), Hints())
    with pytest.raises(AssertionError, match="(?i)table person_tag disappears"):
        plan(offline(club_a, dialect), offline(person_plus(), dialect), Hints())


def test_checks_name_the_column_and_the_fix() -> None:
    migration = plan(
        offline(person_a, "postgres"), offline(person_plus(level=lambda: Required(int)), "postgres")
    )
    assert [c.sql for c in migration.checks] == ['SELECT COUNT(*) FROM "person"']
    assert "person.level is added NOT NULL" in migration.checks[0].message
    assert "backfill" in migration.checks[0].message


def test_mariadb_runs_one_statement_per_step() -> None:
    for case in CASES.values():
        migration = plan(offline(case.a, "mysql"), offline(case.b, "mysql"), case.hints("mysql"))
        assert all(len(step.sql) == 1 for step in migration.steps), str(migration)


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_chained_migrations(backend: Backend, name: str) -> None:
    """Names the previous migration left (backend-chosen ones included) are the ones the next expects."""
    models, hints, fill = CHAINS[name]
    d = backend.name
    migration, counts = migrate(d, backend.url, models[0], models[1], hints[0](d), fill)
    assert not any(counts)
    for before, after, hint in zip(models[1:-1], models[2:], hints[1:], strict=True):
        migration = plan(offline(before, d), offline(after, d), hint(d))
        assert not any(run(d, backend.url, migration)), str(migration)
    assert_same_as_fresh(d, backend.url, models[-1])


@pytest.mark.backends("sqlite")
def test_sqlite_rebuild_keeps_the_autoincrement_counter(backend: Backend) -> None:
    def fill(db: Database) -> None:
        with db_session:
            db.Person(name="ann")
            db.Person(name="bob")
        with db_session:
            db.Person[2].delete()

    migration, _counts = migrate("sqlite", backend.url, person_bare, person_plus(), Hints(), fill)
    assert "rebuild" in str(migration)
    con = connect("sqlite", backend.url)
    try:
        con.execute("INSERT INTO \"Person\" (name) VALUES ('cy')")
        ids = [r[0] for r in con.execute('SELECT id FROM "Person" ORDER BY id')]
    finally:
        con.close()
    assert ids == [1, 3]  # bob's id 2 is not reused


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mysql"])
def test_rename_chains_are_ordered_and_cycles_refused(dialect: str) -> None:
    item = T("Item", dialect)
    chain = Hints(column_renames={(item, "a"): "b", (item, "b"): "c", (item, "c"): "d"})
    migration = plan(offline(swap_a, dialect), offline(chain_b, dialect), chain)
    text = "\n".join(migration.statements)
    assert text.index("TO " + ("`d`" if dialect == "mysql" else '"d"')) < text.index(
        "TO " + ("`c`" if dialect == "mysql" else '"c"')
    )
    cycle = Hints(column_renames={(item, "a"): "b", (item, "b"): "a"})
    with pytest.raises(MigrationError, match="cycle"):
        plan(offline(swap_a, dialect), offline(swap_a, dialect), cycle)


def test_rename_chain_on_a_live_database(backend: Backend) -> None:
    item = T("Item", backend.name)
    chain = Hints(column_renames={(item, "a"): "b", (item, "b"): "c", (item, "c"): "d"})
    _migration, counts = migrate(
        backend.name, backend.url, swap_a, chain_b, chain, lambda db: _add(db, "Item", a=1, b=2, c=3)
    )
    assert not any(counts)
    assert rows(backend.name, backend.url, _sql("SELECT b, c, d FROM {Item}", backend.name)) == [(1, 2, 3)]
    assert_same_as_fresh(backend.name, backend.url, chain_b)
