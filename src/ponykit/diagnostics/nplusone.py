"""N+1 detection: statement shapes repeated with different parameters, and what to prefetch instead.

:func:`detect_n_plus_one` counts the block's statements with the capture of ``_capture``, groups the
SELECTs by shape (``IN (...)`` lists collapsed, whitespace normalized) and asks the ``_pony`` door which
relation or attribute the repeated shape loads, for the prefetch hint.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pony.orm import Database

from .. import _pony
from ..errors import NPlusOneDetected, OptionError
from ._capture import Statement, Threads, check_threads, count_queries, require_observed

__all__ = ["NPlusOneFinding", "detect_n_plus_one", "statement_shape"]


@dataclass(frozen=True)
class NPlusOneFinding:
    """A statement shape repeated ``count`` times; ``entity``/``attribute`` name what to prefetch."""

    sql: str
    count: int
    entity: str | None
    attribute: str | None

    @property
    def hint(self) -> str:
        """A sentence saying what to prefetch."""
        if self.entity and self.attribute:
            return (
                f"load {self.entity}.{self.attribute} for all objects at once: "
                f'ponykit.query.prefetch(objects, "{self.attribute}") or '
                f"query.prefetch({self.entity}.{self.attribute})"
            )
        return "batch these loads into one query (prefetch the relation, or select with `in`)"

    def __str__(self) -> str:
        return f"{self.count}x {self.sql}\n    -> {self.hint}"


_IN_LIST = re.compile(r"IN\s*\((?:[^()]*)\)", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def statement_shape(sql: str) -> str:
    """The statement with its ``IN (...)`` lists collapsed and whitespace normalized."""
    return _SPACES.sub(" ", _IN_LIST.sub("IN (...)", sql)).strip()


def _params_key(params: Any) -> Any:
    if isinstance(params, dict):
        return tuple(sorted((str(k), repr(v)) for k, v in params.items()))
    if isinstance(params, (list, tuple)):
        return tuple(repr(v) for v in params)
    return repr(params)


@contextmanager
def detect_n_plus_one(
    threshold: int = 5, *, db: Database | None = None, raise_on_exit: bool = True, threads: Threads = "all"
) -> Iterator[list[NPlusOneFinding]]:
    """Flag statement shapes run at least ``threshold`` times with different parameters inside the block.

    Yields a list that is filled with :class:`NPlusOneFinding` when the block ends; with
    ``raise_on_exit`` (the default) a finding raises :class:`~ponykit.errors.NPlusOneDetected` naming the
    entity and attribute to prefetch. Only SELECT statements are considered (repeated INSERTs are a
    bulk-write concern, not N+1). Statements of every thread count (see
    :func:`~ponykit.diagnostics.count_queries`); with ``threads="current"`` only this thread's, and a
    block whose statements all ran on other threads raises :class:`~ponykit.errors.QueryCountExceeded`
    instead of finding nothing.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 2:
        raise OptionError(
            f"detect_n_plus_one() needs threshold >= 2 (how many runs of one statement shape make a "
            f"pattern), got {threshold!r}; the default is 5"
        )
    check_threads(threads, "detect_n_plus_one")
    findings: list[NPlusOneFinding] = []
    with count_queries(db, threads=threads) as counter:
        yield findings
    require_observed(counter, "detect_n_plus_one")
    groups: dict[tuple[int, str], list[Statement]] = {}
    for statement in counter.statements:
        if not statement.sql.lstrip().upper().startswith("SELECT"):
            continue
        groups.setdefault((id(statement.db), statement_shape(statement.sql)), []).append(statement)
    for (_db_id, shape), statements in groups.items():
        distinct = {_params_key(s.params) for s in statements}
        if len(statements) >= threshold and len(distinct) >= 2:
            entity, attribute = _pony.n_plus_one_culprit(statements[0].db, statements[0].sql)
            findings.append(NPlusOneFinding(shape, len(statements), entity, attribute))
    if findings and raise_on_exit:
        details = "\n".join(f"  - {f}" for f in findings)
        raise NPlusOneDetected(
            f"N+1 query pattern: {len(findings)} statement shape(s) ran at least {threshold} times with "
            f"different parameters:\n{details}",
            findings,
        )
