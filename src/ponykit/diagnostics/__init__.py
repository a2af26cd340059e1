"""Query diagnostics: statement counts and N+1 detection, the SQL log, slow queries with plans, EXPLAIN,
profiles with an HTML report, OpenTelemetry.

Every statement Pony's provider executes on an attached Database (ORM queries, lazy loads, flushes,
raw ``db.select``/``db.execute``, bulk writes) passes one hook on the provider instance, in whichever
thread ran it (no connection or cursor proxy), and everything here is built on it:

* :func:`count_queries`, :func:`assert_max_queries`, :func:`detect_n_plus_one` (``_capture``,
  ``nplusone``): by default they count the statements of **every thread** while the block is open
  (``threads="current"``: the calling thread's only)::

      with detect_n_plus_one(threshold=5):
          for author in Author.select():
              len(author.books)                 # NPlusOneDetected: prefetch Author.books

* the SQL log (``_sqllog``): one DEBUG record per statement on the logger ``ponykit.sql``, with
  OpenTelemetry-named ``extra`` fields and parameters masked for sensitive and encrypted columns
  (``_masking``);
* the slow-query log (``_slow``, :func:`set_slow_query_log` or ``attach(db, slow_query_ms=...)``) on
  ``ponykit.sql.slow``, with a plan for slow SELECTs;
* :func:`explain` and :func:`explain_sql` (``_explain``, ``_plans``): a plan normalized across backends,
  with warnings naming the index to add;
* :func:`profile` (``_profile``, ``_report``): every statement of a block, with a self-contained HTML
  report;
* :func:`instrument` (``otel``): a CLIENT span and a duration histogram per statement
  (``pip install ponykit[otel]``).

``install(kit)`` is what ``attach()`` runs.
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
