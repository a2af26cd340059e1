"""ponykit: production-grade helpers for Pony ORM.

``import ponykit as pk``; then ``pk.bind_url(db, url)``, ``pk.attach(db)``, ``pk.on_commit(fn)`` ...
The areas stay importable as ``ponykit.types``, ``ponykit.query`` and ``ponykit.security``.
"""

from __future__ import annotations

from . import security
from .binding import bind_url, parse_url
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
from .serialization import Serializable, json_schema, to_json
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
    "Serializable",
    "UnsupportedComparison",
    "ValidationError",
    "attach",
    "bind_url",
    "get_kit",
    "json_schema",
    "on_commit",
    "on_rollback",
    "parse_url",
    "security",
    "to_json",
]

__version__ = "0.1.0"
