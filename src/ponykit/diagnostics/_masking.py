"""Parameter masking for the SQL log, spans and reports: values bound to sensitive columns become ``"***"``.

A column is sensitive when the attribute stored in it is :func:`~ponykit.security.sensitive` or of an
encrypted type (its values are ciphertext, but envelopes of secrets all the same). For every Database the
table -> sensitive-columns map is computed once after mapping and rebuilt when a new ``sensitive()``
declaration arrives.

Each statement is tokenized once per SQL text (the result is remembered, bounded like the write memo of
``transactions._hooks``) into a plan saying which bind positions (``?``, ``%s``) or names (``%(p1)s``) to
mask. The rule fails closed: a statement that names no table with sensitive columns keeps its values;
otherwise a placeholder keeps its value only when it is mapped to a real column of a table the statement
names, that is not sensitive and not a name the statement gives with ``AS``, through one of Pony's shapes:

* ``INSERT INTO t (c1, c2) VALUES (?, ?), (?, ?)``: by position in each row;
* ``c = ?`` (``SET`` lists, ``WHERE``, ``ON CONFLICT ... DO UPDATE``), with ``<>``, ``<``, ``LIKE`` ...;
* ``c IN (?, ?, ?)``.

Every other placeholder of such a statement (``lower(c) = ?``, ``? = c``, ``n = n + ?``, raw SQL the
tokenizer cannot follow, a placeholder count that does not match the arguments) is masked.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pony.orm import Database

from .. import _pony
from ..security.sensitive import is_sensitive, on_change

__all__ = ["MASK", "has_sensitive_columns", "mask_parameters", "sensitive_columns"]

MASK = "***"
"""What a masked parameter value is replaced with."""

_TOKEN = re.compile(
    r"""
      (?P<str>'(?:[^']|'')*'?)                 # a string literal (unterminated: to the end)
    | (?P<qid>"(?:[^"]|"")*"?|`(?:[^`]|``)*`?) # a quoted identifier
    | (?P<comment>--[^\n]*|/\*.*?(?:\*/|$))    # comments hide placeholders from the driver too
    | (?P<named>%\((?P<name>[^)]*)\)s)         # pyformat: %(p1)s
    | (?P<pos>%s|\?)                           # qmark / format (which one counts: see _Scanner)
    | (?P<pct>%%)
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<op><=|>=|<>|!=|=|<|>)
    | (?P<punct>[(),.])
    | (?P<other>\S)
    """,
    re.VERBOSE | re.DOTALL,
)
_COMPARISON = frozenset({"=", "<>", "!=", "<", ">", "<=", ">=", "like", "ilike"})
_KEYWORDS = frozenset(
    {"and", "or", "not", "where", "set", "on", "when", "then", "else", "case", "select", "values", "is"}
    | {"null"}
)

# What a token is: (kind, lowered text or placeholder name)
_Token = tuple[str, str]


@dataclass(frozen=True)
class _Plan:
    """Which values of one SQL text to mask: ``all``, or positions (``?``/``%s``) or names (``%(p)s``)."""

    all: bool = False
    positions: tuple[bool, ...] = ()  # True: mask the value bound at this position
    names: frozenset[str] = frozenset()  # pyformat names to mask
    known: frozenset[str] = frozenset()  # every pyformat name the text shows
    named: bool = False  # the plan counts %(name)s placeholders, not positional ones


_MASK_ALL = _Plan(all=True)


class _DbMasks:
    """What masking knows about one Database: its sensitive columns per table, and a plan per SQL text."""

    def __init__(
        self,
        tables: dict[str, frozenset[str]],
        columns: dict[str, frozenset[str]],
        generation: int,
        final: bool,
    ) -> None:
        self.tables = tables  # table -> its sensitive columns (tables that have some)
        self.columns = columns  # table -> all its columns (every table of the mapping)
        self.generation = generation
        self.final = final  # built after mapping: no need to look again until a declaration changes
        self.plans: dict[str, _Plan | None] = {}


_states: weakref.WeakKeyDictionary[Database, _DbMasks] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()
_generation = 0
_PLAN_MAX_CHARS = 2000  # longer texts (bulk statements, long IN lists) are planned each time, not kept
_PLAN_MAX_ENTRIES = 4096


def _forget_all() -> None:
    # A new sensitive() declaration: every Database's map may have grown.
    global _generation
    _generation += 1


on_change(_forget_all)


def _build_tables(db: Database) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """``(table -> sensitive columns, table -> all columns)``, lower-cased, for every table of ``db``."""
    sensitive: dict[str, set[str]] = {}
    every: dict[str, set[str]] = {}
    for entity in _pony.entities_of(db).values():
        info = _pony.entity_info(entity)
        table = _pony.table_key(info.table)
        every.setdefault(table, set()).update(c.lower() for c in info.columns)
        for link in info.link_tables:
            columns = (*link.columns, *link.reverse_columns)
            every.setdefault(_pony.table_key(link.table), set()).update(c.lower() for c in columns)
        for described in _pony.attr_infos(entity):
            if not is_sensitive(described.attr):
                continue
            sensitive.setdefault(table, set()).update(c.lower() for c in described.columns)
            for link in info.link_tables:
                if link.attr == described.name:  # a sensitive many-to-many: both columns of its link table
                    link_columns = (c.lower() for c in (*link.columns, *link.reverse_columns))
                    sensitive.setdefault(_pony.table_key(link.table), set()).update(link_columns)
    return (
        {table: frozenset(columns) for table, columns in sensitive.items() if columns},
        {table: frozenset(columns) for table, columns in every.items()},
    )


def _state(db: Database) -> _DbMasks:
    state = _states.get(db)
    if state is not None and state.final and state.generation == _generation:
        return state
    with _states_lock:
        generation = _generation
        mapped = _pony.is_mapped(db)
        # Before the mapping exists no column is known (and _plan_for masks everything).
        tables, columns = _build_tables(db) if mapped else ({}, {})
        state = _DbMasks(tables, columns, generation, final=mapped)
        _states[db] = state
        return state


def sensitive_columns(db: Database) -> Mapping[str, frozenset[str]]:
    """Lower-cased table name -> lower-cased names of its columns holding sensitive or encrypted values."""
    return _state(db).tables


def _unquote(kind: str, text: str) -> str:
    if kind == "qid":
        return text[1:-1].lower() if len(text) > 1 else text.lower()
    return text.lower()


def _tokens(sql: str, named_style: bool) -> list[_Token]:
    out: list[_Token] = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup or "other"
        if kind in ("comment", "pct"):
            continue
        if kind == "named":
            out.append(("named", m.group("name")))
        elif kind == "pos":
            text = m.group()
            # "?" is a placeholder only for qmark drivers; "%s" only for format/pyformat ones.
            out.append(("pos", text) if (text == "%s") == named_style else ("other", text))
        elif kind in ("word", "qid"):
            out.append((kind, _unquote(kind, m.group())))
        else:
            out.append((kind, m.group().lower()))
    return out


def _column_before(tokens: list[_Token], i: int) -> str | None:
    """The column a placeholder at ``tokens[i]`` is compared with or assigned to, or None if unknown."""
    j = i - 1
    if j < 0:
        return None
    if tokens[j][1] in ("(", ","):
        # An IN list: walk back over "?, ?, " to its "(", which must follow IN (or NOT IN).
        while j >= 0 and (tokens[j][1] == "," or tokens[j][0] in ("pos", "named")):
            j -= 1
        if j < 1 or tokens[j][1] != "(" or tokens[j - 1] != ("word", "in"):
            return None
        j -= 2
    elif tokens[j][0] in ("op", "word") and tokens[j][1] in _COMPARISON:
        j -= 1
    else:
        return None
    if j >= 0 and tokens[j] == ("word", "not"):  # NOT IN, NOT LIKE
        j -= 1
    if j < 0:
        return None
    kind, text = tokens[j]
    if kind == "qid" or (kind == "word" and text not in _KEYWORDS):
        return text
    return None


def _insert_columns(tokens: list[_Token], placeholders: list[int]) -> dict[int, str]:
    """Token index of each placeholder inside ``INSERT ... (cols) VALUES (...), (...)`` -> its column."""
    found: dict[int, str] = {}
    n = len(tokens)
    start = next((k for k, t in enumerate(tokens) if t[1] == "("), None)
    if start is None:
        return found
    columns: list[str] = []
    k = start + 1
    while k < n and tokens[k][1] != ")":
        if tokens[k][0] in ("qid", "word"):
            columns.append(tokens[k][1])
        elif tokens[k][1] != ",":
            return found  # not a plain column list
        k += 1
    if k + 1 >= n or tokens[k + 1] != ("word", "values"):
        return found
    k += 2
    positions = set(placeholders)
    while k < n and tokens[k][1] == "(":
        depth, column, k = 1, 0, k + 1
        while k < n and depth:
            text = tokens[k][1]
            if text == "(":
                depth += 1
            elif text == ")":
                depth -= 1
            elif text == "," and depth == 1:
                column += 1
            elif (
                k in positions
                and depth == 1
                and column < len(columns)
                # Only a bare placeholder as the whole value: an expression around it stays unmapped.
                and tokens[k - 1][1] in ("(", ",")
                and tokens[k + 1][1] in (",", ")")
            ):
                found[k] = columns[column]
            k += 1
        if k < n and tokens[k][1] == ",":
            k += 1
    return found


def _plan(sql: str, named_style: bool, state: _DbMasks) -> _Plan | None:
    tokens = _tokens(sql, named_style)
    touched: set[str] = set()  # the sensitive columns of the tables the text names
    real: set[str] = set()  # every column of the tables the text names
    aliases: set[str] = set()  # names given with AS: "SELECT ssn AS x ... WHERE x = ?" must not pass
    previous: _Token = ("", "")
    for token in tokens:
        kind, text = token
        if kind in ("word", "qid"):
            columns = state.tables.get(text)
            if columns is not None:
                touched.update(columns)
            real.update(state.columns.get(text, ()))
            if previous == ("word", "as"):
                aliases.add(text)
        previous = token
    if not touched:
        return None
    placeholders = [k for k, t in enumerate(tokens) if t[0] in ("pos", "named")]
    insert = _insert_columns(tokens, placeholders) if tokens and tokens[0] == ("word", "insert") else {}
    flags: list[bool] = []
    names: set[str] = set()
    known: set[str] = set()
    is_named = bool(placeholders) and tokens[placeholders[0]][0] == "named"
    for k in placeholders:
        column = insert.get(k) or _column_before(tokens, k)
        # Shown only when placed on a real, non-sensitive column of a table the statement names.
        hide = column is None or column in touched or column not in real or column in aliases
        if tokens[k][0] == "named":
            known.add(tokens[k][1])
            if hide:
                names.add(tokens[k][1])
        else:
            flags.append(hide)
    if is_named and flags:
        return _MASK_ALL  # mixed styles: not something a driver takes; do not guess
    return _Plan(positions=tuple(flags), names=frozenset(names), known=frozenset(known), named=is_named)


def _plan_for(db: Database, sql: str, named_style: bool) -> _Plan | None:
    state = _state(db)
    if not state.final:
        return _MASK_ALL  # not mapped yet: nothing is known about the columns
    if not state.tables:
        return None
    if len(sql) > _PLAN_MAX_CHARS:
        return _plan(sql, named_style, state)
    plans = state.plans
    if sql in plans:
        return plans[sql]
    plan = _plan(sql, named_style, state)
    if len(plans) >= _PLAN_MAX_ENTRIES:
        plans.clear()
    plans[sql] = plan
    return plan


def has_sensitive_columns(db: Database, sql: str) -> bool:
    """True if ``sql`` names a table of ``db`` that has sensitive or encrypted columns (then some or all
    of its parameter values are masked by :func:`mask_parameters`)."""
    return _plan_for(db, sql, _pony.paramstyle(db) != "qmark") is not None


def _apply_row(plan: _Plan, row: Any) -> Any:
    if isinstance(row, Mapping):
        if plan.all or not plan.named:
            return dict.fromkeys(row, MASK)
        # A name the text does not show is not known to be safe: masked too.
        known, hidden = plan.known, plan.names
        return {key: value if key in known and key not in hidden else MASK for key, value in row.items()}
    if isinstance(row, (tuple, list)):
        if plan.all or plan.named or len(row) != len(plan.positions):
            return tuple(MASK for _ in row)
        return tuple(MASK if hide else value for hide, value in zip(plan.positions, row, strict=True))
    return MASK


def mask_parameters(db: Database, sql: str, arguments: Any) -> Any:
    """``arguments`` with the values bound to sensitive or encrypted columns replaced by ``"***"``.

    ``arguments`` is what the driver received: a tuple (``?``/``%s``), a dict (``%(name)s``), a list of
    either (``executemany``), or None. The result has the same shape (tuples for sequences); values
    that cannot be mapped to a column of a statement naming a sensitive table are masked too.
    """
    if arguments is None:
        return None
    plan = _plan_for(db, sql, _pony.paramstyle(db) != "qmark")
    if plan is None:
        return arguments
    if isinstance(arguments, list) and arguments and isinstance(arguments[0], (tuple, list, Mapping)):
        return [_apply_row(plan, row) for row in arguments]
    return _apply_row(plan, arguments)
