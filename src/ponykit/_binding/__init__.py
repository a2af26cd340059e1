"""Read replicas and the bounded connection pool behind :func:`ponykit.bind_url` (private).

(Being built: see issue #21 and docs/scaling.md.)
"""

from __future__ import annotations

__all__: list[str] = []
