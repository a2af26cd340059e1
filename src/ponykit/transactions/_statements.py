"""Which statements write: a lost connection after one of them loses work, before any of them nothing.

Runs for every statement Pony executes on an attached Database (the execute wrapper of ``_hooks``), so
it looks at the head and the tail of the text only, and remembers its answer for short texts.
"""

from __future__ import annotations

import re

from pony.orm import Database

from .. import _pony

__all__ = [
    "MEMO_MAX_CHARS",
    "WRITE_MEMO",
    "is_write_statement",
    "is_write_statement_memo",
    "refuse_write_statement",
]

_READ_HEAD = re.compile(r"[\s(]*(?:(select|show)|explain)\b", re.IGNORECASE)
# Tried only where "for"/"lock" occurs in the lowered tail: a search with IGNORECASE over the tail cost
# 40 µs per statement (measured), this about 1 µs on a loaded machine.
_LOCKING_AT = re.compile(
    r"(?:for\s+(?:no\s+key\s+update|key\s+share|update|share)|lock\s+in\s+share\s+mode)\b"
)
_TAIL = 512  # a locking clause ends the statement (PostgreSQL, MySQL): no need to scan a huge IN list


def is_write_statement(sql: str) -> bool:
    """False for statements that only read: a plain SELECT or SHOW, an EXPLAIN that does not run its query.

    Everything else counts as a write, conservatively: DML, DDL, SET, CTEs (``WITH x AS (DELETE ...)``),
    and reads that lock rows (``FOR UPDATE``/``FOR SHARE``), whose locks go with the connection. A
    SELECT that writes through a function it calls cannot be told from its text and counts as a read.
    Runs for every statement, so it looks at the head and the tail only, never copies the whole text.
    """
    head = _READ_HEAD.match(sql)
    if head is None:
        return True
    if head.group(1) is None:  # EXPLAIN: ANALYZE runs the statement
        return "analyze" in sql[: head.end() + 32].lower()
    return _locks_rows(sql[-_TAIL:].lower())


def _locks_rows(tail: str) -> bool:
    for word in ("for", "lock"):
        i = tail.rfind(word)
        while i >= 0:
            before = tail[i - 1] if i else " "
            if not (before.isalnum() or before == "_") and _LOCKING_AT.match(tail, i):
                return True
            i = tail.rfind(word, 0, i)
    return False


# Pony runs the same few SQL texts over and over (one per query shape), so the answer is remembered per
# text: classifying a statement afresh cost ~4 µs per round trip in a lookup benchmark (measured; the regex
# code is cold again after each round trip). Long texts (bulk statements, huge IN lists) are classified
# each time rather than kept alive and hashed; the memo is emptied when full rather than grown.
WRITE_MEMO: dict[str, bool] = {}
MEMO_MAX_CHARS = 2000
MEMO_MAX_ENTRIES = 4096


def is_write_statement_memo(sql: str) -> bool:
    """:func:`is_write_statement`, remembered for short texts."""
    if len(sql) > MEMO_MAX_CHARS:
        return is_write_statement(sql)
    found = WRITE_MEMO.get(sql)
    if found is None:
        found = is_write_statement(sql)
        if len(WRITE_MEMO) >= MEMO_MAX_ENTRIES:
            WRITE_MEMO.clear()
        WRITE_MEMO[sql] = found
    return found


def refuse_write_statement(db: Database, sql: str) -> None:
    """In a read-only session: refuse a write statement before it is sent (ReadOnlySessionError), or move
    the session to the primary (``replica_session(on_write="primary")``). Reads pass."""
    if is_write_statement_memo(sql):
        words = sql.lstrip(" \t\n(").split(None, 1)
        kind = words[0].upper()[:16] if words else "empty"
        _pony.refuse_write(db, f"{'an' if kind[:1] in 'AEIOU' else 'a'} {kind} statement")
