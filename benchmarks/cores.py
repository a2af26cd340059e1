"""Run the benchmark process and a local database server on separate CPU cores.

A benchmark of short round trips (a 20-row page: ~80 µs in the server, ~100 µs in Python) measures two
processes taking turns. On a machine with two cores the scheduler sometimes puts the benchmark process
and the PostgreSQL backend serving it on the same core; every round trip then runs each side with
caches the other one just filled, and whatever either side does beyond the other contenders costs about
twice as much. Measured on this project's 2-core machine with the keyset benchmark: a page at depth
990,000 was 1.10-1.13x the first page with the two processes on separate cores and 1.22x with both on
one core, where the first page itself got faster. Which of the two a run gets is the scheduler's
choice, often fixed for minutes, so a whole session can land in one mode or the other.

A production application and its database server do not share a core (usually not a machine), so
benchmarks that compare such round trips pin the two sides apart: this process on the first core it may
use, the server's postmaster and every process it has started on the others (backends started while
pinned inherit that). Everything goes back as it was on exit. Where that cannot be done (one core, a
server on another machine or in another PID namespace, no permission), nothing changes and the reason is
returned so the benchmark can print it.

``PONYKIT_BENCH_CORES`` overrides this for a run: ``separate`` (the default), ``same`` (both sides on the
first core, to measure the other mode) or ``off`` (leave placement to the scheduler).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["separate_cores", "server_backend_pid"]


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        # The command name (field 2) may hold spaces and parentheses: the fields after it start at ')'.
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if _parent(int(entry)) == parent:
                    found.append(int(entry))
    return found


def _is_postgres(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"postgres" in f.read().split(b"\0", 1)[0]
    except OSError:
        return False


def server_backend_pid(bench_env: Any) -> int | None:
    """The PostgreSQL backend pid of the harness's admin connection (None for other backends)."""
    if bench_env.provider != "postgres":
        return None
    cur = bench_env.admin().cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = int(cur.fetchone()[0])
    cur.close()
    return pid


@contextlib.contextmanager
def separate_cores(backend_pid: int | None) -> Iterator[str]:
    """Pin this process to one core and the PostgreSQL server of ``backend_pid`` (a backend's
    ``pg_backend_pid()``) to the others, for the duration of the block.

    Yields a description of what was done (``"client on core 0, server on core(s) [1]"``) or why nothing
    was (``"not pinned: ..."``).
    """
    mode = os.environ.get("PONYKIT_BENCH_CORES", "separate").strip() or "separate"
    if mode not in ("separate", "same", "off"):
        raise ValueError(f"PONYKIT_BENCH_CORES must be separate, same or off; got {mode!r}")
    if mode == "off":
        yield "not pinned: PONYKIT_BENCH_CORES=off"
        return
    if backend_pid is None:
        yield "not pinned: no local database server"
        return
    if not hasattr(os, "sched_setaffinity"):
        yield "not pinned: this platform cannot set CPU affinity"
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield "not pinned: this process may use only one core"
        return
    try:
        postmaster = _parent(backend_pid)
    except (OSError, ValueError, IndexError):
        yield "not pinned: the server's backend is not a process on this machine"
        return
    if not (_is_postgres(backend_pid) and _is_postgres(postmaster)):
        yield "not pinned: the server's backend is not a PostgreSQL process on this machine"
        return
    client, server = {cpus[0]}, ({cpus[0]} if mode == "same" else set(cpus[1:]))
    saved_client = os.sched_getaffinity(0)
    saved_server = os.sched_getaffinity(postmaster)
    try:
        os.sched_setaffinity(0, client)
        _set_server(postmaster, server)
        pinned = True
    except PermissionError:
        pinned = False
    try:
        if pinned:
            yield f"client on core {cpus[0]}, server on core(s) {sorted(server)}"
        else:
            yield "not pinned: no permission to set the server's CPU affinity"
    finally:
        os.sched_setaffinity(0, saved_client)
        with contextlib.suppress(PermissionError):
            _set_server(postmaster, saved_server)


def _set_server(postmaster: int, cpus: set[int]) -> None:
    # Backends that exit meanwhile are skipped; new ones inherit the postmaster's set.
    for pid in [postmaster, *_children(postmaster)]:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(pid, cpus)
