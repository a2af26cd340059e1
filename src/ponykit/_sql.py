"""SQL text helpers shared across ponykit's subsystems."""

from __future__ import annotations

__all__ = ["escape_dollars"]


def escape_dollars(sql: str) -> str:
    """``sql`` with every ``$`` doubled, for text that goes through Pony's raw-SQL parser.

    Pony's ``raw_sql()`` (and ``db.select``/``db.execute``) evaluate ``$name`` and ``$(expr)`` as Python
    and turn ``$$`` back into one ``$``: an identifier (table, column, alias) put into such text
    must be escaped so that a ``$`` in it is never run as code.
    """
    return sql.replace("$", "$$")
