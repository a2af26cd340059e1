"""Key rotation: 10,000 rows, interrupted and resumed, with lookups working throughout; the CLI."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pony.orm import Database, Optional, Required, db_session, select

import ponykit as pk
from ponykit import _pony
from ponykit.__main__ import main
from ponykit.errors import ConfigurationError
from ponykit.security import KeyRing, RotationProgress, rotate_keys

K1 = KeyRing.generate_key()
K2 = KeyRing.generate_key()
N = 10_000


class Interrupted(Exception):
    """Raised from a progress callback to simulate a crash between batches."""


def make_schema(db: Database) -> tuple[Any, Any]:
    class Person(db.Entity):
        email = Required(pk.types.EncryptedStr, searchable=True)
        note = Optional(pk.types.EncryptedStr)

    kit = pk.attach(db, keys=KeyRing({"k1": K1}))
    db.generate_mapping(create_tables=True)
    return Person, kit


def fill(db: Database, Person: Any, n: int) -> None:
    """Insert n rows under the current primary with one executemany, values encoded as Pony would."""
    mark = _pony.positional_placeholder(db)
    rows = [
        (
            _pony.encode_value(Person.email, f"user{i}@example.com")[0],
            _pony.encode_value(Person.note, f"n{i}")[0],
        )
        for i in range(n)
    ]
    table = _pony.quote_name(db, _pony.entity_info(Person).table)
    with db_session:
        cursor = _pony.raw_connection(db).cursor()
        cursor.executemany(f"INSERT INTO {table} (email, note) VALUES ({mark}, {mark})", rows)


def under(db: Database, key_id: str, column: str = "email") -> int:
    with db_session:
        return int(
            db.select(f"SELECT COUNT(*) FROM person WHERE {column} LIKE $p", {}, {"p": f"v1:{key_id}:%"})[0]
        )


def test_rotation_interrupted_and_resumed(db: Database) -> None:
    """10,000 rows rotate in batches; after a crash mid-way lookups work, a rerun finishes the job."""
    Person, kit = make_schema(db)
    fill(db, Person, N)
    kit.keys = KeyRing({"k2": K2, "k1": K1})  # deploy: new primary, old key kept for decryption

    reports: list[RotationProgress] = []

    def crash_after_three(report: RotationProgress) -> None:
        reports.append(report)
        if len(reports) == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        rotate_keys(Person, batch_size=1000, progress=crash_after_three)
    assert [r.done for r in reports] == [1000, 2000, 3000]
    assert reports[0].total == 2 * N
    assert under(db, "k2") == 3000
    assert under(db, "k1") == N - 3000

    with db_session:  # lookups work over mixed keys: rows already rotated and rows not yet rotated
        assert Person.get(email="user0@example.com").note == "n0"
        assert Person.get(email="user9999@example.com").note == "n9999"
        found = select(p for p in Person if pk.types.match(Person.email, "user5000@example.com"))[:]
        assert [p.note for p in found] == ["n5000"]
        Person(email="fresh@example.com", note="written mid-rotation")

    done = rotate_keys(Person, batch_size=1000, progress=reports.append)
    assert done == 2 * N - 3000
    assert reports[-1].done == done
    assert under(db, "k2") == N + 1
    assert under(db, "k2", "note") == N + 1
    assert rotate_keys(Person) == 0  # nothing left

    kit.keys = KeyRing({"k2": K2})  # the old key is retired
    with db_session:
        assert Person.get(email="user1234@example.com").note == "n1234"
        assert Person.get(email="fresh@example.com").note == "written mid-rotation"
        assert Person.select().count() == N + 1


@pytest.mark.backends("sqlite")
def test_rotation_guards(db: Database) -> None:
    """rotate_keys refuses to run inside a db_session, with bad batch sizes, or on plain attributes."""
    Person, _kit = make_schema(db)
    with db_session, pytest.raises(ConfigurationError, match="outside a db_session"):
        rotate_keys(Person)
    with pytest.raises(ConfigurationError, match="batch_size"):
        rotate_keys(Person, batch_size=0)
    with pytest.raises(ConfigurationError, match=r"Person\.id is not an encrypted attribute"):
        rotate_keys(Person, ["id"])


@pytest.mark.backends("sqlite")
def test_cli_rotate_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m ponykit rotate-keys module:db` re-encrypts under the primary with a progress bar."""
    app = tmp_path / "rotapp.py"
    app.write_text(
        textwrap.dedent(
            f"""
            import os
            from pony.orm import Database, Required, db_session
            import ponykit as pk

            db = Database()

            class Secret(db.Entity):
                value = Required(pk.types.EncryptedStr, searchable=True)

            pk.bind_url(db, "sqlite:///{tmp_path / "app.db"}?create_db=1")
            pk.attach(db, keys=pk.security.KeyRing.from_env("ROTAPP_KEYS"))
            db.generate_mapping(create_tables=True)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ROTAPP_KEYS", f"k1:{K1}")
    import rotapp  # type: ignore[import-not-found]

    with db_session:
        for i in range(25):
            rotapp.Secret(value=f"s{i}")
    del sys.modules["rotapp"]
    rotapp.db.disconnect()
    monkeypatch.setenv("ROTAPP_KEYS", f"k2:{K2},k1:{K1}")
    assert main(["rotate-keys", "rotapp:db", "--batch-size", "10"]) == 0
    out = capsys.readouterr()
    assert "Secret: 25 values re-encrypted" in out.out
    assert "25/25" in out.err
    fresh = sys.modules["rotapp"]
    with db_session:
        assert fresh.Secret.get(value="s7") is not None
        stored = list(fresh.db.select("value FROM secret"))
    assert all(v.startswith("v1:k2:") for v in stored)
    fresh.db.disconnect()
    del sys.modules["rotapp"]
