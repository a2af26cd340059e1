"""Which tables a raw SQL statement writes: the write detector behind cache invalidation of ``db.execute``.

:func:`written_tables` reads a statement the way the database would (comments, string literals, quoted
identifiers with doubled quotes, ``schema.table`` names, several statements separated by ``;``) and
answers ``None`` (not a write), a set of lower-cased table names, or :data:`ALL` when the statement may
write rows but its tables cannot be attributed with certainty (a CTE with a write, a multi-table UPDATE,
a stored procedure call, an unknown statement ...). Callers invalidate everything on :data:`ALL`: a missed
invalidation serves stale rows, an extra one only costs a cache miss.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ALL", "written_tables"]


class _All:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ALL"


ALL: Final = _All()
"""A write whose tables cannot be attributed: every cached result of the Database must go."""


# One token at a time; whitespace and comments are dropped by the caller. Quoted identifiers keep their
# quotes so the parser tells them from words; string literals are kept whole so nothing inside them is
# read as SQL. MySQL strings also take backslash escapes; SQLite also quotes names with [brackets].
_COMMON = r"""
    (?P<ws>\s+|--[^\n]*|/\*.*?(?:\*/|\Z){hash})
  | (?P<q>"(?:[^"]|"")*"|`(?:[^`]|``)*`{bracket})
  | (?P<s>{string})
  | (?P<w>[^\W\d][\w$]*|\d+[^\W\d][\w$]*)
  | (?P<n>\d[\d.]*)
  | (?P<p>.)
"""
_PLAIN_STRING = r"'(?:[^']|'')*'"
_PG_STRING = _PLAIN_STRING + r"|\$(?P<tag>[A-Za-z_]\w*)?\$.*?\$(?P=tag)?\$"  # and $tag$ ... $tag$
_MYSQL_STRING = r"'(?:[^'\\]|''|\\.)*'"
_TOKEN = {
    "mysql": re.compile(_COMMON.format(hash=r"|\#[^\n]*", bracket="", string=_MYSQL_STRING), re.S | re.X),
    "sqlite": re.compile(_COMMON.format(hash="", bracket=r"|\[[^\]]*\]", string=_PLAIN_STRING), re.S | re.X),
    "other": re.compile(_COMMON.format(hash="", bracket="", string=_PG_STRING), re.S | re.X),
}

# Statements that never change rows of an existing table (CREATE is checked for OR REPLACE apart).
_NOT_WRITES = frozenset(
    """SELECT SHOW DESCRIBE DESC PRAGMA SET BEGIN START COMMIT ROLLBACK SAVEPOINT RELEASE END ABORT
    VALUES TABLE USE LOCK UNLOCK GRANT REVOKE VACUUM ANALYZE DECLARE FETCH CLOSE MOVE LISTEN UNLISTEN
    NOTIFY PREPARE DEALLOCATE RESET DISCARD CHECKPOINT COMMENT REINDEX CLUSTER OPTIMIZE CHECK CHECKSUM
    KILL FLUSH HELP""".split()  # noqa: SIM905 - a word list reads better as words
)
_WRITE_WORDS = frozenset(("INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "UPSERT", "TRUNCATE", "COPY"))
_INSERT_MODS = frozenset(
    (
        "LOW_PRIORITY",
        "DELAYED",
        "HIGH_PRIORITY",
        "IGNORE",
        "OR",
        "REPLACE",
        "ROLLBACK",
        "ABORT",
        "FAIL",
        "INTO",
    )
)
_UPDATE_MODS = frozenset(("LOW_PRIORITY", "IGNORE", "OR", "REPLACE", "ROLLBACK", "ABORT", "FAIL", "ONLY"))
_DELETE_MODS = frozenset(("LOW_PRIORITY", "QUICK", "IGNORE"))
_FAST_READ = re.compile(r"\s*SELECT\b", re.IGNORECASE)

Token = tuple[str, str]  # (kind, text): kind is "q" quoted name, "s" string, "w" word, "n" number, "p"


class _Unattributable(Exception):
    pass


def written_tables(sql: str, dialect: str = "other") -> frozenset[str] | _All | None:
    """The tables ``sql`` writes: None for a statement that writes none, lower-cased unqualified table
    names, or :data:`ALL` when it may write and its tables cannot be told."""
    if ";" not in sql and _FAST_READ.match(sql):
        return None  # the common case, every SELECT Pony runs: no tokenizing
    statements: list[list[Token]] = [[]]
    pattern = _TOKEN.get(dialect, _TOKEN["other"])
    for match in pattern.finditer(sql):
        kind = match.lastgroup
        if kind == "tag":
            kind = "s"
        if kind == "ws" or kind is None:
            continue
        text = match.group()
        if kind == "p" and text in "'\"`":
            # An unterminated quote: this reading of the statement is wrong somewhere (PostgreSQL's
            # E'\'' strings, say), so nothing after it can be trusted.
            return ALL
        if kind == "p" and text == ";":
            statements.append([])
        else:
            statements[-1].append((kind, text))
    found: set[str] = set()
    write = False
    for tokens in statements:
        try:
            tables = _statement(tokens)
        except (_Unattributable, IndexError):
            return ALL
        if tables is not None:
            write = True
            found |= tables
    return frozenset(found) if write else None


def _word(token: Token) -> str:
    return token[1].upper() if token[0] == "w" else ""


def _statement(toks: list[Token]) -> set[str] | None:
    if not toks:
        return None
    first = _word(toks[0])
    words = {_word(t) for t in toks}
    if toks[0] == ("p", "("):
        return None  # a parenthesized SELECT
    if first == "WITH":  # a CTE may hide a data-modifying statement anywhere
        if words & _WRITE_WORDS:
            raise _Unattributable
        return None
    if first == "EXPLAIN":  # EXPLAIN ANALYZE runs the statement
        if "ANALYZE" in words and words & _WRITE_WORDS:
            raise _Unattributable
        return None
    if first == "CREATE":  # CREATE OR REPLACE TABLE (MariaDB) replaces a table's rows
        if "REPLACE" in words:
            raise _Unattributable
        return None
    if first in _NOT_WRITES:
        return None
    parser = _PARSERS.get(first)
    if parser is None:
        raise _Unattributable  # CALL, DO, LOAD DATA, RENAME ..., or a statement this parser does not know
    return parser(toks, 1)


def _skip(toks: list[Token], i: int, words: frozenset[str]) -> int:
    while i < len(toks) and _word(toks[i]) in words:
        i += 1
    return i


def _name(toks: list[Token], i: int) -> tuple[str, int]:
    """A possibly schema-qualified name at ``toks[i]``: (its last part unquoted, lower-cased; next index)."""
    part = _part(toks[i])
    i += 1
    while i + 1 < len(toks) and toks[i] == ("p", "."):
        part = _part(toks[i + 1])
        i += 2
    return part.lower(), i


def _part(token: Token) -> str:
    kind, text = token
    if kind == "w":
        return text
    if kind == "q":
        quote = text[0]
        closing = "]" if quote == "[" else quote
        inner = text[1:-1]
        return inner if quote == "[" else inner.replace(closing * 2, closing)
    raise _Unattributable


def _expect(toks: list[Token], i: int, word: str) -> int:
    if _word(toks[i]) != word:
        raise _Unattributable
    return i + 1


def _insert(toks: list[Token], i: int) -> set[str]:
    name, _ = _name(toks, _skip(toks, i, _INSERT_MODS))
    return {name}


def _update(toks: list[Token], i: int) -> set[str]:
    name, i = _name(toks, _skip(toks, i, _UPDATE_MODS))
    if i < len(toks) and toks[i] == ("p", "*"):
        i += 1
    if _word(toks[i]) == "AS":
        i += 1
    if _word(toks[i]) != "SET":
        i += 1  # an alias
    _expect(toks, i, "SET")  # anything else (a join, a second table, INDEXED BY): not attributable
    return {name}


def _delete(toks: list[Token], i: int) -> set[str]:
    i = _expect(toks, _skip(toks, i, _DELETE_MODS), "FROM")
    name, i = _name(toks, _skip(toks, i, frozenset(("ONLY",))))
    if i < len(toks) and toks[i] == ("p", "*"):
        i += 1
    if i < len(toks) and toks[i] == ("p", ","):
        raise _Unattributable  # a multi-table DELETE
    return {name}


def _names_list(toks: list[Token], i: int) -> set[str]:
    names = set()
    while True:
        name, i = _name(toks, _skip(toks, i, frozenset(("ONLY",))))
        names.add(name)
        if i < len(toks) and toks[i] == ("p", "*"):
            i += 1
        if i < len(toks) and toks[i] == ("p", ","):
            i += 1
            continue
        return names


def _truncate(toks: list[Token], i: int) -> set[str]:
    return _names_list(toks, _skip(toks, i, frozenset(("TABLE",))))


def _merge(toks: list[Token], i: int) -> set[str]:
    name, _ = _name(toks, _expect(toks, i, "INTO"))
    return {name}


def _alter(toks: list[Token], i: int) -> set[str]:
    i = _expect(toks, i, "TABLE")
    name, _ = _name(toks, _skip(toks, i, frozenset(("IF", "EXISTS", "ONLY"))))
    return {name}


def _drop(toks: list[Token], i: int) -> set[str]:
    i = _expect(toks, _skip(toks, i, frozenset(("TEMPORARY",))), "TABLE")
    return _names_list(toks, _skip(toks, i, frozenset(("IF", "EXISTS"))))


def _copy(toks: list[Token], i: int) -> set[str] | None:
    if toks[i] == ("p", "("):
        return None  # COPY (query) TO ...
    name, i = _name(toks, i)
    if i < len(toks) and toks[i] == ("p", "("):  # a column list
        while toks[i] != ("p", ")"):
            i += 1
        i += 1
    direction = _word(toks[i])
    if direction == "TO":
        return None
    _expect(toks, i, "FROM")
    return {name}


_PARSERS = {
    "INSERT": _insert,
    "REPLACE": _insert,
    "UPDATE": _update,
    "DELETE": _delete,
    "TRUNCATE": _truncate,
    "MERGE": _merge,
    "ALTER": _alter,
    "DROP": _drop,
    "COPY": _copy,
}
