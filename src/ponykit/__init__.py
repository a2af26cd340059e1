"""ponykit: production-grade helpers for Pony ORM.

``import ponykit as pk``; then ``pk.bind_url(db, url)``, ``pk.attach(db)``, ``pk.on_commit(fn)`` ...
The areas stay importable as ``ponykit.types``, ``ponykit.query`` and ``ponykit.security``.
"""

from __future__ import annotations

from .binding import bind_url, parse_url
from .bulk import UpsertResult, bulk_delete, bulk_insert, bulk_update, bulk_upsert
from .errors import (
    BulkWriteError,
    CallbackError,
    ConfigurationError,
    DecryptionError,
    InvalidCursor,
    InvalidPage,
    PonykitError,
    QueryCountExceeded,
    UnsupportedComparison,
    ValidationError,
)
from .kit import CommitEvent, Kit, attach, get_kit
from .transactions import on_commit, on_rollback

__all__ = [
    "BulkWriteError",
    "CallbackError",
    "CommitEvent",
    "ConfigurationError",
    "DecryptionError",
    "InvalidCursor",
    "InvalidPage",
    "Kit",
    "PonykitError",
    "QueryCountExceeded",
    "UnsupportedComparison",
    "UpsertResult",
    "ValidationError",
    "attach",
    "bind_url",
    "bulk_delete",
    "bulk_insert",
    "bulk_update",
    "bulk_upsert",
    "get_kit",
    "on_commit",
    "on_rollback",
    "parse_url",
]

__version__ = "0.1.0"
