"""01 setup: URL binding, attach() and on_commit.

Binds a Database from a URL, attaches ponykit, and shows that on_commit callbacks run after a commit and
never after a rollback.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from pony.orm import Database, Required, db_session, flush

import ponykit as pk


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Signup(db.Entity):
        email = Required(str)

    url = f"sqlite:///{workdir / 'setup.db'}?create_db=1"
    pk.bind_url(db, url)
    say(f"bound a Database from {url!r} -> provider {pk.parse_url(url)[0]!r}")
    secret_url = "postgresql://app:hunter2@db.internal:5432/app"
    say(f"URLs with passwords are logged redacted: {pk.binding.redact_url(secret_url)}")

    kit = pk.attach(db)
    db.generate_mapping(create_tables=True)
    say(f"attached ponykit: {kit!r}")

    outbox: list[str] = []
    with db_session:
        Signup(email="ann@example.com")
        pk.on_commit(lambda: outbox.append("welcome mail to ann"))
        flush()
        say(f"row flushed, transaction still open: outbox = {outbox}")
    say(f"session committed: outbox = {outbox}")

    try:
        with db_session:
            Signup(email="bob@example.com")
            pk.on_commit(lambda: outbox.append("welcome mail to bob"))
            pk.on_rollback(lambda: outbox.append("bob's signup rolled back"))
            raise RuntimeError("payment failed")
    except RuntimeError:
        pass
    say(f"after a failed session: outbox = {outbox} (no mail for bob)")
    with db_session:
        say(f"signups stored: {Signup.select().count()}")
    db.disconnect()
