"""10 access control: policies that filter in the SQL, permission checks, and row-level security.

A help desk with two customers (tenants). Policies are Pony predicates over a ticket and the current
principal: ``scoped()`` turns them into a filter inside the SQL (the result is still a Pony query) and
``can()`` decides for one object exactly as the query would. ``requires`` guards a service function. On
PostgreSQL, ``rls_context`` makes the database itself enforce the same rule on every read path, reads
included, which Python-side filters cannot (a ``Set`` load, raw SQL); see docs/security.md.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from pony.orm import Database, Optional, Required, db_session, select

import ponykit as pk
from ponykit.security import Scoped


class Agent:
    """The application's principal: ponykit reads only what the policies and checks read."""

    def __init__(self, id: int, tenant_id: int, permissions: tuple[str, ...] = ()) -> None:
        self.id, self.tenant_id, self.permissions = id, tenant_id, frozenset(permissions)


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Ticket(db.Entity, Scoped):
        tenant_id = Required(int, index=True)
        subject = Required(str)
        assignee_id = Optional(int)

    pk.bind_url(db, f"sqlite:///{workdir / 'helpdesk.db'}?create_db=1")
    pk.attach(db)
    db.generate_mapping(create_tables=True)

    @pk.policy(Ticket)  # "read" by default: a policy never grants writes by accident
    def same_tenant(ticket: Ticket, agent: Agent) -> bool:
        return ticket.tenant_id == agent.tenant_id

    pk.policy(Ticket, actions="close")(lambda t, a: t.tenant_id == a.tenant_id and t.assignee_id == a.id)

    @pk.requires("tickets:close")
    def close(ticket_id: int) -> str:
        ticket = Ticket[ticket_id]
        if not pk.can(pk.security.current_principal(), "close", ticket):
            raise pk.PermissionDenied(f"ticket {ticket_id} is not assigned to you")
        return f"closed {ticket.subject!r}"

    with db_session:
        pk.bulk_insert(
            Ticket,
            [
                {"tenant_id": 1 + i % 2, "subject": f"ticket {i}", "assignee_id": 7 if i < 4 else None}
                for i in range(10)
            ],
        )

    ann = Agent(id=7, tenant_id=1, permissions=("tickets:close",))
    with db_session, pk.acting_as(ann):
        mine = Ticket.scoped().order_by(Ticket.id)
        total = select(t for t in Ticket).count()
        say(f"ann (tenant 1) sees {mine.count()} of {total} tickets; the filter is in the SQL:")
        say("  " + next(line for line in mine.get_sql().splitlines() if "WHERE" in line).strip())
        closable = Ticket.scoped("close").count()
        say(f"she may close {closable} of them: those assigned to her (the 'close' policy)")
        say(close(mine.first().id))
        other = select(t for t in Ticket if t.tenant_id == 2).first()
        say(f"can(ann, 'read', a tenant-2 ticket) -> {pk.can(ann, 'read', other)} (decided by the same SQL)")

    try:
        with db_session:
            Ticket.scoped()
    except pk.PermissionDenied as exc:
        say(f"nobody acting: refused before any SQL ({type(exc).__name__})")
    try:
        with db_session, pk.acting_as(Agent(id=8, tenant_id=1)):
            close(1)
    except pk.PermissionDenied as exc:
        say(f"an agent without 'tickets:close': {exc}".splitlines()[0])

    say(
        "Python-side policies do not see Set loads or raw SQL; on PostgreSQL, enable_rls() and "
        "rls_context(tenant_id=...) make the database enforce the rule on every statement"
    )
    db.disconnect()
