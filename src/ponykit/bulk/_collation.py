"""Conflict keys of bulk_upsert compared as the database compares them (private to ponykit.bulk).

MariaDB/MySQL compare text by the column's collation: under the server default ``utf8mb4_general_ci``
``'Ann'``, ``'ann'`` and ``'ANN '`` are one key (case, accents and trailing spaces are ignored), and even
``utf8mb4_bin`` ignores trailing spaces (PAD SPACE). Python's ``==`` does not, so two rows of one batch
that the unique index holds equal would be merged silently by ``ON DUPLICATE KEY UPDATE``, and the key
read back for ``return_ids`` would not be found. :class:`KeyCanon` replaces each text part of a key by
its collation weight, asked from the server (``WEIGHT_STRING``, after removing the trailing spaces a PAD
SPACE collation ignores), so that equal keys are equal in Python too. SQLite and PostgreSQL compare key
text exactly (binary and deterministic collations), so nothing is asked there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from .. import _pony
from .._sql import Dialect
from ._rows import RowPlan

__all__ = ["KeyCanon"]

_NAME = re.compile(r"^[A-Za-z0-9_]+$")  # charset and collation names are put into the SQL text
_PER_STATEMENT = 500


def _collations(plan: RowPlan, dialect: Dialect) -> dict[str, tuple[str, str]]:
    """``column -> (charset, collation)`` of the text columns of ``plan``'s table (asked once)."""
    if plan.collations is None:
        table = plan.table
        p = dialect.placeholder
        args: tuple[str, ...]
        if isinstance(table, tuple):
            schema_sql, args = f"TABLE_SCHEMA = {p}", (table[0], table[-1])
        else:
            schema_sql, args = "TABLE_SCHEMA = DATABASE()", (table,)
        sql = (
            "SELECT COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
            f"WHERE {schema_sql} AND TABLE_NAME = {p} AND COLLATION_NAME IS NOT NULL"
        )
        rows = _pony.execute_in_session(dialect.db, sql, args).fetchall()
        plan.collations = {
            str(r[0]): (str(r[1]), str(r[2]))
            for r in rows
            if _NAME.match(str(r[1])) and _NAME.match(str(r[2]))
        }
    return plan.collations


class KeyCanon:
    """Turns a conflict key (a tuple of bound values, in ``key_cols`` order) into one that is equal in
    Python exactly when the database holds the keys equal. Call :meth:`prepare` with the keys first."""

    def __init__(self, plan: RowPlan, dialect: Dialect, key_cols: Sequence[str]) -> None:
        self._db = dialect.db
        self._text: list[tuple[str, str] | None] = []
        if dialect.name == "mysql":
            collations = _collations(plan, dialect)
            self._text = [collations.get(c) for c in key_cols]
        self.active = any(self._text)
        self._weights: dict[tuple[int, str], bytes] = {}

    def prepare(self, keys: Iterable[Sequence[Any]]) -> None:
        """Ask the server for the collation weights of the text parts of ``keys`` not seen yet."""
        if not self.active:
            return
        for index, text in enumerate(self._text):
            if text is None:
                continue
            missing = list(
                dict.fromkeys(
                    k[index]
                    for k in keys
                    if isinstance(k[index], str) and (index, k[index]) not in self._weights
                )
            )
            charset, collation = text
            # PAD SPACE (trailing spaces do not count): all but MariaDB's _nopad_ and MySQL 8's _0900_
            pad = "nopad" not in collation.lower() and "_0900_" not in collation
            expr = f"WEIGHT_STRING(CONVERT(%s USING {charset}) COLLATE {collation})"
            for start in range(0, len(missing), _PER_STATEMENT):
                chunk = missing[start : start + _PER_STATEMENT]
                sql = "SELECT " + ", ".join([expr] * len(chunk))
                args = tuple(v.rstrip(" ") if pad else v for v in chunk)
                row = _pony.execute_in_session(self._db, sql, args).fetchone()
                for value, weight in zip(chunk, row, strict=True):
                    self._weights[(index, value)] = bytes(weight)

    def __call__(self, key: Sequence[Any]) -> tuple[Any, ...]:
        if not self.active:
            return tuple(key)
        return tuple(
            self._weights.get((i, v), v) if self._text[i] is not None and isinstance(v, str) else v
            for i, v in enumerate(key)
        )
