"""Query helpers: offset and keyset pagination, nested prefetch.

``paginate`` and ``paginate_keyset`` page through a Pony query; ``prefetch`` loads the relations of
many objects with one query per path segment.
"""

from __future__ import annotations

from .keyset import CursorPage, paginate_keyset
from .pagination import Page, paginate
from .prefetch import prefetch

__all__ = [
    "CursorPage",
    "Page",
    "paginate",
    "paginate_keyset",
    "prefetch",
]
