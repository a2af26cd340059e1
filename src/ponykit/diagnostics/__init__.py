"""Query diagnostics: count the statements a block runs, cap them, and detect N+1 patterns.

Every statement Pony's provider executes on an attached Database (ORM queries, lazy loads, flushes,
raw ``db.select``/``db.execute``) is reported through :meth:`ponykit.kit.Kit.add_execute_listener`, in
whichever thread ran it. By default the helpers here count the statements **every thread** finishes
while a block is open, so code that runs elsewhere (a web framework's worker thread behind a test
client, a thread pool) is counted too::

    with count_queries() as counter:
        list(select(b for b in Book))
    assert counter.count == 1

    with assert_max_queries(2):
        ...                                   # QueryCountExceeded lists the statements if more run

    with detect_n_plus_one(threshold=5):
        for author in Author.select():
            len(author.books)                 # NPlusOneDetected: prefetch Author.books

``threads="current"`` counts the calling thread's statements only; there, a block that saw none on its
own thread while other threads ran some fails loudly instead of passing vacuously.

The statement capture lives in ``_capture`` (its ``install(kit)`` is what ``attach()`` runs), N+1
detection in ``nplusone``. More diagnostics (SQL log with timings, slow-query log, EXPLAIN) will live
in this package too.
"""

from __future__ import annotations

from .._kit import Kit
from ..errors import NPlusOneDetected
from . import _capture, _slow, _sqllog
from ._capture import QueryCounter, Statement, Threads, assert_max_queries, count_queries
from .nplusone import NPlusOneFinding, detect_n_plus_one, statement_shape
from .otel import instrument

__all__ = [
    "NPlusOneDetected",
    "NPlusOneFinding",
    "QueryCounter",
    "Statement",
    "Threads",
    "assert_max_queries",
    "count_queries",
    "detect_n_plus_one",
    "instrument",
    "statement_shape",
]


def install(kit: Kit) -> None:
    """Install the statement capture, the SQL log and the slow-query log on ``kit`` (attach() runs it)."""
    _capture.install(kit)
    _sqllog.install(kit)
    _slow.install(kit)
