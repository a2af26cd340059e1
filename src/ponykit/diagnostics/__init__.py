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
detection in ``nplusone``, plans in ``explain`` (:func:`explain`, :func:`explain_sql`; import them from
``ponykit.diagnostics``, where the function ``explain`` stands in for its module) and the slow-query log
with plans in ``_slow`` (:func:`set_slow_query_log`).
"""

from __future__ import annotations

from .._kit import Kit
from ..errors import NPlusOneDetected
from . import _capture, _slow, _sqllog
from ._capture import QueryCounter, Statement, Threads, assert_max_queries, count_queries
from ._explain import Plan, PlanNode, PlanWarning, explain, explain_sql
from ._profile import Duplicate, Profile, ProfiledStatement, profile
from ._slow import set_slow_query_log
from .nplusone import NPlusOneFinding, detect_n_plus_one, statement_shape
from .otel import instrument

__all__ = [
    "Duplicate",
    "NPlusOneDetected",
    "NPlusOneFinding",
    "Plan",
    "PlanNode",
    "PlanWarning",
    "Profile",
    "ProfiledStatement",
    "QueryCounter",
    "Statement",
    "Threads",
    "assert_max_queries",
    "count_queries",
    "detect_n_plus_one",
    "explain",
    "explain_sql",
    "instrument",
    "profile",
    "set_slow_query_log",
    "statement_shape",
]


def install(kit: Kit) -> None:
    """Install the statement capture, the SQL log and the slow-query log on ``kit`` (attach() runs it)."""
    _capture.install(kit)
    _sqllog.install(kit)
    _slow.install(kit)
