"""Key rotation under concurrency and interruption: the per-column lock, exact counts, identifiers with
``$``, and the CLI's Ctrl-C and non-terminal output (issue #12 items 20 and 13)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pony.orm import Database, Optional, Required, db_session

import ponykit as pk
from ponykit import _pony
from ponykit.security import KeyRing, RotationInProgress, rotate_keys

K1 = KeyRing.generate_key()
K2 = KeyRing.generate_key()
PWN = "c$(__import__('sys').modules.setdefault('pk_pwn',1))"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def make_schema(db: Database, column: str | None = None) -> tuple[Any, Any]:
    class Person(db.Entity):
        email = Required(pk.types.EncryptedStr, searchable=True, **({"column": column} if column else {}))
        note = Optional(pk.types.EncryptedStr)

    kit = pk.attach(db, keys=KeyRing({"k1": K1}))
    db.generate_mapping(create_tables=True)
    return Person, kit


def fill(person: Any, n: int) -> None:
    with db_session:
        pk.bulk_insert(person, ({"email": f"user{i}@example.com", "note": f"n{i}"} for i in range(n)))


def under(db: Database, person: Any, key_id: str, attr: str) -> int:
    """How many stored values of ``attr`` are under ``key_id`` (read through the driver)."""
    info = _pony.entity_info(person)
    column = _pony.quote_name(db, getattr(person, attr).column)
    mark = _pony.positional_placeholder(db)
    sql = f"SELECT COUNT(*) FROM {_pony.quote_name(db, info.table)} WHERE {column} LIKE {mark}"
    with db_session:
        return int(_pony.execute_in_session(db, sql, (f"v1:{key_id}:%",)).fetchone()[0])


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 60  # a hang guard only: the condition is an event, not a timing
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_second_rotation_waits_or_exits_and_counts_are_exact(db: Database) -> None:
    """While a run holds a column's lock, wait=False raises RotationInProgress naming the column and a
    waiting run blocks; the counts reported add up to exactly the values rotated."""
    person, kit = make_schema(db)
    fill(person, 1500)
    kit.keys = KeyRing({"k2": K2, "k1": K1})
    results: dict[str, int] = {}
    refusals: list[str] = []
    waits: list[str] = []
    waiting: list[threading.Thread] = []

    def other(name: str, wait: bool) -> None:
        try:
            results[name] = rotate_keys(person, batch_size=200, wait=wait, on_wait=waits.append)
        except RotationInProgress as exc:
            refusals.append(str(exc))

    def progress(_report: Any) -> None:
        if waiting:
            return
        refuser = threading.Thread(target=other, args=("nowait", False))
        refuser.start()
        refuser.join()
        waiter = threading.Thread(target=other, args=("waiting", True))
        waiter.start()
        waiting.append(waiter)
        wait_for(lambda: waits, "the second run to wait for the lock")

    first = rotate_keys(person, batch_size=200, progress=progress)
    waiting[0].join()
    assert "nowait" not in results
    assert len(refusals) == 1
    assert refusals[0].startswith("another rotate_keys run is rotating Person.email")
    assert "Person.email" in waits[0] and "waiting" in waits[0]
    assert first + results["waiting"] == 2 * 1500
    assert under(db, person, "k2", "email") == under(db, person, "k2", "note") == 1500


def test_concurrent_rotations_report_each_value_once(db: Database) -> None:
    """Two runs started together (a cron job and an operator): the sum of their counts is the number
    of values, and every value ends under the new key (Part 2 Bug 6)."""
    person, kit = make_schema(db)
    fill(person, 2000)
    kit.keys = KeyRing({"k2": K2, "k1": K1})
    done: list[int] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        done.append(rotate_keys(person, batch_size=250))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(done) == 2 * 2000
    assert under(db, person, "k2", "email") == under(db, person, "k2", "note") == 2000


def test_dollar_in_column_name_is_not_evaluated_by_rotation(db: Database) -> None:
    """rotate_keys over a column whose name holds '$(...)' runs no code and rotates every value (F5)."""
    sys.modules.pop("pk_pwn", None)
    person, kit = make_schema(db, column=PWN)
    fill(person, 30)
    kit.keys = KeyRing({"k2": K2, "k1": K1})
    assert rotate_keys(person, batch_size=7) == 60
    assert "pk_pwn" not in sys.modules
    assert under(db, person, "k2", "email") == 30
    with db_session:
        assert person.get(email="user3@example.com").note == "n3"


def write_app(tmp_path: Path, rows: int) -> dict[str, str]:
    """A CLI-importable module bound to a SQLite file in tmp_path, filled under k1; the env to run it."""
    (tmp_path / "rotcli.py").write_text(
        textwrap.dedent(
            f"""
            from pony.orm import Database, Required
            import ponykit as pk

            db = Database()

            class Secret(db.Entity):
                value = Required(pk.types.EncryptedStr, searchable=True)

            pk.bind_url(db, "sqlite:///{tmp_path / "cli.db"}?create_db=1")
            pk.attach(db, keys=pk.security.KeyRing.from_env("ROTCLI_KEYS"))
            db.generate_mapping(create_tables=True)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(tmp_path)]), "ROTCLI_KEYS": f"k1:{K1}"}
    fill_script = (
        "import rotcli, ponykit as pk\nfrom pony.orm import db_session\nwith db_session:\n"
        f"    pk.bulk_insert(rotcli.Secret, ({{'value': f's{{i}}'}} for i in range({rows})))\n"
    )
    subprocess.run([sys.executable, "-c", fill_script], env=env, check=True, cwd=tmp_path)
    env["ROTCLI_KEYS"] = f"k2:{K2},k1:{K1}"
    return env


def count_under(tmp_path: Path, key_id: str) -> int:
    import sqlite3

    with sqlite3.connect(tmp_path / "cli.db") as con:
        return int(
            con.execute("SELECT COUNT(*) FROM secret WHERE value LIKE ?", (f"v1:{key_id}:%",)).fetchone()[0]
        )


def _interruptible() -> None:
    """In the child before exec: SIGINT back to its default. A test run started in the background by a
    non-interactive shell ignores SIGINT, the child inherits that, and Python then installs no
    KeyboardInterrupt handler: the CLI would run to the end (as it should when its caller ignores Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.backends("sqlite")
def test_cli_ctrl_c_exits_130_with_how_far_it_got(tmp_path: Path) -> None:
    """SIGINT mid-run: status 130, no traceback, a line with the number of values committed (exactly
    what is stored under the new key) and that a re-run resumes; the re-run finishes the job."""
    rows = 20000
    env = write_app(tmp_path, rows)
    command = [sys.executable, "-m", "ponykit", "rotate-keys", "rotcli:db"]
    proc = subprocess.Popen(
        [*command, "--batch-size", "20", "--progress-interval", "0"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # a progress line: at least one batch is committed
    assert first.startswith("Secret.value: "), first
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    line = [x for x in err.splitlines() if "interrupted" in x][-1]
    rotated = int(line.split("interrupted: ")[1].split(" ")[0])
    assert 0 < rotated < rows
    assert "run the same command again" in line
    assert count_under(tmp_path, "k2") == rotated
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert f"done: {rows - rotated} values re-encrypted" in done.stdout
    assert count_under(tmp_path, "k2") == rows


@pytest.mark.backends("sqlite")
def test_cli_output_is_bounded_when_not_a_terminal(tmp_path: Path) -> None:
    """Without a terminal the CLI prints no bar redraws: a progress line per interval at most, and one
    when the attribute is done (here 300 batches, a run far shorter than a few intervals)."""
    env = write_app(tmp_path, 600)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ponykit", "rotate-keys", "rotcli:db", "--batch-size", "2"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.monotonic() - started
    assert "\r" not in done.stderr
    progress = done.stderr.splitlines()
    assert len(progress) <= 1 + int(elapsed / 10) + 1, progress  # one per 10 s, plus the final figure
    assert progress[-1].startswith("Secret.value: 600/600 values")
    assert done.stdout.splitlines() == ["Secret: 600 values re-encrypted", "done: 600 values re-encrypted"]


@pytest.mark.backends("sqlite")
def test_cli_no_wait_exits_75_while_another_run_holds_the_lock(tmp_path: Path) -> None:
    """--no-wait: while the column's lock is held elsewhere, the CLI exits with status 75 and says why."""
    from ponykit.security.rotation import _column_lock

    env = write_app(tmp_path, 5)
    holder = Database()
    holder.bind("sqlite", str(tmp_path / "cli.db"))
    with _column_lock(holder, "Secret", "value", "Secret.value", wait=False, on_wait=None):
        busy = subprocess.run(
            [sys.executable, "-m", "ponykit", "rotate-keys", "rotcli:db", "--no-wait"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
    assert busy.returncode == 75, busy
    assert "another rotate_keys run is rotating Secret.value" in busy.stderr
    assert "Traceback" not in busy.stderr
    assert count_under(tmp_path, "k2") == 0
    done = subprocess.run(
        [sys.executable, "-m", "ponykit", "rotate-keys", "rotcli:db", "--no-wait"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "done: 5 values re-encrypted" in done.stdout
