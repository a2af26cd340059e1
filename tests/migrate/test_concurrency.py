"""8 processes run ``python -m ponykit migrate upgrade`` at once: each revision applied once, no errors."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from pony.orm import Database

import ponykit
from conftest import Backend
from ponykit import migrate

MODELS = """
from pony.orm import Database, Required

db = Database()


class Person(db.Entity):
    name = Required(str, 40)
"""


def _sql_migration(directory: Path, number: int, down: str, table: str) -> str:
    from ponykit.migrate._files import load

    revision = f"{number:04d}_{secrets.token_hex(3)}"
    head_hash = load(directory)[down].schema_hash
    (directory / f"{revision}_{table}.py").write_text(
        f'"""create {table}"""\n\nfrom ponykit.migrate import op\n\nrevision = {revision!r}\n'
        f"down_revision = {down!r}\nschema_hash = {head_hash!r}\n\noperations = [\n"
        f'    op.RunSQL("CREATE TABLE {table} (id INTEGER PRIMARY KEY)"),\n'
        f'    op.RunSQL("INSERT INTO {table} VALUES (1)"),\n]\n'
    )
    return revision


def test_eight_processes_apply_each_revision_once(backend: Backend, tmp_path: Path) -> None:
    (tmp_path / "conc_models.py").write_text(MODELS)
    sys.path.insert(0, str(tmp_path))
    try:
        import conc_models

        first = migrate.make(conc_models.db, "person", directory=tmp_path / "migrations")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("conc_models", None)
    assert first is not None
    d = tmp_path / "migrations"
    revisions = [re.match(r"(\d{4}_[0-9a-f]{6})", first.name).group(1)]  # type: ignore[union-attr]
    for number in range(2, 6):
        revisions.append(_sql_migration(d, number, revisions[-1], f"t_conc{number}"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p and "site-packages" not in p))
    command = [sys.executable, "-m", "ponykit", "migrate", "upgrade", "conc_models:db", "--url", backend.url]
    procs = [
        subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    results = [(p.communicate(timeout=120), p.returncode) for p in procs]
    errors = [(code, err) for (_out, err), code in results if code != 0 or err.strip()]
    assert errors == []
    output = "".join(out for (out, _err), _code in results)
    for rev in revisions:
        assert output.count(f"Applying {rev}") == 1, output
    assert output.count("up to date") >= 1
    db = Database()
    ponykit.bind_url(db, backend.url)
    try:
        state = migrate.status(db, directory=d)
        assert state.applied == revisions and state.pending == []
    finally:
        db.disconnect()
