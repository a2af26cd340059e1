"""ponykit._pony.metadata: the limits Pony enforces on values, read from its converters (every backend).

The oracle is Pony itself: a value at each limit is accepted by the attribute, one step past it is refused.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pony.orm import Database, Optional, Required, composite_key, db_session

from ponykit import _pony


@pytest.fixture
def thing(db: Database) -> Any:
    class Thing(db.Entity):  # type: ignore[name-defined,misc]
        plain = Required(int)
        zero_min = Required(int, min=0, max=10)
        tiny = Required(int, size=8, unique=True)
        positive = Required(int, size=16, unsigned=True)
        name = Required(str, 5)
        ratio = Optional(float, min=0.5, max=2.5)
        money = Required(Decimal, 5, 2, max=100)
        code = Required(str, 10)
        composite_key(name, code)

    db.generate_mapping(create_tables=True)
    return Thing


def test_limits_are_pony_s(thing: Any) -> None:
    limits = {
        name: _pony.value_limits(getattr(thing, name)) for name in ("plain", "zero_min", "tiny", "positive")
    }
    assert (limits["plain"].min, limits["plain"].max) == (-(2**31), 2**31 - 1)
    assert (limits["zero_min"].min, limits["zero_min"].max) == (0, 10)
    assert (limits["tiny"].min, limits["tiny"].max) == (-128, 127)
    assert (limits["positive"].min, limits["positive"].max) == (0, 2**16 - 1)
    assert _pony.value_limits(thing.name).max_len == 5
    ratio = _pony.value_limits(thing.ratio)
    assert (ratio.min, ratio.max) == (0.5, 2.5)
    money = _pony.value_limits(thing.money)
    assert (money.precision, money.scale, money.max) == (5, 2, Decimal(100))
    with db_session:
        for name in ("plain", "tiny", "positive"):
            bounds = _pony.value_limits(getattr(thing, name))
            for good in (bounds.min, bounds.max):
                _pony.validate_attribute(getattr(thing, name), good)
            for bad in (bounds.min - 1, bounds.max + 1):
                with pytest.raises(ValueError, match="(less|greater) than the (minimum|maximum) allowed"):
                    _pony.validate_attribute(getattr(thing, name), bad)


def test_unique_keys(thing: Any) -> None:
    keys = {tuple(_pony.attr_info(a).name for a in key) for key in _pony.unique_keys(thing)}
    assert keys == {("tiny",), ("name", "code")}
