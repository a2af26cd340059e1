"""Building a :class:`~._plans.Plan` from each backend's EXPLAIN output, with warnings and index hints.

Everything here is pure (no database): :func:`build_plan` gets the backend's raw output, the statement's
:class:`~._sqltext.SqlFacts` (aliases, filtered and sorted columns), the mapping read backwards
(``_pony.table_infos``) and a ``table_rows(table)`` function for the row counts the output lacks (asked
only for tables a plan reads in full), and returns the plan. Golden files in ``tests/diagnostics/plans/``
pin each parser to the server version its output was taken on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._pony import TableInfo
from ._plans import DEFAULT_THRESHOLD, Plan, PlanNode, PlanWarning, WarningKind
from ._sqltext import SqlFacts

__all__ = ["TableRows", "build_plan", "parse_mariadb", "parse_postgres", "parse_sqlite"]

#: ``table_rows(table) -> rows or None``: how many rows a table holds (asked only when a plan reads it
#: in full and the backend's output does not say).
TableRows = Callable[[str], "int | None"]


# -- building a plan -----------------------------------------------------------------------------------


@dataclass
class _Finding:
    kind: WarningKind
    table: str | None
    alias: str | None
    rows: float | None  # rows involved, when the output says; None: ask table_rows(table)
    what: str


@dataclass
class _Parsed:
    nodes: list[PlanNode] = field(default_factory=list)
    findings: list[_Finding] = field(default_factory=list)
    total_ms: float | None = None
    rows: int | None = None


# -- PostgreSQL: EXPLAIN (FORMAT JSON) ------------------------------------------------------------------

_PG_AGGREGATE = {"Hashed": "HashAggregate", "Sorted": "GroupAggregate", "Mixed": "MixedAggregate"}
_PG_DETAIL_KEYS = ("Index Cond", "Recheck Cond", "Filter", "Hash Cond", "Merge Cond", "Join Filter")


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _pg_table(item: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The table and alias a PostgreSQL node reads, or the first one read below it."""
    if item.get("Relation Name"):
        return str(item["Relation Name"]).lower(), str(item.get("Alias") or item["Relation Name"]).lower()
    for child in item.get("Plans") or ():
        found = _pg_table(child)
        if found[0]:
            return found
    return None, None


def _pg_node(item: Mapping[str, Any], findings: list[_Finding]) -> PlanNode:
    operation = str(item.get("Node Type", "?"))
    if operation == "Aggregate":
        operation = _PG_AGGREGATE.get(str(item.get("Strategy")), operation)
    elif operation == "ModifyTable" and item.get("Operation"):
        operation = str(item["Operation"])
    join = item.get("Join Type")
    if join and join != "Inner":
        operation += f" ({join})"
    table = str(item["Relation Name"]).lower() if item.get("Relation Name") else None
    alias = str(item.get("Alias") or table or "").lower() or None
    rows = _float(item.get("Plan Rows"))
    actual = _float(item.get("Actual Rows"))
    seen = max(rows or 0.0, (actual or 0.0) * (_float(item.get("Actual Loops")) or 1.0))
    kind = item.get("Node Type")
    if kind == "Seq Scan" and table:
        findings.append(_Finding("full_scan", table, alias, None, f"Seq Scan on {table}"))
    elif kind in ("Sort", "Incremental Sort"):
        below = _pg_table(item)
        findings.append(_Finding("filesort", below[0], below[1], seen, str(kind)))
    elif kind == "Materialize" or (kind == "Hash" and (_float(item.get("Hash Batches")) or 1) > 1):
        below = _pg_table(item)
        findings.append(_Finding("temporary", below[0], below[1], seen, f"{kind} (spilled to disk)"
                                 if kind == "Hash" else str(kind)))  # fmt: skip
    detail = next((str(item[k]) for k in _PG_DETAIL_KEYS if item.get(k)), None)
    if detail is None and item.get("Sort Key"):
        detail = "by " + ", ".join(map(str, item["Sort Key"]))
    children = tuple(_pg_node(child, findings) for child in item.get("Plans") or ())
    return PlanNode(
        operation,
        table,
        str(item["Index Name"]) if item.get("Index Name") else None,
        rows,
        _float(item.get("Total Cost")),
        actual,
        _float(item.get("Actual Total Time")),
        children,
        detail,
    )


def parse_postgres(raw: Any) -> _Parsed:
    """Nodes and findings of PostgreSQL's ``EXPLAIN (FORMAT JSON[, ANALYZE])`` output."""
    parsed = _Parsed()
    top = raw[0] if isinstance(raw, list) and raw else raw
    if not isinstance(top, Mapping) or not isinstance(top.get("Plan"), Mapping):
        return parsed
    root = _pg_node(top["Plan"], parsed.findings)
    parsed.nodes.append(root)
    parsed.total_ms = _float(top.get("Execution Time"))
    if root.actual_rows is not None:
        parsed.rows = int(root.actual_rows)
    return parsed


# -- MariaDB: EXPLAIN FORMAT=JSON / ANALYZE FORMAT=JSON -----------------------------------------------

_MARIADB_ACCESS = {
    "ALL": "Full Table Scan",
    "index": "Full Index Scan",
    "range": "Index Range Scan",
    "ref": "Index Lookup",
    "eq_ref": "Unique Index Lookup",
    "ref_or_null": "Index Lookup Or Null",
    "const": "Constant Row",
    "system": "Constant Row",
    "index_merge": "Index Merge",
    "fulltext": "Fulltext Index",
    "hash_ALL": "Hash Join Scan",
}
_MARIADB_NODES = {
    "query_block": "Query Block",
    "filesort": "Filesort",
    "temporary_table": "Temporary Table",
    "union_result": "Union Result",
    "duplicates_removal": "Duplicates Removal",
    "window_functions_computation": "Window Functions",
    "block-nl-join": "Block Nested Loop Join",
    "materialized": "Materialized",
    "expression_cache": "Expression Cache",
}


def _maria_table(item: Mapping[str, Any], facts: SqlFacts, findings: list[_Finding]) -> PlanNode:
    access = str(item.get("access_type", "?"))
    name = str(item.get("table_name", ""))
    alias = name.lower() if name and not name.startswith("<") else None
    table = facts.table_of(alias) if alias else None
    rows = _float(item.get("rows", item.get("rows_examined_per_scan")))  # MariaDB, MySQL
    times = [_float(item.get(k)) for k in ("r_table_time_ms", "r_other_time_ms", "r_total_time_ms")]
    measured = [t for t in times if t is not None]
    if access == "ALL" and table:
        findings.append(_Finding("full_scan", table, alias, rows, f"Full table scan of {table}"))
    children = tuple(_maria_nodes(item, facts, findings))
    condition = item.get("attached_condition") or item.get("index_condition")
    return PlanNode(
        f"{_MARIADB_ACCESS.get(access, access)} ({access})",
        table or (name or None),
        str(item["key"]) if item.get("key") else None,
        rows,
        _float(item.get("cost")),
        _float(item.get("r_rows")),
        sum(measured) if measured else None,
        children,
        str(condition) if condition else None,
    )


def _maria_nodes(value: Any, facts: SqlFacts, findings: list[_Finding]) -> list[PlanNode]:
    if isinstance(value, list):
        return [node for item in value for node in _maria_nodes(item, facts, findings)]
    if not isinstance(value, Mapping):
        return []
    nodes: list[PlanNode] = []
    for key, item in value.items():
        if key == "table" and isinstance(item, Mapping):
            nodes.append(_maria_table(item, facts, findings))
        elif key in _MARIADB_NODES and isinstance(item, Mapping):
            children = tuple(_maria_nodes(item, facts, findings))
            node = PlanNode(
                _MARIADB_NODES[key],
                estimated_cost=_float(item.get("cost")),
                actual_ms=_float(item.get("r_total_time_ms")),
                children=children,
                detail=str(item["sort_key"]) if item.get("sort_key") else None,
            )
            if key in ("filesort", "temporary_table"):
                scans = [n for c in children for n in c.walk() if n.table and n.estimated_rows is not None]
                if scans:
                    biggest = max(scans, key=lambda n: n.estimated_rows or 0.0)
                    kind: WarningKind = "filesort" if key == "filesort" else "temporary"
                    alias = next((a for a, t in facts.aliases.items() if t == biggest.table), None)
                    findings.append(
                        _Finding(kind, biggest.table, alias, biggest.estimated_rows, _MARIADB_NODES[key])
                    )
            nodes.append(node)
        elif isinstance(item, (Mapping, list)):
            nodes.extend(_maria_nodes(item, facts, findings))
    return nodes


def parse_mariadb(raw: Any, facts: SqlFacts) -> _Parsed:
    """Nodes and findings of MariaDB's ``EXPLAIN FORMAT=JSON`` / ``ANALYZE FORMAT=JSON`` output."""
    parsed = _Parsed()
    if not isinstance(raw, Mapping):
        return parsed
    parsed.nodes.extend(_maria_nodes({"query_block": raw.get("query_block", {})}, facts, parsed.findings))
    block = raw.get("query_block")
    if isinstance(block, Mapping):
        parsed.total_ms = _float(block.get("r_total_time_ms"))
    return parsed


# -- SQLite: EXPLAIN QUERY PLAN ---------------------------------------------------------------------------

# "SCAN o", "SEARCH o USING INDEX idx (code=?)"; before 3.36: "SCAN TABLE Order AS o".
_SQLITE_ACCESS = re.compile(r"^(SCAN|SEARCH)\s+(?:TABLE\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*(.*)$")
_SQLITE_INDEX = re.compile(
    r"USING\s+(?:(?:AUTOMATIC\s+)?(?:PARTIAL\s+)?(?:COVERING\s+)?INDEX\s*(\S*)"
    r"|(INTEGER PRIMARY KEY|PRIMARY KEY))"
)
_SQLITE_TEMP = re.compile(r"^USE TEMP B-TREE FOR (.*)$")


def parse_sqlite(raw: Any, facts: SqlFacts) -> _Parsed:
    """Nodes and findings of SQLite's ``EXPLAIN QUERY PLAN`` rows (``[id, parent, detail]`` each)."""
    parsed = _Parsed()
    rows = [(int(r[0]), int(r[1]), str(r[-1])) for r in raw or ()]
    children: dict[int, list[int]] = {}
    for node_id, parent, _detail in rows:
        children.setdefault(parent, []).append(node_id)
    details = {node_id: detail for node_id, _parent, detail in rows}
    scanned: list[tuple[str, str]] = []  # (table, alias) read with SCAN, in plan order
    temps: list[str] = []

    def make(node_id: int) -> PlanNode:
        detail = details[node_id]
        access = _SQLITE_ACCESS.match(detail)
        kids = tuple(make(k) for k in children.get(node_id, ()))
        if access is None:
            temp = _SQLITE_TEMP.match(detail)
            if temp is not None:
                temps.append(temp.group(1))
                return PlanNode("USE TEMP B-TREE", children=kids, detail=f"FOR {temp.group(1)}")
            return PlanNode(detail, children=kids)
        verb, name, alias, rest = access.groups()
        alias = (alias or name).strip('"`[]').lower()
        table = facts.table_of(alias) if alias in facts.aliases else name.strip('"`[]').lower()
        index_match = _SQLITE_INDEX.search(rest)
        index = None
        if index_match is not None:
            index = index_match.group(1) or index_match.group(2) or "AUTOMATIC INDEX"
        if verb == "SCAN" and not table.startswith("("):
            scanned.append((table, alias))
            if index_match is None:
                parsed.findings.append(_Finding("full_scan", table, alias, None, f"SCAN {alias}"))
        condition = rest[rest.index("(") :] if "(" in rest else None
        return PlanNode(verb, table, index, children=kids, detail=condition)

    for root in children.get(0, ()):
        parsed.nodes.append(make(root))
    for what in temps:
        if scanned:
            kind: WarningKind = "filesort" if "ORDER BY" in what else "temporary"
            table, alias = scanned[0]
            parsed.findings.append(_Finding(kind, table, alias, None, f"USE TEMP B-TREE FOR {what}"))
    return parsed


# -- warnings ---------------------------------------------------------------------------------------------


def build_plan(
    backend: str,
    sql: str,
    raw: Any,
    sql_facts: SqlFacts,
    tables: Mapping[str, TableInfo],
    table_rows: TableRows,
    *,
    analyzed: bool = False,
    threshold: int = DEFAULT_THRESHOLD,
    total_ms: float | None = None,
    rows: int | None = None,
) -> Plan:
    """Parse ``raw`` (already redacted) of ``backend`` (``postgresql``, ``mariadb``/``mysql``,
    ``sqlite``) into a :class:`Plan` with warnings for tables of at least ``threshold`` rows.

    ``total_ms``/``rows`` are measured by the caller where the backend does not measure (SQLite).
    """
    if backend == "postgresql":
        parsed = parse_postgres(raw)
    elif backend in ("mariadb", "mysql"):
        parsed = parse_mariadb(raw, sql_facts)
    elif backend == "sqlite":
        parsed = parse_sqlite(raw, sql_facts)
    else:
        raise ValueError(f"no plan parser for {backend!r}")  # explain() only calls it for the three
    warnings = _warnings(parsed.findings, sql_facts, tables, table_rows, threshold)
    if total_ms is None:
        total_ms = parsed.total_ms
    if rows is None:
        rows = parsed.rows
    return Plan(backend, sql, raw, tuple(parsed.nodes), tuple(warnings), analyzed, total_ms, rows)


def _warnings(
    findings: list[_Finding],
    sql_facts: SqlFacts,
    tables: Mapping[str, TableInfo],
    table_rows: TableRows,
    threshold: int,
) -> list[PlanWarning]:
    found: list[PlanWarning] = []
    seen: set[tuple[str, str | None]] = set()
    for finding in findings:
        rows = finding.rows
        about = "about"
        if rows is None and finding.table:
            rows = table_rows(finding.table)
            about = "at least" if rows == threshold else about  # a count capped at the threshold
        if rows is None or rows < threshold or (finding.kind, finding.table) in seen:
            continue
        seen.add((finding.kind, finding.table))
        table = finding.table
        info = tables.get(table or "")
        name = info.entity if info is not None else table
        count = f"{about} {rows:,.0f}"
        if finding.kind == "full_scan":
            message = f"{finding.what} reads every row of {name} (table {table}, {count} rows)"
        elif finding.kind == "filesort":
            message = f"{finding.what} sorts {count} rows of {name} outside an index"
        else:
            message = f"{finding.what} builds a temporary table from {count} rows of {name}"
        found.append(PlanWarning(finding.kind, table, message, _suggest(finding, sql_facts, info)))
    return found


def _columns(sql_facts: SqlFacts, table: str | None, alias: str | None, kind: WarningKind) -> list[str]:
    """The columns of ``table`` an index should lead with, for a warning of ``kind``."""
    if table is None:
        return []
    aliases = [alias] if alias else []
    aliases += [a for a in sql_facts.aliases_of(table) if a not in aliases]
    columns: list[str] = []

    def take(source: dict[str, list[str]]) -> None:
        for a in aliases:
            for column in source.get(a, []):
                if column not in columns:
                    columns.append(column)

    take(sql_facts.equal)
    if kind != "full_scan":
        take(sql_facts.grouped)  # GROUP BY is done by a sort or a temporary table: the same index helps
    take(sql_facts.ordered)
    if kind == "full_scan":
        take(sql_facts.ranged)
    return columns


def _suggest(finding: _Finding, sql_facts: SqlFacts, info: TableInfo | None) -> str:
    columns = _columns(sql_facts, finding.table, finding.alias, finding.kind)
    labels: list[str] = []
    mapped: list[str] = []
    if info is not None:
        for column in columns:
            label = info.columns.get(column)
            if label is not None and label not in labels:
                labels.append(label)
                mapped.append(column)
    if not labels:
        if finding.kind == "full_scan":
            return (
                "the statement filters on no indexable attribute of this table: add a condition on an "
                "indexed attribute, or read it in pages (ponykit.query.paginate / paginate_keyset)"
            )
        return "order or group by attributes that an index covers, or fetch fewer rows"
    labels = labels[:4]
    existing = [ix for ix in (info.indexes if info else ()) if ix[: len(mapped[:4])] == tuple(mapped[:4])]
    if existing and finding.kind == "full_scan":
        return (
            f"an index on ({', '.join(labels)}) exists but was not used: the condition may match most "
            "rows, or the table's statistics are stale (run ANALYZE)"
        )
    if len(labels) == 1:
        return f"{labels[0]}: add index=True"
    return f"composite_index({', '.join(labels)})"
