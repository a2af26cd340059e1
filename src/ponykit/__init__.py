"""ponykit: production-grade helpers for Pony ORM.

``import ponykit as pk``; then ``pk.bind_url(db, url)``, ``pk.attach(db)``, ``pk.on_commit(fn)`` ...
The areas stay importable as ``ponykit.types``, ``ponykit.query``, ``ponykit.security`` and
``ponykit.mixins``; the transactional outbox is ``ponykit.outbox`` (``pk.outbox.publish``).
"""

from __future__ import annotations

from . import mixins, outbox, query, security, types
from .binding import bind_url, parse_url
from .bulk import UpsertResult, bulk_delete, bulk_insert, bulk_link, bulk_unlink, bulk_update, bulk_upsert
from .diagnostics import assert_max_queries, count_queries, detect_n_plus_one, explain, profile
from .errors import (
    AmbiguousCommitError,
    BulkWriteError,
    CallbackError,
    ConfigurationError,
    ConnectionLostError,
    DataError,
    DecryptionError,
    InvalidCursor,
    InvalidPage,
    NPlusOneDetected,
    OptionError,
    PermissionDenied,
    PonykitError,
    QueryCountExceeded,
    RetriesExhausted,
    RLSContextError,
    SerializationOptionError,
    TransactionError,
    TransactionStateError,
    UnsupportedComparison,
    UnsupportedDatabase,
    ValidationError,
    ValueTypeError,
)
from .kit import CommitEvent, Kit, attach, get_kit
from .query import cached, cached_query, cached_select, paginate, paginate_keyset, prefetch
from .security import acting_as, can, policy, requires, rls_context, scoped
from .serialization import Serializable, json_schema, pydantic_model, to_json, validates
from .transactions import (
    Backoff,
    classify_error,
    on_commit,
    on_rollback,
    retrying,
    run_in_session,
    savepoint,
    set_session_threads,
    transaction,
)

__all__ = [
    "AmbiguousCommitError",
    "Backoff",
    "BulkWriteError",
    "CallbackError",
    "CommitEvent",
    "ConfigurationError",
    "ConnectionLostError",
    "DataError",
    "DecryptionError",
    "InvalidCursor",
    "InvalidPage",
    "Kit",
    "NPlusOneDetected",
    "OptionError",
    "PermissionDenied",
    "PonykitError",
    "QueryCountExceeded",
    "RLSContextError",
    "RetriesExhausted",
    "Serializable",
    "SerializationOptionError",
    "TransactionError",
    "TransactionStateError",
    "UnsupportedComparison",
    "UnsupportedDatabase",
    "UpsertResult",
    "ValidationError",
    "ValueTypeError",
    "acting_as",
    "assert_max_queries",
    "attach",
    "bind_url",
    "bulk_delete",
    "bulk_insert",
    "bulk_link",
    "bulk_unlink",
    "bulk_update",
    "bulk_upsert",
    "cached",
    "cached_query",
    "cached_select",
    "can",
    "classify_error",
    "count_queries",
    "detect_n_plus_one",
    "explain",
    "get_kit",
    "json_schema",
    "mixins",
    "on_commit",
    "on_rollback",
    "outbox",
    "paginate",
    "paginate_keyset",
    "parse_url",
    "policy",
    "prefetch",
    "profile",
    "pydantic_model",
    "query",
    "requires",
    "retrying",
    "rls_context",
    "run_in_session",
    "savepoint",
    "scoped",
    "security",
    "set_session_threads",
    "to_json",
    "transaction",
    "types",
    "validates",
]

__version__ = "0.1.0"
