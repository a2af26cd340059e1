"""Property: for random invalid payloads, from_dict reports every bad field (recall 1.0) in one
ValidationError, with the loc, type and ctx Pydantic reports for the same constraints (its model from
pydantic_model(E, "create")); the generator's own list of bad fields is the oracle."""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pony.orm import Database, Optional, Required, db_session

import ponykit as pk

pydantic = pytest.importorskip("pydantic")


class Plan(enum.Enum):
    """An Enum attribute's type."""

    FREE = "free"
    PRO = "pro"


@pytest.fixture
def member(db: Database) -> Any:
    """One attribute per constraint ponykit and Pydantic both check."""

    class Member(db.Entity, pk.Serializable):
        name = Required(str, 20)
        nick = Optional(str, 10)
        age = Optional(int, min=0, max=150)
        score = Required(int)
        balance = Optional(Decimal, 6, 2)
        plan = Optional(Plan)
        active = Required(bool)
        ratio = Optional(float, min=0.0, max=1.0)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Member


_OMIT = object()
_WORD = st.text("abcdefghij", min_size=1, max_size=8)
_JUNK = st.sampled_from([[1], {"a": 1}, "junk"])

# per attribute: (valid values, invalid values); _OMIT in the valid list: the key may be left out
FIELDS: dict[str, tuple[Any, Any]] = {
    "name": (
        st.text("abcxyz", min_size=1, max_size=20),
        st.one_of(st.text("ab", min_size=21, max_size=30), st.just(""), st.none(), st.integers())
        | st.sampled_from([[1], {"a": 1}])
        | st.just(_OMIT),
    ),
    "nick": (
        st.text("ab", max_size=10) | st.just(_OMIT),  # Pony stores "" for it, and refuses None
        st.text("ab", min_size=11, max_size=15) | st.integers() | st.booleans() | st.none(),
    ),
    "age": (
        st.none() | st.integers(0, 150) | st.just(_OMIT),
        st.integers(max_value=-1) | st.integers(min_value=151) | st.floats(0.5, 9.5) | st.booleans() | _JUNK,
    ),
    "score": (
        st.integers(-(2**31), 2**31 - 1),
        st.integers(min_value=2**31)
        | st.integers(max_value=-(2**31) - 1)
        | _WORD
        | st.none()
        | st.just(_OMIT),
    ),
    "balance": (
        st.none() | st.decimals(-9999, 9999, places=2).map(str) | st.just(_OMIT),
        st.sampled_from(["1.234", "12345", "1234567.1", "0.001", "abc", "NaN", "-12345.5"]) | st.just([1]),
    ),
    "plan": (
        st.none() | st.sampled_from(["free", "pro"]) | st.just(_OMIT),
        st.sampled_from(["gold", "FREE", 3]),
    ),
    "active": (st.booleans(), st.sampled_from(["yes", 1, 0, None, _OMIT])),
    "ratio": (
        st.none() | st.floats(0, 1) | st.just(_OMIT),
        st.floats(max_value=-0.01, allow_nan=False, allow_infinity=False)
        | st.floats(min_value=1.01, allow_nan=False, allow_infinity=False)
        | st.sampled_from(["0.5", True]),
    ),
}


@st.composite
def payloads(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A payload with at least one bad field, and the names of its bad fields."""
    bad = draw(st.sets(st.sampled_from([*FIELDS, "extra"]), min_size=1))
    payload: dict[str, Any] = {}
    for name, (good, wrong) in FIELDS.items():
        value = draw(wrong if name in bad else good)
        if value is not _OMIT:
            payload[name] = value
    if "extra" in bad:
        for key in draw(st.sets(st.sampled_from(["zz", "id", "unknown"]), min_size=1)):
            payload[key] = draw(st.integers())
    return payload, bad


def _pydantic_errors(model: Any, payload: dict[str, Any]) -> list[tuple[Any, ...]]:
    try:
        model.model_validate(payload)
    except pydantic.ValidationError as exc:
        return sorted((e["loc"], e["type"], _ctx(e.get("ctx"))) for e in exc.errors())
    return []


def _ctx(ctx: dict[str, Any] | None) -> Any:
    # Pydantic keeps the bound's own type in ctx; compare as JSON would show them
    return None if not ctx else tuple(sorted((k, str(v)) for k, v in ctx.items()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=payloads())
def test_every_bad_field_as_pydantic_reports_it(member: Any, case: tuple[dict[str, Any], set[str]]) -> None:
    """Recall 1.0 against the generator's oracle, and loc/type/ctx equal to Pydantic's."""
    payload, bad = case
    with db_session, pytest.raises(pk.ValidationError) as info:
        member.from_dict(payload)
    errors = info.value.errors
    reported = {e.loc[0] for e in errors}
    expected = {n for n in bad if n != "extra"} | ({k for k in payload if k not in FIELDS})
    assert reported == expected
    assert len(errors) == len(reported)  # one error per field, as Pydantic
    ours = sorted((e.loc, e.type, _ctx(e.ctx)) for e in errors)
    assert ours == _pydantic_errors(pk.pydantic_model(member, "create"), payload)
    problem = info.value.to_problem()
    assert len(problem["errors"]) == len(errors) and all("input" not in e for e in problem["errors"])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_valid_payloads_pass_both(member: Any, data: st.DataObject) -> None:
    """What Pydantic's create model accepts, from_dict accepts too (and the other way round)."""
    payload = {}
    for name, (good, _) in FIELDS.items():
        value = data.draw(good)
        if value is not _OMIT:
            payload[name] = value
    assert _pydantic_errors(pk.pydantic_model(member, "create"), payload) == []
    with db_session:
        member.from_dict(payload)
