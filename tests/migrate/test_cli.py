"""``python -m ponykit migrate ...`` as a real subprocess: every command, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Backend

V1 = """
from pony.orm import Database, Optional, Required

db = Database()


class Person(db.Entity):
    name = Required(str, 40)
"""
V2 = V1 + "    nick = Optional(str, 20)\n"
V3 = V1 + "    nickname = Optional(str, 20)\n    level = Required(int)\n"


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p and "site-packages" not in p))
    return subprocess.run(
        [sys.executable, "-m", "ponykit", "migrate", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_command(backend: Backend, tmp_path: Path) -> None:
    models = tmp_path / "cli_models.py"
    models.write_text(V1)
    url = ["--url", backend.url]
    result = _run(tmp_path, "init", "cli_models:db", *url)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and list((tmp_path / "migrations").glob("0001_*.py"))
    result = _run(tmp_path, "check", "cli_models:db", *url)
    assert result.returncode == 2 and "not applied" in result.stdout
    result = _run(tmp_path, "upgrade", "cli_models:db", *url)
    assert result.returncode == 0, result.stderr
    assert "Applying 0001_" in result.stdout and " ... done in " in result.stdout
    assert _run(tmp_path, "check", "cli_models:db", *url).stdout == "in sync\n"

    models.write_text(V2)
    result = _run(tmp_path, "check", "cli_models:db", *url, "--format", "json")
    assert result.returncode == 1 and json.loads(result.stdout)["exit_code"] == 1
    result = _run(tmp_path, "make", "cli_models:db", "-m", "add nick")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "add_nick" in result.stdout
    assert _run(tmp_path, "make", "cli_models:db", "-m", "again").stdout.startswith("no changes")
    assert _run(tmp_path, "check", "cli_models:db", "--no-db").returncode == 0
    result = _run(tmp_path, "sql", "cli_models:db", "--dialect", "postgres", "--from", "0001")
    assert result.returncode == 0 and "ALTER TABLE" in result.stdout and "nick" in result.stdout
    result = _run(tmp_path, "status", "cli_models:db", *url, "--format", "json")
    state = json.loads(result.stdout)
    assert len(state["applied"]) == 1 and len(state["pending"]) == 1
    assert _run(tmp_path, "upgrade", "cli_models:db", *url).returncode == 0
    result = _run(tmp_path, "status", "cli_models:db", *url)
    assert result.stdout.count("applied  ") == 2 and "add nick" in result.stdout

    models.write_text(V3)
    result = _run(
        tmp_path, "make", "cli_models:db", "-m", "rename", "--rename", "Person.nick=nickname",
        "--backfill", "Person.level=3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = sorted((tmp_path / "migrations").glob("0003_*.py"))[0].read_text()
    assert "RenameAttr" in written and "3" in written
    result = _run(tmp_path, "upgrade", "cli_models:db", *url, "--to", "0003")
    assert result.returncode == 0, result.stderr
    result = _run(tmp_path, "downgrade", "cli_models:db", *url)
    assert result.returncode == 0 and "Reverting 0003_" in result.stdout

    result = _run(tmp_path, "make", "cli_models:db", "--backfill", "Person.level=not a literal")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_errors_are_one_line_without_the_password(tmp_path: Path) -> None:
    (tmp_path / "cli_models.py").write_text(V1)
    url = "postgresql://app:s3cr3t-pw@127.0.0.1:1/app"
    result = _run(tmp_path, "upgrade", "cli_models:db", "--url", url)
    assert result.returncode == 1
    assert result.stderr.startswith("ponykit: ") and result.stderr.count("\n") == 1
    assert "s3cr3t" not in result.stderr + result.stdout and "Traceback" not in result.stderr
    result = _run(tmp_path, "status", "cli_models:db")
    assert result.returncode == 1 and "not bound" in result.stderr
    d = tmp_path / "migrations"
    d.mkdir()
    (d / "0001_abcdef_bad.py").write_text(
        '"""bad"""\nfrom ponykit.migrate import op\nrevision = "0001_abcdef"\ndown_revision = None\n'
        'schema_hash = ""\noperations = [op.RunSQL("INSERT INTO t_nowhere VALUES (1)")]\n'
    )
    result = _run(tmp_path, "upgrade", "cli_models:db", "--url", f"sqlite:///{tmp_path / 'x.db'}?create_db=1")
    assert result.returncode == 1 and result.stdout == "Applying 0001_abcdef bad ... failed\n"
    assert result.stderr.startswith("ponykit: MigrationError: revision 0001_abcdef, step 1/1")
    assert "t_nowhere" in result.stderr and result.stderr.count("\n") == 1
