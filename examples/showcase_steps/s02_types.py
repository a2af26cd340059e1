"""02 types: Enum, aware datetimes and encrypted, searchable fields with key rotation.

Maps an Enum and an aware datetime, stores an encrypted e-mail that can still be looked up, shows the raw
column holds only ciphertext, and rotates the data to a new key.
"""

from __future__ import annotations

import datetime as dt
import enum
import pathlib
from collections.abc import Callable

from pony.orm import Database, Optional, Required, db_session, select

import ponykit as pk
from ponykit.security import KeyRing


class Plan(enum.Enum):
    FREE = "free"
    PRO = "pro"


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Member(db.Entity):
        name = Required(str)
        plan = Required(Plan)
        joined = Required(pk.types.AwareDatetime)
        email = Required(pk.types.EncryptedStr, searchable=True)
        notes = Optional(pk.types.EncryptedJson)

    old, new = KeyRing.generate_key(), KeyRing.generate_key()
    pk.bind_url(db, f"sqlite:///{workdir / 'types.db'}?create_db=1")
    kit = pk.attach(db, keys=KeyRing({"k1": old}))
    db.generate_mapping(create_tables=True)

    now = dt.datetime.now(dt.timezone(dt.timedelta(hours=2)))
    with db_session:
        Member(name="Ann", plan=Plan.PRO, joined=now, email="ann@example.com", notes={"vip": True})
        Member(name="Bob", plan="free", joined=now, email="bob@example.com")
    with db_session:
        pros = select(m.name for m in Member if m.plan == Plan.PRO)[:]
        say(f"Enum in a generator query: PRO members = {list(pros)}")
        ann = Member.get(email="ann@example.com")
        say(
            f"looked up by encrypted e-mail: {ann.name}, joined {ann.joined.isoformat()} (UTC), "
            f"notes {ann.notes}"
        )
        raw = db.select("email FROM Member WHERE name = 'Ann'")[0]
        say(f"what the database holds: {raw[:42]}... (no plaintext)")

    kit.keys = KeyRing({"k2": new, "k1": old})
    done = pk.security.rotate_keys(Member, batch_size=1)
    kit.keys = KeyRing({"k2": new})
    with db_session:
        say(
            f"rotated {done} values to key k2; old key retired; lookup still works: "
            f"{Member.get(email='bob@example.com').name}"
        )
    db.disconnect()
