"""Errors as HTTP answers: RFC 9457 problem details, one mapping table shared by the web integrations.

:data:`PROBLEMS` maps an exception class to a :class:`ProblemType` (status, title, and how to word the
detail). The table is ordered: the first entry whose class the exception is an instance of wins, so
subclasses go before their bases. ``install(app)`` registers one handler per entry; extend the table
(``PROBLEMS.append(...)`` before ``install``, or ``install(app, problems=[...])``) for your own errors.

Details never repeat input values: ponykit's messages are written not to contain secrets or sensitive
values, and Pony's messages (which do: ``ObjectNotFound`` has the key, ``OptimisticCheckError`` the old
value) are replaced by fixed texts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pony.orm import ObjectNotFound, OptimisticCheckError

from ..errors import InvalidCursor, InvalidPage, PonykitError, ValidationError

__all__ = ["PROBLEMS", "PROBLEM_JSON", "ProblemType", "field_errors", "find_problem", "problem_for"]

PROBLEM_JSON = "application/problem+json"
"""The media type of RFC 9457 problem details."""


@dataclass(frozen=True)
class ProblemType:
    """How one exception class is answered: HTTP ``status``, a short ``title`` and the ``detail`` text.

    ``detail`` is a function of the exception, or None to use ``str(exc)`` (only safe for exceptions
    whose messages never hold input values, like ponykit's).
    """

    exc_type: type[BaseException]
    status: int
    title: str
    detail: Callable[[BaseException], str] | None = None


def _not_found(exc: BaseException) -> str:
    entity = getattr(getattr(exc, "entity", None), "__name__", "object")
    # The key the client asked for is not repeated: it may be a sensitive value (an email as key).
    return f"No {entity} has the requested key"


def _changed(exc: BaseException) -> str:
    return (
        "The object was changed by another transaction since this request read it; "
        "reload it and apply the change again"
    )


def _message(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0]


PROBLEMS: list[ProblemType] = [
    ProblemType(ValidationError, 422, "Validation failed", _message),
    ProblemType(InvalidPage, 400, "Invalid page", _message),
    ProblemType(InvalidCursor, 400, "Invalid cursor", _message),
    ProblemType(ObjectNotFound, 404, "Not found", _not_found),
    ProblemType(OptimisticCheckError, 409, "Conflict", _changed),
    # The integrator appends here: PermissionDenied -> 403, VersionConflict -> 409/412, ...
]
"""The exception -> problem table ``install()`` registers (first match wins; extend it for your errors)."""


def find_problem(exc: BaseException, table: Iterable[ProblemType]) -> ProblemType | None:
    """The first entry of ``table`` whose class ``exc`` is an instance of, or None."""
    for entry in table:
        if isinstance(exc, entry.exc_type):
            return entry
    return None


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Every problem of a :class:`~ponykit.errors.ValidationError` as FastAPI/Pydantic error dicts.

    Each has ``loc`` (a list: field path parts, integers for list positions), ``type`` and ``msg``, the
    keys of FastAPI's own 422 ``detail`` items, and ``ctx`` when the constraint has parameters.
    """
    return list(exc.to_problem()["errors"])


def problem_for(exc: BaseException, entry: ProblemType, instance: str | None = None) -> dict[str, Any]:
    """The problem details object (a JSON-ready dict) answering ``exc`` as ``entry`` says."""
    if isinstance(exc, ValidationError):
        # The validation subsystem's own rendering: every FieldError, no input value.
        problem: dict[str, Any] = dict(exc.to_problem(status=entry.status, instance=instance))
        problem.setdefault("code", type(exc).__name__)
    else:
        problem = _base(exc, entry)
    if instance is not None:
        problem.setdefault("instance", instance)
    return problem


def _base(exc: BaseException, entry: ProblemType) -> dict[str, Any]:
    detail = entry.detail(exc) if entry.detail is not None else _message(exc)
    problem: dict[str, Any] = {"type": "about:blank", "title": entry.title, "status": entry.status}
    if detail:
        problem["detail"] = detail
    if isinstance(exc, PonykitError):
        problem["code"] = type(exc).__name__
    return problem
