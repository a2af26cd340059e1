"""Which statements write: a lost connection after one of them loses work, before any of them nothing;
a replica session refuses them; and a commit after one of them (or after a read that may have written
through a function it called) pins the reader to the primary's position (``ponykit.binding``).

Runs for every statement Pony executes on an attached Database (the execute wrapper of ``_hooks``), so
on a long text it looks at the head and the tail only, and it remembers its answers for short texts.
Where the text cannot tell, the answer is "it may write".
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pony.orm import Database

from .. import _pony

__all__ = [
    "MEMO_MAX_CHARS",
    "WRITE_MEMO",
    "is_write_statement",
    "is_write_statement_memo",
    "may_write_when_read",
    "may_write_when_read_memo",
    "refuse_write_statement",
]

_READ_HEAD = re.compile(r"[\s(]*(?:(select|show)|explain)\b", re.IGNORECASE)
# Tried only where "for"/"lock" occurs in the lowered tail: a search with IGNORECASE over the tail cost
# 40 µs per statement (measured), this about 1 µs on a loaded machine.
_LOCKING_AT = re.compile(
    r"(?:for\s+(?:no\s+key\s+update|key\s+share|update|share)|lock\s+in\s+share\s+mode)\b"
)
_TAIL = 512  # a locking clause ends the statement (PostgreSQL, MySQL): no need to scan a huge IN list
_ANALYZE = re.compile(r"\banaly[sz]e\b", re.IGNORECASE)
# SELECT ... INTO comes before FROM (PostgreSQL's new table) or at the end (MySQL's variables, OUTFILE)
_INTO = re.compile(r"\binto\b", re.IGNORECASE)


def is_write_statement(sql: str) -> bool:
    """False for statements that only read: a plain SELECT or SHOW, an EXPLAIN that does not run its query.

    Everything else counts as a write, conservatively: DML, DDL, SET, CTEs (``WITH x AS (DELETE ...)``),
    reads that lock rows (``FOR UPDATE``/``FOR SHARE``), whose locks go with the connection, ``SELECT ...
    INTO`` (a new table, or variables), several statements in one text, and an EXPLAIN whose options
    say ANALYZE (or ANALYSE). A SELECT that writes through a function it calls cannot be told from its
    text and counts as a read here (:func:`may_write_when_read` tells the commit that it may have).
    Runs for every statement, so on a long text it looks at the head and the tail only.
    """
    head = _READ_HEAD.match(sql)
    if head is None:
        return True
    if head.group(1) is None:  # EXPLAIN: ANALYZE runs the statement, wherever it is among the options
        return _ANALYZE.search(sql[:_TAIL]) is not None
    if _more_statements(sql):
        return True
    if _INTO.search(sql[:_TAIL]) is not None or _INTO.search(sql[-_TAIL:]) is not None:
        return True
    return _locks_rows(sql[-_TAIL:].lower())


def _more_statements(sql: str) -> bool:
    """True when a statement follows a ``;`` (the drivers send several in one text)."""
    i = sql.find(";")
    return i >= 0 and not sql[i + 1 :].isspace() and i + 1 < len(sql)


# A read that may still write: it calls a function that is none of the SQL built-ins Pony's queries (and
# most hand-written reads) use. Such a SELECT counts as a read for a lost connection, as its text is all
# there is to go by, but a commit after it must treat the transaction as one that may have written (the
# read-your-writes pin of ponykit.binding). Keywords that may precede a parenthesis are listed too.
_CALL = re.compile(r'("[^"]+"|`[^`]+`|[A-Za-z_][A-Za-z0-9_$.]*)\s*\(')
_SAFE_WORDS = """
    select from where and or not in exists any some all on using join as values case when then else end is
    like ilike between over partition by having group order union intersect except distinct with limit
    offset filter within lateral array row returning escape interval set null
    count sum avg min max coalesce nullif greatest least ifnull if iif cast convert extract binary
    lower upper length char_length character_length octet_length bit_length substr substring trim ltrim
    rtrim btrim replace concat concat_ws position strpos instr locate left right lpad rpad reverse repeat
    abs round floor ceil ceiling mod power pow sqrt sign trunc truncate exp ln log log10 pi
    now date time datetime year month day hour minute second julianday strftime date_trunc date_part
    to_char to_date to_timestamp adddate subdate addtime subtime timediff datediff date_add date_sub
    timestampdiff age make_interval current_date current_time current_timestamp localtimestamp
    json_extract json_unquote json_value json_query json_exists json_length json_type json_contains
    json_contains_path json_keys json_array_length json_object json_array json_each json_build_object
    json_build_array jsonb_build_object jsonb_build_array jsonb_array_length jsonb_extract_path
    jsonb_extract_path_text json_extract_path json_extract_path_text jsonb_typeof json_typeof to_json
    to_jsonb jsonb_array_elements jsonb_each row_to_json
    group_concat string_agg array_agg listagg bool_and bool_or every row_number rank dense_rank lag lead
    first_value last_value ntile percent_rank cume_dist regexp_replace regexp_like regexp_matches
    regexp_substr random rand uuid gen_random_uuid md5 encode decode hex unhex quote_ident quote_literal
    unnest generate_series array_length cardinality
    py_array_contains py_array_index py_array_length py_array_slice py_array_subset py_json_array_length
    py_json_contains py_json_extract py_json_nonzero py_json_query py_json_unwrap py_json_value py_lower
    py_make_array py_string_slice py_upper
"""
_SAFE_CALLS = frozenset(_SAFE_WORDS.split())


def may_write_when_read(sql: str) -> bool:
    """Whether a statement :func:`is_write_statement` calls a read may write after all: it calls a
    function that is not a known SQL built-in (``SELECT nextval(...)``, ``SELECT my_proc()``). On a long
    text only the head and the tail are looked at."""
    if len(sql) > 2 * _TAIL:
        return _unknown_call(sql[:_TAIL]) or _unknown_call(sql[-_TAIL:])
    return _unknown_call(sql)


def _unknown_call(text: str) -> bool:
    for match in _CALL.finditer(text):
        name = match.group(1).strip('"`').rsplit(".", 1)[-1].lower()
        if name not in _SAFE_CALLS:
            return True
    return False


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
    return _remembered(WRITE_MEMO, is_write_statement, sql)


def _remembered(memo: dict[str, bool], answer: Callable[[str], bool], sql: str) -> bool:
    if len(sql) > MEMO_MAX_CHARS:
        return answer(sql)
    found = memo.get(sql)
    if found is None:
        found = answer(sql)
        if len(memo) >= MEMO_MAX_ENTRIES:
            memo.clear()
        memo[sql] = found
    return found


def refuse_write_statement(db: Database, sql: str) -> None:
    """In a read-only session: refuse a write statement before it is sent (ReadOnlySessionError), or move
    the session to the primary (``replica_session(on_write="primary")``). Reads pass."""
    if is_write_statement_memo(sql):
        words = sql.lstrip(" \t\n(").split(None, 1)
        kind = words[0].upper()[:16] if words else "empty"
        _pony.refuse_write(db, f"{'an' if kind[:1] in 'AEIOU' else 'a'} {kind} statement")


UNSURE_MEMO: dict[str, bool] = {}


def may_write_when_read_memo(sql: str) -> bool:
    """:func:`may_write_when_read`, remembered for short texts."""
    return _remembered(UNSURE_MEMO, may_write_when_read, sql)
