"""The exception -> problem details table: every field error kept, in FastAPI's 422 item shape."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pony.orm import ObjectNotFound

from ponykit.errors import (
    BulkWriteError,
    FieldError,
    InvalidCursor,
    InvalidPage,
    PermissionDenied,
    RLSContextError,
    ValidationError,
    VersionConflict,
)
from ponykit.integrations._problems import (
    PROBLEMS,
    ProblemType,
    field_errors,
    find_problem,
    problem_for,
    status_of,
)

names = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
parts = st.lists(st.one_of(names, st.integers(min_value=0, max_value=999)), min_size=1, max_size=4)
messages = st.text(min_size=1, max_size=40).filter(lambda m: "\n" not in m)


def _path(loc: list[Any]) -> str:
    return ".".join(str(p) for p in loc)


@given(st.lists(st.tuples(parts, messages), min_size=1, max_size=8))
def test_every_field_error_reaches_the_problem_with_its_loc(errors: list[tuple[list[Any], str]]) -> None:
    exc = ValidationError("invalid input for Thing", [FieldError(_path(loc), msg) for loc, msg in errors])
    entry = find_problem(exc, PROBLEMS)
    assert entry is not None and entry.status == 422
    problem = problem_for(exc, entry, instance="/things")
    items = problem["errors"]
    assert len(items) == len(errors)  # recall 1.0: nothing dropped, nothing merged
    for item, (loc, msg) in zip(items, errors, strict=True):
        assert set(item) >= {"loc", "type", "msg"}
        assert item["loc"] == loc
        assert item["msg"] == msg
    assert problem["status"] == 422 and problem["instance"] == "/things"
    assert field_errors(exc) == items


def test_the_first_matching_entry_wins_and_subclasses_map_to_their_base() -> None:
    bulk = BulkWriteError("row 3 is invalid", row_index=3, errors=[FieldError("name", "too long")])
    assert find_problem(bulk, PROBLEMS).status == 422  # type: ignore[union-attr]
    assert find_problem(InvalidPage("bad page"), PROBLEMS).status == 400  # type: ignore[union-attr]
    assert find_problem(InvalidCursor("bad cursor"), PROBLEMS).status == 400  # type: ignore[union-attr]
    assert find_problem(KeyError("x"), PROBLEMS) is None
    custom = [ProblemType(ValidationError, 400, "Bad input"), *PROBLEMS]
    assert find_problem(bulk, custom).status == 400  # type: ignore[union-attr]


def test_pony_messages_with_values_are_replaced() -> None:
    class Secret:
        __name__ = "Secret"

    exc = ObjectNotFound(Secret, ("alice@example.com",))
    entry = find_problem(exc, PROBLEMS)
    assert entry is not None and entry.status == 404
    problem = problem_for(exc, entry)
    assert "alice" not in str(problem)


def test_security_and_version_errors_and_the_conditional_rule() -> None:
    denied = PermissionDenied("f requires 'a', which User id='secret-id' does not hold", missing=("a",))
    entry = find_problem(denied, PROBLEMS)
    assert entry is not None and entry.status == 403
    problem = problem_for(denied, entry)
    assert problem["status"] == 403 and "'a'" in problem["detail"] and "secret-id" not in str(problem)

    conflict = VersionConflict("Doc with primary key alice%40x: ...", entity="Doc", expected=1, actual=2)
    entry = find_problem(conflict, PROBLEMS)
    assert entry is not None
    assert status_of(entry, {}) == (409, "Conflict")
    assert status_of(entry, {"if-match": '"Doc:1:1"'}) == (412, "Precondition Failed")
    problem = problem_for(conflict, entry, headers={"if-unmodified-since": "x"})
    assert problem["status"] == 412 and "alice" not in str(problem)
    # Other entries ignore the conditional headers.
    invalid = find_problem(InvalidPage("bad page"), PROBLEMS)
    assert invalid is not None and status_of(invalid, {"if-match": "*"}) == (400, "Invalid page")
    # A missing row-level security setting is the server's misconfiguration: no entry, an unhandled 500.
    assert find_problem(RLSContextError("missing app.tenant", missing=["app.tenant"]), PROBLEMS) is None
