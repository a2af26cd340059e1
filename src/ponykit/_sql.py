"""Helpers for SQL text that ponykit passes through Pony's raw-SQL parser."""

from __future__ import annotations

__all__ = ["escape_dollars"]


def escape_dollars(sql: str) -> str:
    """``sql`` with every ``$`` doubled, for text that Pony's raw-SQL parser must not evaluate.

    Pony reads ``$name`` and ``$(expr)`` in ``db.select``/``raw_sql`` text as Python to evaluate, and
    ``$$`` as a literal ``$``. Identifiers (table, column, alias names) can contain ``$``, so every
    identifier ponykit puts into such SQL goes through this, never the ``$param`` markers themselves.
    """
    return sql.replace("$", "$$")
