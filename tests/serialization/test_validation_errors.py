"""One error format: FieldError's loc/type/msg/ctx from from_dict and bulk rows, and to_problem()."""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any

import pytest
from pony.orm import Database, Optional, Required, db_session

import ponykit as pk
from ponykit.errors import FieldError


class Plan(enum.Enum):
    """An Enum attribute's type."""

    FREE = "free"
    PRO = "pro"


@pytest.fixture
def models(db: Database) -> Any:
    """An entity with one attribute per constraint Pydantic also checks, and one sensitive attribute."""

    class Account(db.Entity, pk.Serializable):
        name = Required(str, 20)
        age = Optional(int, min=0, max=150)
        balance = Optional(Decimal, 6, 2)
        plan = Optional(Plan)
        active = Optional(bool)
        ratio = Optional(float, min=0.0)
        pin = Optional(str, 8)

    pk.security.sensitive(Account.pin)
    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Account


def test_field_error_keeps_path_and_message() -> None:
    """The (path, message) constructor and attributes still work; loc is parsed from the path."""
    error = FieldError("lines.2.qty", "too small")
    assert error.loc == ("lines", 2, "qty")
    assert (error.path, error.message, error.msg, error.type, error.ctx) == (
        "lines.2.qty",
        "too small",
        "too small",
        "value_error",
        None,
    )
    assert FieldError(("lines", 2, "qty"), "too small", type="greater_than_equal") == error
    assert FieldError("", "bad").loc == () and str(FieldError("", "bad")) == "bad"
    assert str(error) == "lines.2.qty: too small"
    assert error.to_dict() == {"loc": ["lines", 2, "qty"], "type": "value_error", "msg": "too small"}


def test_to_problem_is_rfc9457() -> None:
    """Problem details with every error, FastAPI's item shape, JSON-safe ctx, no input."""
    exc = pk.ValidationError(
        "invalid input for Account",
        [
            FieldError("age", "below", type="greater_than_equal", ctx={"ge": Decimal("0.5")}),
            FieldError("name", "missing required attribute", type="missing"),
        ],
    )
    problem = exc.to_problem()
    assert problem == {
        "type": "about:blank",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "invalid input for Account (2 problems)",
        "errors": [
            {"loc": ["age"], "type": "greater_than_equal", "msg": "below", "ctx": {"ge": "0.5"}},
            {"loc": ["name"], "type": "missing", "msg": "missing required attribute"},
        ],
    }
    other = exc.to_problem(status=400, instance="/accounts/1", loc_prefix=["body"])
    assert other["title"] == "Bad Request" and other["instance"] == "/accounts/1"
    assert [e["loc"] for e in other["errors"]] == [["body", "age"], ["body", "name"]]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"name": "x" * 21}, [("name", "string_too_long", {"max_length": 20})]),
        ({"name": ""}, [("name", "string_too_short", {"min_length": 1})]),
        ({"name": "\r "}, [("name", "string_too_short", {"min_length": 1})]),  # Pony strips it: empty
        ({"name": " " + "x" * 20 + " "}, []),  # 20 characters once stripped, as Pony checks and stores
        ({"name": None}, [("name", "string_type", None)]),
        ({"name": 3}, [("name", "string_type", None)]),
        ({}, [("name", "missing", None)]),
        ({"name": "a", "age": -1}, [("age", "greater_than_equal", {"ge": 0})]),
        ({"name": "a", "age": 151}, [("age", "less_than_equal", {"le": 150})]),
        ({"name": "a", "age": "5"}, [("age", "int_type", None)]),
        ({"name": "a", "age": True}, [("age", "int_type", None)]),
        ({"name": "a", "balance": "1.234"}, [("balance", "decimal_max_places", {"decimal_places": 2})]),
        ({"name": "a", "balance": "123456.7"}, [("balance", "decimal_max_digits", {"max_digits": 6})]),
        ({"name": "a", "balance": "12345"}, [("balance", "decimal_whole_digits", {"whole_digits": 4})]),
        ({"name": "a", "balance": "ten"}, [("balance", "decimal_parsing", None)]),
        ({"name": "a", "balance": [1]}, [("balance", "decimal_type", None)]),
        ({"name": "a", "balance": "NaN"}, [("balance", "finite_number", None)]),
        ({"name": "a", "plan": "gold"}, [("plan", "enum", {"expected": "'free' or 'pro'"})]),
        ({"name": "a", "active": "yes"}, [("active", "bool_type", None)]),
        ({"name": "a", "ratio": "1.5"}, [("ratio", "float_type", None)]),
        ({"name": "a", "ratio": -0.5}, [("ratio", "greater_than_equal", {"ge": 0.0})]),
        ({"name": "a", "id": 3}, [("id", "extra_forbidden", None)]),
        ({"name": "a", "nick": 3}, [("nick", "extra_forbidden", None)]),
    ],
)
def test_from_dict_types(models: Any, payload: dict[str, Any], expected: list[Any]) -> None:
    """Each refusal has Pydantic's type and ctx for the same constraint."""
    with db_session:
        if not expected:
            assert models.from_dict(payload).name == payload["name"].strip()
            return
        with pytest.raises(pk.ValidationError) as info:
            models.from_dict(payload)
    assert [(e.path, e.type, e.ctx) for e in info.value.errors] == expected


def test_sensitive_values_stay_out(models: Any) -> None:
    """A sensitive attribute's value appears in no msg, ctx, detail or str of the error."""
    secret = "987654321"
    with db_session, pytest.raises(pk.ValidationError) as info:
        models.from_dict({"name": "a", "pin": secret}, allow=["pin"])
    [error] = info.value.errors
    assert (error.loc, error.type, error.ctx) == (("pin",), "string_too_long", {"max_length": 8})
    for text in (str(info.value), repr(info.value.errors), str(info.value.to_problem())):
        assert secret not in text


def test_bulk_row_errors_have_loc(models: Any) -> None:
    """A bulk row's error is located by (row index, attribute)."""
    with db_session, pytest.raises(pk.BulkWriteError) as info:
        pk.bulk_insert(models, [{"name": "a"}, {"name": "b", "age": "x"}])
    [error] = info.value.errors
    assert error.loc == (1, "age") and error.path == "1.age"
    assert info.value.to_problem()["errors"][0]["loc"] == [1, "age"]
