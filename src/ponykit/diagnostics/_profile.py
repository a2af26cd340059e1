"""profile(): record every statement of a block, find N+1 groups, duplicates and slow ones, write a report.

::

    with profile(explain_slow_ms=50, path="profile.html") as prof:
        handle_request()
    print(prof.summary())

A statement listener (:meth:`ponykit.kit.Kit.add_statement_listener`) is added to the profiled
Databases for the block and removed at its end. It records each statement's text, masked parameters,
duration, start, thread, caller, row count and error type, in the thread that ran it. Parameters pass
through the SQL log's masking (values bound to ``sensitive()`` or encrypted attributes become ``"***"``);
where masking is unavailable no parameter value is recorded at all. The analyses (:attr:`Profile.n_plus_one`,
:attr:`Profile.duplicates`, :attr:`Profile.slow`) are computed from the recorded statements when asked.
The HTML report is built by ``_report``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pony.orm import Database

from .. import _pony
from .._kit import Kit, attached_databases, get_kit
from ..errors import ConfigurationError, OptionError
from ._capture import Threads, check_threads
from ._explain import explain_sql
from ._masking import mask_parameters
from ._sqllog import caller
from .nplusone import NPlusOneFinding, statement_shape

__all__ = ["Duplicate", "Profile", "ProfiledStatement", "profile"]


@dataclass(slots=True)
class ProfiledStatement:
    """One statement run inside a :func:`profile` block.

    ``params`` are the masked parameters (values of sensitive and encrypted attributes replaced by
    ``"***"``), or None when masking is unavailable: never the raw values. ``start_ms`` is the offset
    from the start of the block, ``caller`` the first frame outside ponykit and Pony (``file:line``),
    ``rowcount`` what the driver reported (None when it reports nothing), ``error`` the exception's type
    name, ``plan`` the EXPLAIN plan of a slow SELECT (``None`` otherwise) and ``plan_note`` why a slow
    statement has no plan. Read-only by convention: not frozen, since a frozen dataclass's ``__init__``
    cost several microseconds per statement.
    """

    sql: str
    params: Any = field(repr=False)
    start_ms: float
    duration_ms: float
    thread: str
    caller: str | None
    rowcount: int | None
    error: str | None
    db: Database = field(repr=False, compare=False)
    plan: Any = field(default=None, repr=False, compare=False)
    plan_note: str | None = None
    # Tells equal parameter sets apart without keeping them: a salted in-process hash, never reported.
    fingerprint: int = field(default=0, repr=False, compare=False)

    @property
    def operation(self) -> str:
        """The statement's first keyword in upper case (``SELECT``, ``INSERT``, ...)."""
        words = self.sql.split(None, 1)
        return words[0].upper() if words else ""


@dataclass(frozen=True)
class Duplicate:
    """The same SQL with the same parameters run ``count`` times; ``statements`` numbers them (from 1)."""

    sql: str
    count: int
    statements: tuple[int, ...]

    def __str__(self) -> str:
        numbers = ", ".join(f"#{n}" for n in self.statements)
        return f"{self.count}x {self.sql}  ({numbers})"


class Profile:
    """What a :func:`profile` block recorded, and what it found.

    ``statements`` fills while the block runs (in the order the statements finished, from every
    watched thread); the other attributes are computed from it each time they are read.
    """

    def __init__(self, *, explain_slow_ms: float | None, n_plus_one_threshold: int) -> None:
        self.statements: list[ProfiledStatement] = []
        self.explain_slow_ms = explain_slow_ms
        self.n_plus_one_threshold = n_plus_one_threshold
        self.started = time.time()
        self.elapsed_ms = 0.0
        self._t0 = time.perf_counter()
        self._open = True

    def __repr__(self) -> str:
        return f"<Profile {len(self.statements)} statement(s), {self.total_ms:.1f} ms in SQL>"

    @property
    def total_ms(self) -> float:
        """The time spent in statements, in milliseconds (summed over threads)."""
        return sum(s.duration_ms for s in self.statements)

    @property
    def wall_ms(self) -> float:
        """How long the block ran (so far, while it is open), in milliseconds."""
        if self._open:
            return (time.perf_counter() - self._t0) * 1000.0
        return self.elapsed_ms

    @property
    def n_plus_one(self) -> list[NPlusOneFinding]:
        """SELECT shapes run at least ``n_plus_one_threshold`` times with different parameters."""
        groups: dict[tuple[int, str], list[ProfiledStatement]] = {}
        for statement in list(self.statements):
            if statement.operation != "SELECT":
                continue
            groups.setdefault((id(statement.db), statement_shape(statement.sql)), []).append(statement)
        findings = []
        for (_db, shape), members in groups.items():
            distinct = {s.fingerprint for s in members}
            if len(members) >= self.n_plus_one_threshold and len(distinct) >= 2:
                entity, attribute = _pony.n_plus_one_culprit(members[0].db, members[0].sql)
                findings.append(NPlusOneFinding(shape, len(members), entity, attribute))
        return findings

    def n_plus_one_statements(self, finding: NPlusOneFinding) -> tuple[int, ...]:
        """The numbers (from 1) of the statements of one N+1 group."""
        return tuple(
            i
            for i, s in enumerate(list(self.statements), 1)
            if s.operation == "SELECT" and statement_shape(s.sql) == finding.sql
        )

    @property
    def duplicates(self) -> list[Duplicate]:
        """Statements run more than once with the same SQL and the same parameters."""
        seen: dict[tuple[int, str, int], list[int]] = {}
        for number, statement in enumerate(list(self.statements), 1):
            key = (id(statement.db), statement.sql, statement.fingerprint)
            seen.setdefault(key, []).append(number)
        return [
            Duplicate(sql, len(numbers), tuple(numbers))
            for (_db, sql, _fp), numbers in seen.items()
            if len(numbers) > 1
        ]

    @property
    def slow(self) -> list[ProfiledStatement]:
        """Statements that took longer than ``explain_slow_ms`` (empty when it is None), slowest first."""
        limit = self.explain_slow_ms
        if limit is None:
            return []
        found = [s for s in list(self.statements) if s.duration_ms > limit]
        return sorted(found, key=lambda s: s.duration_ms, reverse=True)

    def slow_by_shape(self) -> list[list[ProfiledStatement]]:
        """:attr:`slow` grouped by statement shape, slowest first: each shape's plan is shown once."""
        groups: dict[tuple[int, str], list[ProfiledStatement]] = {}
        for statement in self.slow:
            groups.setdefault((id(statement.db), statement_shape(statement.sql)), []).append(statement)
        return list(groups.values())

    def summary(self, top: int = 5) -> str:
        """A few lines of text: totals, N+1 groups, duplicates, slow statements, the ``top`` slowest."""
        statements = list(self.statements)
        threads = len({s.thread for s in statements})
        lines = [
            f"ponykit profile: {len(statements)} statement(s), {self.total_ms:.2f} ms in SQL over "
            f"{self.wall_ms:.2f} ms, {threads} thread(s)"
        ]
        findings = self.n_plus_one
        if findings:
            lines.append(f"N+1: {len(findings)} group(s)")
            lines.extend(f"  - {f.count}x {f.sql}\n    -> {f.hint}" for f in findings)
        duplicates = self.duplicates
        if duplicates:
            lines.append(f"duplicates: {len(duplicates)} statement(s) repeated with the same parameters")
            lines.extend(f"  - {d}" for d in duplicates)
        if self.explain_slow_ms is not None:
            groups = self.slow_by_shape()
            count = sum(len(group) for group in groups)
            lines.append(
                f"slow (over {self.explain_slow_ms:g} ms): {count} statement(s), {len(groups)} shape(s)"
            )
            for group in groups[:10]:
                first = group[0]
                more = f"  (and {len(group) - 1} more of this shape)" if len(group) > 1 else ""
                lines.append(_line(first) + more)
                plan = next((s.plan for s in group if s.plan is not None), None)
                if plan is not None:
                    lines.extend("      " + line for line in str(plan.render()).splitlines())
        if statements and top > 0:
            lines.append(f"slowest {min(top, len(statements))}:")
            for s in sorted(statements, key=lambda s: s.duration_ms, reverse=True)[:top]:
                lines.append(_line(s))
        return "\n".join(lines)

    def to_html(self) -> str:
        """The report as one self-contained HTML page (inline CSS and JS, no network assets)."""
        from . import _report  # the page template is only needed when a report is made

        return _report.render(self)

    def write_html(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_html` to ``path`` (UTF-8) and return the path."""
        target = Path(path)
        target.write_text(self.to_html(), encoding="utf-8")
        return target

    def _close(self) -> None:
        self.elapsed_ms = (time.perf_counter() - self._t0) * 1000.0
        self._open = False


def _line(statement: ProfiledStatement) -> str:
    sql = " ".join(statement.sql.split())
    sql = sql if len(sql) <= 200 else sql[:200] + "..."
    return f"  - {statement.duration_ms:.2f} ms {sql}" + (
        f"  at {statement.caller}" if statement.caller else ""
    )


def _fingerprint(arguments: Any) -> int:
    if isinstance(arguments, dict):
        return hash(tuple(sorted((str(k), repr(v)) for k, v in arguments.items())))
    if isinstance(arguments, (list, tuple)):
        return hash(tuple(map(repr, arguments)))
    return hash(repr(arguments))


def _same(masked: Any, arguments: Any) -> bool:
    """Whether masking left every value as it was (a list may come back as a tuple)."""
    try:
        if isinstance(masked, (list, tuple)) and isinstance(arguments, (list, tuple)):
            return list(masked) == list(arguments)
        return bool(masked == arguments)
    except Exception:  # noqa: BLE001 - a value whose == raises: in doubt, treat it as masked
        return False


def _is_select(sql: str) -> bool:
    # EXPLAIN only what cannot write: a SELECT, or a WITH whose statement is a SELECT (a WITH ... UPDATE
    # on PostgreSQL writes). An EXPLAIN is never explained again.
    head = sql.lstrip()[:6].upper()
    if head == "SELECT":
        return True
    if head[:4] != "WITH":
        return False
    upper = sql.upper()
    return not any(word in upper for word in ("INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE"))


class _Recorder:
    """The statement listener of one profile: builds a :class:`ProfiledStatement` per statement."""

    def __init__(self, prof: Profile, threads: Threads) -> None:
        self.prof = prof
        self.owner = threading.get_ident() if threads == "current" else None
        self.plans: dict[str, tuple[Any, str | None]] = {}  # one EXPLAIN per statement shape

    def __call__(
        self, db: Database, cursor: Any, sql: str, arguments: Any, seconds: float, error: BaseException | None
    ) -> None:
        if self.owner is not None and threading.get_ident() != self.owner:
            return
        prof = self.prof
        end = time.perf_counter()
        duration_ms = seconds * 1000.0
        params = None
        if arguments:
            try:
                params = mask_parameters(db, sql, arguments)
            except Exception:  # noqa: BLE001 - a masking failure must not fail the statement
                params = None  # never the raw values
        rowcount = getattr(cursor, "rowcount", None)
        plan, note = None, None
        limit = prof.explain_slow_ms
        if limit is not None and duration_ms > limit:
            plan, note = self._plan(db, cursor, sql, arguments, params, error)
        statement = ProfiledStatement(
            sql=sql,
            params=params,
            start_ms=max(0.0, (end - seconds - prof._t0) * 1000.0),
            duration_ms=duration_ms,
            thread=threading.current_thread().name,
            caller=caller(full_path=True),
            rowcount=rowcount if isinstance(rowcount, int) and rowcount >= 0 else None,
            error=type(error).__name__ if error is not None else None,
            db=db,
            plan=plan,
            plan_note=note,
            fingerprint=_fingerprint(arguments),
        )
        prof.statements.append(statement)  # list.append is atomic: worker threads may record at once

    def _plan(
        self, db: Database, cursor: Any, sql: str, arguments: Any, masked: Any, error: BaseException | None
    ) -> tuple[Any, str | None]:
        if error is not None:
            return None, "no plan: the statement failed (the transaction may be aborted)"
        if not _is_select(sql):
            return None, "no plan: only SELECT statements are explained"
        if arguments and masked is None:
            return None, "no plan: could not tell whether the statement binds sensitive values"
        if arguments and not _same(masked, arguments):
            # Plans print the bound values in their filters (PostgreSQL: "Filter: (email = '...')").
            return None, "no plan: the statement binds sensitive or encrypted values"
        shape = statement_shape(sql)
        if shape in self.plans:
            return self.plans[shape]
        try:
            found: tuple[Any, str | None] = (explain_sql(db, sql, arguments, cursor=cursor), None)
        except Exception as exc:  # noqa: BLE001 - the type only: a driver message can quote values
            found = (None, f"no plan: EXPLAIN failed ({type(exc).__name__})")
        self.plans[shape] = found
        return found


def _is_number(value: object, minimum: float) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value >= minimum


def _kits(db: Database | None) -> list[Kit]:
    if db is not None:
        return [get_kit(db)]
    kits = [get_kit(database) for database in attached_databases()]
    if not kits:
        raise ConfigurationError(
            "profile() found no attached Database to record: call ponykit.attach(db) first, or pass db="
        )
    return kits


@contextmanager
def profile(
    db: Database | None = None,
    *,
    threads: Threads = "all",
    explain_slow_ms: float | None = None,
    path: str | os.PathLike[str] | None = None,
    n_plus_one_threshold: int = 5,
) -> Iterator[Profile]:
    """Record every statement the block runs on ``db`` (default: every attached Database).

    Yields a :class:`Profile`. ``threads="all"`` (the default) records the statements of every thread,
    ``"current"`` those of the calling thread only. Statements slower than ``explain_slow_ms``
    milliseconds are listed in :attr:`Profile.slow`; a slow SELECT also gets its EXPLAIN plan (without
    ANALYZE, on the same connection, right after it ran; one per statement shape; none for a statement
    binding sensitive values, since plans print bound values). With ``path``, the HTML report is written
    there when the block ends, also when it raises. A shape run ``n_plus_one_threshold`` times with
    different parameters is an N+1 group.
    """
    check_threads(threads, "profile")
    if explain_slow_ms is not None and not _is_number(explain_slow_ms, 0):
        raise OptionError(
            f"profile(explain_slow_ms=...) takes a number of milliseconds >= 0 (statements slower than that "
            f"are listed with their plans) or None, got {explain_slow_ms!r}"
        )
    if not _is_number(n_plus_one_threshold, 2) or not isinstance(n_plus_one_threshold, int):
        raise OptionError(
            f"profile(n_plus_one_threshold=...) needs a whole number >= 2 (how many runs of one statement "
            f"shape make an N+1 group), got {n_plus_one_threshold!r}; the default is 5"
        )
    kits = _kits(db)
    limit = float(explain_slow_ms) if explain_slow_ms is not None else None
    prof = Profile(explain_slow_ms=limit, n_plus_one_threshold=n_plus_one_threshold)
    recorder = _Recorder(prof, threads)
    removers = [kit.add_statement_listener(recorder) for kit in kits]
    try:
        yield prof
    finally:
        for remove in removers:
            remove()
        prof._close()
        if path is not None:
            prof.write_html(path)
