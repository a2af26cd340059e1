"""Plans: the records :func:`~ponykit.diagnostics.explain` returns (:class:`Plan`,
:class:`PlanNode`, :class:`PlanWarning`), and hiding values in the backend's raw output.

``_plan_parsers`` builds them from each backend's EXPLAIN output.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ._sqltext import redact_literals

__all__ = ["DEFAULT_THRESHOLD", "Plan", "PlanNode", "PlanWarning", "WarningKind", "redact_raw"]

#: Tables with at least this many rows make a full scan (and a sort or temporary table fed by one)
#: worth a warning.
DEFAULT_THRESHOLD = 10_000

WarningKind = Literal["full_scan", "filesort", "temporary"]


@dataclass(frozen=True)
class PlanNode:
    """One step of a plan, the same fields on every backend (None where the backend says nothing).

    ``operation`` is the backend's own name for the step (``Seq Scan``, ``Index Lookup (ref)``,
    ``SCAN``...), ``table`` the table it reads (its real name, aliases resolved), ``index`` the index
    it uses. ``estimated_rows``/``estimated_cost`` are the planner's guesses (PostgreSQL and MariaDB;
    SQLite gives none); ``actual_rows``/``actual_ms`` are measured, per loop as the backend reports
    them, only with ``analyze=True``.
    """

    operation: str
    table: str | None = None
    index: str | None = None
    estimated_rows: float | None = None
    estimated_cost: float | None = None
    actual_rows: float | None = None
    actual_ms: float | None = None
    children: tuple[PlanNode, ...] = ()
    detail: str | None = None  # the backend's own one-line text (SQLite), or a condition with values hidden

    def walk(self) -> Iterable[PlanNode]:
        """This node and every node below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def line(self) -> str:
        """This node on one line, as :meth:`Plan.render` shows it."""
        text = self.operation
        if self.table:
            text += f" on {self.table}"
        if self.index:
            text += f" using {self.index}"
        if self.detail:
            text += f" [{self.detail}]"
        numbers = []
        if self.estimated_rows is not None:
            numbers.append(f"rows≈{_number(self.estimated_rows)}")
        if self.estimated_cost is not None:
            numbers.append(f"cost={_number(self.estimated_cost)}")
        if self.actual_rows is not None:
            numbers.append(f"actual rows={_number(self.actual_rows)}")
        if self.actual_ms is not None:
            numbers.append(f"time={self.actual_ms:.3f} ms")
        return f"{text}  ({', '.join(numbers)})" if numbers else text


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


@dataclass(frozen=True)
class PlanWarning:
    """Something in a plan that gets slow as the data grows, and what to do about it.

    ``kind`` is ``"full_scan"`` (every row of a large table is read), ``"filesort"`` (many rows are
    sorted outside an index) or ``"temporary"`` (an intermediate table is built); ``table`` is the table
    concerned; ``suggestion`` names the index to add in Pony terms (``composite_index(Order.customer,
    Order.placed)``, ``Order.code: add index=True``) when the statement says which columns matter.
    """

    kind: WarningKind
    table: str | None
    message: str
    suggestion: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}\n    -> {self.suggestion}"


@dataclass(frozen=True)
class Plan:
    """An execution plan: the backend's own output, one normalized tree, and warnings.

    ``raw`` is what the backend printed, parsed (PostgreSQL's ``FORMAT JSON`` list, MariaDB's
    ``FORMAT=JSON`` object, SQLite's ``EXPLAIN QUERY PLAN`` rows as ``[id, parent, detail]``), with
    string and number literals in conditions replaced by ``?`` so that no parameter value is kept.
    ``nodes`` are the root steps (one on PostgreSQL and MariaDB; SQLite may list several), ``warnings``
    the :class:`PlanWarning` found. ``total_ms`` is the measured time of the statement with
    ``analyze=True`` (on SQLite: the time to run it and fetch its rows), ``rows`` the rows it returned
    when known.
    """

    backend: str
    sql: str
    raw: Any
    nodes: tuple[PlanNode, ...]
    warnings: tuple[PlanWarning, ...] = ()
    analyzed: bool = False
    total_ms: float | None = None
    rows: int | None = None

    def walk(self) -> Iterable[PlanNode]:
        """Every node of the plan, depth first."""
        for node in self.nodes:
            yield from node.walk()

    @property
    def tables(self) -> list[str]:
        """The tables the plan reads, in plan order, each once."""
        return list(dict.fromkeys(n.table for n in self.walk() if n.table))

    def render(self) -> str:
        """The plan as an indented tree, then its warnings, for a terminal or a log message."""
        lines = [f"{self.backend} plan" + (" (analyzed)" if self.analyzed else "")]
        if self.total_ms is not None:
            lines[0] += f", {self.total_ms:.3f} ms" + (f", {self.rows} rows" if self.rows is not None else "")

        def add(node: PlanNode, prefix: str, last: bool) -> None:
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{node.line()}")
            below = prefix + ("   " if last else "│  ")
            for i, child in enumerate(node.children):
                add(child, below, i == len(node.children) - 1)

        for i, node in enumerate(self.nodes):
            add(node, "", i == len(self.nodes) - 1)
        if self.warnings:
            lines.append("warnings:")
            lines.extend(f"  ! {w.kind}: {w.message}\n    -> {w.suggestion}" for w in self.warnings)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain JSON-able data (``json.dumps(plan.to_dict())`` works)."""
        # Through JSON once: tuples become lists, odd types in the raw output become strings.
        data: dict[str, Any] = json.loads(json.dumps(asdict(self), default=str))
        return data

    def __str__(self) -> str:
        return self.render()


# -- redaction -------------------------------------------------------------------------------------

# Keys whose values are names or words of the backend, never values of the statement's data.
_SAFE_KEYS = frozenset(
    {
        "Node Type", "Relation Name", "Alias", "Index Name", "Schema", "Parent Relationship", "Join Type",
        "Strategy", "Partial Mode", "Scan Direction", "Sort Method", "Sort Space Type", "Operation",
        "Subplan Name", "CTE Name", "Function Name", "Command", "Trigger Name", "Relation",
        "table_name", "access_type", "key", "key_length", "possible_keys", "used_key_parts", "ref",
        "buffer_type", "buffer_size", "join_type", "mrr_type", "message", "index", "partitions",
    }
)  # fmt: skip


def redact_raw(value: Any, key: str = "", *, backslash_escapes: bool = False) -> Any:
    """``value`` (parsed EXPLAIN output) with literals hidden in every string but names and keywords;
    ``backslash_escapes`` for MariaDB/MySQL output (see :func:`~._sqltext.redact_literals`)."""
    if isinstance(value, dict):
        return {k: redact_raw(v, str(k), backslash_escapes=backslash_escapes) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_raw(v, key, backslash_escapes=backslash_escapes) for v in value]
    if isinstance(value, str) and key not in _SAFE_KEYS:
        return redact_literals(value, backslash_escapes=backslash_escapes)
    return value
