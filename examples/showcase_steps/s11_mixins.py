"""11 entity mixins: timestamps, soft delete, versions and an audit history, bulk writes included.

Accounts carry ``Timestamped``, ``SoftDeletable``, ``Versioned`` and ``Audited``: the mixins put real
columns on the entity (Pony ignores attributes declared on a plain base class) and keep them right on
every path, Pony's own flushes and ponykit's bulk writes alike, which is where other ORMs' mixins stop.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from pony.orm import Database, Required, db_session, flush

import ponykit as pk
from ponykit.mixins import Audited, SoftDeletable, Timestamped, Versioned


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Account(db.Entity, Timestamped, SoftDeletable, Versioned, Audited):
        email = Required(str, 120)
        plan = Required(str, 20)

    pk.mixins.unique_live(Account, "email")  # unique among live rows: a deleted one does not hold it
    pk.bind_url(db, f"sqlite:///{workdir / 'accounts.db'}?create_db=1")
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    pk.mixins.create_live_unique_indexes(db)

    with pk.mixins.audit_actor("importer"), db_session:
        ids = pk.bulk_insert(
            Account,
            [{"email": f"user{i}@example.com", "plan": "free"} for i in range(1_000)],
            return_ids=True,
        )
    with db_session:
        first = Account[ids[0]]
        stamp = f"{first.created_at:%H:%M:%S}"
        say(f"bulk_insert filled the mixins' columns: version {first.version}, created_at {stamp} UTC")

    with pk.mixins.audit_actor("billing"), db_session:
        pk.bulk_update(Account, [{"id": i, "plan": "pro"} for i in ids[:300]])
        account = Account[ids[0]]
        account.plan = "team"  # an ORM update in the same transaction: one audit record for the row
    with db_session:
        account = Account[ids[0]]
        say(f"after bulk_update and an ORM update: version {account.version}, etag {account.etag}")
        say(f"updated_at moved on: {account.updated_at > account.created_at}")
        for record in account.history():
            plan = record.changes.get("plan")
            say(f"  history: {record.op} by {record.actor}, plan {plan}, changed {sorted(record.changes)}")

    with db_session:
        gone = pk.bulk_delete(Account, Account.select(lambda a: a.plan == "free"), soft=True)
        say(f"bulk_delete(..., soft=True) marked {gone} accounts deleted; live: {Account.live().count()}")
        Account(email=f"user{ids[-1] - ids[0]}@example.com", plan="pro")  # the e-mail is free again
        flush()
        say("a deleted account's e-mail can be taken again (a partial unique index)")
    try:
        with db_session:
            Account[ids[0]].expect_version(1)
    except pk.mixins.VersionConflict as exc:
        say(f"a client holding version 1 is refused: {str(exc).splitlines()[0]}")
    db.disconnect()
