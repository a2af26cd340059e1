"""The HTML report of a :class:`~ponykit.diagnostics.Profile`: one self-contained page.

Everything is inline (CSS, a few lines of vanilla JS, the data as HTML): the file can be mailed, attached
to a CI run or opened offline, and its Content-Security-Policy forbids loading anything from anywhere.
Every piece of text that came from the application (SQL, parameters, thread names, file paths, plans)
goes through :func:`html.escape`; the script reads the page's DOM and is given no data of its own, so no
SQL ever lands inside a ``<script>``.
"""

from __future__ import annotations

import datetime
import os
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: profile imports this module lazily
    from ._profile import Profile, ProfiledStatement

__all__ = ["render"]

# A report stays readable (and a browser stays responsive) with this many statements in the table and the
# timeline; the totals and the analyses always cover every statement.
MAX_ROWS = 5000
_MAX_SQL = 4000
_MAX_PARAMS = 400

_CSS = """
:root { --fg: #1d232a; --muted: #5b6570; --line: #d9dee3; --bg: #fff; --warn: #fff4d6; --bad: #c62828;
  --sel: #2f6fb3; --wr: #2e7d32; --oth: #7b5ea7; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1400px; padding: 1rem 1.5rem 3rem; color: var(--fg); background: var(--bg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size: 1.5rem; margin: .2rem 0; } h2 { font-size: 1.15rem; margin: 2rem 0 .6rem;
  border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
.meta, .note { color: var(--muted); }
dl.totals { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; margin: .8rem 0; }
dl.totals div { min-width: 7rem; } dl.totals dt { color: var(--muted); font-size: .8rem; }
dl.totals dd { margin: 0; font-size: 1.3rem; font-weight: 600; }
dd.flag { color: var(--bad); }
code, pre, td.sql, td.params { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  font-size: 12.5px; }
pre { background: #f5f7f9; border: 1px solid var(--line); padding: .6rem; overflow-x: auto;
  white-space: pre-wrap; word-break: break-word; }
.lanes { border: 1px solid var(--line); padding: .4rem; }
.lane { display: flex; align-items: center; gap: .5rem; margin: .2rem 0; }
.lane-name { width: 10rem; flex: none; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  color: var(--muted); font-size: .8rem; }
.track { position: relative; flex: 1; height: 18px; background: #f3f5f7; }
.bar { position: absolute; top: 2px; bottom: 2px; min-width: 2px; background: var(--oth); opacity: .85; }
.bar.op-select { background: var(--sel); } .bar.op-write { background: var(--wr); }
.bar.error, tr.error td:first-child { background: var(--bad); } .bar.slow { outline: 2px solid var(--bad); }
.axis { display: flex; justify-content: space-between; margin-left: 10.5rem; color: var(--muted);
  font-size: .75rem; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef1f4; position: sticky; top: 0; cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.sql { word-break: break-word; }
td.params { color: var(--muted); word-break: break-word; max-width: 22rem; }
tr.slow td { background: var(--warn); } tr:target td { background: #dcebfa; }
.finding { border-left: 4px solid var(--bad); padding: .2rem .8rem; margin: .8rem 0; }
.fix { font-weight: 600; }
ul.warnings li { background: var(--warn); border-left: 4px solid #e0a800; padding: .3rem .6rem;
  margin: .3rem 0; list-style: none; }
ul.warnings { padding: 0; }
"""

# Sorts the statement table by the clicked header (numbers by their data-v value); a location hash such as
# "#sort=duration-desc" sorts on load. It marks the table with data-sortable="ready" once wired.
_JS = """
(function () {
  "use strict";
  var table = document.getElementById("statements-table");
  if (!table || !table.tHead) { return; }
  var body = table.tBodies[0];
  var heads = table.tHead.rows[0].cells;
  function value(row, col, numeric) {
    var cell = row.cells[col];
    var raw = cell.getAttribute("data-v");
    if (raw === null) { raw = cell.textContent; }
    if (!numeric) { return raw.toLowerCase(); }
    var n = parseFloat(raw);
    return isNaN(n) ? -Infinity : n;
  }
  function sortBy(col, descending) {
    var numeric = heads[col].getAttribute("data-type") === "num";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, col, numeric), y = value(b, col, numeric);
      var order = x < y ? -1 : (x > y ? 1 : 0);
      if (order === 0) { order = value(a, 0, true) - value(b, 0, true); }
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
    heads[col].setAttribute("aria-sort", descending ? "descending" : "ascending");
    var key = heads[col].getAttribute("data-key");
    table.setAttribute("data-sorted-by", key + (descending ? "-desc" : "-asc"));
  }
  Array.prototype.forEach.call(heads, function (th, col) {
    th.tabIndex = 0;
    function activate() {
      var state = th.getAttribute("aria-sort");
      var numeric = th.getAttribute("data-type") === "num";
      sortBy(col, state ? state === "ascending" : numeric && col > 0);
    }
    th.addEventListener("click", activate);
    th.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); activate(); }
    });
  });
  var wanted = /^#sort=([a-z]+)-(asc|desc)$/.exec(window.location.hash);
  if (wanted) {
    for (var c = 0; c < heads.length; c++) {
      if (heads[c].getAttribute("data-key") === wanted[1]) { sortBy(c, wanted[2] === "desc"); }
    }
  }
  table.setAttribute("data-sortable", "ready");
})();
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_COLUMNS = (  # (key, title, numeric)
    ("n", "#", True),
    ("start", "start (ms)", True),
    ("duration", "duration (ms)", True),
    ("rows", "rows", True),
    ("thread", "thread", False),
    ("caller", "caller", False),
    ("sql", "SQL", False),
    ("params", "parameters", False),
)


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def _where(caller: str | None) -> str:
    """The caller's path relative to the working directory when it lies below it."""
    if not caller:
        return ""
    path, _, line = caller.rpartition(":")
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return caller
    return f"{relative}:{line}" if not relative.startswith("..") else caller


def _kind(statement: ProfiledStatement) -> str:
    operation = statement.operation
    if operation in ("SELECT", "WITH"):
        return "op-select"
    if operation in ("INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE"):
        return "op-write"
    return "op-other"


def _params(statement: ProfiledStatement) -> str:
    if statement.params is None:
        return ""
    return _clip(repr(statement.params), _MAX_PARAMS)


def _header(prof: Profile, statements: list[ProfiledStatement]) -> str:
    started = datetime.datetime.fromtimestamp(prof.started, datetime.timezone.utc)
    when = started.strftime("%Y-%m-%d %H:%M:%S UTC")
    errors = sum(1 for s in statements if s.error)
    findings, duplicates, slow = prof.n_plus_one, prof.duplicates, prof.slow
    totals = [
        ("statements", str(len(statements)), False),
        ("time in SQL", f"{prof.total_ms:.2f} ms", False),
        ("block ran", f"{prof.wall_ms:.2f} ms", False),
        ("threads", str(len({s.thread for s in statements})), False),
        ("N+1 groups", str(len(findings)), bool(findings)),
        ("duplicates", str(len(duplicates)), bool(duplicates)),
        ("errors", str(errors), bool(errors)),
    ]
    if prof.explain_slow_ms is not None:
        totals.append((f"slow (over {prof.explain_slow_ms:g} ms)", str(len(slow)), bool(slow)))
    items = "".join(
        f"<div><dt>{_e(label)}</dt><dd{' class=flag' if flag else ''}>{_e(value)}</dd></div>"
        for label, value, flag in totals
    )
    return (
        f'<header><h1>ponykit profile</h1><p class="meta">recorded {_e(when)}</p>'
        f'<dl class="totals" id="totals">{items}</dl></header>'
    )


def _timeline(prof: Profile, statements: list[ProfiledStatement], slow: set[int]) -> str:
    span = max([prof.wall_ms, *(s.start_ms + s.duration_ms for s in statements), 0.001])
    lanes: dict[str, list[str]] = {}
    for number, s in enumerate(statements, 1):
        classes = ["bar", _kind(s)] + (["error"] if s.error else []) + (["slow"] if number in slow else [])
        left = 100.0 * s.start_ms / span
        width = 100.0 * s.duration_ms / span
        title = f"#{number} {s.duration_ms:.3f} ms at {s.start_ms:.3f} ms: {_clip(s.sql, 300)}"
        lanes.setdefault(s.thread, []).append(
            f'<a class="{" ".join(classes)}" href="#s{number}" style="left:{left:.3f}%;width:{width:.3f}%" '
            f'title="{_e(title)}"></a>'
        )
    rows = "".join(
        f'<div class="lane"><span class="lane-name" title="{_e(thread)}">{_e(thread)}</span>'
        f'<div class="track">{"".join(bars)}</div></div>'
        for thread, bars in lanes.items()
    )
    if not rows:
        return '<section id="timeline"><h2>Timeline</h2><p class="note">No statement ran.</p></section>'
    return (
        f'<section id="timeline"><h2>Timeline</h2><div class="lanes">{rows}</div>'
        f'<div class="axis"><span>0 ms</span><span>{span / 2:.2f} ms</span><span>{span:.2f} ms</span></div>'
        "</section>"
    )


def _table(prof: Profile, statements: list[ProfiledStatement], slow: set[int], total: int) -> str:
    heads = "".join(
        f'<th data-key="{key}"{" data-type=num" if numeric else ""}'
        f"{' aria-sort=ascending' if key == 'n' else ''}>{_e(title)}</th>"
        for key, title, numeric in _COLUMNS
    )
    rows = []
    for number, s in enumerate(statements, 1):
        classes = " ".join(c for c in ("error" if s.error else "", "slow" if number in slow else "") if c)
        rowcount = "" if s.rowcount is None else str(s.rowcount)
        error = f" <strong>{_e(s.error)}</strong>" if s.error else ""
        rows.append(
            f'<tr id="s{number}"{f" class={chr(34)}{classes}{chr(34)}" if classes else ""}>'
            f'<td class="num" data-v="{number}">{number}</td>'
            f'<td class="num" data-v="{s.start_ms:.6f}">{s.start_ms:.3f}</td>'
            f'<td class="num" data-v="{s.duration_ms:.6f}">{s.duration_ms:.3f}</td>'
            f'<td class="num" data-v="{rowcount or -1}">{rowcount}</td>'
            f"<td>{_e(s.thread)}</td>"
            f'<td title="{_e(s.caller or "")}">{_e(_where(s.caller))}</td>'
            f'<td class="sql">{_e(_clip(s.sql, _MAX_SQL))}{error}</td>'
            f'<td class="params">{_e(_params(s))}</td></tr>'
        )
    more = (
        f'<p class="note">The first {len(statements)} of {total} statements are shown.</p>'
        if total > len(statements)
        else ""
    )
    return (
        '<section id="statements"><h2>Statements</h2><p class="note">Click a header to sort.</p>'
        f'<table id="statements-table"><thead><tr>{heads}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        f"{more}</section>"
    )


def _findings(prof: Profile) -> str:
    findings = prof.n_plus_one
    if not findings:
        body = '<p class="note">No N+1 pattern.</p>'
    else:
        body = "".join(
            f'<div class="finding"><p><strong>{f.count}&times;</strong> '
            f"<code>{_e(_clip(f.sql, _MAX_SQL))}</code></p>"
            f'<p class="fix">Fix: {_e(f.hint)}</p>'
            f'<p class="note">Statements: {_links(prof.n_plus_one_statements(f))}</p></div>'
            for f in findings
        )
    return f'<section id="n-plus-one"><h2>N+1 groups</h2>{body}</section>'


def _links(numbers: tuple[int, ...]) -> str:
    shown = " ".join(f'<a href="#s{n}">#{n}</a>' for n in numbers[:50])
    return shown + (f" and {len(numbers) - 50} more" if len(numbers) > 50 else "")


def _duplicates(prof: Profile) -> str:
    duplicates = prof.duplicates
    if not duplicates:
        body = '<p class="note">No statement ran twice with the same parameters.</p>'
    else:
        body = "".join(
            f'<div class="finding"><p><strong>{d.count}&times;</strong> '
            f"<code>{_e(_clip(d.sql, _MAX_SQL))}</code></p>"
            f'<p class="note">Statements: {_links(d.statements)}</p></div>'
            for d in duplicates
        )
    return f'<section id="duplicates"><h2>Duplicates</h2>{body}</section>'


def _warning_text(warning: Any) -> str:
    return str(getattr(warning, "message", None) or warning)


def _plans(prof: Profile, numbers: dict[int, int]) -> str:
    if prof.explain_slow_ms is None:
        return ""
    parts = []
    for group in prof.slow_by_shape():
        first = group[0]
        number = numbers[id(first)]
        where = f" at {_e(_where(first.caller))}" if first.caller else ""
        part = (
            f'<div class="slow-statement"><h3><a href="#s{number}">#{number}</a> '
            f"{first.duration_ms:.3f} ms{where}</h3>"
        )
        if len(group) > 1:
            others = tuple(numbers[id(s)] for s in group[1:])
            part += f'<p class="note">{len(others)} more of this shape: {_links(others)}</p>'
        part += f"<pre>{_e(_clip(first.sql, _MAX_SQL))}</pre>"
        plan = next((s.plan for s in group if s.plan is not None), None)
        if plan is not None:
            warnings = list(getattr(plan, "warnings", ()) or ())
            if warnings:
                items = "".join(f"<li>{_e(_warning_text(w))}</li>" for w in warnings)
                part += f'<ul class="warnings">{items}</ul>'
            part += f'<pre class="plan">{_e(plan.render())}</pre>'
        elif first.plan_note:
            part += f'<p class="note">{_e(first.plan_note)}</p>'
        parts.append(part + "</div>")
    body = "".join(parts) or '<p class="note">No statement was slow.</p>'
    heading = f"Slow statements and plans (over {prof.explain_slow_ms:g} ms)"
    return f'<section id="plans"><h2>{_e(heading)}</h2>{body}</section>'


def render(prof: Profile) -> str:
    """The whole page for ``prof``."""
    everything = list(prof.statements)
    statements = everything[:MAX_ROWS]
    numbers = {id(s): n for n, s in enumerate(everything, 1)}
    slow = {numbers[id(s)] for s in prof.slow}
    title = f"ponykit profile: {len(everything)} statement(s), {prof.total_ms:.1f} ms"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>"
        f"{_header(prof, everything)}{_timeline(prof, statements, slow)}"
        f"{_table(prof, statements, slow, len(everything))}{_findings(prof)}{_duplicates(prof)}"
        f"{_plans(prof, numbers)}\n<script>{_JS}</script></body></html>\n"
    )
