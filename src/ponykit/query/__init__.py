"""Query helpers: offset and keyset pagination, nested prefetch, cached selects and cached functions.

``paginate`` and ``paginate_keyset`` page through a Pony query; ``prefetch`` loads the relations of
many objects with one query per path segment; ``cached_select`` and ``@cached`` serve repeated reads from
a cache that is invalidated after commit.
"""

from __future__ import annotations

from ._functions import cached
from .backends import CacheBackend, MemoryCache, RedisCache
from .builders import cached_query
from .cache import CacheInfo, cached_select
from .keyset import CursorPage, paginate_keyset
from .pagination import Page, paginate
from .prefetch import prefetch

__all__ = [
    "CacheBackend",
    "CacheInfo",
    "CursorPage",
    "MemoryCache",
    "Page",
    "RedisCache",
    "cached",
    "cached_query",
    "cached_select",
    "paginate",
    "paginate_keyset",
    "prefetch",
]
