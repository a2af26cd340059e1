"""The SQL log on ``ponykit.sql`` (issue 15: filled in by its own change)."""

from __future__ import annotations

from .._kit import Kit

__all__ = ["install"]


def install(kit: Kit) -> None:
    """Log the statements of ``kit``'s Database on ``ponykit.sql`` (attach() runs it)."""
