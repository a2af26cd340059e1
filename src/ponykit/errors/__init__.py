"""The exceptions ponykit raises.

Every error derives from :class:`PonykitError`, so ``except PonykitError`` catches anything ponykit
raised on purpose. Where a builtin fits, the error also derives from it, so code that already catches
``ValueError`` or ``TypeError`` keeps working::

    PonykitError
    ├── ConfigurationError      (ValueError)   set-up or a call is wrong: bad URL, attach() at the wrong
    │   │                                      time, no keys, a function used where it cannot work
    │   ├── OptionError         (also TypeError)  an argument is wrong: an unknown attribute or option
    │   │   │                                     name, a value of the wrong type, a size out of range
    │   │   └── SerializationOptionError (also AttributeError)  bad to_dict/to_json/json_schema options
    │   ├── UnsupportedDatabase (also NotImplementedError)  a feature that does not support this database
    │   └── FactoryError                       a test factory cannot make a value: pass one yourself
    ├── ValidationError         (ValueError)   input data is wrong; lists every problem by field path
    │   ├── BulkWriteError                     a bulk row is wrong; names the row index
    │   └── ValueTypeError      (also TypeError)  a value of the wrong type for an attribute
    ├── DataError               (ValueError)   the database (or a shared cache) holds a value ponykit
    │                                          cannot read back: an unknown Enum value, a malformed one
    ├── InvalidPage             (ValueError)   page number or size out of range
    ├── InvalidCursor           (ValueError)   a keyset cursor is tampered, truncated or foreign
    ├── UnsupportedComparison   (TypeError)    a query comparison that would silently match nothing
    ├── DecryptionError                        a stored ciphertext cannot be decrypted and authenticated
    ├── VersionConflict                        a change expected a version of a row that is not the stored one
    ├── RotationInProgress      (RuntimeError) another rotate_keys() holds the column's lock
    ├── CallbackError                          an on_commit/on_rollback callback failed (opt-in re-raise)
    ├── ConnectionLostError     (pony's ConnectionClosedError)  a transaction that wrote lost its connection
    ├── TransactionError                       a transaction() could not complete
    │   ├── AmbiguousCommitError               COMMIT failed: the transaction may or may not be applied
    │   ├── RetriesExhausted                   every attempt failed transiently; holds each attempt's error
    │   └── TransactionStateError (RuntimeError)  retry/savepoint/isolation used where it cannot work
    ├── PermissionDenied        (PermissionError)  no principal, a permission missing, no policy for an
    │                                              action: the call or query is refused before any SQL
    ├── RLSContextError         (PermissionError)  a statement needs row-level security settings that no
    │                                              rls_context() gives: refused before any SQL is sent
    ├── ReadOnlySessionError    (RuntimeError)  a write in a read-only (replica) session, refused before SQL
    ├── PoolTimeout             (TimeoutError)  no pooled connection became free within the pool's timeout
    ├── OutboxError                            the transactional outbox cannot do what was asked
    │   └── PublishError        (ConnectionError)  the broker did not confirm a message: it is retried
    ├── MigrationError                         a schema migration cannot be made or applied as asked
    │   ├── UnsafeMigration                    a drop, a lossy change or a NOT NULL add without a backfill
    │   │                                      that was not allowed: names the flag or hint that allows it
    │   ├── MigrationStateError                the history is not what the command needs: several heads, an
    │   │                                      edited applied file, a partial revision, an unknown revision
    │   └── MigrationLockTimeout (TimeoutError)  another process holds the migration lock past the timeout
    ├── QueryCountExceeded      (AssertionError)  more SQL statements ran than allowed
    ├── NPlusOneDetected        (AssertionError)  one statement shape ran once per object: prefetch
    └── StatementMismatch       (AssertionError)  the SQL a block ran is not what a test expected

``security.envelope.EnvelopeError`` (a stored value does not open) is a PonykitError too; the
encrypted attribute types turn it into :class:`DecryptionError` naming the entity and attribute.

Messages name the entity and attribute involved, what was expected, what was given and how to fix it.
They never contain passwords, keys, ciphertext, the plaintext of an encrypted value or the value of a
sensitive attribute.

Errors that can only come from a bug in ponykit itself (an internal invariant broken) stay
``AssertionError``/``RuntimeError`` and say so in a comment where they are raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from pony.orm import ConnectionClosedError

from ._fields import FieldError

__all__ = [
    "AmbiguousCommitError",
    "BulkWriteError",
    "CallbackError",
    "ConfigurationError",
    "ConnectionLostError",
    "DataError",
    "DecryptionError",
    "FactoryError",
    "FieldError",
    "InvalidCursor",
    "InvalidPage",
    "MemoryCacheWarning",
    "MigrationError",
    "MigrationLockTimeout",
    "MigrationStateError",
    "NPlusOneDetected",
    "OptionError",
    "OutboxError",
    "PermissionDenied",
    "PonykitError",
    "PoolTimeout",
    "PublishError",
    "QueryCountExceeded",
    "RLSContextError",
    "ReadOnlySessionError",
    "RetriesExhausted",
    "RotationInProgress",
    "SerializationOptionError",
    "StatementMismatch",
    "TransactionError",
    "TransactionStateError",
    "UnsafeMigration",
    "UnsupportedComparison",
    "UnsupportedDatabase",
    "ValidationError",
    "ValueTypeError",
    "VersionConflict",
]


class PonykitError(Exception):
    """Root of every exception ponykit raises on purpose."""


class ConfigurationError(PonykitError, ValueError):
    """ponykit or a Database is set up wrongly (a malformed URL, attach() at the wrong time, missing keys),
    or a function is called where it cannot work (outside a ``db_session``, on an unmapped Database)."""


class OptionError(ConfigurationError, TypeError):
    """An argument of a ponykit call is wrong: an unknown attribute or option name, a value of the wrong
    type, a size or limit out of range, a decorator used without its parentheses.

    It derives from ``ValueError`` (through :class:`ConfigurationError`) and from ``TypeError``: before
    it existed these mistakes raised one or the other, so existing ``except`` clauses keep working. The
    message names the function and the argument, what was expected, what was given and how to fix it.
    """


class SerializationOptionError(OptionError, AttributeError):
    """The options of ``to_dict``/``to_json``/``json_schema`` are wrong: an unknown attribute or option, a
    value of the wrong type, ``related=`` naming something that is not a relation.

    It also derives from ``TypeError`` and ``AttributeError``, the builtins these mistakes raised before,
    so existing ``except`` clauses keep working. The message names the entity and the option. Also raised
    by ``security.sensitive()`` for an attribute name the entity does not have (sensitivity decides what
    serialization leaves out).
    """


class UnsupportedDatabase(ConfigurationError, NotImplementedError):
    """A ponykit feature was used on a database it does not support (bulk writes on Oracle, say).

    The message names the feature and the databases it supports. Also a ``NotImplementedError``, which
    it raised before.
    """


class FactoryError(ConfigurationError):
    """A test factory (``ponykit.testing.factory``) cannot make a valid value for an attribute: a type it has
    no rule for, a unique attribute whose limits hold too few values, a ``py_check`` no candidate passes,
    or Required references that lead back to the entity. The message names the attribute and how to pass
    a value yourself."""


class ValidationError(PonykitError, ValueError):
    """Input data is invalid. ``errors`` lists every problem found, not only the first."""

    def __init__(self, message: str, errors: Sequence[FieldError] = ()) -> None:
        self.errors: list[FieldError] = list(errors)
        if self.errors:
            details = "\n".join(f"  - {e}" for e in self.errors)
            message = f"{message}\n{details}"
        super().__init__(message)
        self.summary = message.partition("\n")[0]

    def to_problem(
        self, *, status: int = 422, instance: str | None = None, loc_prefix: Sequence[str | int] = ()
    ) -> dict[str, Any]:
        """This error as RFC 9457 problem details, JSON-safe::

            {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
             "detail": "invalid input for User (2 problems)", "instance": "/users",
             "errors": [{"loc": ["email"], "type": "string_too_long", "msg": "...",
                         "ctx": {"max_length": 40}}, ...]}

        ``errors`` holds every problem, each in the shape of an item of FastAPI's own 422 ``detail``
        (``loc``, ``type``, ``msg``, ``ctx`` when the constraint has parameters); ``loc_prefix`` is put
        before each ``loc`` (FastAPI's is ``("body",)``). No ``input`` key: the given value is never
        echoed, so a sensitive or encrypted value cannot leak through it. ``instance`` is included when
        given.
        """
        count = len(self.errors)
        detail = f"{self.summary} ({count} problem{'s' if count != 1 else ''})" if count else self.summary
        problem: dict[str, Any] = {
            "type": "about:blank",
            "title": _status_title(status),
            "status": status,
            "detail": detail,
        }
        if instance is not None:
            problem["instance"] = instance
        problem["errors"] = [{**e.to_dict(), "loc": [*loc_prefix, *e.loc]} for e in self.errors]
        return problem


# HTTP reason phrases, with RFC 9110's name for 422 (Python 3.11 still says "Unprocessable Entity").
_TITLES = {**{s.value: s.phrase for s in HTTPStatus}, 422: "Unprocessable Content"}


def _status_title(status: int) -> str:
    return _TITLES.get(status, "Error")


class BulkWriteError(ValidationError):
    """A row given to a bulk operation is invalid; nothing of the call was written (or it was undone).

    ``row_index`` is the 0-based position of the row in the caller's input, ``entity`` and ``attribute``
    name where the problem is.
    """

    def __init__(
        self,
        message: str,
        *,
        row_index: int | None = None,
        entity: str | None = None,
        attribute: str | None = None,
        errors: Sequence[FieldError] = (),
    ) -> None:
        self.row_index = row_index
        self.entity = entity
        self.attribute = attribute
        super().__init__(message, errors)


class ValueTypeError(ValidationError, TypeError):
    """A value of the wrong type was given for an attribute (an ``int`` for a ``str``, another Enum's
    member). Also a ``TypeError``, which it raised before."""


class DataError(PonykitError, ValueError):
    """The database holds a value ponykit cannot turn back into the attribute's Python value: an Enum
    value that is not a member (the Enum lost a member, or another program wrote the row), a stored text
    that no longer parses. Also an entry of a shared cache that this version cannot decode.

    The message names the entity, the attribute and the primary key, the stored value's type (its value
    too unless the attribute is sensitive) and what was expected; fix the row or the attribute's type.
    """


class InvalidPage(PonykitError, ValueError):
    """A page number or page size is out of range."""


class InvalidCursor(PonykitError, ValueError):
    """A keyset cursor is malformed, tampered with, truncated, expired, or belongs to another query or key."""


class UnsupportedComparison(PonykitError, TypeError):
    """A query compares an attribute in a way the database cannot evaluate correctly.

    Raised instead of running a query that would silently match nothing (for example comparing an
    encrypted column with a plaintext value).
    """


class DecryptionError(PonykitError):
    """A stored value could not be decrypted and authenticated.

    The message names the entity, attribute and primary key; it never contains the ciphertext or any
    plaintext. ponykit never returns the ciphertext, ``None`` or a default in place of the value.
    """


class VersionConflict(PonykitError):
    """A change of a :class:`~ponykit.mixins.Versioned` row expected a version that is not the stored one:
    someone else changed (or deleted) the row since the caller read it. A web integration answers 409
    Conflict (or 412 Precondition Failed for an ``If-Match`` header).

    ``entity`` names the entity; ``expected`` and ``actual`` are the versions (``actual`` None: the row
    is gone) of the object, or of the first conflicting row of a bulk call; ``rows`` holds the positions
    (in the batch) of every conflicting bulk row. Nothing of the failed bulk call stays written.
    """

    def __init__(
        self,
        message: str,
        *,
        entity: str | None = None,
        expected: int | None = None,
        actual: int | None = None,
        rows: Sequence[int] = (),
    ) -> None:
        self.entity = entity
        self.expected = expected
        self.actual = actual
        self.rows: tuple[int, ...] = tuple(rows)
        super().__init__(message)


class CallbackError(PonykitError):
    """An ``on_commit``/``on_rollback`` callback registered with ``reraise=True`` failed.

    The transaction it belonged to is already committed (or rolled back); ``__cause__`` holds the
    callback's exception.
    """


class ConnectionLostError(PonykitError, ConnectionClosedError):  # type: ignore[misc]  # Pony is untyped
    """The database connection of a transaction that had already written was lost; nothing of it commits.

    Plain Pony reconnects and carries on in a new transaction, so the writes made before the loss
    vanish while the later ones commit. ponykit raises this instead, from the statement that met the
    lost connection and from every later statement and commit of the same transaction, until the
    ``db_session`` ends (it rolls back) or ``rollback()`` is called. It is a Pony ``TransactionError``,
    so ``@db_session(retry=N)`` runs the whole function again on a new connection.

    ``database`` describes the database (no password), ``statements`` is how many writing statements
    the lost transaction had run, ``entities`` the entities it was known to have written. A message
    never holds a value.
    """

    def __init__(
        self, message: str, *, database: str = "", statements: int = 0, entities: Sequence[str] = ()
    ) -> None:
        self.database = database
        self.statements = statements
        self.entities: tuple[str, ...] = tuple(entities)
        super().__init__(message)


class TransactionError(PonykitError):
    """A transaction run by :func:`ponykit.transaction` could not complete (see the subclasses).

    Not Pony's ``pony.orm.TransactionError``: Pony's ``@db_session(retry=N)`` retries Pony's class,
    and none of these may be retried blindly.
    """


class AmbiguousCommitError(TransactionError):
    """COMMIT itself failed: the database may have applied the transaction or not, and nobody knows which.

    ponykit never runs such a transaction again (it might then be applied twice). ``database`` describes
    the database (no password), ``attempt`` is the attempt whose COMMIT failed (1-based), ``entities``
    the entities the transaction wrote; ``__cause__`` is the driver's error. Check the database (an
    idempotency key, a unique constraint, a read of the rows) before doing the work again.
    """

    def __init__(
        self, message: str, *, database: str = "", attempt: int = 1, entities: Sequence[str] = ()
    ) -> None:
        self.database = database
        self.attempt = attempt
        self.entities: tuple[str, ...] = tuple(entities)
        super().__init__(message)


class RetriesExhausted(TransactionError):
    """Every attempt of a retried transaction failed with a transient error (deadlock, serialization...).

    ``errors`` holds each attempt's exception in order (``__cause__`` is the last one); ``attempts`` is
    how many ran and ``waited`` the seconds spent sleeping between them.
    """

    def __init__(self, message: str, *, errors: Sequence[BaseException] = (), waited: float = 0.0) -> None:
        self.errors: tuple[BaseException, ...] = tuple(errors)
        self.attempts = len(self.errors)
        self.waited = waited
        super().__init__(message)


class TransactionStateError(TransactionError, RuntimeError):
    """A transaction feature was used where it cannot work: ``retry`` inside an open transaction (it
    would retry half of it), ``savepoint()`` outside one, an isolation level asked for a transaction
    that has already begun."""


class RotationInProgress(PonykitError, RuntimeError):
    """Another rotation holds the lock of this column (raised by ``rotate_keys(..., wait=False)``)."""


class PermissionDenied(PonykitError, PermissionError):
    """Access control refused a call or a query (``ponykit.security``): no principal is acting, the
    principal lacks a permission ``requires()`` asks for, or ``scoped()`` found no policy for the entity and
    action (fail closed). Raised before any SQL runs.

    The message names the function or the entity and action, the missing permissions and the principal's
    identity (its type and ``id``), never the principal's other data. ``missing`` holds the permissions that
    were missing, ``entity`` and ``action`` what ``scoped()`` was asked for (None where they do not apply).
    """

    def __init__(
        self,
        message: str,
        *,
        missing: Sequence[str] = (),
        entity: str | None = None,
        action: str | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.entity = entity
        self.action = action


class QueryCountExceeded(PonykitError, AssertionError):
    """More SQL statements ran inside an ``assert_max_queries`` block than allowed."""


class NPlusOneDetected(PonykitError, AssertionError):
    """One statement shape ran many times with different parameters: a loop is loading rows one by one.

    ``findings`` lists each shape (:class:`ponykit.diagnostics.NPlusOneFinding`), how often it ran and
    which relation or attribute to prefetch.
    """

    def __init__(self, message: str, findings: list[Any]) -> None:
        super().__init__(message)
        # NPlusOneFinding lives in ponykit.diagnostics, above this module: typed loosely here.
        self.findings = findings


class StatementMismatch(PonykitError, AssertionError):
    """The SQL statements a block ran are not the ones a test expected (``assert_sql_contains``, a statement
    snapshot); the message lists the statements that ran (without their parameters' values)."""


class RLSContextError(PonykitError, PermissionError):
    """A statement on a Database attached with ``rls_required=`` ran without a required setting.

    Raised before the statement is sent: no SQL runs without the row-level security settings it needs
    (fail closed). ``missing`` holds the names of the settings no ``rls_context()`` gave (never a value).
    """

    def __init__(self, message: str, missing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing = tuple(missing)


class ReadOnlySessionError(PonykitError, RuntimeError):
    """A read-only session (``replica_session()``, ``transaction(read_only=True)``) tried to write: an
    INSERT, UPDATE, DELETE or DDL statement, or a flush of changed objects. Raised before any SQL is sent;
    the message names the statement's kind and the session that was read-only."""


class PoolTimeout(PonykitError, TimeoutError):
    """No connection of a bounded pool (``bind_url(..., pool=PoolConfig(...))``) became free within its
    ``timeout``. The message names the database (password redacted), ``max_size``, how long it waited and
    how many connections were in use; raise ``max_size`` or shorten what holds connections."""


class OutboxError(PonykitError):
    """The transactional outbox cannot do what was asked: ``publish()`` outside a ``db_session`` or on a
    Database attached without ``outbox=True``, a payload that is not JSON-safe, a sensitive value."""


class PublishError(OutboxError, ConnectionError):
    """A broker did not confirm a message (unreachable, refused, nacked, timed out). The relay keeps the
    message pending and retries it with backoff; the message names the broker (URL redacted) and topic."""


class MigrationError(PonykitError):
    """A schema migration cannot be made or applied as asked; the message names the revision, the entity or
    table and attribute or column, and what to do."""


class UnsafeMigration(MigrationError):
    """A migration would lose data or fail on existing rows and the command was not told it may: a drop
    without ``--allow-drop``, a lossy type change without ``--allow-lossy``, a NOT NULL attribute added to a
    table with rows without a backfill. Names the entity and attribute and the flag or hint that allows it."""


class MigrationStateError(MigrationError):
    """The migration history is not in a state the command can work from: several heads, a revision applied
    from a file edited since, a partial revision, an unknown revision, models that differ from the
    snapshot."""


class MigrationLockTimeout(MigrationError, TimeoutError):
    """Another process held the migration lock (or a table lock a DDL statement needed) longer than the
    timeout; nothing of the waiting migration was applied."""


class MemoryCacheWarning(UserWarning):
    """A per-process ``MemoryCache`` is used where other processes write: after ``fork()``, or on a server
    database (PostgreSQL, MariaDB ...). Their commits never invalidate its entries; use ``RedisCache``, or
    ``MemoryCache(single_process=True)`` when this process is the only one writing. A warning, not an error
    (the PonykitError tree holds exceptions only)."""
