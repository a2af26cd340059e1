"""The slow-query log on ``ponykit.sql.slow`` (issue 15: filled in by its own change)."""

from __future__ import annotations

from .._kit import Kit

__all__ = ["install"]


def install(kit: Kit) -> None:
    """Watch the statements of ``kit``'s Database for slow ones (attach() runs it)."""
