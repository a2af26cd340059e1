"""from_dict/update_from and Decimal(precision, scale): a value the column cannot hold exactly is a
ValidationError (422), never a flush-time DataError or a value rounded differently by the server."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pony.orm import Database, Optional, Required, commit, db_session, delete

import ponykit as pk


@pytest.fixture
def price(db: Database) -> Any:
    """``Price.amount``: Decimal(10, 2); ``Price.rate``: sensitive Decimal(6, 4)."""

    class Price(db.Entity, pk.Serializable):  # type: ignore[name-defined]
        __sensitive__ = ("rate",)
        amount = Required(Decimal, 10, 2)
        rate = Optional(Decimal, 6, 4)

    pk.attach(db)
    db.generate_mapping(create_tables=True)
    return Price


def _fits(text: str, precision: int, scale: int) -> bool:
    """The oracle, on the digits of the text alone: integer digits (leading zeros dropped) at most
    precision - scale, fractional digits (trailing zeros dropped) at most scale."""
    whole, _, frac = text.lstrip("+-").partition(".")
    return len(whole.lstrip("0")) <= precision - scale and len(frac.rstrip("0")) <= scale


def test_findings_examples(price: Any) -> None:
    """The two values of the report: 11 integer digits, and 3 fractional digits for a scale of 2."""
    with db_session:
        with pytest.raises(pk.ValidationError) as exc:
            price.from_dict({"amount": "99999999999.99"})
        [error] = exc.value.errors
        assert error.path == "amount"
        assert "at most 8 digits before the point for Price.amount, a Decimal(10, 2)" in error.message
        assert "'99999999999.99'" in error.message
        with pytest.raises(pk.ValidationError) as exc:
            price.from_dict({"amount": "12.345"})
        assert "at most 2 digits after the point" in exc.value.errors[0].message
        with pytest.raises(pk.ValidationError, match="digits after the point"):
            price.from_dict({"amount": 12.345})  # floats are read by their repr, as Pony does
        ok = price.from_dict({"amount": "12.340"})  # trailing zeros are not lost precision
        assert ok.amount == Decimal("12.34")
        assert str(ok.amount) == "12.34"
        assert price.select().count() == 1
        ok.update_from({"amount": "-99999999.99"})
        with pytest.raises(pk.ValidationError, match="digits before the point"):
            ok.update_from({"amount": "100000000"})
        assert ok.amount == Decimal("-99999999.99")


def test_sensitive_decimal_is_masked(price: Any) -> None:
    """The refused value of a sensitive attribute is not quoted."""
    with db_session, pytest.raises(pk.ValidationError) as exc:
        price.from_dict({"amount": "1", "rate": "31415.9265"}, allow=["rate"])
    assert "31415" not in str(exc.value)
    assert [e.path for e in exc.value.errors] == ["rate"]


_decimal_text = st.builds(
    lambda sign, whole, frac: f"{sign}{whole}{'.' if frac else ''}{frac}",
    st.sampled_from(["", "-", "+"]),
    st.text("0123456789", min_size=1, max_size=11),
    st.text("0123456789", max_size=4),
)


@settings(max_examples=25)
@given(text=_decimal_text)
@example(text="-0")  # PostgreSQL and MariaDB store 0.00: from_dict must not answer -0.00
@example(text="12.345")
@example(text="99999999999.99")
def test_accepted_values_are_stored_exactly(price: Any, text: str) -> None:
    """Accepted iff the digits fit (oracle on the text); an accepted value is what every backend stores,
    read back in a new session."""
    with db_session:
        delete(p for p in price)
    with db_session:
        if not _fits(text, 10, 2):
            with pytest.raises(pk.ValidationError) as exc:
                price.from_dict({"amount": text})
            assert [e.path for e in exc.value.errors] == ["amount"]
            assert price.select().count() == 0
            return
        obj = price.from_dict({"amount": text})
        returned = obj.amount
        answer = obj.to_dict()["amount"]
        commit()
        pid = obj.id
    with db_session:
        stored = price[pid].amount
    assert stored == returned == Decimal(text)
    assert answer == str(stored)
