"""bulk_delete's relations: what Pony's per-object delete does to the rows that refer to the deleted
ones (cascade, set NULL, refuse), done set-wise (private to ponykit.bulk)."""

from __future__ import annotations

__all__: list[str] = []
