"""13 a bounded pool: 16 threads share 2 connections; a session that cannot get one fails clearly.

Pony keeps one connection per thread for as long as the thread lives; ``bind_url(..., pool=PoolConfig(
max_size=...))`` caps the connections of the process instead, hands them out per ``db_session`` and
takes them back at its end. Read replicas (``bind_url(..., replicas=[...])``, ``replica_session()``,
read-your-writes pins) need PostgreSQL: see docs/scaling.md.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable

from pony.orm import Database, Required, db_session, select

import ponykit as pk
from ponykit.errors import PoolTimeout


def run(workdir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Run the step in ``workdir``, narrating through ``say``."""
    db = Database()

    class Visit(db.Entity):
        page = Required(str, 40)

    url = f"sqlite:///{workdir / 'visits.db'}"
    pk.bind_url(db, f"{url}?create_db=1", pool=pk.PoolConfig(max_size=2, timeout=5))
    db.generate_mapping(create_tables=True)

    @db_session
    def visit(n: int) -> None:
        Visit(page=f"/page/{n % 4}")

    threads = [threading.Thread(target=visit, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with db_session:
        visits = select(v for v in Visit).count()
    stats = pk.binding.pool_stats(db)
    assert stats is not None
    cap = stats.max_size
    say(f"16 threads wrote {visits} visits, at most {cap} connections at a time ({stats.waits} waits)")

    short = Database()
    pk.bind_url(short, url, pool=pk.PoolConfig(max_size=1, timeout=0.2))
    held = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with db_session:
            short.execute("select 1")  # takes the only connection
            held.set()
            done.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        with db_session:
            short.execute("select 1")
    except PoolTimeout as exc:
        say(f"a second session on a pool of 1 waited 0.2 s, then: {type(exc).__name__}: {str(exc)[:90]}...")
    finally:
        done.set()
        holder.join()
    db.disconnect()
    short.disconnect()
