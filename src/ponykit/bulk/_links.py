"""bulk_link / bulk_unlink: many-to-many link rows through the link table Pony mapped (private to
ponykit.bulk)."""

from __future__ import annotations

__all__: list[str] = []
