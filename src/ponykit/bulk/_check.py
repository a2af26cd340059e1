"""Values the database driver would refuse, found before a batch's first statement (private to ponykit.bulk).

Pony's converters accept some values that the driver or the server then refuses while the statement is
sent: text that cannot be encoded as UTF-8 (a lone surrogate such as ``"\\ud800"``) on every backend;
text holding NUL (``"\\x00"``) on PostgreSQL (psycopg2 refuses it; SQLite and MariaDB store it, as Pony
does); NaN and infinite ``float``/``Decimal`` values on MariaDB/MySQL (PyMySQL refuses them). Pony's own
flush raises on these values too, but a bulk statement would fail after earlier statements of its batch
ran. The encoded values are checked here, column by column, before anything of the batch is sent, so
such a row raises BulkWriteError naming it before anything of its batch is sent (and the call's
earlier batches are undone, see ``bulk._batch.Savepoint``).

The check is chosen per column from the attribute's declared type (``BulkAttr.value_kind``): integer,
date, bytes ... columns are not looked at, a ``str`` column is joined once and checked as one string
(``isascii`` first, the common case), and columns of other types are checked value by value by type.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

__all__ = ["ColumnCheck", "Refusal", "column_checks", "first_refusal"]

# (row position in the column, what the driver expected): the first value a column check refuses.
Refusal = tuple[int, str]
ColumnCheck = Callable[[Sequence[Any]], Refusal | None]

_UTF8 = "text that can be encoded as UTF-8 (no lone surrogate code points such as '\\ud800')"
_NUL = "text without NUL (0x00) characters, which PostgreSQL text cannot hold"
_FINITE = "a finite number (MariaDB/MySQL cannot store NaN or infinity)"


def _text_problem(value: str, nul: bool) -> str | None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _UTF8
    if nul and "\x00" in value:
        return _NUL
    return None


def _value_problem(value: Any, nul: bool, finite: bool) -> str | None:
    """What the driver would refuse in one encoded value of any type, or None."""
    if isinstance(value, str):
        return _text_problem(value, nul)
    if finite and isinstance(value, float):
        return None if math.isfinite(value) else _FINITE
    if finite and isinstance(value, decimal.Decimal):
        return None if value.is_finite() else _FINITE
    if isinstance(value, (list, tuple)):  # PostgreSQL arrays (StrArray ...): psycopg2 binds each item
        for item in value:
            problem = _value_problem(item, nul, finite)
            if problem is not None:
                return problem
    return None


def _locate(col: Sequence[Any], nul: bool, finite: bool) -> Refusal | None:
    for index, value in enumerate(col):
        problem = _value_problem(value, nul, finite)
        if problem is not None:
            return index, problem
    return None


def _text_check(nul: bool, finite: bool) -> ColumnCheck:
    def check(col: Sequence[Any]) -> Refusal | None:
        try:
            joined = "".join(col)  # a str column: one C-level join, checked as one string
        except TypeError:
            try:
                joined = "".join(filter(None, col))  # with None (a nullable column)
            except TypeError:  # values of other types too (a converter's choice): one by one
                return _locate(col, nul, finite)
        if joined.isascii() and not (nul and "\x00" in joined):
            return None
        if _text_problem(joined, nul) is None:
            return None
        return _locate(col, nul, finite)

    return check


def _finite_check(col: Sequence[Any]) -> Refusal | None:  # MariaDB/MySQL only: NUL is stored there
    # One C-level loop for a column of one type: Decimal.is_finite for Decimals (math.isfinite would
    # convert each to float), math.isfinite for floats; None or mixed types raise, and are looked at
    # value by value.
    finite = decimal.Decimal.is_finite if col and type(col[0]) is decimal.Decimal else math.isfinite
    try:
        if all(map(finite, col)):
            return None
    except (TypeError, ValueError):
        pass
    return _locate(col, False, True)


def _any_check(nul: bool, finite: bool) -> ColumnCheck:
    # A custom type's column: often text (an Enum's value, an aware datetime on SQLite), checked with the
    # text column's one join; other values fall back to one by one there.
    return _text_check(nul, finite)


def column_checks(kinds: Sequence[str], dialect: str) -> list[ColumnCheck | None]:
    """The check of each bound column, from the value kind of its attribute (``BulkAttr.value_kind``):
    ``safe`` (no check), ``str``, ``number`` (float or Decimal) or ``any``."""
    nul = dialect == "postgres"
    finite = dialect == "mysql"
    text = _text_check(nul, finite)
    other = _any_check(nul, finite)
    checks: list[ColumnCheck | None] = []
    for kind in kinds:
        if kind == "safe":
            checks.append(None)
        elif kind == "str":
            checks.append(text)
        elif kind == "number":
            checks.append(_finite_check if finite else None)
        else:
            checks.append(other)
    return checks


def first_refusal(
    checks: Sequence[ColumnCheck | None],
    columns: Sequence[Sequence[Any]] | None = None,
    rows: Sequence[Sequence[Any]] | None = None,
) -> tuple[int, int, str] | None:
    """``(row, column, expected)`` of the first value (in column order) that the driver would refuse.

    The values are given as ``columns`` (one sequence per bound column) or as ``rows`` (one tuple per
    row, of which only the checked columns are taken out).
    """
    for index, check in enumerate(checks):
        if check is not None:
            col = columns[index] if columns is not None else list(map(itemgetter(index), rows or ()))
            found = check(col)
            if found is not None:
                return found[0], index, found[1]
    return None
