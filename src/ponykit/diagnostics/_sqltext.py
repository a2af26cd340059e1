"""What the EXPLAIN helpers read from SQL text: the kind of statement, table aliases, the columns a
statement filters, sorts and groups by, and literal values to hide in plan text.

A small tokenizer, not a parser: it understands the SQL Pony writes (quoted identifiers,
``"alias"."column"`` references, comma joins and ``JOIN ... ON``) and common hand-written SQL, and gives
up safely elsewhere (an unknown statement is "other" and never explained; an unknown column gives no
index hint).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Kind",
    "SqlFacts",
    "Statement",
    "classify",
    "facts",
    "head_word",
    "redact_literals",
    "redact_strings",
]

#: ``select``: a SELECT, or a WITH whose body only reads; ``write``: INSERT/UPDATE/DELETE/REPLACE/MERGE,
#: ``SELECT ... INTO`` or a WITH holding one of them; ``explain``: EXPLAIN/ANALYZE/DESCRIBE;
#: ``other``: anything else (DDL, SET, SHOW, VALUES, a transaction statement...).
Kind = Literal["select", "write", "explain", "other"]

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>[EeXxNnBb]?'(?:[^'\\]|\\.|'')*(?:'|\Z))
  | (?P<ident>"(?:[^"]|"")*(?:"|\Z)|`(?:[^`]|``)*(?:`|\Z))
  | (?P<param>\?|%s|%\([^)]*\)s|%%|:\w+|\$\d+)
  | (?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)
  | (?P<word>[A-Za-z_][\w$]*)
  | (?P<op><=>|<=|>=|<>|!=|::|[-+*/<>=%|&^~!]+)
  | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # ident (quoted or bare word), keyword-ish words are "word", string, number, param, op, punct
    text: str
    value: str  # identifiers unquoted and lower-cased; words upper-cased; others as written


def _tokens(sql: str) -> list[_Tok]:
    found: list[_Tok] = []
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup or "punct"
        text = match.group()
        if kind in ("space", "comment"):
            continue
        if kind == "ident":
            quote = text[0]
            value = text[1:-1].replace(quote * 2, quote).lower()
        elif kind == "word":
            value = text.upper()
        else:
            value = text
        found.append(_Tok(kind, text, value))
    return found


def head_word(sql: str) -> str | None:
    """The statement's first word, upper-cased (``SELECT``, ``WITH``...), past comments and parentheses;
    reads no further than that word, however long the statement."""
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        if kind in ("space", "comment") or match.group() == "(":
            continue
        return match.group().upper() if kind == "word" else None
    return None


_WRITE_WORDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "UPSERT", "TRUNCATE"})
_EXPLAIN_WORDS = frozenset({"EXPLAIN", "ANALYZE", "ANALYSE", "DESCRIBE", "DESC"})
_LOCK_WORDS = frozenset({"UPDATE", "SHARE"})


@dataclass(frozen=True)
class Statement:
    """How a statement may be explained: its ``kind``, whether it is several statements, whether it
    takes row locks (``FOR UPDATE``/``FOR SHARE``: EXPLAIN ANALYZE would take them too)."""

    kind: Kind
    multiple: bool = False
    locking: bool = False


def classify(sql: str) -> Statement:
    """The kind of ``sql`` (see :data:`Kind`), read from its words outside strings and comments."""
    toks = _tokens(sql)
    significant = [t for t in toks if t.value != "("]
    if not significant:
        return Statement("other")
    # A ";" followed by anything but more ";" means several statements in one string.
    semis = [i for i, t in enumerate(toks) if t.value == ";"]
    multiple = bool(semis) and any(t.value != ";" for t in toks[semis[0] :])
    first = significant[0]
    words = [t.value for t in toks if t.kind == "word"]
    locking = False
    for i, word in enumerate(words):
        if word == "FOR" and i + 1 < len(words):
            following = words[i + 1 : i + 4]
            if any(w in _LOCK_WORDS for w in following):
                locking = True
    if first.kind != "word":
        return Statement("other", multiple, locking)
    head = first.value
    if head in _EXPLAIN_WORDS:
        return Statement("explain", multiple, locking)
    if head in _WRITE_WORDS:
        return Statement("write", multiple, locking)
    if head not in ("SELECT", "WITH"):
        return Statement("other", multiple, locking)
    for i, word in enumerate(words):
        if word == "INTO" and head == "SELECT":
            return Statement("write", multiple, locking)  # SELECT ... INTO creates a table or sets vars
        if word in _WRITE_WORDS:
            previous = words[max(0, i - 2) : i]
            if word == "UPDATE" and ("FOR" in previous or "KEY" in previous):
                continue  # FOR [NO KEY] UPDATE: a row lock of a read, not a write
            return Statement("write", multiple, locking)
    return Statement("select", multiple, locking)


@dataclass
class SqlFacts:
    """Table aliases and the columns a statement compares, sorts and groups by, per alias.

    ``aliases`` maps each alias (and each table name used without one) to its lower-cased table name;
    ``equal``, ``ranged``, ``ordered`` and ``grouped`` map an alias to its lower-cased columns in
    order of first appearance (``equal``: ``=``, ``IN``, ``IS``; ``ranged``: ``<``, ``>``, ``BETWEEN``,
    ``LIKE``...). Columns written without an alias are put under ``""``.
    """

    aliases: dict[str, str] = field(default_factory=dict)
    equal: dict[str, list[str]] = field(default_factory=dict)
    ranged: dict[str, list[str]] = field(default_factory=dict)
    ordered: dict[str, list[str]] = field(default_factory=dict)
    grouped: dict[str, list[str]] = field(default_factory=dict)

    def table_of(self, alias: str) -> str:
        """The table an alias stands for (the alias itself when unknown)."""
        return self.aliases.get(alias.lower(), alias.lower())

    def aliases_of(self, table: str) -> list[str]:
        """The aliases of ``table`` in this statement (``""`` too when it is the only table)."""
        found = [a for a, t in self.aliases.items() if t == table.lower()]
        if len(set(self.aliases.values())) == 1 and found:
            found.append("")
        return found


_CLAUSE_WORDS = frozenset(
    {"SELECT", "FROM", "WHERE", "ON", "HAVING", "ORDER", "GROUP", "LIMIT", "OFFSET", "UNION", "SET"}
)
_NOT_ALIAS = frozenset(
    {
        "WHERE", "JOIN", "LEFT", "RIGHT", "INNER", "OUTER", "FULL", "CROSS", "NATURAL", "ON", "USING",
        "GROUP", "ORDER", "LIMIT", "OFFSET", "UNION", "EXCEPT", "INTERSECT", "HAVING", "FOR", "WINDOW",
        "STRAIGHT_JOIN", "LATERAL", "FETCH", "RETURNING", "SET", "VALUES",
    }
)  # fmt: skip
_NOT_COLUMN = frozenset(
    {
        "AND", "OR", "NOT", "NULL", "ASC", "DESC", "TRUE", "FALSE", "BY", "NULLS", "FIRST", "LAST",
        "CASE", "WHEN", "THEN", "ELSE", "END", "EXISTS", "ANY", "ALL", "SOME", "COLLATE", "ESCAPE",
        "DISTINCT", "AS", "INTO", "JOIN", "UPDATE",
    }
)  # fmt: skip
_EQUAL_OPS = frozenset({"=", "<=>", "IN", "IS"})
_RANGE_OPS = frozenset({"<", ">", "<=", ">=", "BETWEEN", "LIKE", "ILIKE", "GLOB", "NOT", "<>", "!="})


def _name(tok: _Tok) -> str | None:
    if tok.kind == "ident":
        return tok.value
    if tok.kind == "word" and tok.value not in _NOT_ALIAS and tok.value not in _CLAUSE_WORDS:
        return tok.value.lower()
    return None


def _read_aliases(toks: list[_Tok], start: int, aliases: dict[str, str], many: bool) -> None:
    i = start
    while i < len(toks):
        if toks[i].value == "(":
            return  # a subquery or a function in FROM: its alias names no table
        table = _name(toks[i])
        if table is None:
            return
        i += 1
        while i + 1 < len(toks) and toks[i].value == "." and toks[i + 1].kind in ("ident", "word"):
            table = toks[i + 1].value.lower()  # schema.table: keep the table
            i += 2
        alias = table
        if i < len(toks) and toks[i].value == "AS":
            i += 1
        if i < len(toks) and toks[i].value not in (",", "(", ".") and _name(toks[i]) is not None:
            alias = _name(toks[i]) or table
            i += 1
        aliases[alias] = table
        aliases.setdefault(table, table)
        if not (many and i < len(toks) and toks[i].value == ","):
            return
        i += 1


def _add(target: dict[str, list[str]], alias: str, column: str) -> None:
    columns = target.setdefault(alias, [])
    if column not in columns:
        columns.append(column)


def facts(sql: str) -> SqlFacts:
    """The :class:`SqlFacts` of ``sql``."""
    toks = _tokens(sql)
    result = SqlFacts()
    clause = ""
    stack: list[str] = []
    for i, tok in enumerate(toks):
        value = tok.value
        if value == "(":
            stack.append(clause)
            continue
        if value == ")":
            clause = stack.pop() if stack else ""
            continue
        if tok.kind == "word":
            lock = value == "UPDATE" and i > 0 and toks[i - 1].value in ("FOR", "KEY")  # a lock, an upsert
            if value in ("FROM", "JOIN", "UPDATE", "INTO") and not lock:
                _read_aliases(toks, i + 1, result.aliases, many=value == "FROM")
            if value in _CLAUSE_WORDS:
                clause = value
            if value in _CLAUSE_WORDS or value in _NOT_COLUMN:
                continue
        if clause not in ("WHERE", "ON", "HAVING", "ORDER", "GROUP"):
            continue
        alias, column = _column_at(toks, i)
        if column is None:
            continue
        end = i + (3 if alias else 1)
        if clause == "ORDER":
            _add(result.ordered, alias, column)
        elif clause == "GROUP":
            _add(result.grouped, alias, column)
        else:
            before = toks[i - 1].value if i > 0 else ""
            after = toks[end].value if end < len(toks) else ""
            if after in _EQUAL_OPS or (before in _EQUAL_OPS and before != "IS"):
                _add(result.equal, alias, column)
            elif after in _RANGE_OPS or before in _RANGE_OPS:
                _add(result.ranged, alias, column)
    return result


def _column_at(toks: list[_Tok], i: int) -> tuple[str, str | None]:
    """``(alias, column)`` for a column reference starting at ``toks[i]``; column None if it is not one."""
    tok = toks[i]
    if tok.kind not in ("ident", "word") or (i > 0 and toks[i - 1].value == "."):
        return "", None
    if tok.kind == "word" and tok.value in _NOT_ALIAS | _CLAUSE_WORDS | _NOT_COLUMN | _RANGE_OPS:
        return "", None
    nxt = toks[i + 1].value if i + 1 < len(toks) else ""
    if nxt == "(":
        return "", None  # a function call
    if nxt == ".":
        if i + 2 < len(toks) and toks[i + 2].kind in ("ident", "word"):
            after = toks[i + 3].value if i + 3 < len(toks) else ""
            if after in (".", "("):
                return "", None  # schema.table.column or a method: not a plain column
            return tok.value.lower(), toks[i + 2].value.lower()
        return "", None
    return "", tok.value.lower()


# Standard SQL strings double a quote to escape it ('it''s'), as PostgreSQL prints them; E'...' strings
# and MariaDB's take backslash escapes too ('it\'s', 'a\\'). Charset introducers (_utf8mb4'..') included.
_STD_STRING = r"(?:[XxNnBbUu]&?)?'(?:[^']|'')*'|[Ee]'(?:[^'\\]|\\.|'')*'"
_BACKSLASH_STRING = r"(?:_\w+|[XxNnBb])?'(?:[^'\\]|\\.|'')*'"
_NUMBER = r"(?<![\w$.\"`])(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![\w\"`])"
_STRINGS = {False: re.compile(_STD_STRING, re.DOTALL), True: re.compile(_BACKSLASH_STRING, re.DOTALL)}
_LITERALS = {
    False: re.compile(f"{_STD_STRING}|{_NUMBER}", re.DOTALL),
    True: re.compile(f"{_BACKSLASH_STRING}|{_NUMBER}", re.DOTALL),
}


def redact_strings(text: str, *, backslash_escapes: bool = False) -> str:
    """``text`` with every string literal replaced by ``?`` (``backslash_escapes``: MariaDB's quoting)."""
    return _STRINGS[backslash_escapes].sub("?", text)


def redact_literals(text: str, *, backslash_escapes: bool = False) -> str:
    """``text`` with every string and number literal replaced by ``?``.

    Plans show the values a statement was run with (``Filter: (email = 'a@b.c'::text)``); a plan that
    goes into a log record or a report must not carry them, whatever attribute they belong to.
    ``backslash_escapes`` reads strings as MariaDB prints them (``'it\\'s'``); otherwise as PostgreSQL
    does (``'it''s'``, a backslash being an ordinary character).
    """
    return _LITERALS[backslash_escapes].sub("?", text)
