"""Errors as HTTP answers: RFC 9457 problem details, one mapping table shared by the web integrations.

:data:`PROBLEMS` maps an exception class to a :class:`ProblemType` (status, title, and how to word the
detail). The table is ordered: the first entry whose class the exception is an instance of wins, so
subclasses go before their bases. ``install(app)`` registers one handler per entry; extend the table
(``PROBLEMS.append(...)`` before ``install``, or ``install(app, problems=[...])``) for your own errors.

Details never repeat input values: ponykit's messages are written not to contain secrets or sensitive
values, and Pony's messages (which do: ``ObjectNotFound`` has the key, ``OptimisticCheckError`` the old
value) are replaced by fixed texts, as are ``VersionConflict``'s (it names the primary key) and
``PermissionDenied``'s (it names the principal).

A conditional request (one with an ``If-Match`` or ``If-Unmodified-Since`` header) whose precondition
fails is answered ``412 Precondition Failed`` (RFC 9110, 13.1.1): an entry's ``conditional_status``
replaces its ``status`` for such requests (``VersionConflict``: 409 without the header, 412 with it).

``RLSContextError`` (a statement ran without the row-level security settings its Database requires) is a
server misconfiguration, not the client's fault: it has no entry, so it stays an unhandled 500, logged
with its traceback, and its body says nothing about the settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pony.orm import ObjectNotFound, OptimisticCheckError

from ..errors import (
    InvalidCursor,
    InvalidPage,
    PermissionDenied,
    PonykitError,
    ValidationError,
    VersionConflict,
)

__all__ = [
    "CONDITIONAL_HEADERS",
    "PROBLEMS",
    "PROBLEM_JSON",
    "ProblemType",
    "field_errors",
    "find_problem",
    "problem_for",
    "status_of",
]

PROBLEM_JSON = "application/problem+json"
"""The media type of RFC 9457 problem details."""

CONDITIONAL_HEADERS = ("if-match", "if-unmodified-since")
"""The request headers that make a write conditional: a failed precondition is then a 412."""


@dataclass(frozen=True)
class ProblemType:
    """How one exception class is answered: HTTP ``status``, a short ``title`` and the ``detail`` text.

    ``detail`` is a function of the exception, or None to use ``str(exc)`` (only safe for exceptions
    whose messages never hold input values, like ponykit's). ``conditional_status`` (with its
    ``conditional_title``), when set, answers a request that carried ``If-Match`` or
    ``If-Unmodified-Since`` instead (the precondition the client asked for failed: 412).
    """

    exc_type: type[BaseException]
    status: int
    title: str
    detail: Callable[[BaseException], str] | None = None
    conditional_status: int | None = None
    conditional_title: str | None = None


def _not_found(exc: BaseException) -> str:
    entity = getattr(getattr(exc, "entity", None), "__name__", "object")
    # The key the client asked for is not repeated: it may be a sensitive value (an email as key).
    return f"No {entity} has the requested key"


def _changed(exc: BaseException) -> str:
    return (
        "The object was changed by another transaction since this request read it; "
        "reload it and apply the change again"
    )


def _version_conflict(exc: BaseException) -> str:
    entity = getattr(exc, "entity", None) or "object"
    # Not the message: it names the primary key, which may be a sensitive value.
    return (
        f"The {entity} was changed by someone else since the version this request expected; read it "
        "again (its current ETag) and apply the change to that version"
    )


def _denied(exc: BaseException) -> str:
    missing = tuple(getattr(exc, "missing", ()) or ())
    entity, action = getattr(exc, "entity", None), getattr(exc, "action", None)
    # Not the message: it describes the principal (its id), which is not the answer's business.
    if missing:
        return "This request requires the permission(s) " + ", ".join(map(repr, missing))
    if entity is not None:
        return f"This request may not {action or 'access'} {entity} objects"
    return "This request is not allowed for the acting principal"


def _message(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0]


PROBLEMS: list[ProblemType] = [
    ProblemType(ValidationError, 422, "Validation failed", _message),
    ProblemType(InvalidPage, 400, "Invalid page", _message),
    ProblemType(InvalidCursor, 400, "Invalid cursor", _message),
    ProblemType(ObjectNotFound, 404, "Not found", _not_found),
    ProblemType(OptimisticCheckError, 409, "Conflict", _changed, 412, "Precondition Failed"),
    ProblemType(VersionConflict, 409, "Conflict", _version_conflict, 412, "Precondition Failed"),
    ProblemType(PermissionDenied, 403, "Forbidden", _denied),
]
"""The exception -> problem table ``install()`` registers (first match wins; extend it for your errors)."""


def find_problem(exc: BaseException, table: Iterable[ProblemType]) -> ProblemType | None:
    """The first entry of ``table`` whose class ``exc`` is an instance of, or None."""
    for entry in table:
        if isinstance(exc, entry.exc_type):
            return entry
    return None


def status_of(entry: ProblemType, headers: Any = None) -> tuple[int, str]:
    """The status and title answering ``entry`` for a request with ``headers`` (a case-insensitive
    mapping, or None): ``conditional_status`` when the request carried a conditional header."""
    conditional = headers is not None and any(name in headers for name in CONDITIONAL_HEADERS)
    if entry.conditional_status is not None and conditional:
        return entry.conditional_status, entry.conditional_title or entry.title
    return entry.status, entry.title


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Every problem of a :class:`~ponykit.errors.ValidationError` as FastAPI/Pydantic error dicts.

    Each has ``loc`` (a list: field path parts, integers for list positions), ``type`` and ``msg``, the
    keys of FastAPI's own 422 ``detail`` items, and ``ctx`` when the constraint has parameters.
    """
    return list(exc.to_problem()["errors"])


def problem_for(
    exc: BaseException, entry: ProblemType, instance: str | None = None, headers: Any = None
) -> dict[str, Any]:
    """The problem details object (a JSON-ready dict) answering ``exc`` as ``entry`` says, for a
    request with ``headers`` (see :func:`status_of`)."""
    status, title = status_of(entry, headers)
    if isinstance(exc, ValidationError):
        # The validation subsystem's own rendering: every FieldError, no input value.
        problem: dict[str, Any] = dict(exc.to_problem(status=status, instance=instance))
        problem.setdefault("code", type(exc).__name__)
    else:
        problem = _base(exc, entry, status, title)
    if instance is not None:
        problem.setdefault("instance", instance)
    return problem


def _base(exc: BaseException, entry: ProblemType, status: int, title: str) -> dict[str, Any]:
    detail = entry.detail(exc) if entry.detail is not None else _message(exc)
    problem: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        problem["detail"] = detail
    if isinstance(exc, PonykitError):
        problem["code"] = type(exc).__name__
    return problem
