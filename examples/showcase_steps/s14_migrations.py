"""14 migrations: a model evolves twice; make writes each migration, upgrade applies it, the rows stay.

Pony only creates missing tables. ``ponykit.migrate`` keeps a snapshot of the models beside the
migration files, writes the next migration from the difference (``make``), and applies it with DDL
planned for the database at hand (``upgrade``): on SQLite a table it cannot ALTER is rebuilt in one
transaction. ``check`` tells CI whether models, files and database agree.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from pony.orm import Database, Optional, Required, db_session, select

import ponykit as pk
from ponykit import migrate


def _version(n: int, url: str) -> Database:
    """The app's models as they are in release ``n`` (1, 2 or 3)."""
    db = Database()

    class Author(db.Entity):
        if n == 1:
            name = Required(str, 40)
        else:
            full_name = Required(str, 80)  # renamed in release 2, and widened
        if n == 3:
            country = Optional(str, 2)  # added in release 3: existing rows get ''

    pk.bind_url(db, url)
    db.generate_mapping(create_tables=False, check_tables=False)
    return db


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    url = f"sqlite:///{workdir / 'authors.db'}?create_db=1"
    folder = workdir / "migrations"

    db = _version(1, url)
    migrate.make(db, "authors", directory=folder)
    migrate.upgrade(db, directory=folder)
    with db_session:
        db.Author(name="Ursula")
        db.Author(name="Terry")
    db.disconnect()

    db = _version(2, url)
    second = migrate.make(db, "full names", directory=folder, renames={"Author.name": "full_name"})
    assert second is not None
    migrate.upgrade(db, directory=folder)
    lines = [line.strip() for line in second.read_text().splitlines()]
    operations = [line.rstrip(",") for line in lines if line.startswith("op.")]
    say(f"{second.name}: {'; '.join(operations)}")
    db.disconnect()

    db = _version(3, url)
    third = migrate.make(db, "countries", directory=folder)
    assert third is not None
    migrate.upgrade(db, directory=folder)
    with db_session:
        names = sorted(select(a.full_name for a in db.Author))
        blank = select(a for a in db.Author if a.country == "").count()
    say(f"after two migrations the rows are still there: {names}, {blank} with the backfilled country ''")
    report = migrate.check(db, directory=folder)
    say(f"check: exit code {report.exit_code} (models, files, lock and database agree)")
    assert report.exit_code == 0, report.problems
    db.disconnect()
